//! Exec: output, exit codes, environment, working directory, users, volume, stdin.

use std::collections::HashMap;
use std::io::Write as _;

use sha2::{Digest as _, Sha256};
use tokio_stream::StreamExt as _;
use wrenn_proto::process::process_event::Event;
use wrenn_proto::process::{
    CloseStdinRequest, ProcessInput, SendSignalRequest, Signal, StreamInputRequest, process_input,
    stream_input_request,
};

use crate::common::*;

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn stdout_stderr_and_exit_codes() {
    let agent = Agent::start().await;
    let out = run(&agent, sh("echo out; echo err >&2; printf 'no newline'")).await;
    assert_eq!(out.stdout, b"out\nno newline");
    assert_eq!(out.stderr, b"err\n");
    let end = out.end();
    assert_eq!(
        (end.exit_code, end.exited, end.status.as_str()),
        (0, true, "exit status 0")
    );
    assert!(out.pid > 0);

    let out = run(&agent, sh("exit 1")).await;
    assert_eq!((out.end().exit_code, out.end().exited), (1, true));
    assert_eq!(out.end().status, "exit status 1");

    let out = run(&agent, cmd("false", &[])).await;
    assert_eq!(out.end().exit_code, 1);
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn killed_process_ends_with_137() {
    let agent = Agent::start().await;
    let mut events = start(&agent, cmd("sleep", &["100"])).await;
    let Some(Event::Start(started)) = next(&mut events).await else {
        panic!("no start event")
    };
    let signal = SendSignalRequest {
        process: by_pid(started.pid),
        signal: Signal::Sigkill as i32,
    };
    agent.process().send_signal(signal).await.unwrap();
    let out = collect_rest(events, started.pid).await;
    let end = out.end();
    assert_eq!(
        (end.exit_code, end.exited, end.status.as_str()),
        (137, false, "signal: killed")
    );
    eventually("the killed process is reaped", || !alive(started.pid)).await;
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn environment_is_inherited_merged_and_cleaned() {
    let agent = Agent::builder()
        .env("SANDBOX_SETTING", "from-runtime")
        .env("WRENN_GUEST_KEEPALIVE_SECS", "30")
        .env_remove("PATH")
        .env("TERM", "dumb")
        .start()
        .await;
    let mut req = cmd("/usr/bin/env", &[]);
    req.process.as_mut().unwrap().envs = HashMap::from([("FOO".into(), "bar baz".into())]);
    let out = run(&agent, req).await;
    let env: HashMap<String, String> = out
        .stdout_str()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    assert_eq!(env.get("FOO").map(String::as_str), Some("bar baz"));
    assert_eq!(
        env.get("SANDBOX_SETTING").map(String::as_str),
        Some("from-runtime")
    );
    assert!(
        !env.keys().any(|k| k.starts_with("WRENN_GUEST_")),
        "agent settings leaked: {env:?}"
    );
    assert_eq!(env.get("USER").map(String::as_str), Some("root"));
    assert_eq!(env.get("LOGNAME").map(String::as_str), Some("root"));
    assert_eq!(env.get("HOME").map(String::as_str), Some("/root"));
    assert!(env.contains_key("SHELL"));
    assert_eq!(
        env.get("PATH").map(String::as_str),
        Some("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    );
    // Without a PTY, TERM is whatever the sandbox environment says.
    assert_eq!(env.get("TERM").map(String::as_str), Some("dumb"));
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn cwd_defaults_to_home_and_can_be_set() {
    let agent = Agent::start().await;
    let out = run(&agent, cmd("pwd", &[])).await;
    assert_eq!(out.stdout_str(), "/root\n");
    let dir = tempfile::tempdir().unwrap();
    let mut req = cmd("pwd", &[]);
    req.process.as_mut().unwrap().cwd = Some(dir.path().to_str().unwrap().into());
    let out = run(&agent, req).await;
    assert_eq!(out.stdout_str(), format!("{}\n", dir.path().display()));
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn runs_as_a_non_root_user() {
    let user = TestUser::create("exec");
    let agent = Agent::start().await;
    let mut req =
        sh("id -u; id -g; id -Gn; echo $HOME; echo $USER; pwd; touch mine; stat -c %U mine");
    req.user = Some(user.name.clone());
    let out = run(&agent, req).await;
    assert_eq!(
        out.end().exit_code,
        0,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = out.stdout_str().lines().map(str::to_owned).collect();
    assert_eq!(lines[0], user.uid().to_string());
    assert_eq!(lines[1], user.gid().to_string());
    assert!(
        lines[2].split(' ').any(|g| g == user.group),
        "supplementary group missing: {}",
        lines[2]
    );
    assert_eq!(lines[3], user.home.to_str().unwrap());
    assert_eq!(lines[4], user.name);
    assert_eq!(lines[5], user.home.to_str().unwrap());
    assert_eq!(lines[6], user.name);
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn fifty_megabytes_arrive_complete_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payload");
    let mut expected = Sha256::new();
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        // Every 16-byte record is distinct, so reordering or loss changes the hash.
        for i in 0..(50u64 << 20) / 16 {
            let record = format!("{i:015x}\n");
            expected.update(record.as_bytes());
            file.write_all(record.as_bytes()).unwrap();
        }
    }
    let agent = Agent::start().await;
    let mut events = start(&agent, cmd("cat", &[path.to_str().unwrap()])).await;
    let mut got = Sha256::new();
    let mut len = 0usize;
    let mut end = None;
    while let Some(event) = next(&mut events).await {
        match event {
            Event::Data(data) => {
                let Some(wrenn_proto::process::process_event::data_event::Output::Stdout(bytes)) =
                    data.output
                else {
                    panic!("unexpected output kind")
                };
                assert!(bytes.len() <= 64 * 1024, "chunk of {} bytes", bytes.len());
                len += bytes.len();
                got.update(&bytes);
            }
            Event::End(e) => end = Some(e),
            _ => {}
        }
    }
    assert_eq!(len, 50 << 20);
    assert_eq!(got.finalize(), expected.finalize());
    assert_eq!(end.unwrap().exit_code, 0);
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn stdin_by_send_input_and_stream_input_then_close() {
    let agent = Agent::start().await;
    let mut session = start(&agent, cmd("cat", &[])).await;
    let Some(Event::Start(started)) = next(&mut session).await else {
        panic!("no start")
    };
    let pid = started.pid;
    agent
        .process()
        .send_input(stdin_input(pid, b"first\n"))
        .await
        .unwrap();
    // Ordered input from a client stream.
    let lines: Vec<StreamInputRequest> = std::iter::once(stream_input_request::Event::Start(
        stream_input_request::StartEvent {
            process: by_pid(pid),
        },
    ))
    .chain((0..500).map(|i| {
        stream_input_request::Event::Data(stream_input_request::DataEvent {
            input: Some(ProcessInput {
                input: Some(process_input::Input::Stdin(
                    format!("line {i}\n").into_bytes(),
                )),
            }),
        })
    }))
    .map(|event| StreamInputRequest { event: Some(event) })
    .collect();
    agent
        .process()
        .stream_input(tokio_stream::iter(lines))
        .await
        .unwrap();
    agent
        .process()
        .close_stdin(CloseStdinRequest {
            process: by_pid(pid),
        })
        .await
        .unwrap();
    let mut out = Collected {
        pid,
        ..Default::default()
    };
    while let Some(event) = session.next().await {
        out.add(event.unwrap().event.unwrap());
    }
    let expected: String = std::iter::once("first\n".to_owned())
        .chain((0..500).map(|i| format!("line {i}\n")))
        .collect();
    assert_eq!(out.stdout_str(), expected);
    assert_eq!(out.end().exit_code, 0);
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn idle_streams_carry_keepalives() {
    let agent = Agent::builder()
        .arg("--keepalive-secs")
        .arg("1")
        .start()
        .await;
    let out = run(&agent, cmd("sleep", &["2.5"])).await;
    assert!(
        out.keepalives >= 1,
        "no keepalive in 2.5 s with a 1 s interval"
    );
    assert_eq!(out.end().exit_code, 0);
}
