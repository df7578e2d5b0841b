//! Bad input: each request fails with a clear error naming what and where, and
//! the agent keeps serving afterwards.

use tonic::Code;
use wrenn_proto::filesystem::{
    ListDirRequest, MakeDirRequest, MoveRequest, ReadRequest, RemoveRequest, StatRequest,
    WatchDirRequest, WriteRequest, write_request,
};
use wrenn_proto::process::process_event::Event;
use wrenn_proto::process::{
    CloseStdinRequest, ConnectRequest, Pty, SendSignalRequest, StreamInputRequest, UpdateRequest,
    pty, stream_input_request,
};

use crate::common::*;

async fn stat_err(agent: &Agent, path: &str) -> tonic::Status {
    agent
        .fs()
        .stat(StatRequest { path: path.into() })
        .await
        .unwrap_err()
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn relative_and_escaping_paths_are_rejected() {
    let agent = Agent::start().await;
    assert_code(
        &stat_err(&agent, "tmp/x").await,
        Code::InvalidArgument,
        "\"tmp/x\" is not absolute",
    );
    assert_code(
        &stat_err(&agent, "/tmp/../etc/passwd").await,
        Code::InvalidArgument,
        "\"/tmp/../etc/passwd\"",
    );
    assert_code(
        &stat_err(&agent, "").await,
        Code::InvalidArgument,
        "path is empty",
    );
    let mut fs = agent.fs();
    let err = fs
        .list_dir(ListDirRequest {
            path: "relative".into(),
            depth: 1,
        })
        .await
        .unwrap_err();
    assert_code(&err, Code::InvalidArgument, "\"relative\"");
    let err = fs
        .make_dir(MakeDirRequest {
            path: "/a/../../b".into(),
        })
        .await
        .unwrap_err();
    assert_code(&err, Code::InvalidArgument, "`..`");
    let err = fs
        .remove(RemoveRequest {
            path: "../x".into(),
        })
        .await
        .unwrap_err();
    assert_code(&err, Code::InvalidArgument, "\"../x\"");
    let err = fs
        .r#move(MoveRequest {
            source: "/tmp/a".into(),
            destination: "b".into(),
        })
        .await
        .unwrap_err();
    assert_code(&err, Code::InvalidArgument, "destination: path \"b\"");
    let err = fs
        .read(ReadRequest {
            path: "/x/../../etc/shadow".into(),
        })
        .await
        .unwrap_err();
    assert_code(&err, Code::InvalidArgument, "\"/x/../../etc/shadow\"");
    let err = fs
        .watch_dir(WatchDirRequest {
            path: "tmp".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_code(&err, Code::InvalidArgument, "\"tmp\"");
    let start = WriteRequest {
        event: Some(write_request::Event::Start(write_request::StartEvent {
            path: "uploads/f.txt".into(),
            mode: None,
            owner: None,
            size: None,
        })),
    };
    let err = fs.write(tokio_stream::iter(vec![start])).await.unwrap_err();
    assert_code(
        &err,
        Code::InvalidArgument,
        "start.path: path \"uploads/f.txt\"",
    );
    let mut req = cmd("ls", &[]);
    req.process.as_mut().unwrap().cwd = Some("home/user".into());
    assert_code(
        &start_err(&agent, req).await,
        Code::InvalidArgument,
        "process.cwd: path \"home/user\"",
    );
    let err = fs
        .remove(RemoveRequest { path: "/".into() })
        .await
        .unwrap_err();
    assert_code(&err, Code::InvalidArgument, "refusing to remove /");
    agent.assert_serving().await;
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn unknown_users_are_named() {
    let agent = Agent::start().await;
    let mut req = cmd("id", &[]);
    req.user = Some("no-such-user-xyz".into());
    assert_code(
        &start_err(&agent, req).await,
        Code::InvalidArgument,
        "\"no-such-user-xyz\"",
    );
    let start = WriteRequest {
        event: Some(write_request::Event::Start(write_request::StartEvent {
            path: "/tmp/wrenn-guest-owner-test".into(),
            mode: None,
            owner: Some("ghost-owner".into()),
            size: None,
        })),
    };
    let err = agent
        .fs()
        .write(tokio_stream::iter(vec![start]))
        .await
        .unwrap_err();
    assert_code(&err, Code::InvalidArgument, "\"ghost-owner\"");
    assert!(!std::path::Path::new("/tmp/wrenn-guest-owner-test").exists());
    agent.assert_serving().await;
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn zero_and_absurd_pty_sizes_are_rejected() {
    let agent = Agent::start().await;
    for (cols, rows) in [(0, 24), (80, 0), (100_000, 100_000)] {
        let status = start_err(&agent, with_pty(cmd("sh", &[]), cols, rows)).await;
        assert_code(
            &status,
            Code::InvalidArgument,
            &format!("pty size {cols}x{rows}"),
        );
    }
    let shell = Session::start(&agent, with_pty(cmd("sh", &[]), 80, 24)).await;
    let update = |cols, rows| UpdateRequest {
        process: by_pid(shell.pid()),
        pty: Some(Pty {
            size: Some(pty::Size { cols, rows }),
        }),
    };
    let err = agent.process().update(update(0, 0)).await.unwrap_err();
    assert_code(&err, Code::InvalidArgument, "0x0");
    let err = agent
        .process()
        .update(update(70_000, 24))
        .await
        .unwrap_err();
    assert_code(&err, Code::InvalidArgument, "70000x24");
    let err = agent
        .process()
        .update(UpdateRequest {
            process: by_pid(shell.pid()),
            pty: None,
        })
        .await
        .unwrap_err();
    assert_code(&err, Code::InvalidArgument, "pty.size is required");
    agent
        .process()
        .send_input(pty_input(shell.pid(), b"exit\n"))
        .await
        .unwrap();
    assert_eq!(shell.finish().await.end().exit_code, 0);
    agent.assert_serving().await;
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn unknown_selectors_are_not_found() {
    let agent = Agent::start().await;
    let mut p = agent.process();
    for (selector, needle) in [
        (by_pid(999_999_999), "no process with pid 999999999"),
        (by_tag("nope"), "no process with tag \"nope\""),
    ] {
        let err = p
            .connect(ConnectRequest {
                process: selector.clone(),
            })
            .await
            .unwrap_err();
        assert_code(&err, Code::NotFound, needle);
        let mut input = stdin_input(0, b"x");
        input.process = selector.clone();
        assert_code(
            &p.send_input(input).await.unwrap_err(),
            Code::NotFound,
            needle,
        );
        let signal = SendSignalRequest {
            process: selector.clone(),
            signal: 15,
        };
        assert_code(
            &p.send_signal(signal).await.unwrap_err(),
            Code::NotFound,
            needle,
        );
        let update = UpdateRequest {
            process: selector.clone(),
            pty: Some(Pty {
                size: Some(pty::Size { cols: 80, rows: 24 }),
            }),
        };
        assert_code(&p.update(update).await.unwrap_err(), Code::NotFound, needle);
        let close = CloseStdinRequest {
            process: selector.clone(),
        };
        assert_code(
            &p.close_stdin(close).await.unwrap_err(),
            Code::NotFound,
            needle,
        );
    }
    let err = p
        .connect(ConnectRequest { process: None })
        .await
        .unwrap_err();
    assert_code(&err, Code::InvalidArgument, "selector is required");
    agent.assert_serving().await;
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn pty_operations_on_a_pipe_process_and_other_misuse() {
    let agent = Agent::start().await;
    let mut events = start(&agent, cmd("cat", &[])).await;
    let Some(Event::Start(started)) = next(&mut events).await else {
        panic!("no start")
    };
    let pid = started.pid;
    let mut p = agent.process();
    let update = UpdateRequest {
        process: by_pid(pid),
        pty: Some(Pty {
            size: Some(pty::Size { cols: 80, rows: 24 }),
        }),
    };
    assert_code(
        &p.update(update).await.unwrap_err(),
        Code::FailedPrecondition,
        &format!("process {pid} has no PTY"),
    );
    assert_code(
        &p.send_input(pty_input(pid, b"x")).await.unwrap_err(),
        Code::FailedPrecondition,
        "has no PTY",
    );
    let bad_signal = SendSignalRequest {
        process: by_pid(pid),
        signal: 7,
    };
    assert_code(
        &p.send_signal(bad_signal).await.unwrap_err(),
        Code::InvalidArgument,
        "signal 7",
    );
    let no_start = StreamInputRequest {
        event: Some(stream_input_request::Event::Keepalive(
            stream_input_request::KeepAlive {},
        )),
    };
    let err = p
        .stream_input(tokio_stream::iter(vec![no_start]))
        .await
        .unwrap_err();
    assert_code(&err, Code::InvalidArgument, "must be `start`");
    p.close_stdin(CloseStdinRequest {
        process: by_pid(pid),
    })
    .await
    .unwrap();
    assert_eq!(collect_rest(events, pid).await.end().exit_code, 0);
    // Input to a process that has ended.
    let err = p.send_input(stdin_input(pid, b"late")).await.unwrap_err();
    assert_code(&err, Code::FailedPrecondition, "has already ended");
    agent.assert_serving().await;
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn bad_commands_and_files() {
    let agent = Agent::start().await;
    assert_code(
        &start_err(&agent, cmd("", &[])).await,
        Code::InvalidArgument,
        "process.cmd is empty",
    );
    let status = start_err(&agent, cmd("definitely-not-a-program", &[])).await;
    assert_code(&status, Code::NotFound, "\"definitely-not-a-program\"");
    let mut req = cmd("ls", &[]);
    req.process.as_mut().unwrap().cwd = Some("/definitely/missing".into());
    assert_code(
        &start_err(&agent, req).await,
        Code::InvalidArgument,
        "/definitely/missing: does not exist",
    );
    // Not executable: even root gets EACCES from exec.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let status = start_err(&agent, cmd(script.to_str().unwrap(), &[])).await;
    assert_code(&status, Code::PermissionDenied, "not-executable.sh");
    let mut fs = agent.fs();
    let err = fs
        .read(ReadRequest {
            path: "/tmp".into(),
        })
        .await
        .unwrap_err();
    assert_code(&err, Code::FailedPrecondition, "read /tmp: is a directory");
    let err = fs
        .read(ReadRequest {
            path: "/definitely/missing".into(),
        })
        .await
        .unwrap_err();
    assert_code(&err, Code::NotFound, "/definitely/missing");
    let err = fs
        .list_dir(ListDirRequest {
            path: "/etc/hostname".into(),
            depth: 1,
        })
        .await
        .unwrap_err();
    assert_code(&err, Code::FailedPrecondition, "not a directory");
    let data_first = WriteRequest {
        event: Some(write_request::Event::Data(b"x".to_vec())),
    };
    let err = fs
        .write(tokio_stream::iter(vec![data_first]))
        .await
        .unwrap_err();
    assert_code(&err, Code::InvalidArgument, "must be `start`");
    agent.assert_serving().await;
}
