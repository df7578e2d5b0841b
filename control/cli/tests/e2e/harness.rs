//! The harness checks itself: a platform comes up on its own ports and
//! directory, its leftover check sees a live sandbox, and after it stops
//! nothing of it is left.

use std::collections::BTreeSet;

use crate::common::{Platform, PlatformOptions, leftovers};

#[test]
fn platform_comes_up_and_its_leftover_check_sees_a_sandbox() {
    let opts = PlatformOptions::new("wrenn-te", 3300..=3309);
    let p = Platform::start(opts.clone());
    assert!(
        p.admin_key.starts_with("wrn_"),
        "admin key {:?}",
        p.admin_key
    );
    assert!(p.output().contains(&p.proxy.to_string()), "{}", p.output());
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
