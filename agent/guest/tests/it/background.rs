//! Background processes: tags, detach, List, re-attach, signals, end status.

use wrenn_proto::process::process_event::Event;
use wrenn_proto::process::{ListRequest, SendSignalRequest, Signal};

use crate::common::*;

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn detach_list_reattach_signal_and_learn_the_end() {
    let agent = Agent::start().await;
    let tag = "bg-ticker";
    // Prints a numbered line every 50 ms until stopped.
    let mut req = sh("i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.05; done");
    req.tag = Some(tag.into());
    let mut first = start(&agent, req).await;
    let Some(Event::Start(started)) = next(&mut first).await else {
        panic!("no start")
    };
    let pid = started.pid;
    drop(first);

    let listed = agent
        .process()
        .list(ListRequest {})
        .await
        .unwrap()
        .into_inner();
    let info = listed
        .processes
        .iter()
        .find(|p| p.pid == pid)
        .expect("List does not show the process");
    assert_eq!(info.tag.as_deref(), Some(tag));
    assert_eq!(info.config.as_ref().unwrap().cmd, "/bin/sh");

    // Re-attach by tag: start event, then output produced from now on.
    let mut attached = attach(&agent, by_tag(tag)).await;
    let mut out = Collected::default();
    out.add(next(&mut attached).await.unwrap());
    assert_eq!(out.pid, pid);
    while !out.stdout_str().contains("tick-") {
        out.add(next(&mut attached).await.unwrap());
    }
    // A second client by pid sees output at the same time.
    let mut second = attach(&agent, by_pid(pid)).await;
    let mut out2 = Collected::default();
    out2.add(next(&mut second).await.unwrap());
    while !out2.stdout_str().contains("tick-") {
        out2.add(next(&mut second).await.unwrap());
    }

    let term = SendSignalRequest {
        process: by_tag(tag),
        signal: Signal::Sigterm as i32,
    };
    agent.process().send_signal(term).await.unwrap();
    let rest = collect_rest(attached, pid).await;
    assert_eq!(rest.end().status, "signal: terminated");
    assert_eq!(rest.end().exit_code, 143);
    let rest2 = collect_rest(second, pid).await;
    assert_eq!(rest2.end(), rest.end());

    // Gone from List, but a reconnect still learns how it ended.
    let listed = agent
        .process()
        .list(ListRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.processes.iter().all(|p| p.pid != pid),
        "ended process still listed"
    );
    for selector in [by_tag(tag), by_pid(pid)] {
        let late = collect(attach(&agent, selector).await).await;
        assert_eq!(late.pid, pid);
        assert_eq!(late.end().exit_code, 143);
        assert!(late.stdout.is_empty());
    }
    eventually("the process group is gone", || !alive(pid)).await;
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_tag_names_one_running_process() {
    let agent = Agent::start().await;
    let mut req = cmd("sleep", &["100"]);
    req.tag = Some("only-one".into());
    let mut events = start(&agent, req.clone()).await;
    let Some(Event::Start(started)) = next(&mut events).await else {
        panic!("no start")
    };
    let status = start_err(&agent, req.clone()).await;
    assert_code(&status, tonic::Code::AlreadyExists, "\"only-one\"");
    let kill = SendSignalRequest {
        process: by_pid(started.pid),
        signal: Signal::Sigkill as i32,
    };
    agent.process().send_signal(kill).await.unwrap();
    collect_rest(events, started.pid).await;
    // Reusable once the first one ended; the tag then names the new process.
    req.process.as_mut().unwrap().args = vec!["0".into()];
    let again = run(&agent, req).await;
    assert_eq!(again.end().exit_code, 0);
    let late = collect(attach(&agent, by_tag("only-one")).await).await;
    assert_eq!(late.pid, again.pid);
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn orphans_of_processes_are_reaped() {
    let agent = Agent::start().await;
    // The shell exits at once; its two children are orphaned and reparented to
    // the agent (a child subreaper when not PID 1), which must reap them.
    let out = run(&agent, sh("sleep 2 & sleep 2 & echo $!")).await;
    let orphan: u32 = out.stdout_str().trim().parse().unwrap();
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    // The shell has exited (its end event arrived), so the orphan has moved.
    assert_eq!(
        parent_of(orphan),
        Some(agent.pid()),
        "orphan not reparented to the agent"
    );
    eventually("the orphan is reaped, not left a zombie", || !alive(orphan)).await;
}
