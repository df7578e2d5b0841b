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
//! The parent first builds the sandbox's root filesystem as a detached,
//! idmapped overlay ([`super::rootmount`]) and its user namespace
//! ([`super::userns`]). The child (PID 1 of its new PID namespace, with new
//! mount, UTS and IPC namespaces), still host root:
//!
//! 1. joins its cgroups by writing `0` to the `cgroup.procs` files opened by
//!    the parent, then unshares a cgroup namespace rooted there;
//! 2. joins the sandbox's netns (`setns`);
//! 3. makes every mount private and attaches the overlay on its root
//!    directory — inside its own mount namespace, so it vanishes with it;
//! 4. takes the sandbox root's host ids as its filesystem ids, so that
//!    every file and directory it makes is the sandbox root's;
//! 5. mounts `/proc` (`/proc/sys`, `/proc/sysrq-trigger`, `/proc/irq`,
//!    `/proc/bus`, `/proc/fs` read-only) and `/sys` read-only, covers
//!    [`plan::MASKED`] (`/proc/kcore`, `/proc/keys`, `/sys/firmware`, …),
//!    mounts a tmpfs `/dev` with `null`, `zero`, `full`, `random`,
//!    `urandom`, `tty`, a private `devpts` and `ptmx`, tmpfs `/dev/shm`,
//!    `/tmp` and `/run`, binds `wrenn-guest` read-only at
//!    `/run/wrenn/wrenn-guest`, writes the guest's token (0400) and
//!    `/etc/resolv.conf` and `/etc/hosts`;
//! 6. `pivot_root`s into the overlay and detaches the old root, sets the
//!    hostname to the sandbox id, points stdin at `/dev/null` and
//!    stdout/stderr at the log pipe;
//! 7. joins the sandbox's user namespace and becomes its root (every
//!    namespace but the user namespace stays owned by the host's: the
//!    sandbox's root cannot mount, change the hostname or the network),
//!    bounds its capabilities, resets signal dispositions and the mask,
//!    installs the seccomp filter ([`super::seccomp`]) and `exec`s the
//!    guest.
//!
//! Failure of any step is written as `(step, index, errno)` to a
//! close-on-exec pipe; end-of-file on that pipe means the `exec` succeeded.
//!
//! The child shares the runtime's memory until its `exec`
//! (`CLONE_VM | CLONE_VFORK`, as `posix_spawn` does; the calling thread
//! waits meanwhile): copying the agent's address space for a process that
//! replaces it at once cost more the more the agent held — page tables
//! copied under its `mmap` lock, which stalled every other thread's page
//! faults, then copy-on-write faults in the parent (measured: spawn 7 ms
//! with no sandbox up, 21 ms with 662). The child only writes its own
//! stack and makes system calls, and its signal handlers, credentials,
//! namespaces and seccomp filter are its own (no `CLONE_SIGHAND`,
//! `CLONE_FS`, `CLONE_FILES` or `CLONE_THREAD`).
//!
//! Capabilities: the bounding set (and so what the guest and every process it
//! starts as root can ever hold) is Docker's default set without `MKNOD`:
//! [`ALLOWED_CAPS`], held in the sandbox's user namespace only.
//! `no_new_privs` is *not* set: the `base` template's `wrenn-user` uses
//! `sudo`, a set-uid program, and the bounding set already caps what set-uid
//! root can regain.

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
/// The guest's credential inside the sandbox: readable by the sandbox's
/// root only.
pub const TOKEN_PATH: &str = "/run/wrenn/token";
const CHILD_STACK: usize = 256 * 1024;

/// A step of the child, reported back on failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Step {
    JoinCgroup = 1,
    CgroupNs,
    JoinNetns,
    PrivateMounts,
    AttachRoot,
    OwnFiles,
    MountProc,
    MountSys,
    Mask,
    ReadOnly,
    MountDev,
    MakeDevNode,
    LinkDev,
    MountDevPts,
    MountShm,
    MountTmp,
    MountRun,
    MakeGuestTarget,
    BindGuest,
    WriteToken,
    WriteEtc,
    PivotRoot,
    DetachOldRoot,
    SetHostname,
    Stdio,
    JoinUserns,
    SetIds,
    DropCaps,
    Signals,
    Seccomp,
    Exec,
}

/// Every step, in order (`Step as u8 - 1` is the index).
const STEPS: [Step; 31] = [
    Step::JoinCgroup,
    Step::CgroupNs,
    Step::JoinNetns,
    Step::PrivateMounts,
    Step::AttachRoot,
    Step::OwnFiles,
    Step::MountProc,
    Step::MountSys,
    Step::Mask,
    Step::ReadOnly,
    Step::MountDev,
    Step::MakeDevNode,
    Step::LinkDev,
    Step::MountDevPts,
    Step::MountShm,
    Step::MountTmp,
    Step::MountRun,
    Step::MakeGuestTarget,
    Step::BindGuest,
    Step::WriteToken,
    Step::WriteEtc,
    Step::PivotRoot,
    Step::DetachOldRoot,
    Step::SetHostname,
    Step::Stdio,
    Step::JoinUserns,
    Step::SetIds,
    Step::DropCaps,
    Step::Signals,
    Step::Seccomp,
    Step::Exec,
];

pub use crate::runtime::SpawnError;

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
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_VM
        | CloneFlags::CLONE_VFORK;
    let (plan_ref, argv_ref, envp_ref) = (&plan, &argv, &envp);
    let child: nix::sched::CloneCb = Box::new(move || {
        let Err((step, index, errno)) = child::child_main(plan_ref, argv_ref, envp_ref);
        let mut report = [0u8; 8];
        report[0] = step as u8;
        report[2..4].copy_from_slice(&(index as u16).to_le_bytes());
        report[4..].copy_from_slice(&(errno as i32).to_le_bytes());
        let _ = nix::unistd::write(&err_w, &report);
        127
    });
    // SAFETY: the child runs `child_main` on `stack` (256 KiB, far more than
    // the straight-line syscalls need) in the parent's address space
    // (CLONE_VM), which no one else touches: this thread is suspended until
    // the child execs or exits (CLONE_VFORK), and the other threads never
    // see `stack`, `plan`, `argv` or `envp`. The child does not allocate,
    // lock or unwind before `execve` (see the module docs), so the other
    // threads' state cannot bite it. The closure (and with it the parent's
    // write end of the pipe) is dropped when `clone` returns in the parent.
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
    let step = STEPS
        .get(usize::from(report[0]).wrapping_sub(1))
        .copied()
        .unwrap_or(Step::Exec);
    let index = usize::from(u16::from_le_bytes([report[2], report[3]]));
    let errno = i32::from_le_bytes([report[4], report[5], report[6], report[7]]);
    let (name, path) = plan.describe(step, index);
    Err(SpawnError {
        step: name,
        path,
        source: io::Error::from_raw_os_error(errno),
    })
}
