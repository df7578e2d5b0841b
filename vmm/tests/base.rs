//! The built-in `base` template: Debian bookworm from debootstrap, built once
//! (about a minute, with progress) and cached; a sandbox from it runs Python
//! and lets `wrenn-user` and `user` (E2B's default) use sudo. Slots 1500–1509.

mod common;

use common::{guest, leftovers};
use wrenn_vmm::SandboxSpec;
use wrenn_vmm::image::{BuildProgress, BuildStep, build_base};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn base_template_is_built_once_and_runs_python_and_sudo() {
    let env = common::Env::new(1500..=1509).await;
    let dir = env.path().to_owned();
    let (image, reports) = tokio::task::spawn_blocking(move || {
        let mut reports: Vec<BuildProgress> = Vec::new();
        let image = build_base(&dir, &mut |p| {
            println!("{:>5.1}% {:?} {}", p.fraction * 100.0, p.step, p.message);
            reports.push(p.clone());
        })
        .unwrap();
        (image, reports)
    })
    .await
    .unwrap();
    assert!(image.is_file());
    assert!(
        reports.windows(2).all(|w| w[0].fraction <= w[1].fraction),
        "progress never goes back"
    );
    let last = reports.last().unwrap();
    assert_eq!(last.fraction, 1.0);
    assert!(
        matches!(last.step, BuildStep::Done | BuildStep::Cached),
        "{last:?}"
    );

    // Second build: nothing to do.
    let dir = env.path().to_owned();
    let again = tokio::task::spawn_blocking(move || {
        let mut steps = Vec::new();
        build_base(&dir, &mut |p| steps.push(p.step)).unwrap();
        steps
    })
    .await
    .unwrap();
    assert_eq!(again, vec![BuildStep::Cached]);

    // An image built from another recipe (an older wrenn) is replaced.
    let marker = env.path().join("images/base/recipe");
    let recipe = std::fs::read_to_string(&marker).unwrap();
    std::fs::write(&marker, "0000000000000000\n").unwrap();
    let dir = env.path().to_owned();
    let replaced = tokio::task::spawn_blocking(move || {
        let mut steps = Vec::new();
        build_base(&dir, &mut |p| steps.push(p.step)).unwrap();
        steps
    })
    .await
    .unwrap();
    assert_eq!(replaced.last(), Some(&BuildStep::Done), "{replaced:?}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), recipe);

    let h = env
        .up(SandboxSpec {
            template: "base".into(),
            memory_mb: 512,
            disk_mb: 1024,
            ..env.spec("basepy")
        })
        .await;
    let py = guest::run(
        &h,
        "python3",
        &["-c", "import sys; print(6*7, sys.version_info[0])"],
        None,
    )
    .await;
    assert_eq!(py.stdout.trim(), "42 3", "{py:?}");
    let who = guest::run(&h, "id", &["-un"], Some("wrenn-user")).await;
    assert_eq!(who.stdout.trim(), "wrenn-user", "{who:?}");
    let sudo = guest::run(&h, "sudo", &["-n", "id", "-u"], Some("wrenn-user")).await;
    assert_eq!(sudo.stdout.trim(), "0", "passwordless sudo: {sudo:?}");
    // E2B's default user: `user`, uid 1001 in a group of its own, bash,
    // its own home, passwordless sudo; `python` is python3.
    let who = guest::run(
        &h,
        "/bin/sh",
        &[
            "-c",
            "id -un; id -u; id -gn; echo $HOME; stat -c %U /home/user; getent passwd user | cut -d: -f7",
        ],
        Some("user"),
    )
    .await;
    assert_eq!(
        who.stdout, "user\n1001\nuser\n/home/user\nuser\n/bin/bash\n",
        "{who:?}"
    );
    let sudo = guest::run(&h, "sudo", &["-n", "id", "-u"], Some("user")).await;
    assert_eq!(
        sudo.stdout.trim(),
        "0",
        "passwordless sudo for user: {sudo:?}"
    );
    let py = guest::run(
        &h,
        "python",
        &["-c", "import sys; print(sys.version_info[0])"],
        Some("user"),
    )
    .await;
    assert_eq!(py.stdout.trim(), "3", "python is python3: {py:?}");
    for tool in [
        "pip3 --version",
        "curl --version",
        "ps --version",
        "ip -V",
        "python3 -m venv --help",
    ] {
        let out = guest::sh(&h, tool).await;
        assert_eq!(out.exit_code, 0, "{tool}: {out:?}");
    }
    // The host's own CAs (a TLS-inspecting gateway's, a company's) are
    // trusted inside: the system bundle holds each of them.
    let bundle = guest::sh(&h, "cat /etc/ssl/certs/ca-certificates.crt").await;
    for e in std::fs::read_dir("/usr/local/share/ca-certificates")
        .into_iter()
        .flatten()
        .flatten()
    {
        if !e.file_name().to_string_lossy().ends_with(".crt") {
            continue;
        }
        let pem = std::fs::read_to_string(e.path()).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let in_bundle: String = bundle.stdout.lines().collect();
        assert!(
            in_bundle.contains(&body),
            "host CA {} is not in the sandbox's bundle",
            e.path().display()
        );
    }
    env.finish().await;
    leftovers::assert_clean("basepy", env.path(), &env.slots()).await;
}
