//! The [`Plan`]: every path, option, file body and `argv`/`envp` of a
//! sandbox's first process as C strings, built before `clone`.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use seccompiler::sock_filter;

use super::{ALLOWED_CAPS, GUEST_PATH, SpawnError, Step, TOKEN_PATH, spawn_err};
use crate::namespace::userns::IdRange;

/// `/proc` and `/sys` entries hidden from the sandbox (Docker's defaults):
/// a file is covered by `/dev/null`, a directory by an empty read-only tmpfs.
pub const MASKED: &[&str] = &[
    "proc/acpi",
    "proc/asound",
    "proc/interrupts",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/sched_debug",
    "proc/scsi",
    "proc/timer_list",
    "proc/timer_stats",
    "sys/devices/virtual/powercap",
    "sys/firmware",
];

/// `/proc` entries the sandbox may read but never write (Docker's defaults).
pub const READ_ONLY: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// Everything the child needs, prepared before `clone`.
pub struct Plan {
    pub(super) netns: OwnedFd,
    pub(super) cgroup_procs: Vec<OwnedFd>,
    pub(super) stdin: OwnedFd,
    pub(super) stdout: OwnedFd,
    pub(super) root: OwnedFd,
    pub(super) c: CStrings,
    pub(super) files: [(CString, Vec<u8>); 2],
    pub(super) token: Vec<u8>,
    pub(super) hostname: Vec<u8>,
    pub(super) caps_drop: Vec<libc::c_ulong>,
    pub(super) hardening: Option<Hardened>,
    pub(super) argv: Vec<CString>,
    pub(super) envp: Vec<CString>,
}

/// What makes a sandbox safe for hostile code: its own user namespace and
/// the seccomp filter.
pub(super) struct Hardened {
    pub(super) ids: IdRange,
    pub(super) userns: OwnedFd,
    pub(super) seccomp: &'static [sock_filter],
}

/// A `/proc` or `/sys` entry to cover.
pub(super) enum Mask {
    /// A file: `/dev/null` bound over it.
    File(CString),
    /// A directory: an empty read-only tmpfs over it.
    Dir(CString),
}

/// Paths and mount options, as C strings.
pub(super) struct CStrings {
    pub(super) root: CString,
    pub(super) proc_: CString,
    pub(super) sys: CString,
    pub(super) masks: Vec<Mask>,
    pub(super) read_only: Vec<CString>,
    pub(super) dev: CString,
    pub(super) dev_opts: CString,
    pub(super) pts: CString,
    pub(super) pts_opts: CString,
    pub(super) shm: CString,
    pub(super) tmp: CString,
    pub(super) sticky_opts: CString,
    pub(super) run: CString,
    pub(super) run_opts: CString,
    pub(super) run_wrenn: CString,
    pub(super) guest_target: CString,
    pub(super) guest_src: CString,
    pub(super) token: CString,
    pub(super) exe: CString,
    pub(super) nodes: Vec<(CString, u64, u64)>,
    pub(super) links: Vec<(CString, CString)>,
    pub(super) dev_null: CString,
    pub(super) dot: CString,
    pub(super) slash: CString,
    pub(super) tmpfs: CString,
    pub(super) empty_ro: CString,
}

/// Inputs of [`Plan::new`].
pub struct PlanInput<'a> {
    pub hostname: &'a str,
    pub netns: OwnedFd,
    pub cgroup_procs: Vec<OwnedFd>,
    /// Where the guest's stdout and stderr go (the write end of the log pipe).
    pub stdout: OwnedFd,
    /// The detached root filesystem ([`crate::namespace::rootmount`]).
    pub root: OwnedFd,
    /// The directory it is attached on in the sandbox's mount namespace.
    pub root_dir: &'a Path,
    pub guest_bin: &'a Path,
    /// Flags of the guest agent.
    pub args: Vec<String>,
    /// The guest's credential, written to [`TOKEN_PATH`] (mode 0400, owned by
    /// the sandbox's root).
    pub token: &'a str,
    pub resolv_conf: String,
    pub hosts: String,
    pub env: BTreeMap<String, String>,
    /// The sandbox's user namespace and host ids, and the seccomp filter;
    /// `None` only for benchmarks of the unhardened runtime.
    pub hardening: Option<(IdRange, OwnedFd, &'static [sock_filter])>,
}

fn cstr(p: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(p.as_ref().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"))
}

impl Plan {
    pub fn new(i: PlanInput<'_>) -> Result<Plan, SpawnError> {
        let bad = |p: &Path| spawn_err("prepare path", p.display().to_string());
        let root = i.root_dir;
        let sub = |rel: &str| cstr(root.join(rel)).map_err(bad(root));
        let nodes = [
            ("null", 1, 3),
            ("zero", 1, 5),
            ("full", 1, 7),
            ("random", 1, 8),
            ("urandom", 1, 9),
            ("tty", 5, 0),
        ]
        .iter()
        .map(|(n, ma, mi)| Ok((sub(&format!("dev/{n}"))?, *ma, *mi)))
        .collect::<Result<Vec<_>, SpawnError>>()?;
        let links = [
            ("pts/ptmx", "dev/ptmx"),
            ("/proc/self/fd", "dev/fd"),
            ("/proc/self/fd/0", "dev/stdin"),
            ("/proc/self/fd/1", "dev/stdout"),
            ("/proc/self/fd/2", "dev/stderr"),
        ]
        .iter()
        .map(|(target, link)| Ok((cstr(target).map_err(bad(root))?, sub(link)?)))
        .collect::<Result<Vec<_>, SpawnError>>()?;
        // The sandbox's /proc and /sys are new instances of the host's kernel:
        // the host's tell which entries exist and which are directories.
        let mut masks = Vec::new();
        for rel in MASKED {
            match std::fs::symlink_metadata(Path::new("/").join(rel)) {
                Ok(m) if m.is_dir() => masks.push(Mask::Dir(sub(rel)?)),
                Ok(_) => masks.push(Mask::File(sub(rel)?)),
                Err(_) => {}
            }
        }
        let read_only = READ_ONLY
            .iter()
            .filter(|rel| Path::new("/").join(rel).exists())
            .map(|rel| sub(rel))
            .collect::<Result<Vec<_>, _>>()?;
        // Mount roots owned by the sandbox's root, not by an id it cannot see.
        let owner = i
            .hardening
            .as_ref()
            .map(|(ids, _, _)| (ids.host(0), ids.host(0), ids.host(5)));
        let (uid_opts, tty_gid) = match owner {
            Some((uid, gid, tty)) => (format!(",uid={uid},gid={gid}"), tty),
            None => (String::new(), 5),
        };
        let opts = |base: &str| {
            CString::new(format!("{base}{uid_opts}"))
                .map_err(|_| bad(root)(io::ErrorKind::InvalidInput.into()))
        };
        let c = CStrings {
            root: cstr(root).map_err(bad(root))?,
            proc_: sub("proc")?,
            sys: sub("sys")?,
            masks,
            read_only,
            dev: sub("dev")?,
            dev_opts: opts("mode=755,size=65536k")?,
            pts: sub("dev/pts")?,
            pts_opts: CString::new(format!("newinstance,ptmxmode=0666,mode=0620,gid={tty_gid}"))
                .map_err(|_| bad(root)(io::ErrorKind::InvalidInput.into()))?,
            shm: sub("dev/shm")?,
            tmp: sub("tmp")?,
            sticky_opts: opts("mode=1777")?,
            run: sub("run")?,
            run_opts: opts("mode=755")?,
            run_wrenn: sub("run/wrenn")?,
            guest_target: sub(GUEST_PATH.trim_start_matches('/'))?,
            guest_src: cstr(i.guest_bin).map_err(bad(i.guest_bin))?,
            token: sub(TOKEN_PATH.trim_start_matches('/'))?,
            exe: cstr(GUEST_PATH).map_err(bad(root))?,
            nodes,
            links,
            dev_null: c"/dev/null".to_owned(),
            dot: c".".to_owned(),
            slash: c"/".to_owned(),
            tmpfs: c"tmpfs".to_owned(),
            empty_ro: c"mode=0555".to_owned(),
        };
        let files = [
            (sub("etc/resolv.conf")?, i.resolv_conf.into_bytes()),
            (sub("etc/hosts")?, i.hosts.into_bytes()),
        ];
        let mut env = vec![
            (
                "PATH".to_owned(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            ),
            ("HOME".to_owned(), "/root".to_owned()),
        ];
        env.retain(|(k, _)| !i.env.contains_key(k));
        env.extend(i.env);
        env.push(("WRENN_SANDBOX_ID".to_owned(), i.hostname.to_owned()));
        let envp = env
            .iter()
            .map(|(k, v)| {
                CString::new(format!("{k}={v}")).map_err(|_| SpawnError {
                    step: "prepare environment",
                    path: k.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let argv = std::iter::once("wrenn-guest".to_owned())
            .chain(i.args)
            .map(|a| {
                CString::new(a.clone()).map_err(|_| SpawnError {
                    step: "prepare arguments",
                    path: a,
                    source: io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(40);
        let caps_drop = (0..=last_cap)
            .filter(|c| !ALLOWED_CAPS.iter().any(|(a, _)| a == c))
            .map(libc::c_ulong::from)
            .collect();
        let null = Path::new("/dev/null");
        let stdin = std::fs::File::open(null)
            .map_err(spawn_err("open", "/dev/null"))?
            .into();
        Ok(Plan {
            netns: i.netns,
            cgroup_procs: i.cgroup_procs,
            stdin,
            stdout: i.stdout,
            root: i.root,
            c,
            files,
            token: i.token.as_bytes().to_vec(),
            hostname: i.hostname.as_bytes().to_vec(),
            caps_drop,
            hardening: i.hardening.map(|(ids, userns, seccomp)| Hardened {
                ids,
                userns,
                seccomp,
            }),
            argv,
            envp,
        })
    }

    /// What a failed step was working on (`index`: which entry of a list),
    /// for the error message.
    pub(super) fn describe(&self, step: Step, index: usize) -> (&'static str, String) {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        let c = &self.c;
        let nth = |v: &[CString]| v.get(index).map(s).unwrap_or_default();
        match step {
            Step::JoinCgroup => ("join cgroup", "cgroup.procs".into()),
            Step::CgroupNs => ("unshare cgroup namespace", String::new()),
            Step::JoinNetns => ("join netns", String::new()),
            Step::PrivateMounts => ("make mounts private", "/".into()),
            Step::AttachRoot => ("attach root filesystem on", s(&c.root)),
            Step::OwnFiles => (
                "take the sandbox root's filesystem ids",
                self.hardening
                    .as_ref()
                    .map(|h| h.ids.base.to_string())
                    .unwrap_or_default(),
            ),
            Step::MountProc => ("mount proc", s(&c.proc_)),
            Step::MountSys => ("mount sysfs", s(&c.sys)),
            Step::Mask => (
                "mask",
                match c.masks.get(index) {
                    Some(Mask::File(p) | Mask::Dir(p)) => s(p),
                    None => String::new(),
                },
            ),
            Step::ReadOnly => ("make read-only", nth(&c.read_only)),
            Step::MountDev => ("mount tmpfs", s(&c.dev)),
            Step::MakeDevNode => (
                "create device node",
                c.nodes.get(index).map(|n| s(&n.0)).unwrap_or_default(),
            ),
            Step::LinkDev => (
                "create link",
                c.links.get(index).map(|l| s(&l.1)).unwrap_or_default(),
            ),
            Step::MountDevPts => ("mount devpts", s(&c.pts)),
            Step::MountShm => ("mount tmpfs", s(&c.shm)),
            Step::MountTmp => ("mount tmpfs", s(&c.tmp)),
            Step::MountRun => ("mount tmpfs", s(&c.run)),
            Step::MakeGuestTarget => ("create", s(&c.guest_target)),
            Step::BindGuest => (
                "bind guest binary",
                format!("{} on {}", s(&c.guest_src), s(&c.guest_target)),
            ),
            Step::WriteToken => ("write", s(&c.token)),
            Step::WriteEtc => (
                "write",
                self.files.get(index).map(|f| s(&f.0)).unwrap_or_default(),
            ),
            Step::PivotRoot => ("pivot_root", s(&c.root)),
            Step::DetachOldRoot => ("detach old root", String::new()),
            Step::SetHostname => (
                "set hostname",
                String::from_utf8_lossy(&self.hostname).into_owned(),
            ),
            Step::Stdio => ("redirect stdio", String::new()),
            Step::JoinUserns => ("join the sandbox's user namespace", String::new()),
            Step::SetIds => ("become root of the user namespace", String::new()),
            Step::DropCaps => ("drop capabilities", String::new()),
            Step::Signals => ("reset signals", String::new()),
            Step::Seccomp => ("install the seccomp filter", String::new()),
            Step::Exec => ("exec", GUEST_PATH.into()),
        }
    }
}
