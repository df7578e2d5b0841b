//! Exec and ExecStream through the agent to real guest processes.

mod common;

use std::time::Duration;

use common::*;
use tonic::Code;
use wrenn_proto::process::process_event::{Event, data_event::Output};
use wrenn_proto::wrenn::v1 as pb;

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn exec_reports_exit_code_stdout_and_stderr() {
    let mut h = Harness::start().await;
    let sb = h.create().await;
    let r = h
        .client
        .exec(sh(&sb.id, "echo out; echo err >&2; exit 3"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.stdout, b"out\n");
    assert_eq!(r.stderr, b"err\n");
    assert_eq!(r.exit_code, 3);
    assert!(r.exited);
    assert_eq!(r.status, "exit status 3");
    assert!(!r.truncated);
    assert!(r.pid > 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn exec_passes_env_cwd_and_user() {
    let mut h = Harness::start().await;
    let spec = pb::SandboxSpec {
        env: [("SANDBOX_WIDE".to_string(), "from-spec".to_string())].into(),
        ..Default::default()
    };
    let sb = h.create_spec(spec).await;
    let mut start = start("sh", &["-c", "echo $SANDBOX_WIDE $PER_CALL; pwd; id -un"]);
    let p = start.process.as_mut().unwrap();
    p.envs.insert("PER_CALL".into(), "from-call".into());
    p.cwd = Some("/tmp".into());
    start.user = Some("nobody".into());
    let r = h
        .client
        .exec(exec_req(&sb.id, start))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "from-spec from-call\n/tmp\nnobody\n",
        "stderr: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(r.exit_code, 0);

    // An unknown user is the guest's clear error, passed through.
    let mut start = common::start("true", &[]);
    start.user = Some("no-such-user-here".into());
    let e = h.client.exec(exec_req(&sb.id, start)).await.unwrap_err();
    assert!(e.message().contains("no-such-user-here"), "{e:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn exec_truncates_at_the_limit_and_says_so() {
    let mut h = Harness::start().await;
    let sb = h.create().await;
    // 1 MiB of output, 100 000 bytes kept.
    let mut req = sh(&sb.id, "head -c 1048576 /dev/zero; echo tail >&2");
    req.output_limit = 100_000;
    let r = h.client.exec(req).await.unwrap().into_inner();
    assert!(r.truncated);
    assert_eq!(r.stdout.len() + r.stderr.len(), 100_000);
    assert_eq!(r.exit_code, 0, "the process ran to its end");

    // Just under the limit: not truncated.
    let mut req = sh(&sb.id, "head -c 1000 /dev/zero");
    req.output_limit = 1000;
    let r = h.client.exec(req).await.unwrap().into_inner();
    assert!(!r.truncated);
    assert_eq!(r.stdout.len(), 1000);

    // The default limit (16 MiB) keeps 4 MiB whole.
    let r = h
        .client
        .exec(sh(&sb.id, "head -c 4194304 /dev/zero"))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.truncated);
    assert_eq!(r.stdout.len(), 4 << 20);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn exec_timeout_kills_the_process() {
    let mut h = Harness::start().await;
    let sb = h.create().await;
    let mut req = sh(&sb.id, "echo started; sleep 60");
    req.timeout_secs = 1;
    let r = tokio::time::timeout(T, h.client.exec(req))
        .await
        .expect("killed in time")
        .unwrap()
        .into_inner();
    assert_eq!(r.stdout, b"started\n");
    assert!(!r.exited);
    assert_eq!(r.exit_code, 128 + 9, "{}", r.status);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn exec_refuses_bad_requests_by_name() {
    let mut h = Harness::start().await;
    let sb = h.create().await;
    let e = h
        .client
        .exec(exec_req(&sb.id, start("", &[])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "start.process.cmd: empty command");

    let e = h
        .client
        .exec(exec_req("NOPE", start("true", &[])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .starts_with("sandbox_id: invalid sandbox id \"NOPE\""),
        "{}",
        e.message()
    );

    let e = h
        .client
        .exec(exec_req("missing1", start("true", &[])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "sandbox missing1 not found");

    let mut req = sh(&sb.id, "true");
    req.output_limit = u64::MAX;
    let e = h.client.exec(req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("output_limit: "), "{}", e.message());

    let e = h
        .client
        .exec(exec_req(&sb.id, start("/no/such/binary", &[])))
        .await
        .unwrap_err();
    assert!(e.message().contains("/no/such/binary"), "{e:?}");

    // The service keeps serving after all that.
    assert_eq!(h.exec(&sb.id, "true", &[]).await.exit_code, 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn exec_stream_relays_events_in_order() {
    let mut h = Harness::start().await;
    let sb = h.create().await;
    let mut s = h
        .client
        .exec_stream(sh(
            &sb.id,
            "for i in 1 2 3; do echo line$i; done; echo oops >&2; exit 7",
        ))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut s, T).await.unwrap().unwrap();
    assert!(
        matches!(first.event, Some(Event::Start(ref st)) if st.pid > 0),
        "{first:?}"
    );
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let end = loop {
        match next(&mut s, T)
            .await
            .expect("stream continues")
            .unwrap()
            .event
        {
            Some(Event::Data(d)) => match d.output {
                Some(Output::Stdout(b)) => out.extend_from_slice(&b),
                Some(Output::Stderr(b)) => err.extend_from_slice(&b),
                other => panic!("unexpected output {other:?}"),
            },
            Some(Event::End(e)) => break e,
            Some(Event::Keepalive(_)) => {}
            other => panic!("unexpected event {other:?}"),
        }
    };
    assert_eq!(out, b"line1\nline2\nline3\n");
    assert_eq!(err, b"oops\n");
    assert_eq!(end.exit_code, 7);
    assert!(
        next(&mut s, T).await.is_none(),
        "stream ends after the end event"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn exec_stream_carries_more_output_than_the_relay_holds() {
    // 64 MiB through a relay of 256 messages: the stream must flow, not pile up.
    let mut h = Harness::start().await;
    let sb = h.create().await;
    let mut s = h
        .client
        .exec_stream(sh(&sb.id, "head -c 67108864 /dev/zero"))
        .await
        .unwrap()
        .into_inner();
    let mut total = 0usize;
    loop {
        match next(&mut s, Duration::from_secs(30))
            .await
            .expect("more")
            .unwrap()
            .event
        {
            Some(Event::Data(d)) => {
                if let Some(Output::Stdout(b)) = d.output {
                    total += b.len();
                }
            }
            Some(Event::End(e)) => {
                assert_eq!(e.exit_code, 0);
                break;
            }
            _ => {}
        }
    }
    assert_eq!(total, 64 << 20);
    h.shutdown().await;
}
