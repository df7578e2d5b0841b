//! What a platform instance holds on the machine, read independently of
//! wrenn (`/proc`, `/run/netns`, `ip -o link`, mountinfo, `/sys/block/loop*`,
//! cgroupfs, `nft`), and the forced clean-up for when something is left.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::PlatformOptions;

/// Every kind of object, by name; empty when nothing is left.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Processes started for the instance (their command line names its
    /// directory) or running in one of its sandboxes' cgroups.
    pub processes: BTreeSet<String>,
    pub netns: BTreeSet<String>,
    pub links: BTreeSet<String>,
    pub mounts: BTreeSet<String>,
    pub loops: BTreeSet<String>,
    pub cgroups: BTreeSet<String>,
    pub nft_tables: BTreeSet<String>,
    /// Entries of `$WRENN_DIR/sandboxes`.
    pub sandbox_dirs: BTreeSet<String>,
}

impl Snapshot {
    pub fn is_empty(&self) -> bool {
        *self == Snapshot::default()
    }
}

fn in_range(n: &str, slots: &RangeInclusive<u16>) -> bool {
    n.parse::<u16>().is_ok_and(|s| slots.contains(&s))
}

/// Names under `$WRENN_DIR/sandboxes`.
pub fn sandbox_dirs(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("sandboxes"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &str) -> Vec<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == dir || m.starts_with(&format!("{dir}/")))
        .map(str::to_owned)
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.len()));
    v
}

/// Pids (other than ours) whose command line mentions `dir`.
pub fn processes_naming(dir: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let mentions = cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == dir.as_bytes() || arg.starts_with(format!("{dir}/").as_bytes()));
        if mentions {
            pids.push(pid);
        }
    }
    pids
}

/// What the instance (`prefix`, `slots`, `dir`, sandboxes `ids`) holds now.
pub fn take(
    prefix: &str,
    slots: &RangeInclusive<u16>,
    dir: &Path,
    ids: &BTreeSet<String>,
) -> Snapshot {
    let mut s = Snapshot::default();
    let dir_s = dir.to_string_lossy().into_owned();
    for pid in processes_naming(&dir_s) {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        s.processes.insert(format!("pid {pid}: {}", cmd.trim()));
    }
    let ns_prefix = format!("{prefix}-");
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
    if let Ok(out) = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split(':').nth(1).unwrap_or("").trim();
            let name = name.split('@').next().unwrap_or("");
            if name.strip_prefix("wv").is_some_and(|n| in_range(n, slots)) {
                s.links.insert(name.to_owned());
            }
        }
    }
    s.mounts.extend(mounts_under(&dir_s));
    for e in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file"))
            && b.trim().starts_with(&format!("{dir_s}/"))
        {
            s.loops
                .insert(format!("{}: {}", e.file_name().to_string_lossy(), b.trim()));
        }
    }
    if let Ok(layout) = wrenn_vmm::cgroup::Layout::detect() {
        for root in layout.roots() {
            for id in ids {
                let cg = root.join(prefix).join(id);
                if cg.exists() {
                    s.cgroups.insert(cg.display().to_string());
                }
            }
        }
    }
    let needles: Vec<String> = ids.iter().map(|id| format!("/{prefix}/{id}")).collect();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cg) = std::fs::read_to_string(e.path().join("cgroup")) else {
            continue;
        };
        let ours = cg.lines().any(|l| {
            needles
                .iter()
                .any(|n| l.ends_with(n.as_str()) || l.contains(&format!("{n}/")))
        });
        if ours {
            s.processes
                .insert(format!("pid {pid} (in a sandbox cgroup)"));
        }
    }
    let table = format!(
        "{}_{}_{}",
        prefix.replace('-', "_"),
        slots.start(),
        slots.end()
    );
    if let Ok(out) = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        && String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == format!("table ip {table}"))
    {
        s.nft_tables.insert(table);
    }
    s.sandbox_dirs = sandbox_dirs(dir);
    s
}

/// Polls for up to 15 s until nothing is left (the kernel frees some
/// objects, like autoclear loop devices and netns links, just after their
/// last user goes); returns what is left then.
pub fn wait_clean(
    prefix: &str,
    slots: &RangeInclusive<u16>,
    dir: &Path,
    ids: &BTreeSet<String>,
) -> Snapshot {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = take(prefix, slots, dir, ids);
        if s.is_empty() || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes by force whatever an instance left: kills the processes that
/// name its directory, lets a fresh runtime of its prefix and slot range
/// adopt-or-clean and destroy what it adopts, and lazily unmounts anything
/// still mounted under the directory (so removing it cannot reach into a
/// mounted image).
pub fn force_clean(options: &PlatformOptions, dir: &Path) {
    let dir_s = dir.to_string_lossy().into_owned();
    for pid in processes_naming(&dir_s) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_naming(&dir_s).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let cfg = wrenn_vmm::RuntimeConfig {
        backend: wrenn_vmm::Backend::Namespace,
        dir: dir.to_owned(),
        prefix: options.prefix.clone(),
        slots: options.slots.clone(),
        guest_bin: super::guest_bin(),
        firecracker_bin: PathBuf::from(wrenn_vmm::RuntimeConfig::DEFAULT_FIRECRACKER_BIN),
        kernel: None,
        unhardened: false,
    };
    // A runtime of its own on its own thread: the caller may be unwinding
    // inside a test's runtime.
    let done = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the clean-up");
        rt.block_on(async {
            let runtime = match wrenn_vmm::build(cfg) {
                Ok(r) => r,
                Err(e) => return eprintln!("clean-up: cannot build a runtime: {e}"),
            };
            match runtime.recover().await {
                Ok(r) => {
                    for h in r.adopted {
                        if let Err(e) = runtime.destroy(&h.id).await {
                            eprintln!("clean-up: destroy {}: {e}", h.id);
                        }
                    }
                }
                Err(e) => eprintln!("clean-up: recover: {e}"),
            }
            if let Err(e) = runtime.shutdown(Duration::from_secs(30)).await {
                eprintln!("clean-up: runtime shutdown: {e}");
            }
        });
    })
    .join();
    if done.is_err() {
        eprintln!("clean-up of {} panicked", dir.display());
    }
    for m in mounts_under(&dir_s) {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Host pids of the processes in sandbox `id`'s cgroups (runtime `prefix`).
pub fn sandbox_pids(prefix: &str, id: &str) -> Vec<i32> {
    let needle = format!("/{prefix}/{id}");
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cg) = std::fs::read_to_string(e.path().join("cgroup")) else {
            continue;
        };
        if cg
            .lines()
            .any(|l| l.ends_with(&needle) || l.contains(&format!("{needle}/")))
        {
            pids.push(pid);
        }
    }
    pids
}
