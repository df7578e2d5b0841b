//! The [`Plan`]: every path, option, file body and `argv`/`envp` of a
//! sandbox's first process as C strings, built before `clone`.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{ALLOWED_CAPS, GUEST_PATH, SpawnError, Step, spawn_err};

/// Everything the child needs, prepared before `clone`.
pub struct Plan {
    pub(super) netns: OwnedFd,
    pub(super) cgroup_procs: Vec<OwnedFd>,
    pub(super) stdin: OwnedFd,
    pub(super) log: OwnedFd,
    pub(super) c: CStrings,
    pub(super) files: [(CString, Vec<u8>); 2],
    pub(super) hostname: Vec<u8>,
    pub(super) caps_drop: Vec<libc::c_ulong>,
    pub(super) argv: Vec<CString>,
    pub(super) envp: Vec<CString>,
}

/// Paths and mount options, as C strings.
pub(super) struct CStrings {
    pub(super) loop_dev: CString,
    pub(super) disk: CString,
    pub(super) disk_opts: CString,
    pub(super) root: CString,
    pub(super) overlay_opts: CString,
    pub(super) proc_: CString,
    pub(super) sys: CString,
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
    pub(super) exe: CString,
    pub(super) nodes: Vec<(CString, u64, u64)>,
    pub(super) links: Vec<(CString, CString)>,
    pub(super) dot: CString,
    pub(super) slash: CString,
    pub(super) ext4: CString,
    pub(super) overlay: CString,
    pub(super) tmpfs: CString,
}

/// Inputs of [`Plan::new`].
pub struct PlanInput<'a> {
    pub hostname: &'a str,
    pub netns: OwnedFd,
    pub cgroup_procs: Vec<OwnedFd>,
    pub log: OwnedFd,
    pub loop_dev: &'a Path,
    pub disk_dir: &'a Path,
    pub root_dir: &'a Path,
    pub lower: &'a Path,
    pub guest_bin: &'a Path,
    pub resolv_conf: String,
    pub hosts: String,
    pub env: BTreeMap<String, String>,
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
        let check_opt = |p: &Path| -> Result<(), SpawnError> {
            let s = p.as_os_str().as_bytes();
            if s.iter().any(|b| b",:\\".contains(b)) {
                return Err(SpawnError {
                    step: "overlay path check",
                    path: p.display().to_string(),
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "contains ',', ':' or '\\'",
                    ),
                });
            }
            Ok(())
        };
        check_opt(i.lower)?;
        check_opt(i.disk_dir)?;
        let overlay_opts = format!(
            "lowerdir={},upperdir={}/upper,workdir={}/work",
            i.lower.display(),
            i.disk_dir.display(),
            i.disk_dir.display()
        );
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
        let c = CStrings {
            loop_dev: cstr(i.loop_dev).map_err(bad(i.loop_dev))?,
            disk: cstr(i.disk_dir).map_err(bad(i.disk_dir))?,
            disk_opts: c"noinit_itable".to_owned(),
            root: cstr(root).map_err(bad(root))?,
            overlay_opts: cstr(&overlay_opts).map_err(bad(i.lower))?,
            proc_: sub("proc")?,
            sys: sub("sys")?,
            dev: sub("dev")?,
            dev_opts: c"mode=755,size=65536k".to_owned(),
            pts: sub("dev/pts")?,
            pts_opts: c"newinstance,ptmxmode=0666,mode=0620,gid=5".to_owned(),
            shm: sub("dev/shm")?,
            tmp: sub("tmp")?,
            sticky_opts: c"mode=1777".to_owned(),
            run: sub("run")?,
            run_opts: c"mode=755".to_owned(),
            run_wrenn: sub("run/wrenn")?,
            guest_target: sub(GUEST_PATH.trim_start_matches('/'))?,
            guest_src: cstr(i.guest_bin).map_err(bad(i.guest_bin))?,
            exe: cstr(GUEST_PATH).map_err(bad(root))?,
            nodes,
            links,
            dot: c".".to_owned(),
            slash: c"/".to_owned(),
            ext4: c"ext4".to_owned(),
            overlay: c"overlay".to_owned(),
            tmpfs: c"tmpfs".to_owned(),
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
            log: i.log,
            c,
            files,
            hostname: i.hostname.as_bytes().to_vec(),
            caps_drop,
            argv: vec![c"wrenn-guest".to_owned()],
            envp,
        })
    }

    /// What a failed step was working on, for the error message.
    pub(super) fn describe(&self, step: Step) -> (&'static str, String) {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        let c = &self.c;
        match step {
            Step::JoinCgroup => ("join cgroup", "cgroup.procs".into()),
            Step::CgroupNs => ("unshare cgroup namespace", String::new()),
            Step::JoinNetns => ("join netns", String::new()),
            Step::PrivateMounts => ("make mounts private", "/".into()),
            Step::MountDisk => (
                "mount disk",
                format!("{} on {}", s(&c.loop_dev), s(&c.disk)),
            ),
            Step::MountOverlay => (
                "mount overlay",
                format!("{} ({})", s(&c.root), s(&c.overlay_opts)),
            ),
            Step::MountProc => ("mount proc", s(&c.proc_)),
            Step::MountSys => ("mount sysfs", s(&c.sys)),
            Step::MountDev => ("mount tmpfs", s(&c.dev)),
            Step::MakeDevNode => ("create device nodes in", s(&c.dev)),
            Step::LinkDev => ("create links in", s(&c.dev)),
            Step::MountDevPts => ("mount devpts", s(&c.pts)),
            Step::MountShm => ("mount tmpfs", s(&c.shm)),
            Step::MountTmp => ("mount tmpfs", s(&c.tmp)),
            Step::MountRun => ("mount tmpfs", s(&c.run)),
            Step::MakeGuestTarget => ("create", s(&c.guest_target)),
            Step::BindGuest => (
                "bind guest binary",
                format!("{} on {}", s(&c.guest_src), s(&c.guest_target)),
            ),
            Step::WriteEtc => (
                "write",
                format!("{} / {}", s(&self.files[0].0), s(&self.files[1].0)),
            ),
            Step::PivotRoot => ("pivot_root", s(&c.root)),
            Step::DetachOldRoot => ("detach old root", String::new()),
            Step::SetHostname => (
                "set hostname",
                String::from_utf8_lossy(&self.hostname).into_owned(),
            ),
            Step::DropCaps => ("drop capabilities", String::new()),
            Step::Stdio => ("redirect stdio", String::new()),
            Step::Signals => ("reset signals", String::new()),
            Step::Exec => ("exec", GUEST_PATH.into()),
        }
    }
}
