//! Where the cgroup controllers are mounted (read from `/proc/self/mountinfo`).

use std::fs;
use std::path::{Path, PathBuf};

use super::{Error, Result, io_err, write};

/// A controller the runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Memory,
    Cpu,
    Cpuacct,
    Pids,
    Freezer,
}

impl Controller {
    const ALL: [Controller; 5] = [
        Controller::Memory,
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Pids,
        Controller::Freezer,
    ];

    fn v1_name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Pids => "pids",
            Controller::Freezer => "freezer",
        }
    }
}

/// The cgroup hierarchies of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One mount point per controller (several may be the same path when
    /// controllers are co-mounted, e.g. `cpu,cpuacct`).
    V1 {
        memory: PathBuf,
        cpu: PathBuf,
        cpuacct: PathBuf,
        pids: PathBuf,
        freezer: PathBuf,
    },
    /// The unified hierarchy's mount point.
    V2 { root: PathBuf },
}

impl Layout {
    /// Reads the host's layout.
    pub fn detect() -> Result<Layout> {
        let path = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(path).map_err(io_err("read", path))?;
        Self::parse(&text)
    }

    /// v1 when the memory controller is mounted as v1 (with every other
    /// controller the runtime needs), else v2 when a cgroup2 mount exists.
    pub fn parse(mountinfo: &str) -> Result<Layout> {
        let mut v1: Vec<(PathBuf, Vec<String>)> = Vec::new();
        let mut v2: Option<PathBuf> = None;
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(sep) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            if fields.len() < sep + 4 || fields.len() < 5 {
                continue;
            }
            let mount_point = PathBuf::from(crate::mounts::unescape(fields[4]));
            match fields[sep + 1] {
                "cgroup" => {
                    let opts = fields[sep + 3].split(',').map(str::to_owned).collect();
                    v1.push((mount_point, opts));
                }
                "cgroup2" if v2.is_none() => v2 = Some(mount_point),
                _ => {}
            }
        }
        let find = |name: &str| {
            v1.iter()
                .find(|(_, opts)| opts.iter().any(|o| o == name))
                .map(|(p, _)| p.clone())
        };
        if let Some(memory) = find("memory") {
            let mut missing = Vec::new();
            let mut get = |c: Controller| {
                find(c.v1_name()).unwrap_or_else(|| {
                    missing.push(c.v1_name());
                    PathBuf::new()
                })
            };
            let layout = Layout::V1 {
                memory,
                cpu: get(Controller::Cpu),
                cpuacct: get(Controller::Cpuacct),
                pids: get(Controller::Pids),
                freezer: get(Controller::Freezer),
            };
            if !missing.is_empty() {
                return Err(Error::NoHierarchy(format!(
                    "cgroup v1 memory controller is mounted but not {}",
                    missing.join(", ")
                )));
            }
            return Ok(layout);
        }
        v2.map(|root| Layout::V2 { root }).ok_or_else(|| {
            Error::NoHierarchy(
                "neither a cgroup v1 memory controller nor cgroup2 is mounted".into(),
            )
        })
    }

    /// Mount point of the hierarchy holding `ctrl`.
    pub fn root(&self, ctrl: Controller) -> &Path {
        match self {
            Layout::V1 {
                memory,
                cpu,
                cpuacct,
                pids,
                freezer,
            } => match ctrl {
                Controller::Memory => memory,
                Controller::Cpu => cpu,
                Controller::Cpuacct => cpuacct,
                Controller::Pids => pids,
                Controller::Freezer => freezer,
            },
            Layout::V2 { root } => root,
        }
    }

    /// Every distinct mount point, in a fixed order.
    pub fn roots(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for c in Controller::ALL {
            let r = self.root(c).to_owned();
            if !out.contains(&r) {
                out.push(r);
            }
        }
        out
    }

    /// Creates `<parent>` (the prefix) in every hierarchy; on v2 also enables
    /// the controllers for its children.
    pub(super) fn prepare_parent(&self, parent: &Path) -> Result<()> {
        for root in self.roots() {
            let dir = root.join(parent);
            if !dir.is_dir() {
                match fs::create_dir_all(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("create cgroup", &dir)(e)),
                }
            }
        }
        if let Layout::V2 { root } = self {
            enable_controllers(root)?;
            enable_controllers(&root.join(parent))?;
        }
        Ok(())
    }
}

/// v2: lets children of `dir` use memory, cpu and pids.
fn enable_controllers(dir: &Path) -> Result<()> {
    let path = dir.join("cgroup.subtree_control");
    let current = fs::read_to_string(&path).map_err(io_err("read", &path))?;
    let missing: Vec<String> = ["memory", "cpu", "pids"]
        .iter()
        .filter(|c| !current.split_whitespace().any(|x| x == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write(&path, &missing.join(" "))
}
