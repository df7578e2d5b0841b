//! Starting a sandbox's first process: `clone` into new namespaces, build the
//! root filesystem, `exec` the guest agent.
//!
//! # Design
//!
//! The runtime is a multi-threaded tokio process, so the code between `clone`
//! and `execve` runs in a copy of one thread whose other threads' locks (the
//! allocator's among them) may be held forever. It therefore must not
//! allocate, log or panic: every path, mount option, file body, `argv` and
//! `envp` is prepared as a C string in a [`Plan`] before `clone`, and the
//! child only makes system calls. A re-exec'd helper binary would avoid the
//! restriction, but needs a binary the library cannot assume and costs an
//! extra `exec` on every start.
//!
//! The child (PID 1 of its new PID namespace, with new mount, UTS and IPC
//! namespaces):
//!
//! 1. joins its cgroups by writing `0` to the `cgroup.procs` files opened by
//!    the parent, then unshares a cgroup namespace rooted there;
//! 2. joins the sandbox's netns (`setns`);
//! 3. makes every mount private, mounts the sandbox's disk (ext4 on a loop
//!    device) and the overlay (template image below, the disk's `upper` on
//!    top) — inside its own mount namespace, so they vanish with it;
//! 4. mounts `/proc` and `/sys` read-only, a tmpfs `/dev` with `null`, `zero`,
//!    `full`, `random`, `urandom`, `tty`, a private `devpts` and `ptmx`,
//!    tmpfs `/dev/shm`, `/tmp` and `/run`, binds `wrenn-guest` read-only at
//!    `/run/wrenn/wrenn-guest`, writes `/etc/resolv.conf` and `/etc/hosts`;
//! 5. `pivot_root`s into the overlay and detaches the old root;
//! 6. sets the hostname to the sandbox id, bounds its capabilities, points
//!    stdin at `/dev/null` and stdout/stderr at `guest.log`, resets signal
//!    dispositions and the signal mask, and `exec`s the guest.
//!
//! Failure of any step is written as `(step, errno)` to a close-on-exec pipe;
//! end-of-file on that pipe means the `exec` succeeded.
//!
//! Capabilities: the bounding set (and so what the guest and every process it
//! starts as root can ever hold) is Docker's default set without `MKNOD`:
//! [`ALLOWED_CAPS`]. `no_new_privs` is *not* set: the `base` template's
//! `wrenn-user` uses `sudo`, a set-uid program, and the bounding set already
//! caps what set-uid root can regain.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::unistd::Pid;

/// Capabilities kept in the bounding set (Docker's defaults minus `MKNOD`).
pub const ALLOWED_CAPS: &[(u32, &str)] = &[
    (0, "CHOWN"),
    (1, "DAC_OVERRIDE"),
    (3, "FOWNER"),
    (4, "FSETID"),
    (5, "KILL"),
    (6, "SETGID"),
    (7, "SETUID"),
    (8, "SETPCAP"),
    (10, "NET_BIND_SERVICE"),
    (13, "NET_RAW"),
    (18, "SYS_CHROOT"),
    (29, "AUDIT_WRITE"),
    (31, "SETFCAP"),
];

/// Where the guest binary appears inside the sandbox.
pub const GUEST_PATH: &str = "/run/wrenn/wrenn-guest";
const CHILD_STACK: usize = 256 * 1024;

/// Everything the child needs, prepared before `clone`.
pub struct Plan {
    netns: OwnedFd,
    cgroup_procs: Vec<OwnedFd>,
    stdin: OwnedFd,
    log: OwnedFd,
    c: CStrings,
    files: [(CString, Vec<u8>); 2],
    hostname: Vec<u8>,
    caps_drop: Vec<libc::c_ulong>,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

/// Paths and mount options, as C strings.
struct CStrings {
    loop_dev: CString,
    disk: CString,
    disk_opts: CString,
    root: CString,
    overlay_opts: CString,
    proc_: CString,
    sys: CString,
    dev: CString,
    dev_opts: CString,
    pts: CString,
    pts_opts: CString,
    shm: CString,
    tmp: CString,
    sticky_opts: CString,
    run: CString,
    run_opts: CString,
    run_wrenn: CString,
    guest_target: CString,
    guest_src: CString,
    exe: CString,
    nodes: Vec<(CString, u64, u64)>,
    links: Vec<(CString, CString)>,
    dot: CString,
    slash: CString,
    ext4: CString,
    overlay: CString,
    tmpfs: CString,
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

/// A step of the child, reported back on failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Step {
    JoinCgroup = 1,
    CgroupNs,
    JoinNetns,
    PrivateMounts,
    MountDisk,
    MountOverlay,
    MountProc,
    MountSys,
    MountDev,
    MakeDevNode,
    LinkDev,
    MountDevPts,
    MountShm,
    MountTmp,
    MountRun,
    MakeGuestTarget,
    BindGuest,
    WriteEtc,
    PivotRoot,
    DetachOldRoot,
    SetHostname,
    DropCaps,
    Stdio,
    Signals,
    Exec,
}

/// A failed start, with the step and what it was working on.
#[derive(Debug, thiserror::Error)]
#[error("{step} {path}")]
pub struct SpawnError {
    pub step: &'static str,
    pub path: String,
    #[source]
    pub source: io::Error,
}

fn cstr(p: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(p.as_ref().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"))
}

fn spawn_err(step: &'static str, path: impl Into<String>) -> impl FnOnce(io::Error) -> SpawnError {
    let path = path.into();
    move |source| SpawnError { step, path, source }
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
    fn describe(&self, step: Step) -> (&'static str, String) {
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

/// Clones the sandbox's first process and waits until it has `exec`ed the
/// guest (or failed). Blocking: call from `spawn_blocking`.
pub fn spawn(plan: Plan) -> Result<Pid, SpawnError> {
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| spawn_err("create pipe", "")(e.into()))?;
    let argv: Vec<*const libc::c_char> = plan
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp: Vec<*const libc::c_char> = plan
        .envp
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let mut stack = vec![0u8; CHILD_STACK];
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    let (plan_ref, argv_ref, envp_ref) = (&plan, &argv, &envp);
    let child: nix::sched::CloneCb = Box::new(move || {
        let Err((step, errno)) = child_main(plan_ref, argv_ref, envp_ref);
        let mut report = [0u8; 8];
        report[0] = step as u8;
        report[4..].copy_from_slice(&(errno as i32).to_le_bytes());
        let _ = nix::unistd::write(&err_w, &report);
        127
    });
    // SAFETY: the child runs `child_main` on its own copy of `stack` (256 KiB,
    // far more than the straight-line syscalls need) in a copied address
    // space; it does not allocate, lock or unwind before `execve` (see the
    // module docs), so the other threads' state cannot bite it. The closure
    // (and with it the parent's write end of the pipe) is dropped when
    // `clone` returns in the parent.
    let pid = unsafe { nix::sched::clone(child, &mut stack, flags, Some(libc::SIGCHLD)) }
        .map_err(|e| spawn_err("clone", "")(e.into()))?;
    let mut report = [0u8; 8];
    let mut got = 0;
    while got < report.len() {
        match nix::unistd::read(&err_r, &mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(spawn_err("read start report", "")(e.into())),
        }
    }
    if got == 0 {
        return Ok(pid);
    }
    let _ = nix::sys::wait::waitpid(pid, None);
    let step = step_from(report[0]);
    let errno = i32::from_le_bytes([report[4], report[5], report[6], report[7]]);
    let (name, path) = plan.describe(step);
    Err(SpawnError {
        step: name,
        path,
        source: io::Error::from_raw_os_error(errno),
    })
}

fn step_from(b: u8) -> Step {
    const ALL: [Step; 25] = [
        Step::JoinCgroup,
        Step::CgroupNs,
        Step::JoinNetns,
        Step::PrivateMounts,
        Step::MountDisk,
        Step::MountOverlay,
        Step::MountProc,
        Step::MountSys,
        Step::MountDev,
        Step::MakeDevNode,
        Step::LinkDev,
        Step::MountDevPts,
        Step::MountShm,
        Step::MountTmp,
        Step::MountRun,
        Step::MakeGuestTarget,
        Step::BindGuest,
        Step::WriteEtc,
        Step::PivotRoot,
        Step::DetachOldRoot,
        Step::SetHostname,
        Step::DropCaps,
        Step::Stdio,
        Step::Signals,
        Step::Exec,
    ];
    ALL.into_iter()
        .find(|s| *s as u8 == b)
        .unwrap_or(Step::Exec)
}

type ChildResult = Result<std::convert::Infallible, (Step, nix::Error)>;

/// Tags a syscall result with its step.
fn at<T>(step: Step, r: nix::Result<T>) -> Result<T, (Step, nix::Error)> {
    r.map_err(|e| (step, e))
}

/// The child, between `clone` and `execve`. No allocation, no panics.
fn child_main(p: &Plan, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> ChildResult {
    let c = &p.c;
    let none: Option<&CStr> = None;
    for fd in &p.cgroup_procs {
        at(Step::JoinCgroup, nix::unistd::write(fd, b"0"))?;
    }
    at(Step::CgroupNs, unshare(CloneFlags::CLONE_NEWCGROUP))?;
    at(Step::JoinNetns, setns(&p.netns, CloneFlags::CLONE_NEWNET))?;
    at(
        Step::PrivateMounts,
        mount(
            none,
            c.slash.as_c_str(),
            none,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            none,
        ),
    )?;
    at(
        Step::MountDisk,
        mount(
            Some(c.loop_dev.as_c_str()),
            c.disk.as_c_str(),
            Some(c.ext4.as_c_str()),
            MsFlags::MS_NOATIME,
            Some(c.disk_opts.as_c_str()),
        ),
    )?;
    at(
        Step::MountOverlay,
        mount(
            Some(c.overlay.as_c_str()),
            c.root.as_c_str(),
            Some(c.overlay.as_c_str()),
            MsFlags::MS_NODEV,
            Some(c.overlay_opts.as_c_str()),
        ),
    )?;
    let hidden = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    at(
        Step::MountProc,
        mount(
            Some(c"proc"),
            c.proc_.as_c_str(),
            Some(c"proc"),
            hidden | MsFlags::MS_RDONLY,
            none,
        ),
    )?;
    at(
        Step::MountSys,
        mount(
            Some(c"sysfs"),
            c.sys.as_c_str(),
            Some(c"sysfs"),
            hidden | MsFlags::MS_RDONLY,
            none,
        ),
    )?;
    at(
        Step::MountDev,
        mount(
            Some(c.tmpfs.as_c_str()),
            c.dev.as_c_str(),
            Some(c.tmpfs.as_c_str()),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some(c.dev_opts.as_c_str()),
        ),
    )?;
    nix::sys::stat::umask(Mode::empty());
    for (path, major, minor) in &c.nodes {
        let mode = Mode::from_bits_truncate(0o666);
        at(
            Step::MakeDevNode,
            mknod(
                path.as_c_str(),
                SFlag::S_IFCHR,
                mode,
                makedev(*major, *minor),
            ),
        )?;
    }
    at(
        Step::MountDevPts,
        nix::unistd::mkdir(c.pts.as_c_str(), Mode::from_bits_truncate(0o755)),
    )?;
    at(
        Step::MountDevPts,
        mount(
            Some(c"devpts"),
            c.pts.as_c_str(),
            Some(c"devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some(c.pts_opts.as_c_str()),
        ),
    )?;
    for (target, link) in &c.links {
        at(
            Step::LinkDev,
            nix::unistd::symlinkat(target.as_c_str(), nix::fcntl::AT_FDCWD, link.as_c_str()),
        )?;
    }
    at(
        Step::MountShm,
        nix::unistd::mkdir(c.shm.as_c_str(), Mode::from_bits_truncate(0o1777)),
    )?;
    let data = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    at(
        Step::MountShm,
        mount(
            Some(c.tmpfs.as_c_str()),
            c.shm.as_c_str(),
            Some(c.tmpfs.as_c_str()),
            data,
            Some(c.sticky_opts.as_c_str()),
        ),
    )?;
    at(
        Step::MountTmp,
        mount(
            Some(c.tmpfs.as_c_str()),
            c.tmp.as_c_str(),
            Some(c.tmpfs.as_c_str()),
            data,
            Some(c.sticky_opts.as_c_str()),
        ),
    )?;
    at(
        Step::MountRun,
        mount(
            Some(c.tmpfs.as_c_str()),
            c.run.as_c_str(),
            Some(c.tmpfs.as_c_str()),
            data,
            Some(c.run_opts.as_c_str()),
        ),
    )?;
    at(
        Step::MakeGuestTarget,
        nix::unistd::mkdir(c.run_wrenn.as_c_str(), Mode::from_bits_truncate(0o755)),
    )?;
    let oflag =
        nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC;
    drop(at(
        Step::MakeGuestTarget,
        nix::fcntl::open(
            c.guest_target.as_c_str(),
            oflag,
            Mode::from_bits_truncate(0o755),
        ),
    )?);
    at(
        Step::BindGuest,
        mount(
            Some(c.guest_src.as_c_str()),
            c.guest_target.as_c_str(),
            none,
            MsFlags::MS_BIND,
            none,
        ),
    )?;
    let ro = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV;
    at(
        Step::BindGuest,
        mount(none, c.guest_target.as_c_str(), none, ro, none),
    )?;
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    for (path, body) in &p.files {
        // A symlink (e.g. to a resolver's runtime file) is replaced by a file.
        let _ = nix::unistd::unlink(path.as_c_str());
        let oflag = oflag | nix::fcntl::OFlag::O_TRUNC | nix::fcntl::OFlag::O_NOFOLLOW;
        let fd = at(
            Step::WriteEtc,
            nix::fcntl::open(path.as_c_str(), oflag, Mode::from_bits_truncate(0o644)),
        )?;
        at(Step::WriteEtc, nix::unistd::write(&fd, body))?;
    }
    at(Step::PivotRoot, nix::unistd::chdir(c.root.as_c_str()))?;
    at(
        Step::PivotRoot,
        nix::unistd::pivot_root(c.dot.as_c_str(), c.dot.as_c_str()),
    )?;
    at(
        Step::DetachOldRoot,
        umount2(c.dot.as_c_str(), MntFlags::MNT_DETACH),
    )?;
    at(Step::DetachOldRoot, nix::unistd::chdir(c.slash.as_c_str()))?;
    at(
        Step::SetHostname,
        nix::unistd::sethostname(OsStr::from_bytes(&p.hostname)),
    )?;
    drop_caps(&p.caps_drop)?;
    at(Step::Stdio, nix::unistd::dup2_stdin(&p.stdin))?;
    at(Step::Stdio, nix::unistd::dup2_stdout(&p.log))?;
    at(Step::Stdio, nix::unistd::dup2_stderr(&p.log))?;
    // SAFETY: close_range only flags descriptors close-on-exec; none of them
    // is used by this process again except across exec.
    let rc = unsafe {
        libc::close_range(
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        )
    };
    at(Step::Stdio, nix::errno::Errno::result(rc))?;
    reset_signals()?;
    // SAFETY: `exe`, `argv` and `envp` are NUL-terminated C strings and
    // NULL-terminated pointer arrays owned by the plan, alive until exec.
    unsafe { libc::execve(c.exe.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err((Step::Exec, nix::Error::last()))
}

/// Drops every capability outside [`ALLOWED_CAPS`] from the bounding set and
/// clears the inheritable (and so the ambient) set; `exec` then gives the
/// root guest exactly the bounding set.
fn drop_caps(drop: &[libc::c_ulong]) -> Result<(), (Step, nix::Error)> {
    for cap in drop {
        // SAFETY: PR_CAPBSET_DROP takes a capability number by value.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, *cap, 0, 0, 0) };
        if rc < 0 {
            let e = nix::Error::last();
            if e != nix::Error::EINVAL {
                return Err((Step::DropCaps, e));
            }
        }
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget fills `data` (two elements for version 3) for the
    // calling thread; both structs are repr(C) and outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return Err((Step::DropCaps, nix::Error::last()));
    }
    for d in &mut data {
        d.inheritable = 0;
    }
    // SAFETY: as above; capset reads the same structures.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    if rc < 0 {
        return Err((Step::DropCaps, nix::Error::last()));
    }
    Ok(())
}

/// Default dispositions for every signal and an empty mask: the guest must
/// not inherit the runtime's ignored SIGPIPE or blocked signals.
fn reset_signals() -> Result<(), (Step, nix::Error)> {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL is always sound; errors for signals the
        // C library reserves are ignored.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    let empty = nix::sys::signal::SigSet::empty();
    at(
        Step::Signals,
        nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&empty),
            None,
        ),
    )
}
