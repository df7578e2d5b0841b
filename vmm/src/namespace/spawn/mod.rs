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

mod child;
mod plan;

use std::io;

use nix::sched::CloneFlags;
use nix::unistd::Pid;

pub use plan::{Plan, PlanInput};

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

fn spawn_err(step: &'static str, path: impl Into<String>) -> impl FnOnce(io::Error) -> SpawnError {
    let path = path.into();
    move |source| SpawnError { step, path, source }
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
        let Err((step, errno)) = child::child_main(plan_ref, argv_ref, envp_ref);
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
