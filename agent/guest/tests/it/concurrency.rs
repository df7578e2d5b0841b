//! Many streams at once on one channel.

use std::collections::HashMap;

use crate::common::*;

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn two_hundred_concurrent_exec_streams_do_not_cross() {
    let agent = Agent::start().await;
    let runs = (0..200).map(|id| {
        let mut req = sh("i=1; while [ $i -le 50 ]; do echo \"stream-$ID-line-$i\"; i=$((i+1)); done; echo \"err-$ID\" >&2; exit $((ID % 7))");
        req.process.as_mut().unwrap().envs = HashMap::from([("ID".to_owned(), id.to_string())]);
        let agent = &agent;
        async move { (id, run(agent, req).await) }
    });
    let results = futures::future::join_all(runs).await;
    assert_eq!(results.len(), 200);
    for (id, out) in results {
        let expected: String = (1..=50)
            .map(|i| format!("stream-{id}-line-{i}\n"))
            .collect();
        assert_eq!(
            out.stdout_str(),
            expected,
            "stream {id} got someone else's output"
        );
        assert_eq!(out.stderr, format!("err-{id}\n").into_bytes());
        assert_eq!(out.end().exit_code, id % 7);
    }
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_stalled_client_holds_back_only_its_own_process() {
    let agent = Agent::start().await;
    // ~69 MB of numbered lines: more than every buffer on the way (the pipe,
    // 256 queued chunks of up to 64 KiB, the HTTP/2 windows).
    let mut slow_client =
        wrenn_proto::process::process_client::ProcessClient::new(connect(agent.addr).await);
    let stream = slow_client
        .start(cmd("seq", &["1", "8000000"]))
        .await
        .unwrap()
        .into_inner();
    let mut slow: Events = Box::pin(futures::StreamExt::map(stream, |r| {
        r.map(|m| m.event.unwrap())
    }));
    let Some(wrenn_proto::process::process_event::Event::Start(started)) = next(&mut slow).await
    else {
        panic!("no start event")
    };
    // The slow client reads nothing now. Its process fills every buffer and
    // blocks on write; everyone else carries on.
    eventually("seq blocks on its full stdout", || {
        std::fs::read_to_string(format!("/proc/{}/stat", started.pid)).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('S'))
        })
    })
    .await;
    for i in 0..20 {
        let out = run(&agent, sh(&format!("echo fast-{i}"))).await;
        assert_eq!(out.stdout_str(), format!("fast-{i}\n"));
    }
    assert!(
        alive(started.pid),
        "seq finished although nobody read its output"
    );
    // Back pressure, not loss: everything arrives, in order, once read.
    let out = collect_rest(slow, started.pid).await;
    assert_eq!(out.end().exit_code, 0);
    let text = out.stdout_str();
    let mut expected = 1u32;
    for line in text.lines() {
        assert_eq!(
            line.parse::<u32>().unwrap(),
            expected,
            "output lost or reordered"
        );
        expected += 1;
    }
    assert_eq!(expected, 8_000_001);
}
