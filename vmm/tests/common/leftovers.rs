//! Lists of every kind of object a sandbox creates on the host, read
//! independently of the runtime (`/run/netns`, `ip -o link`, mountinfo,
//! `/sys/block/loop*`, cgroupfs, `/proc`, the sandbox directories, `nft`).

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::{Duration, Instant};

use super::PREFIX;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub netns: BTreeSet<String>,
    pub links: BTreeSet<String>,
    pub mounts: BTreeSet<String>,
    pub loops: BTreeSet<String>,
    pub cgroups: BTreeSet<String>,
    pub processes: BTreeSet<String>,
    pub dirs: BTreeSet<String>,
    pub nft_tables: BTreeSet<String>,
}

impl Snapshot {
    pub fn is_empty(&self) -> bool {
        *self == Snapshot::default()
    }

    pub fn total(&self) -> usize {
        self.netns.len()
            + self.links.len()
            + self.mounts.len()
            + self.loops.len()
            + self.cgroups.len()
            + self.processes.len()
            + self.dirs.len()
            + self.nft_tables.len()
    }
}

fn in_range(n: &str, slots: &RangeInclusive<u16>) -> bool {
    n.parse::<u16>()
        .map(|s| slots.contains(&s))
        .unwrap_or(false)
}

/// Everything on the host belonging to sandboxes whose ids start with
/// `ids`, to slots in `slots`, or to the directory `dir`.
pub fn take(ids: &str, dir: &Path, slots: &RangeInclusive<u16>) -> Snapshot {
    let mut s = Snapshot::default();
    let ns_prefix = format!("{PREFIX}-");
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name
            .strip_prefix(&ns_prefix)
            .is_some_and(|n| in_range(n, slots))
        {
            s.netns.insert(name);
        }
    }
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line
            .split(':')
            .nth(1)
            .unwrap_or("")
            .trim()
            .split('@')
            .next()
            .unwrap_or("");
        if name.strip_prefix("wv").is_some_and(|n| in_range(n, slots)) {
            s.links.insert(name.to_owned());
        }
    }
    let dir_s = dir.to_string_lossy().into_owned();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(4).is_some_and(|m| m.starts_with(&dir_s)) {
            s.mounts.insert(fields[4].to_owned());
        }
    }
    for e in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file"))
            && b.starts_with(&dir_s)
        {
            s.loops
                .insert(format!("{}: {}", e.file_name().to_string_lossy(), b.trim()));
        }
    }
    let layout = wrenn_vmm::cgroup::Layout::detect().unwrap();
    for root in layout.roots() {
        for e in std::fs::read_dir(root.join(PREFIX))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(ids) {
                s.cgroups.insert(e.path().display().to_string());
            }
        }
    }
    let needle = format!("/{PREFIX}/{ids}");
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cg) = std::fs::read_to_string(e.path().join("cgroup"))
            && cg.contains(&needle)
        {
            // Zombies have left their cgroups; anything listed here is alive.
            s.processes.insert(format!("pid {pid}"));
        }
    }
    for sub in ["sandboxes", "mnt"] {
        for e in std::fs::read_dir(dir.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            s.dirs
                .insert(format!("{sub}/{}", e.file_name().to_string_lossy()));
        }
    }
    let table = format!(
        "{}_{}_{}",
        PREFIX.replace('-', "_"),
        slots.start(),
        slots.end()
    );
    let out = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == format!("table ip {table}"))
    {
        s.nft_tables.insert(table);
    }
    s
}

/// Polls until the host holds nothing of `ids`/`dir`/`slots` (the kernel frees
/// some objects, like autoclear loop devices, just after the last user goes).
pub async fn assert_clean(ids: &str, dir: &Path, slots: &RangeInclusive<u16>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let snap = take(ids, dir, slots);
        if snap.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("left behind: {snap:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
