//! The agent's own life: health, SIGTERM, and running as PID 1 in a
//! busybox-only root.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn health_is_serving_for_every_service() {
    let agent = Agent::start().await;
    agent.assert_serving().await;
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_console_nobody_reads_does_not_stop_the_agent() {
    // Every call logs at debug level, and every log line meets a broken pipe.
    let agent = Agent::builder()
        .log_level("debug")
        .broken_stderr()
        .start()
        .await;
    for _ in 0..3 {
        agent.assert_serving().await;
    }
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn sigterm_stops_process_groups_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("got-term");
    let mut agent = Agent::start().await;
    let polite = format!(
        "trap 'echo term > {}; exit 0' TERM; echo ready; while :; do sleep 0.05; done",
        marker.display()
    );
    let (polite_pid, _polite) = start_ready(&agent, sh(&polite)).await;
    // Ignores SIGTERM (and so does its `sleep`): needs the SIGKILL after the grace.
    let (stubborn_pid, _stubborn) =
        start_ready(&agent, sh("trap '' TERM; echo ready; sleep 100")).await;
    let began = Instant::now();
    let status = agent.terminate();
    assert_eq!(status.code(), Some(0), "wrenn-guest exit status");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        began.elapsed()
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "term\n",
        "SIGTERM did not reach the process"
    );
    for pid in [polite_pid, stubborn_pid] {
        eventually(&format!("process {pid} is gone"), || !alive(pid)).await;
    }
}

/// The static musl build (`WRENN_GUEST_BIN`, else the newest of the release and
/// debug musl builds).
fn static_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("WRENN_GUEST_BIN") {
        return bin.into();
    }
    let target =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/x86_64-unknown-linux-musl");
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("wrenn-guest"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .expect(
            "the static guest binary is missing: run \
             `cargo build -p wrenn-guest --target x86_64-unknown-linux-musl` (scripts/setup does)",
        )
}

/// True when the ELF file has no PT_INTERP header, i.e. needs no dynamic loader.
fn is_static_elf(bytes: &[u8]) -> bool {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap()) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let p_type = u32::from_le_bytes(bytes[phoff + i * phentsize..][..4].try_into().unwrap());
        p_type != 3 // PT_INTERP
    })
}

/// A root filesystem with only busybox, the agent, and /etc/passwd + group.
fn busybox_root(bin: &Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for dir in ["bin", "etc", "root", "home/alice", "tmp"] {
        std::fs::create_dir_all(r.join(dir)).unwrap();
    }
    std::fs::set_permissions(r.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::chown(r.join("home/alice"), Some(1000), Some(1000)).unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let busybox =
        busybox.expect("busybox is missing: apt-get install busybox-static (scripts/setup does)");
    let busybox_bytes = std::fs::read(busybox).unwrap();
    assert!(
        is_static_elf(&busybox_bytes),
        "{busybox} is not static: install busybox-static"
    );
    std::fs::copy(busybox, r.join("bin/busybox")).unwrap();
    // runs: busybox
    let applets = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8(applets.stdout).unwrap().lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::copy(bin, r.join("wrenn-guest")).unwrap();
    std::fs::write(
        r.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        r.join("etc/group"),
        "root:x:0:\nalice:x:1000:\nstaff:x:50:alice\n",
    )
    .unwrap();
    root
}

fn children_of(pid: u32) -> Vec<u32> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    text.split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn runs_as_pid_1_in_a_busybox_only_root() {
    require_root();
    let bin = static_bin();
    assert!(
        is_static_elf(&std::fs::read(&bin).unwrap()),
        "{} is not statically linked",
        bin.display()
    );
    let root = busybox_root(&bin);
    let chroot = root.path().to_str().unwrap();
    let prefix = [
        "/usr/bin/unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "/usr/sbin/chroot",
        chroot,
    ];
    let mut agent = Agent::builder_for(Path::new("/wrenn-guest"), &prefix)
        .env_remove("PATH")
        .start()
        .await;

    // It is PID 1 and mounted what a bare root lacks.
    let out = run(
        &agent,
        sh("cat /proc/1/cmdline | tr '\\0' ' '; echo; grep -c devpts /proc/mounts; echo $PATH"),
    )
    .await;
    let lines: Vec<String> = out.stdout_str().lines().map(str::to_owned).collect();
    assert!(
        lines[0].starts_with("/wrenn-guest "),
        "PID 1 is {:?}",
        lines[0]
    );
    assert_eq!(lines[1], "1", "devpts not mounted");
    assert_eq!(
        lines[2],
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );

    // Orphans are reparented to PID 1 and reaped: no zombie is left.
    run(&agent, sh("sleep 0.5 & sleep 0.5 & exit 0")).await;
    let states = "for f in /proc/[0-9]*/stat; do cat $f 2>/dev/null; echo; done";
    let deadline = Instant::now() + PATIENCE;
    loop {
        let listing = run(&agent, sh(states)).await.stdout_str();
        let zombies_or_sleepers: Vec<&str> = listing
            .lines()
            .filter(|l| {
                l.contains("(sleep)")
                    || l.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
            .collect();
        if zombies_or_sleepers.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphans not reaped: {zombies_or_sleepers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A PTY works (devpts) and users come from the root's own /etc/passwd.
    let mut shell = Session::start(&agent, with_pty(cmd("sh", &[]), 90, 20)).await;
    agent
        .process()
        .send_input(pty_input(
            shell.pid(),
            b"tty; stty size; echo $TERM; exit\n",
        ))
        .await
        .unwrap();
    let at = shell.expect(0, "/dev/pts/").await;
    let at = shell.expect(at, "20 90").await;
    shell.expect(at, "xterm-256color").await;
    assert_eq!(shell.finish().await.end().exit_code, 0);
    let mut as_alice = sh("id -u; id -G; pwd");
    as_alice.user = Some("alice".into());
    let out = run(&agent, as_alice).await;
    assert_eq!(
        out.stdout_str(),
        "1000\n1000 50\n/home/alice\n",
        "stderr: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGTERM to the guest: its processes get SIGTERM, then it exits 0.
    let trap =
        "trap 'echo term > /tmp/marker; exit 0' TERM; echo ready; while :; do sleep 0.05; done";
    let _waiting = start_ready(&agent, sh(trap)).await;
    let unshare = agent.pid();
    let guest = children_of(unshare);
    assert_eq!(
        guest.len(),
        1,
        "unshare should have exactly one child, the guest"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(guest[0] as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = agent.terminate_wait();
    assert_eq!(
        status.code(),
        Some(0),
        "the guest (PID 1) exit status, through unshare"
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("tmp/marker")).unwrap(),
        "term\n"
    );
}
