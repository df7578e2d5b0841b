//! Per-sandbox cgroups: memory limit, CPU quota, pids limit, freezer, usage.
//!
//! # Design
//!
//! Each sandbox gets `<prefix>/<id>` under every hierarchy it needs. The layout
//! is read once from `/proc/self/mountinfo`:
//!
//! - **v1** (this machine: `memory`, `cpu`, `cpuacct`, `pids` and `freezer`
//!   each mounted on its own under `/sys/fs/cgroup/<ctrl>/`, or co-mounted):
//!   `memory.limit_in_bytes`, `cpu.cfs_quota_us`/`cpu.cfs_period_us`,
//!   `pids.max`, `freezer.state`, usage from `cpuacct.usage`,
//!   `memory.usage_in_bytes`, `pids.current`.
//! - **v2** (one unified hierarchy): the runtime enables `+memory +cpu +pids` in
//!   `cgroup.subtree_control` of the root and of `<prefix>`, then uses
//!   `memory.max` (+ `memory.swap.max = 0`), `cpu.max`, `pids.max`,
//!   `cgroup.freeze`/`cgroup.events`, `cgroup.kill`, `cpu.stat`, `memory.current`.
//!
//! v1 is chosen when the memory controller is mounted as v1, otherwise v2.
//! A sandbox's first process joins its cgroups itself, before it execs, by
//! writing `0` to files the runtime opened for it ([`Cgroup::open_procs`]:
//! v1 `tasks`, v2 `cgroup.procs`), so every byte the guest allocates is
//! charged to the sandbox.
//!
//! # Limitations
//!
//! Memory already charged before a task moves is not moved (v1 without
//! `move_charge_at_immigrate`); the sandbox's first process moves itself before
//! it allocates anything of note. Nothing is mounted inside the sandbox at
//! `/sys/fs/cgroup`.

mod layout;

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use layout::{Controller, Layout};

/// Largest number of tasks (processes and threads) in one sandbox.
pub const PIDS_MAX: u32 = 1024;
/// CFS period; the quota is `vcpus` periods.
pub const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no usable cgroup hierarchy: {0}")]
    NoHierarchy(String),
    #[error("{step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{step} {path}: still {state:?} after {waited:?}")]
    Timeout {
        step: &'static str,
        path: PathBuf,
        state: String,
        waited: Duration,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io {
        step,
        path: path.to_owned(),
        source,
    }
}

/// Limits written when a sandbox's cgroups are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub vcpus: u32,
    pub pids: u32,
}

/// Usage read back for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_usec: u64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub pids: u32,
}

/// One sandbox's cgroup (`<prefix>/<name>`) in every hierarchy of the layout.
#[derive(Debug, Clone)]
pub struct Cgroup {
    layout: Layout,
    rel: PathBuf,
}

impl Cgroup {
    pub fn new(layout: Layout, prefix: &str, name: &str) -> Self {
        Cgroup {
            layout,
            rel: Path::new(prefix).join(name),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Directory of this cgroup in the hierarchy holding `ctrl`.
    pub fn dir(&self, ctrl: Controller) -> PathBuf {
        self.layout.root(ctrl).join(&self.rel)
    }

    /// Every distinct directory of this cgroup.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.layout
            .roots()
            .iter()
            .map(|r| r.join(&self.rel))
            .collect()
    }

    /// Moves the cgroup to `name` under the same parent in every hierarchy
    /// (cgroup v1 and v2 allow a rename in place; members stay members).
    /// On error the directories already moved are moved back.
    pub fn rename(&self, name: &str) -> Result<Cgroup> {
        let parent = self.rel.parent().unwrap_or(Path::new(""));
        let to = Cgroup {
            layout: self.layout.clone(),
            rel: parent.join(name),
        };
        let pairs: Vec<(PathBuf, PathBuf)> = self.dirs().into_iter().zip(to.dirs()).collect();
        for (i, (from, dest)) in pairs.iter().enumerate() {
            if let Err(source) = std::fs::rename(from, dest) {
                for (back_from, back_dest) in pairs[..i].iter().rev() {
                    let _ = std::fs::rename(back_dest, back_from);
                }
                return Err(Error::Io {
                    step: "rename cgroup",
                    path: from.clone(),
                    source,
                });
            }
        }
        Ok(to)
    }

    pub fn exists(&self) -> bool {
        self.dirs().iter().all(|d| d.is_dir())
    }

    /// Creates the cgroup (and `<prefix>` above it) everywhere and writes the
    /// limits. On error, removes what it created.
    pub fn create(&self, limits: &Limits) -> Result<()> {
        let parent = self.rel.parent().unwrap_or(Path::new(""));
        self.layout.prepare_parent(parent)?;
        let result = self.create_dirs().and_then(|()| self.write_limits(limits));
        if result.is_err() {
            let _ = self.remove_dirs();
        }
        result
    }

    fn create_dirs(&self) -> Result<()> {
        for dir in self.dirs() {
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create cgroup", &dir)(e)),
            }
        }
        Ok(())
    }

    fn write_limits(&self, l: &Limits) -> Result<()> {
        let quota = u64::from(l.vcpus) * CPU_PERIOD_US;
        match &self.layout {
            Layout::V1 { .. } => {
                let mem = self.dir(Controller::Memory);
                write(
                    &mem.join("memory.limit_in_bytes"),
                    &l.memory_bytes.to_string(),
                )?;
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &l.memory_bytes.to_string())?;
                }
                let cpu = self.dir(Controller::Cpu);
                write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
                write(
                    &self.dir(Controller::Pids).join("pids.max"),
                    &l.pids.to_string(),
                )?;
            }
            Layout::V2 { .. } => {
                let dir = self.dir(Controller::Memory);
                write(&dir.join("memory.max"), &l.memory_bytes.to_string())?;
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
                write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                write(&dir.join("pids.max"), &l.pids.to_string())?;
            }
        }
        Ok(())
    }

    /// The file through which a single-threaded process joins, in every
    /// hierarchy, opened write-only and close-on-exec: the sandbox's first
    /// process writes `0` to each.
    ///
    /// On v1 that is `tasks`: moving only the calling thread skips the global
    /// `cgroup_threadgroup_rwsem`, whose write side waits for an RCU grace
    /// period (measured 0.1–15 ms per hierarchy on this machine, five
    /// hierarchies per start); the first process has a single thread, so it
    /// moves whole. On v2 it is `cgroup.procs` (threads cannot leave their
    /// resource domain one by one).
    pub fn open_procs(&self) -> Result<Vec<OwnedFd>> {
        let file = match self.layout {
            Layout::V1 { .. } => "tasks",
            Layout::V2 { .. } => "cgroup.procs",
        };
        self.dirs()
            .into_iter()
            .map(|d| {
                let path = d.join(file);
                OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&path)
                    .map(OwnedFd::from)
                    .map_err(io_err("open cgroup join file", &path))
            })
            .collect()
    }

    /// Pids in the cgroup (of the freezer or unified hierarchy).
    pub fn pids(&self) -> Result<Vec<i32>> {
        let path = self.dir(Controller::Freezer).join("cgroup.procs");
        match fs::read_to_string(&path) {
            Ok(s) => Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err("read cgroup.procs", &path)(e)),
        }
    }

    /// Freezes every task and waits until the kernel reports them frozen.
    pub fn freeze(&self, timeout: Duration) -> Result<()> {
        self.set_frozen(true, timeout)
    }

    pub fn thaw(&self, timeout: Duration) -> Result<()> {
        self.set_frozen(false, timeout)
    }

    pub fn is_frozen(&self) -> Result<bool> {
        let dir = self.dir(Controller::Freezer);
        match &self.layout {
            Layout::V1 { .. } => {
                let path = dir.join("freezer.state");
                let s = fs::read_to_string(&path).map_err(io_err("read freezer.state", &path))?;
                Ok(s.trim() == "FROZEN")
            }
            Layout::V2 { .. } => {
                let path = dir.join("cgroup.events");
                let s = fs::read_to_string(&path).map_err(io_err("read cgroup.events", &path))?;
                Ok(s.lines().any(|l| l.trim() == "frozen 1"))
            }
        }
    }

    fn set_frozen(&self, frozen: bool, timeout: Duration) -> Result<()> {
        let dir = self.dir(Controller::Freezer);
        let (file, value) = match (&self.layout, frozen) {
            (Layout::V1 { .. }, true) => ("freezer.state", "FROZEN"),
            (Layout::V1 { .. }, false) => ("freezer.state", "THAWED"),
            (Layout::V2 { .. }, true) => ("cgroup.freeze", "1"),
            (Layout::V2 { .. }, false) => ("cgroup.freeze", "0"),
        };
        let path = dir.join(file);
        write(&path, value)?;
        let start = Instant::now();
        let mut pause = Duration::from_micros(100);
        loop {
            if self.is_frozen()? == frozen {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    step: if frozen { "freeze" } else { "thaw" },
                    path,
                    state: if frozen { "not frozen" } else { "frozen" }.into(),
                    waited: timeout,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// Sends SIGKILL to every task (v2: `cgroup.kill`).
    pub fn kill_all(&self) -> Result<()> {
        if let Layout::V2 { .. } = &self.layout {
            let path = self.dir(Controller::Freezer).join("cgroup.kill");
            if path.exists() {
                return write(&path, "1");
            }
        }
        for pid in self.pids()? {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        Ok(())
    }

    /// Kills what is left, thaws (frozen tasks cannot die), waits until the
    /// cgroup is empty and removes it everywhere. Missing cgroups are fine.
    pub fn destroy(&self, timeout: Duration) -> Result<()> {
        if !self.dirs().iter().any(|d| d.exists()) {
            return Ok(());
        }
        let start = Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                break;
            }
            self.kill_all()?;
            if self.dir(Controller::Freezer).exists() {
                let _ = self.thaw_nowait();
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    step: "empty cgroup",
                    path: self.dir(Controller::Freezer),
                    state: format!("{} tasks left", pids.len()),
                    waited: timeout,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
        self.remove_dirs()
    }

    fn thaw_nowait(&self) -> Result<()> {
        let dir = self.dir(Controller::Freezer);
        match &self.layout {
            Layout::V1 { .. } => write(&dir.join("freezer.state"), "THAWED"),
            Layout::V2 { .. } => write(&dir.join("cgroup.freeze"), "0"),
        }
    }

    fn remove_dirs(&self) -> Result<()> {
        for dir in self.dirs() {
            remove_dir_retrying(&dir)?;
        }
        Ok(())
    }

    pub fn usage(&self) -> Result<Usage> {
        match &self.layout {
            Layout::V1 { .. } => {
                let acct = self.dir(Controller::Cpuacct).join("cpuacct.usage");
                let mem = self.dir(Controller::Memory);
                Ok(Usage {
                    cpu_usec: read_u64(&acct)? / 1000,
                    memory_bytes: read_u64(&mem.join("memory.usage_in_bytes"))?,
                    memory_limit_bytes: read_u64(&mem.join("memory.limit_in_bytes"))?,
                    pids: read_u64(&self.dir(Controller::Pids).join("pids.current"))? as u32,
                })
            }
            Layout::V2 { .. } => {
                let dir = self.dir(Controller::Memory);
                let stat_path = dir.join("cpu.stat");
                let stat = fs::read_to_string(&stat_path).map_err(io_err("read", &stat_path))?;
                let cpu_usec = stat
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let max_path = dir.join("memory.max");
                let max = fs::read_to_string(&max_path).map_err(io_err("read", &max_path))?;
                Ok(Usage {
                    cpu_usec,
                    memory_bytes: read_u64(&dir.join("memory.current"))?,
                    memory_limit_bytes: max.trim().parse().unwrap_or(u64::MAX),
                    pids: read_u64(&dir.join("pids.current"))? as u32,
                })
            }
        }
    }
}

/// Writes `value` to a cgroup control file.
pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(io_err("write cgroup file", path))
}

fn read_u64(path: &Path) -> Result<u64> {
    let s = fs::read_to_string(path).map_err(io_err("read cgroup file", path))?;
    s.trim().parse().map_err(|e| Error::Io {
        step: "parse cgroup file",
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })
}

/// `rmdir` of a cgroup; a just-emptied cgroup may report EBUSY for a moment
/// (v1 memory offlining), so retry briefly. Missing is fine.
fn remove_dir_retrying(dir: &Path) -> Result<()> {
    let start = Instant::now();
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    && start.elapsed() < Duration::from_secs(2) =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(io_err("remove cgroup", dir)(e)),
        }
    }
}

/// Names of the cgroups under `<prefix>` (in the freezer/unified hierarchy).
pub fn list(layout: &Layout, prefix: &str) -> Vec<String> {
    let dir = layout.root(Controller::Freezer).join(prefix);
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Removes `<prefix>` from every hierarchy when no sandbox cgroup is left in
/// it. Busy (another instance of the prefix still has sandboxes) is fine.
pub fn remove_prefix(layout: &Layout, prefix: &str) {
    for root in layout.roots() {
        let dir = root.join(prefix);
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) => tracing::debug!(path = %dir.display(), error = %e, "cgroup prefix kept"),
        }
    }
}

#[cfg(test)]
mod tests;
