//! The child between `clone` and `execve`: system calls only (see the
//! parent module's docs).

use std::ffi::{CStr, OsStr};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use super::Step;
use super::plan::{Mask, Plan};
use crate::namespace::caps;

/// A failed step: which, at which entry of a list, and why.
type Failure = (Step, usize, Errno);
type ChildResult = Result<std::convert::Infallible, Failure>;

/// Tags a syscall result with its step.
fn at<T>(step: Step, r: nix::Result<T>) -> Result<T, Failure> {
    r.map_err(|e| (step, 0, e))
}

/// Tags a syscall result with its step and list entry.
fn at_nth<T>(step: Step, index: usize, r: nix::Result<T>) -> Result<T, Failure> {
    r.map_err(|e| (step, index, e))
}

/// A raw system call's result (`-1` and errno, or a value).
fn raw(rc: libc::c_long) -> nix::Result<libc::c_long> {
    Errno::result(rc)
}

/// The child, between `clone` and `execve`. No allocation, no panics.
pub(super) fn child_main(
    p: &Plan,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ChildResult {
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
    // SAFETY: move_mount with an empty source path and MOVE_MOUNT_F_EMPTY_PATH
    // acts on the detached mount `root`; the target is a NUL-terminated path.
    let attached = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            p.root.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.root.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    at(Step::AttachRoot, raw(attached))?;
    if let Some(h) = &p.hardening {
        let id = h.ids.host(0);
        // SAFETY: setfsgid/setfsuid take an id by value and act on this
        // (single-threaded) process.
        unsafe {
            libc::setfsgid(id);
            libc::setfsuid(id);
        }
        at(Step::OwnFiles, caps::raise_effective())?;
    }
    let hidden = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    at(
        Step::MountProc,
        mount(
            Some(c"proc"),
            c.proc_.as_c_str(),
            Some(c"proc"),
            hidden,
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
    for (n, m) in c.masks.iter().enumerate() {
        let r = match m {
            Mask::File(path) => mount(
                Some(c.dev_null.as_c_str()),
                path.as_c_str(),
                none,
                MsFlags::MS_BIND,
                none,
            ),
            Mask::Dir(path) => mount(
                Some(c.tmpfs.as_c_str()),
                path.as_c_str(),
                Some(c.tmpfs.as_c_str()),
                hidden | MsFlags::MS_RDONLY,
                Some(c.empty_ro.as_c_str()),
            ),
        };
        at_nth(Step::Mask, n, r)?;
    }
    for (n, path) in c.read_only.iter().enumerate() {
        let p = path.as_c_str();
        at_nth(
            Step::ReadOnly,
            n,
            mount(Some(p), p, none, MsFlags::MS_BIND | MsFlags::MS_REC, none),
        )?;
        let ro = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        at_nth(Step::ReadOnly, n, mount(none, p, none, ro, none))?;
    }
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
    for (n, (path, major, minor)) in c.nodes.iter().enumerate() {
        let mode = Mode::from_bits_truncate(0o666);
        at_nth(
            Step::MakeDevNode,
            n,
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
    for (n, (target, link)) in c.links.iter().enumerate() {
        at_nth(
            Step::LinkDev,
            n,
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
    let token = at(
        Step::WriteToken,
        nix::fcntl::open(
            c.token.as_c_str(),
            oflag | nix::fcntl::OFlag::O_EXCL | nix::fcntl::OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(0o400),
        ),
    )?;
    at(Step::WriteToken, nix::unistd::write(&token, &p.token))?;
    drop(token);
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    for (n, (path, body)) in p.files.iter().enumerate() {
        // A symlink (e.g. to a resolver's runtime file) is replaced by a file.
        let _ = nix::unistd::unlink(path.as_c_str());
        let oflag = oflag | nix::fcntl::OFlag::O_TRUNC | nix::fcntl::OFlag::O_NOFOLLOW;
        let fd = at_nth(
            Step::WriteEtc,
            n,
            nix::fcntl::open(path.as_c_str(), oflag, Mode::from_bits_truncate(0o644)),
        )?;
        at_nth(Step::WriteEtc, n, nix::unistd::write(&fd, body))?;
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
    at(Step::Stdio, nix::unistd::dup2_stdin(&p.stdin))?;
    at(Step::Stdio, nix::unistd::dup2_stdout(&p.stdout))?;
    at(Step::Stdio, nix::unistd::dup2_stderr(&p.stdout))?;
    // SAFETY: close_range only flags descriptors close-on-exec; none of them
    // is used by this process again except across exec.
    let rc = unsafe {
        libc::close_range(
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        )
    };
    at(Step::Stdio, Errno::result(rc))?;
    if let Some(h) = &p.hardening {
        at(
            Step::JoinUserns,
            setns(&h.userns, CloneFlags::CLONE_NEWUSER),
        )?;
        // SAFETY: raw set*id calls with integer arguments (0 is the
        // namespace's root, which maps to the range's base).
        unsafe {
            at(
                Step::SetIds,
                raw(libc::syscall(
                    libc::SYS_setgroups,
                    0,
                    std::ptr::null::<libc::gid_t>(),
                )),
            )?;
            at(
                Step::SetIds,
                raw(libc::syscall(libc::SYS_setresgid, 0, 0, 0)),
            )?;
            at(
                Step::SetIds,
                raw(libc::syscall(libc::SYS_setresuid, 0, 0, 0)),
            )?;
        }
    }
    // After joining the user namespace: setns gives a full bounding set.
    at(Step::DropCaps, caps::drop_bounding(&p.caps_drop))?;
    at(Step::DropCaps, caps::clear_inheritable())?;
    reset_signals()?;
    if let Some(h) = &p.hardening {
        let prog = libc::sock_fprog {
            len: h.seccomp.len() as libc::c_ushort,
            filter: h.seccomp.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at the compiled filter (seccompiler's
        // sock_filter has libc's layout), alive until exec; the kernel
        // copies it. Without no_new_privs the kernel asks for CAP_SYS_ADMIN
        // in the current user namespace, which the sandbox's root holds here.
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
                0,
                0,
            )
        };
        at(Step::Seccomp, Errno::result(rc))?;
    }
    // SAFETY: `exe`, `argv` and `envp` are NUL-terminated C strings and
    // NULL-terminated pointer arrays owned by the plan, alive until exec.
    unsafe { libc::execve(c.exe.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err((Step::Exec, 0, Errno::last()))
}

/// Default dispositions for every signal and an empty mask: the guest must
/// not inherit the runtime's ignored SIGPIPE or blocked signals.
fn reset_signals() -> Result<(), Failure> {
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
