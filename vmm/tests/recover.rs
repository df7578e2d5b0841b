//! Adopt-or-clean: an owner killed in the middle of creating sandboxes
//! leaves nothing behind once a new runtime has recovered, and recovery
//! never touches another instance's sandboxes. Slots 1400–1499.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{guest, leftovers};

const OWNER_DIR: &str = "WRENN_TV_OWNER_DIR";
const OWNER_SLOTS: std::ops::RangeInclusive<u16> = 1400..=1419;

/// Run by `killing_the_owner_mid_create_leaves_nothing_after_recovery` in a
/// child process: creates sandboxes three at a time, forever, printing
/// `creating <n>` and `ready <n>`, until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process of killing_the_owner_mid_create_leaves_nothing_after_recovery"]
async fn helper_process_recover_owner() {
    let dir = std::env::var(OWNER_DIR).expect("run by the recovery test");
    let runtime = wrenn_vmm::build(common::config(dir.as_ref(), OWNER_SLOTS)).unwrap();
    runtime.recover().await.unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = (0..3).map(|_| {
        let (runtime, next) = (runtime.clone(), next.clone());
        async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n >= 18 {
                    std::future::pending::<()>().await;
                }
                println!("creating {n}");
                let mut spec = wrenn_vmm::SandboxSpec::new(common::id("rcown", n));
                spec.template = "busybox".into();
                spec.memory_mb = 64;
                spec.disk_mb = 128;
                let h = runtime.create(spec).await.unwrap();
                runtime.start(&h.id).await.unwrap();
                guest::wait_healthy(h.guest_addr, Duration::from_secs(20))
                    .await
                    .unwrap();
                println!("ready {n}");
            }
        }
    });
    futures::future::join_all(workers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn killing_the_owner_mid_create_leaves_nothing_after_recovery() {
    common::require_root();
    let dir = common::env_dir(&OWNER_SLOTS);
    if dir.exists() {
        common::clean(common::config(&dir, OWNER_SLOTS)).await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    wrenn_vmm::image::build_busybox(&dir, "busybox").unwrap();

    // runs: -; this test binary, as the owning process
    let mut owner = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_process_recover_owner",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(OWNER_DIR, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once three sandboxes are ready and later ones are being created.
    let mut ready = 0;
    let mut creating_after = 0;
    let lines = BufReader::new(owner.stdout.take().unwrap()).lines();
    for line in lines.map_while(Result::ok) {
        if line.starts_with("ready ") {
            ready += 1;
        } else if line.starts_with("creating ") && ready >= 3 {
            creating_after += 1;
            if creating_after == 2 {
                // A little into the create: network or cgroups under way.
                std::thread::sleep(Duration::from_millis(3));
                break;
            }
        }
    }
    assert!(ready >= 3, "the owner never got three sandboxes ready");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(owner.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    owner.wait().unwrap();

    // A new runtime over the same directory and range. Destroying an id it
    // does not manage yet cleans what the dead owner left of it...
    let env_cfg = common::config(&dir, OWNER_SLOTS);
    let runtime = wrenn_vmm::build(env_cfg.clone()).unwrap();
    let first_id = common::id("rcown", 0);
    let record = std::fs::read_to_string(dir.join("sandboxes/rcown0/sandbox.json")).unwrap();
    let slot: u16 = serde_json::from_str::<serde_json::Value>(&record).unwrap()["slot"]
        .as_u64()
        .unwrap() as u16;
    runtime.destroy(&first_id).await.unwrap();
    assert!(!dir.join("sandboxes/rcown0").exists());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s = leftovers::take("rcown0", &dir, &(slot..=slot));
        if s.netns.is_empty()
            && s.links.is_empty()
            && s.cgroups.is_empty()
            && s.processes.is_empty()
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "rcown0 left {s:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and recovery adopts the intact rest.
    let rec = runtime.recover().await.unwrap();
    println!(
        "after the kill: adopted {}, cleaned {:?}",
        rec.adopted.len(),
        rec.cleaned
    );
    assert!(
        rec.adopted.len() >= 2,
        "adopted {:?}, cleaned {:?}",
        rec.adopted.len(),
        rec.cleaned
    );
    assert!(rec.adopted.iter().all(|h| h.id != first_id));
    for h in &rec.adopted {
        guest::check(h.guest_addr)
            .await
            .unwrap_or_else(|e| panic!("adopted {} is not healthy: {e}", h.id));
    }
    let mut listed: Vec<_> = runtime.list().into_iter().map(|h| h.id).collect();
    let mut adopted: Vec<_> = rec.adopted.iter().map(|h| h.id.clone()).collect();
    listed.sort();
    adopted.sort();
    assert_eq!(listed, adopted);

    // What is left on the host is exactly what the adopted sandboxes hold.
    // (The kernel removes a cleaned sandbox's links with its netns, and its
    // directory is deleted in the background, just after.)
    let n = rec.adopted.len();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let snap = loop {
        let snap = leftovers::take("rcown", &dir, &OWNER_SLOTS);
        let dirs = snap
            .dirs
            .iter()
            .filter(|d| d.starts_with("sandboxes/"))
            .count();
        if (snap.links.len() == n && dirs == n) || std::time::Instant::now() > deadline {
            break snap;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(snap.netns.len(), n, "{snap:#?}");
    assert_eq!(snap.links.len(), n, "{snap:#?}");
    assert_eq!(
        snap.cgroups.len(),
        n * wrenn_vmm::cgroup::Layout::detect().unwrap().roots().len(),
        "{snap:#?}"
    );
    assert!(
        snap.mounts.is_empty(),
        "the old owner's template mount is gone: {snap:#?}"
    );
    let sandbox_dirs = snap
        .dirs
        .iter()
        .filter(|d| d.starts_with("sandboxes/"))
        .count();
    assert_eq!(sandbox_dirs, n, "{snap:#?}");
    assert!(!snap.dirs.iter().any(|d| {
        d.starts_with("mnt/")
            && d.len() > 4
            && std::fs::read_dir(dir.join(d))
                .map(|mut e| e.next().is_some())
                .unwrap_or(false)
    }));

    // Adopted sandboxes work like any other: pause, resume, run, destroy.
    let first = &rec.adopted[0];
    runtime.pause(&first.id).await.unwrap();
    runtime.resume(&first.id).await.unwrap();
    assert_eq!(
        guest::sh(first, "echo adopted").await.stdout.trim(),
        "adopted"
    );
    for h in &rec.adopted {
        runtime.destroy(&h.id).await.unwrap();
    }
    // New sandboxes can use the freed slots.
    let mut spec = wrenn_vmm::SandboxSpec::new(common::id("rcownnew", 0));
    spec.template = "busybox".into();
    let h = runtime.create(spec).await.unwrap();
    runtime.start(&h.id).await.unwrap();
    guest::wait_healthy(h.guest_addr, Duration::from_secs(20))
        .await
        .unwrap();
    runtime.destroy(&h.id).await.unwrap();
    runtime.shutdown(Duration::from_secs(30)).await.unwrap();
    leftovers::assert_clean("rcown", &dir, &OWNER_SLOTS).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn recovery_only_touches_its_own_prefix_and_slot_range() {
    let env = common::Env::new(1420..=1429).await;
    let mine = env.up(env.spec("rcmine")).await;

    // Another instance over the same directory with another range: it must
    // neither adopt nor clean this one.
    let other = wrenn_vmm::build(common::config(env.path(), 1430..=1439)).unwrap();
    let rec = other.recover().await.unwrap();
    assert!(rec.adopted.is_empty() && rec.cleaned.is_empty(), "{rec:?}");
    guest::check(mine.guest_addr).await.unwrap();
    other.shutdown(Duration::from_secs(5)).await.unwrap();
    guest::check(mine.guest_addr).await.unwrap();

    // Leftovers of this range without a record — a bare netns, and a netns
    // with its veth pair — are removed by this instance's recovery. A host
    // link of the range whose netns is not ours (host link names carry no
    // prefix) and another prefix's netns are left alone.
    let run = |args: &[&str]| {
        assert!(
            Command::new("ip").args(args).status().unwrap().success(),
            "ip {args:?}"
        )
    };
    run(&["netns", "add", "wrenn-tv-1428"]);
    run(&["netns", "add", "wrenn-tv-1429"]);
    run(&[
        "link",
        "add",
        "wv1429",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        "wrenn-tv-1429",
    ]);
    run(&["netns", "add", "wrenn-tx-1427"]);
    run(&[
        "link",
        "add",
        "wv1427",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        "wrenn-tx-1427",
    ]);
    let foreign = Foreign("wrenn-tx-1427");
    // Directories a crash left half-deleted: ours is finished, another
    // prefix's is left alone.
    let ours = env.path().join("sandboxes/.deleting-wrenn-tv-1425-gone-0");
    let theirs = env.path().join("sandboxes/.deleting-wrenn-tx-1425-gone-0");
    for d in [&ours, &theirs] {
        std::fs::create_dir_all(d.join("root")).unwrap();
        std::fs::write(d.join("guest.log"), "x").unwrap();
    }
    // (A second runtime of the same instance, as after an agent restart.)
    let again = wrenn_vmm::build(env.cfg.clone()).unwrap();
    let rec = again.recover().await.unwrap();
    let adopted: Vec<_> = rec.adopted.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(adopted, ["rcmine"], "{rec:?}");
    assert!(rec.cleaned.is_empty(), "{rec:?}");
    let snap = leftovers::take("rcmine", env.path(), &env.slots());
    assert_eq!(
        snap.netns.len(),
        1,
        "only the live sandbox's netns: {snap:#?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while leftovers::take("rcmine", env.path(), &env.slots())
        .links
        .contains("wv1429")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "wv1429 not removed with its netns"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let links = leftovers::take("rcmine", env.path(), &env.slots()).links;
    assert!(
        links.contains("wv1427"),
        "another instance's link was touched: {links:?}"
    );
    assert!(
        std::path::Path::new("/run/netns/wrenn-tx-1427").exists(),
        "another prefix's netns was touched"
    );
    guest::check(mine.guest_addr).await.unwrap();
    drop(again);
    assert!(
        !ours.exists(),
        "a retired directory of this instance was left"
    );
    assert!(theirs.exists(), "another prefix's directory was touched");
    std::fs::remove_dir_all(&theirs).unwrap();
    drop(foreign); // its netns goes, and its veth pair with it

    env.finish().await;
    leftovers::assert_clean("rcmine", env.path(), &env.slots()).await;
}

/// A netns of another prefix, removed when the test ends however it ends.
struct Foreign(&'static str);

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_hand_out_cut_short_by_a_crash_is_cleaned_under_both_names() {
    let env = common::Env::new(1440..=1441).await;
    let h = env.up(env.spec("rccutpool")).await;
    // Where a crash inside `assign` can leave a sandbox: its directory under
    // the new name, its cgroups and record still under the old one.
    std::fs::rename(&h.dir, h.dir.with_file_name("rccutmine")).unwrap();
    let again = wrenn_vmm::build(env.cfg.clone()).unwrap();
    let rec = again.recover().await.unwrap();
    assert!(rec.adopted.is_empty(), "nobody was given it: {rec:?}");
    let cleaned: Vec<_> = rec.cleaned.iter().map(|id| id.as_str()).collect();
    assert_eq!(cleaned, ["rccutmine"], "{rec:?}");
    again.shutdown(Duration::from_secs(30)).await.unwrap();
    leftovers::assert_clean("rccut", env.path(), &env.slots()).await;
}
