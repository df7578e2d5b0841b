//! PTY: sizes, resize, echo, ^C, a full-screen program, TERM.

use wrenn_proto::process::{Pty, UpdateRequest, pty};

use crate::common::*;

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn stty_size_shows_the_start_size_and_the_size_after_update() {
    let agent = Agent::start().await;
    let mut shell = Session::start(&agent, with_pty(cmd("/bin/sh", &[]), 100, 30)).await;
    let pid = shell.pid();
    agent
        .process()
        .send_input(pty_input(pid, b"stty size; echo $TERM; tty\n"))
        .await
        .unwrap();
    let at = shell.expect(0, "30 100").await;
    let at = shell.expect(at, "xterm-256color").await;
    let at = shell.expect(at, "/dev/pts/").await;
    let update = UpdateRequest {
        process: by_pid(pid),
        pty: Some(Pty {
            size: Some(pty::Size {
                cols: 132,
                rows: 50,
            }),
        }),
    };
    agent.process().update(update).await.unwrap();
    agent
        .process()
        .send_input(pty_input(pid, b"stty size\n"))
        .await
        .unwrap();
    shell.expect(at, "50 132").await;
    agent
        .process()
        .send_input(pty_input(pid, b"exit 7\n"))
        .await
        .unwrap();
    let out = shell.finish().await;
    assert_eq!(out.end().exit_code, 7);
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "PTY output must arrive as `pty` data"
    );
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn typed_input_echoes() {
    let agent = Agent::start().await;
    let mut cat = Session::start(&agent, with_pty(cmd("cat", &[]), 80, 24)).await;
    let pid = cat.pid();
    // The terminal echoes what is typed before any newline reaches `cat`.
    agent
        .process()
        .send_input(pty_input(pid, b"hello"))
        .await
        .unwrap();
    let at = cat.expect(0, "hello").await;
    agent
        .process()
        .send_input(pty_input(pid, b"\n"))
        .await
        .unwrap();
    // Echo of the newline, then cat's copy of the line.
    cat.expect(at, "hello\r\n").await;
    agent
        .process()
        .send_input(pty_input(pid, &[0x04]))
        .await
        .unwrap();
    let out = cat.finish().await;
    assert_eq!(out.end().exit_code, 0);
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn ctrl_c_interrupts_sleep() {
    let agent = Agent::start().await;
    let sleep = Session::start(&agent, with_pty(cmd("sleep", &["100"]), 80, 24)).await;
    agent
        .process()
        .send_input(pty_input(sleep.pid(), &[0x03]))
        .await
        .unwrap();
    let out = sleep.finish().await;
    let end = out.end();
    assert_eq!(
        (end.exit_code, end.exited, end.status.as_str()),
        (130, false, "signal: interrupt")
    );
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_full_screen_editor_runs_and_quits() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("note.txt");
    let agent = Agent::start().await;
    let vi = with_pty(cmd("busybox", &["vi", file.to_str().unwrap()]), 80, 24);
    let mut vi = Session::start(&agent, vi).await;
    // Full-screen: cursor positioning / clearing escape sequences.
    let at = vi.expect(0, "\x1b[").await;
    agent
        .process()
        .send_input(pty_input(vi.pid(), b"ihello from vi"))
        .await
        .unwrap();
    let at = vi.expect(at, "hello from vi").await;
    // ESC alone: vi waits briefly after an ESC for the rest of an escape
    // sequence, so the command must not follow in the same read. Back in command
    // mode, vi redraws its status line, now marked modified.
    agent
        .process()
        .send_input(pty_input(vi.pid(), b"\x1b"))
        .await
        .unwrap();
    vi.expect(at, "[Modified]").await;
    agent
        .process()
        .send_input(pty_input(vi.pid(), b":wq\r"))
        .await
        .unwrap();
    let out = vi.finish().await;
    assert_eq!(out.end().exit_code, 0, "vi output: {:?}", out.pty_str());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello from vi\n");
}
