//! Sandbox lifecycle with the real guest agent: create, start, health,
//! metrics, pause/resume, destroy, bad input — and that nothing is left
//! behind. Slots 1000–1199 of the vmm suite's range, a sub-range per test.

mod common;

use std::time::Duration;

use common::{guest, leftovers};
use wrenn_vmm::{Error, SandboxSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn one_sandbox_runs_the_guest_as_pid1_and_leaves_nothing() {
    let env = common::Env::new(1000..=1009).await;
    let h = env.up(env.spec("lcone1")).await;
    assert_eq!(h.slot, 1000);
    assert_eq!(h.address.to_string(), "10.210.7.209");
    assert_eq!(h.guest_addr.to_string(), "10.210.7.209:49983");
    assert_eq!(env.runtime.list(), vec![h.clone()]);

    let out = guest::sh(&h, "echo host=$(hostname); tr '\\0' ' ' < /proc/1/cmdline").await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert!(out.stdout.contains("host=lcone1"), "{out:?}");
    assert!(
        out.stdout.contains("wrenn-guest"),
        "PID 1 is the guest: {out:?}"
    );

    let m = env.runtime.metrics(&h.id).await.unwrap();
    assert_eq!(m.memory_limit_bytes, 128 << 20);
    assert_eq!(m.disk_limit_bytes, 256 << 20);
    assert!(m.memory_bytes > 0 && m.pids >= 1, "{m:?}");
    assert!(
        m.disk_used_bytes > 0 && m.disk_used_bytes < m.disk_limit_bytes,
        "{m:?}"
    );
    let log = env.runtime.guest_output(&h.id, 10_000).unwrap();
    assert!(log.contains("serving"), "guest log: {log}");

    // Starting twice is refused; the sandbox keeps running.
    let again = env.runtime.start(&h.id).await.unwrap_err();
    assert!(
        matches!(
            again,
            Error::WrongState {
                state: "running",
                ..
            }
        ),
        "{again}"
    );
    guest::check(h.guest_addr).await.unwrap();

    env.runtime.destroy(&h.id).await.unwrap();
    assert!(env.runtime.list().is_empty());
    env.runtime.destroy(&h.id).await.unwrap(); // idempotent
    assert!(matches!(
        env.runtime.metrics(&h.id).await,
        Err(Error::NotFound(_))
    ));
    env.runtime.shutdown(Duration::from_secs(30)).await.unwrap();
    leftovers::assert_clean("lcone", env.path(), &env.slots()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn fifty_concurrent_sandboxes_are_created_and_destroyed_without_leftovers() {
    const N: usize = 50;
    let env = common::Env::new(1010..=1069).await;
    let before = leftovers::take("lcfifty", env.path(), &env.slots());
    assert_eq!(
        before.total(),
        before.nft_tables.len(),
        "only the firewall table: {before:#?}"
    );

    let ups = (0..N).map(|i| env.up(env.spec(&format!("lcfifty{i}"))));
    let handles = futures::future::join_all(ups).await;
    let mut addrs: Vec<_> = handles.iter().map(|h| h.address).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), N, "every sandbox has its own address");

    // The listings see what the sandboxes hold, so an empty listing later means something.
    let during = leftovers::take("lcfifty", env.path(), &env.slots());
    assert_eq!(during.netns.len(), N, "{during:#?}");
    assert_eq!(during.links.len(), N);
    assert_eq!(
        during.loops.len(),
        N + 1,
        "one disk each plus the shared template"
    );
    assert_eq!(
        during.cgroups.len(),
        N * wrenn_vmm::cgroup::Layout::detect().unwrap().roots().len()
    );
    assert!(during.processes.len() >= N);
    assert!(
        during.mounts.is_empty(),
        "nothing is mounted in the host's namespace (templates live in the spawn namespace): {during:#?}"
    );
    assert_eq!(during.nft_tables.len(), 1);

    let destroys = handles.iter().map(|h| env.runtime.destroy(&h.id));
    for r in futures::future::join_all(destroys).await {
        r.unwrap();
    }
    env.runtime.shutdown(Duration::from_secs(30)).await.unwrap();
    leftovers::assert_clean("lcfifty", env.path(), &env.slots()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn pause_stops_a_counting_process_and_resume_continues_it_on_the_same_connection() {
    let env = common::Env::new(1070..=1079).await;
    let h = env.up(env.spec("lcpause1")).await;
    let script = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.02; done";
    let mut counter = guest::stream(&h, "/bin/sh", &["-c", script]).await;
    let first = counter.next_number().await;
    assert!(first >= 1);

    env.runtime.pause(&h.id).await.unwrap();
    assert!(env.runtime.list()[0].paused);
    // Whatever was in flight when the freezer hit arrives; then nothing.
    let mut last = first;
    while let Some(n) = counter.number_within(Duration::from_millis(300)).await {
        last = n;
    }
    assert!(
        counter
            .number_within(Duration::from_millis(500))
            .await
            .is_none(),
        "counting while paused"
    );
    env.runtime.pause(&h.id).await.unwrap(); // idempotent

    env.runtime.resume(&h.id).await.unwrap();
    assert!(!env.runtime.list()[0].paused);
    let next = counter.next_number().await;
    assert_eq!(
        next,
        last + 1,
        "the same process continues on the same stream"
    );
    guest::check(h.guest_addr).await.unwrap();

    // Destroying a paused sandbox works too.
    env.runtime.pause(&h.id).await.unwrap();
    env.runtime.destroy(&h.id).await.unwrap();
    env.runtime.shutdown(Duration::from_secs(30)).await.unwrap();
    leftovers::assert_clean("lcpause", env.path(), &env.slots()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn bad_input_gives_a_clear_error_and_creates_nothing() {
    let env = common::Env::new(1080..=1081).await;
    let check_nothing = |what: &str| {
        let snap = leftovers::take("lcbad", env.path(), &env.slots());
        // The runtime's own firewall table exists from start-up; nothing else.
        assert!(
            snap.total() == snap.nft_tables.len() && env.runtime.list().is_empty(),
            "{what} left {snap:#?}"
        );
    };
    let cases: Vec<(SandboxSpec, &str)> = vec![
        (
            SandboxSpec {
                template: "nosuch".into(),
                ..env.spec("lcbad1")
            },
            "unknown template \"nosuch\"",
        ),
        (
            SandboxSpec {
                template: "../etc".into(),
                ..env.spec("lcbad1")
            },
            "\"../etc\" is not a template name",
        ),
        (
            SandboxSpec {
                vcpus: 0,
                ..env.spec("lcbad1")
            },
            "vcpus: 0 is below the minimum 1",
        ),
        (
            SandboxSpec {
                vcpus: 65,
                ..env.spec("lcbad1")
            },
            "vcpus: 65 is above the maximum 64",
        ),
        (
            SandboxSpec {
                memory_mb: 16,
                ..env.spec("lcbad1")
            },
            "memory_mb: 16 MiB is below the minimum 32 MiB",
        ),
        (
            SandboxSpec {
                disk_mb: 1 << 21,
                ..env.spec("lcbad1")
            },
            "disk_mb: 2097152 MiB is above the maximum",
        ),
    ];
    for (spec, want) in cases {
        let err = env.runtime.create(spec).await.unwrap_err();
        assert!(err.to_string().contains(want), "{err} (want {want})");
        check_nothing(want);
    }

    // Two slots: the third sandbox is refused, the first two are untouched.
    let a = env.runtime.create(env.spec("lcbad1")).await.unwrap();
    let dup = env.runtime.create(env.spec("lcbad1")).await.unwrap_err();
    assert!(matches!(dup, Error::AlreadyExists(_)), "{dup}");
    let b = env.runtime.create(env.spec("lcbad2")).await.unwrap();
    let full = env.runtime.create(env.spec("lcbad3")).await.unwrap_err();
    assert!(
        matches!(
            full,
            Error::SlotsExhausted {
                first: 1080,
                last: 1081
            }
        ),
        "{full}"
    );
    assert_eq!(full.to_string(), "no free network slot in 1080..=1081");
    assert_eq!(env.runtime.list().len(), 2);
    assert!(!env.path().join("sandboxes/lcbad3").exists());

    // Operations on the wrong state or an unknown id.
    let paused = env.runtime.pause(&a.id).await.unwrap_err();
    assert!(
        matches!(
            paused,
            Error::WrongState {
                state: "created",
                ..
            }
        ),
        "{paused}"
    );
    let unknown = "lcbadnone".parse().unwrap();
    assert!(matches!(
        env.runtime.start(&unknown).await,
        Err(Error::NotFound(_))
    ));
    env.runtime.destroy(&unknown).await.unwrap();

    // A created sandbox that never started is destroyed completely too.
    env.runtime.destroy(&a.id).await.unwrap();
    env.runtime.destroy(&b.id).await.unwrap();
    env.runtime.shutdown(Duration::from_secs(30)).await.unwrap();
    leftovers::assert_clean("lcbad", env.path(), &env.slots()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn assign_renames_a_running_sandbox_and_refuses_what_it_cannot_change() {
    let env = common::Env::new(1090..=1091).await;
    let h = env.up(env.spec("lcasgnpool")).await;
    let other = env.up(env.spec("lcasgntaken")).await;

    // What a running sandbox cannot take is refused; it stays as it was.
    let mut bigger = env.spec("lcasgnmine");
    bigger.memory_mb = 256;
    let e = env.runtime.assign(&h.id, bigger).await.unwrap_err();
    assert!(
        matches!(&e, Error::InvalidSpec(m) if m.contains("memory")),
        "{e}"
    );
    let e = env
        .runtime
        .assign(&h.id, env.spec("lcasgntaken"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
    let e = env
        .runtime
        .assign(&"lcasgnnone".parse().unwrap(), env.spec("lcasgnmine"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    assert_eq!(env.runtime.list().len(), 2);
    guest::check(h.guest_addr).await.unwrap();

    // A matching spec: the same sandbox under the new id and hostname.
    let mut mine = env.spec("lcasgnmine");
    mine.metadata.insert("k".into(), "v".into());
    let got = env.runtime.assign(&h.id, mine).await.unwrap();
    assert_eq!(
        (got.id.as_str(), got.slot, got.address),
        ("lcasgnmine", h.slot, h.address)
    );
    assert_eq!(got.spec.metadata["k"], "v");
    assert!(got.dir.ends_with("lcasgnmine") && got.dir.is_dir());
    assert!(!h.dir.exists(), "the old directory moved");
    let out = guest::sh(&got, "hostname").await;
    assert_eq!(out.stdout.trim(), "lcasgnmine", "{out:?}");
    assert!(matches!(
        env.runtime.metrics(&h.id).await,
        Err(Error::NotFound(_))
    ));
    let m = env.runtime.metrics(&got.id).await.unwrap();
    assert!(m.pids >= 1, "the renamed cgroups hold the sandbox: {m:?}");
    let mut ids: Vec<String> = env
        .runtime
        .list()
        .into_iter()
        .map(|h| h.id.to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["lcasgnmine", "lcasgntaken"]);

    env.runtime.destroy(&got.id).await.unwrap();
    env.runtime.destroy(&other.id).await.unwrap();
    env.runtime.shutdown(Duration::from_secs(30)).await.unwrap();
    leftovers::assert_clean("lcasgn", env.path(), &env.slots()).await;
}
