//! The child between `clone` and `execve`: system calls only (see the
//! parent module's docs).

use std::ffi::{CStr, OsStr};
use std::os::unix::ffi::OsStrExt;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use super::Step;
use super::plan::Plan;

type ChildResult = Result<std::convert::Infallible, (Step, nix::Error)>;

/// Tags a syscall result with its step.
fn at<T>(step: Step, r: nix::Result<T>) -> Result<T, (Step, nix::Error)> {
    r.map_err(|e| (step, e))
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
