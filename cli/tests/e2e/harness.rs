//! The harness checks itself: a platform comes up on its own ports and
//! directory, its leftover check sees a live sandbox, after it stops nothing
//! of it is left, and a platform that leaks is reported and cleaned up.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::common::{Platform, PlatformOptions, leftovers};

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn platform_comes_up_and_its_leftover_check_sees_a_sandbox() {
    let opts = PlatformOptions::new("wrenn-te", 3300..=3309);
    let p = Platform::start(opts.clone());
    assert!(
        p.admin_key.starts_with("wrn_"),
        "admin key {:?}",
        p.admin_key
    );
    let out = p.output();
    assert!(out.contains(&p.proxy.to_string()), "{out}");
    assert!(
        !out.contains('\x1b'),
        "colour codes in logs that go to a pipe:\n{out}"
    );
    let sb = p.sandbox(&["--timeout", "120"]);
    assert_eq!(sb.sh_ok("echo hi"), "hi\n");

    let ids = BTreeSet::from([sb.id.clone()]);
    let live = leftovers::take(&opts.prefix, &opts.slots, &p.dir, &ids);
    assert_eq!(live.netns.len(), 1, "{live:#?}");
    assert_eq!(live.links.len(), 1, "{live:#?}");
    assert!(!live.cgroups.is_empty(), "{live:#?}");
    assert!(
        live.processes.len() >= 4,
        "components and the guest: {live:#?}"
    );
    assert_eq!(live.sandbox_dirs, ids, "{live:#?}");
    assert_eq!(live.nft_tables.len(), 1, "{live:#?}");
    // Template and disk images hang on loop devices; their mounts live in the
    // runtime's own mount namespace, not ours.
    assert_eq!(live.loops.len(), 2, "{live:#?}");

    let dir = p.dir.clone();
    std::mem::forget(sb); // the platform's shutdown destroys it
    p.stop();
    assert!(!dir.exists(), "{} is still there", dir.display());
    assert!(leftovers::take(&opts.prefix, &opts.slots, &dir, &ids).is_empty());
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn a_platform_that_leaks_is_reported_and_cleaned_up() {
    let opts = PlatformOptions::new("wrenn-te", 3310..=3319);
    let p = Platform::start(opts.clone());
    let id = p.create_sandbox(&["--timeout", "120"]);
    let dir = p.dir.clone();
    // Killed outright, components first: nobody destroys the sandbox.
    let pids = leftovers::processes_naming(&dir.to_string_lossy());
    let is_up = |pid: &i32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.split(|b| *b == 0).nth(1) == Some(b"up"))
    };
    for pid in pids
        .iter()
        .filter(|p| !is_up(p))
        .chain(pids.iter().filter(|p| is_up(p)))
    {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }

    let err = std::panic::catch_unwind(AssertUnwindSafe(|| drop(p)))
        .expect_err("the teardown must fail on a leak");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("signal: 9"), "{msg}");
    assert!(msg.contains("left behind") && msg.contains(&id), "{msg}");
    assert!(
        msg.contains("netns") && msg.contains("wrenn-te-331"),
        "{msg}"
    );
    // …and still cleaned everything up.
    assert!(!dir.exists(), "{} is still there", dir.display());
    let ids = BTreeSet::from([id]);
    let left = leftovers::take(&opts.prefix, &opts.slots, &dir, &ids);
    assert!(left.is_empty(), "{left:#?}");
}
