//! Background processes through the agent: start, list, connect, input, kill.

mod common;

use std::time::Duration;

use common::*;
use tonic::Code;
use wrenn_proto::process::{
    self as pp,
    process_event::{Event, data_event::Output},
    process_selector::Selector,
};
use wrenn_proto::wrenn::v1 as pb;

const T: Duration = Duration::from_secs(15);

fn tag(t: &str) -> Option<pp::ProcessSelector> {
    Some(pp::ProcessSelector {
        selector: Some(Selector::Tag(t.into())),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn background_start_list_connect_input_kill() {
    let mut h = Harness::start().await;
    let sb = h.create().await;
    let mut st = start("sh", &["-c", "while read l; do echo got:$l; done"]);
    st.tag = Some("echoer".into());
    st.stdin = Some(true);
    let pid = h
        .client
        .start_background(pb::StartBackgroundRequest {
            sandbox_id: sb.id.clone(),
            start: Some(st),
        })
        .await
        .unwrap()
        .into_inner()
        .pid;
    assert!(pid > 0);

    let list = h
        .client
        .list_processes(pb::SandboxRef {
            sandbox_id: sb.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let p = list
        .processes
        .iter()
        .find(|p| p.pid == pid)
        .expect("listed");
    assert_eq!(p.tag.as_deref(), Some("echoer"));
    assert_eq!(p.config.as_ref().unwrap().cmd, "sh");

    let mut events = h
        .client
        .connect_process(pb::ConnectProcessRequest {
            sandbox_id: sb.id.clone(),
            process: tag("echoer"),
        })
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut events, T).await.unwrap().unwrap();
    assert!(
        matches!(first.event, Some(Event::Start(ref s)) if s.pid == pid),
        "{first:?}"
    );

    h.client
        .send_input(pb::SendInputRequest {
            sandbox_id: sb.id.clone(),
            input: Some(pp::SendInputRequest {
                process: tag("echoer"),
                input: Some(pp::ProcessInput {
                    input: Some(pp::process_input::Input::Stdin(b"hi\n".to_vec())),
                }),
            }),
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    while !out.ends_with(b"got:hi\n") {
        match next(&mut events, T).await.unwrap().unwrap().event {
            Some(Event::Data(d)) => {
                if let Some(Output::Stdout(b)) = d.output {
                    out.extend_from_slice(&b);
                }
            }
            Some(Event::Keepalive(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    h.client
        .kill_process(pb::KillProcessRequest {
            sandbox_id: sb.id.clone(),
            process: Some(pp::ProcessSelector {
                selector: Some(Selector::Pid(pid)),
            }),
            signal: pp::Signal::Sigterm as i32,
        })
        .await
        .unwrap();
    let end = loop {
        match next(&mut events, T)
            .await
            .expect("end event")
            .unwrap()
            .event
        {
            Some(Event::End(e)) => break e,
            _ => continue,
        }
    };
    assert_eq!(end.exit_code, 128 + 15);
    let list = h
        .client
        .list_processes(pb::SandboxRef {
            sandbox_id: sb.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(list.processes.iter().all(|p| p.pid != pid), "{list:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn kill_defaults_to_sigkill_and_bad_selectors_are_named() {
    let mut h = Harness::start().await;
    let sb = h.create().await;
    let mut st = start("sh", &["-c", "trap '' TERM; sleep 600"]);
    st.tag = Some("stubborn".into());
    let pid = h
        .client
        .start_background(pb::StartBackgroundRequest {
            sandbox_id: sb.id.clone(),
            start: Some(st),
        })
        .await
        .unwrap()
        .into_inner()
        .pid;
    let mut events = h
        .client
        .connect_process(pb::ConnectProcessRequest {
            sandbox_id: sb.id.clone(),
            process: tag("stubborn"),
        })
        .await
        .unwrap()
        .into_inner();
    h.client
        .kill_process(pb::KillProcessRequest {
            sandbox_id: sb.id.clone(),
            process: tag("stubborn"),
            signal: 0,
        })
        .await
        .unwrap();
    let end = loop {
        match next(&mut events, T).await.expect("end").unwrap().event {
            Some(Event::End(e)) => break e,
            _ => continue,
        }
    };
    assert_eq!(end.exit_code, 128 + 9, "pid {pid}: {end:?}");

    let e = h
        .client
        .kill_process(pb::KillProcessRequest {
            sandbox_id: sb.id.clone(),
            process: None,
            signal: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "process: a pid or a tag is required");
    let e = h
        .client
        .kill_process(pb::KillProcessRequest {
            sandbox_id: sb.id.clone(),
            process: tag("x"),
            signal: 77,
        })
        .await
        .unwrap_err();
    assert_eq!(e.message(), "signal: 77 is not a known signal");
    let e = h
        .client
        .connect_process(pb::ConnectProcessRequest {
            sandbox_id: sb.id.clone(),
            process: tag("nobody-has-this-tag"),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    h.shutdown().await;
}
