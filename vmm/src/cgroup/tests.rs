use super::*;

const V1_SEPARATE: &str = "\
30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
31 25 0:27 / /sys/fs/cgroup/cpuacct rw,relatime shared:10 - cgroup cgroup rw,cpuacct
33 25 0:29 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory
35 25 0:31 / /sys/fs/cgroup/freezer rw,relatime shared:14 - cgroup cgroup rw,freezer
37 25 0:33 / /sys/fs/cgroup/pids rw,relatime shared:16 - cgroup cgroup rw,pids
39 25 0:35 / /sys/fs/cgroup/unified rw,relatime shared:18 - cgroup2 cgroup2 rw
";

const V1_COMOUNTED: &str = "\
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
33 25 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
35 25 0:31 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
37 25 0:33 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";

const V2: &str = "\
24 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
26 24 0:23 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

#[test]
fn detects_separate_v1_controllers() {
    let l = Layout::parse(V1_SEPARATE).unwrap();
    assert_eq!(
        l.root(Controller::Memory),
        Path::new("/sys/fs/cgroup/memory")
    );
    assert_eq!(
        l.root(Controller::Cpuacct),
        Path::new("/sys/fs/cgroup/cpuacct")
    );
    assert_eq!(l.roots().len(), 5);
}

#[test]
fn co_mounted_v1_controllers_share_one_directory() {
    let l = Layout::parse(V1_COMOUNTED).unwrap();
    assert_eq!(l.root(Controller::Cpu), l.root(Controller::Cpuacct));
    assert_eq!(l.roots().len(), 4);
    let cg = Cgroup::new(l, "wrenn", "abc");
    assert_eq!(
        cg.dir(Controller::Cpu),
        PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/wrenn/abc")
    );
}

#[test]
fn detects_v2_when_no_v1_memory() {
    let l = Layout::parse(V2).unwrap();
    assert_eq!(
        l,
        Layout::V2 {
            root: "/sys/fs/cgroup".into()
        }
    );
    assert_eq!(l.roots(), vec![PathBuf::from("/sys/fs/cgroup")]);
}

#[test]
fn v1_without_a_needed_controller_is_an_error_naming_it() {
    let text = "33 25 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
    let err = Layout::parse(text).unwrap_err().to_string();
    assert!(
        err.contains("cpu") && err.contains("pids") && err.contains("freezer"),
        "{err}"
    );
    assert!(Layout::parse("").is_err());
}

#[test]
fn mountinfo_escapes_are_decoded() {
    assert_eq!(layout_unescape("/a\\040b"), "/a b");
}

fn layout_unescape(s: &str) -> String {
    let text = format!("1 1 0:1 / {s} rw - cgroup2 cgroup2 rw\n");
    match Layout::parse(&text).unwrap() {
        Layout::V2 { root } => root.to_string_lossy().into_owned(),
        l => panic!("{l:?}"),
    }
}

/// Real cgroups on this host: create with limits, read them back, freeze and
/// thaw a real process, destroy. Needs root.
#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn real_cgroup_limits_freeze_and_destroy() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CI runs as root)"
    );
    let layout = Layout::detect().unwrap();
    let cg = Cgroup::new(layout.clone(), "wrenn-tv-unit", "cg1");
    let _ = cg.destroy(Duration::from_secs(5));
    cg.create(&Limits {
        memory_bytes: 64 << 20,
        vcpus: 2,
        pids: 77,
    })
    .unwrap();
    assert!(cg.exists());
    let usage = cg.usage().unwrap();
    assert_eq!(usage.memory_limit_bytes, 64 << 20);
    assert_eq!(usage.pids, 0);
    match &layout {
        Layout::V1 { .. } => {
            let q = fs::read_to_string(cg.dir(Controller::Cpu).join("cpu.cfs_quota_us")).unwrap();
            assert_eq!(q.trim(), "200000");
            let p = fs::read_to_string(cg.dir(Controller::Pids).join("pids.max")).unwrap();
            assert_eq!(p.trim(), "77");
        }
        Layout::V2 { .. } => {
            let q = fs::read_to_string(cg.dir(Controller::Cpu).join("cpu.max")).unwrap();
            assert_eq!(q.trim(), "200000 100000");
        }
    }
    // A real process joins through the procs files, as a sandbox's init does.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    for dir in cg.dirs() {
        fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
    }
    assert_eq!(cg.pids().unwrap(), vec![child.id() as i32]);
    cg.freeze(Duration::from_secs(5)).unwrap();
    assert!(cg.is_frozen().unwrap());
    let state = fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
    assert!(!state.is_empty());
    cg.thaw(Duration::from_secs(5)).unwrap();
    assert!(!cg.is_frozen().unwrap());
    cg.freeze(Duration::from_secs(5)).unwrap();
    // destroy kills and thaws what is left, then removes every directory.
    cg.destroy(Duration::from_secs(5)).unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    for dir in cg.dirs() {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    remove_prefix(&layout, "wrenn-tv-unit");
    for root in layout.roots() {
        assert!(!root.join("wrenn-tv-unit").exists());
    }
    // Idempotent.
    cg.destroy(Duration::from_secs(5)).unwrap();
}
