//! Resource limits hold and stay inside their sandbox: a fork bomb stops at
//! the pids limit while its neighbour stays responsive, a memory hog is
//! OOM-killed inside its own cgroup only, the disk limit gives ENOSPC.
//! Slots 1300–1399.

mod common;

use std::time::{Duration, Instant};

use common::{guest, leftovers};
use wrenn_vmm::SandboxSpec;
use wrenn_vmm::cgroup::{Controller, Layout, PIDS_MAX};

fn cgroup_file(ctrl: Controller, id: &str, file: &str) -> String {
    let layout = Layout::detect().unwrap();
    let path = layout.root(ctrl).join(common::PREFIX).join(id).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_fork_bomb_hits_the_pids_limit_and_the_neighbour_stays_responsive() {
    let env = common::Env::new(1300..=1309).await;
    let bomb = env
        .up(SandboxSpec {
            memory_mb: 1024,
            ..env.spec("limbomb")
        })
        .await;
    let calm = env.up(env.spec("limcalm")).await;

    let out = guest::sh(&bomb, "(f(){ f | f & }; f) >/dev/null 2>&1 & echo lit").await;
    assert_eq!(out.stdout.trim(), "lit");

    // The bomb reaches its limit: seen near it, or forks refused at it (v1
    // and v2 alike: pids.events reads "max <refused forks>"). A bomb can
    // die out at the limit between two polls, when every process's forks
    // fail at once, so the kernel's count is the record that it got there.
    let refused = || {
        let events = cgroup_file(Controller::Pids, "limbomb", "pids.events");
        let n: u64 = events.split_whitespace().nth(1).unwrap().parse().unwrap();
        n
    };
    let start = Instant::now();
    loop {
        let m = env.runtime.metrics(&bomb.id).await.unwrap();
        if m.pids as u64 >= u64::from(PIDS_MAX) - 8 || refused() > 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "bomb stuck at {} tasks",
            m.pids
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(refused() > 0, "no fork was refused at the limit");
    assert!(env.runtime.metrics(&bomb.id).await.unwrap().pids <= PIDS_MAX);

    // ...while the neighbour answers RPCs and runs commands.
    for _ in 0..5 {
        let t = Instant::now();
        guest::check(calm.guest_addr).await.unwrap();
        let out = guest::sh(&calm, "echo still-here").await;
        assert_eq!(out.stdout.trim(), "still-here");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "neighbour took {:?}",
            t.elapsed()
        );
    }
    assert!(env.runtime.metrics(&calm.id).await.unwrap().pids < 10);

    // Destroy takes the whole bomb down.
    env.runtime.destroy(&bomb.id).await.unwrap();
    guest::check(calm.guest_addr).await.unwrap();
    env.finish().await;
    leftovers::assert_clean("lim", env.path(), &env.slots()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_memory_hog_is_oom_killed_inside_its_own_cgroup_only() {
    let env = common::Env::new(1310..=1319).await;
    let hog = env
        .up(SandboxSpec {
            memory_mb: 64,
            ..env.spec("limhog")
        })
        .await;
    let calm = env.up(env.spec("limquiet")).await;
    let calm_before = guest::sh(&calm, "sleep 1000 >/dev/null 2>&1 & echo $!")
        .await
        .stdout;

    let out = guest::sh(
        &hog,
        "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived",
    )
    .await;
    assert!(!out.stdout.contains("survived"), "{out:?}");
    assert_ne!(out.exit_code, 0, "{out:?}");

    match Layout::detect().unwrap() {
        Layout::V1 { .. } => {
            let oom = cgroup_file(Controller::Memory, "limhog", "memory.oom_control");
            let kills: u64 = oom
                .lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .unwrap()
                .parse()
                .unwrap();
            assert!(kills > 0, "{oom}");
            let other = cgroup_file(Controller::Memory, "limquiet", "memory.oom_control");
            assert!(other.lines().any(|l| l == "oom_kill 0"), "{other}");
        }
        Layout::V2 { .. } => {
            let ev = cgroup_file(Controller::Memory, "limhog", "memory.events");
            assert!(!ev.lines().any(|l| l == "oom_kill 0"), "{ev}");
        }
    }
    // The hog's guest survived its process's death; the neighbour's sleeper lives.
    guest::check(hog.guest_addr).await.unwrap();
    let still = guest::sh(
        &calm,
        &format!("kill -0 {} && echo alive", calm_before.trim()),
    )
    .await;
    assert_eq!(still.stdout.trim(), "alive", "{still:?}");

    env.finish().await;
    leftovers::assert_clean("lim", env.path(), &env.slots()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn the_disk_limit_gives_enospc_and_space_comes_back() {
    let env = common::Env::new(1320..=1329).await;
    let h = env
        .up(SandboxSpec {
            disk_mb: 64,
            ..env.spec("limdisk")
        })
        .await;
    let out = guest::sh(
        &h,
        "dd if=/dev/zero of=/root/big bs=1M count=100 2>&1; echo rc=$?",
    )
    .await;
    assert!(!out.stdout.contains("rc=0"), "{out:?}");
    assert!(out.stdout.contains("No space left"), "{out:?}");
    let m = env.runtime.metrics(&h.id).await.unwrap();
    assert!(m.disk_used_bytes > 50 << 20, "{m:?}");
    assert_eq!(m.disk_limit_bytes, 64 << 20);
    let size: u64 = guest::sh(&h, "stat -c %s /root/big")
        .await
        .stdout
        .trim()
        .parse()
        .unwrap();
    assert!(size < 64 << 20, "{size}");
    guest::sh(&h, "rm /root/big").await;
    let after = guest::sh(
        &h,
        "dd if=/dev/zero of=/root/small bs=1M count=20 2>&1; echo rc=$?",
    )
    .await;
    assert!(after.stdout.contains("rc=0"), "{after:?}");
    env.finish().await;
    leftovers::assert_clean("limdisk", env.path(), &env.slots()).await;
}
