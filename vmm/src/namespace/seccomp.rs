//! The seccomp filter every namespace sandbox runs under.
//!
//! # Design
//!
//! Docker's default profile (moby/profiles `seccomp/default.json`, v0.2.3),
//! resolved for x86_64 and the sandbox's capability set (Docker's default
//! set minus `MKNOD`, [`super::spawn::ALLOWED_CAPS`]): an allowlist of 306
//! system calls, everything else refused with `EPERM` so programs fall
//! back rather than die. On top of Docker's:
//!
//! - `ptrace` and `process_vm_readv`/`process_vm_writev` stay allowed, as
//!   in Docker since kernel 4.8: debuggers need them, and the user and PID
//!   namespaces bound whom they reach;
//! - every call wrenn must refuse is checked by a test to be outside the
//!   allowlist ([`REFUSED`]): user namespaces, keyrings, io_uring, bpf,
//!   perf, userfaultfd, modules, kexec and the mount family;
//! - `unshare` and `setns` are refused whatever their flags (as Docker does
//!   without `CAP_SYS_ADMIN`), `clone` with any namespace flag;
//! - 32-bit (`int 0x80`) system calls are refused with `EPERM` instead of
//!   Docker's filtering them by the same list: 32-bit x86 programs do not
//!   run in a sandbox;
//! - `clone3` and numbers above the highest one this table knows return
//!   `ENOSYS`: `clone3`'s flags sit behind a pointer the filter cannot read,
//!   and C libraries fall back to `clone` (or an older call) only on
//!   `ENOSYS`.
//!
//! `socket` refuses `AF_ALG` and `AF_VSOCK` (a sandbox must not speak vsock
//! to its host); `personality` allows only the five values Docker does.
//! Arguments of type `int` are compared on their low 32 bits, the bits the
//! kernel reads.
//!
//! The program is compiled once (about 1600 BPF instructions, linear; the
//! kernel's per-syscall action cache makes calls allowed by number alone
//! cost the same as without a filter) and installed by the sandbox's first
//! process right before `exec`, without `no_new_privs`: `sudo` must keep
//! working, and `CAP_SYS_ADMIN` in the sandbox's user namespace is what the
//! kernel asks for instead.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch, sock_filter,
};

/// Docker's allowlist for x86_64 (without the calls that need a capability
/// the sandbox lacks), by number. Names missing from the `libc` crate carry
/// their number from the kernel's table.
pub const ALLOWED: &[(&str, i64)] = &[
    ("read", libc::SYS_read),
    ("write", libc::SYS_write),
    ("open", libc::SYS_open),
    ("close", libc::SYS_close),
    ("stat", libc::SYS_stat),
    ("fstat", libc::SYS_fstat),
    ("lstat", libc::SYS_lstat),
    ("poll", libc::SYS_poll),
    ("lseek", libc::SYS_lseek),
    ("mmap", libc::SYS_mmap),
    ("mprotect", libc::SYS_mprotect),
    ("munmap", libc::SYS_munmap),
    ("brk", libc::SYS_brk),
    ("rt_sigaction", libc::SYS_rt_sigaction),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    ("rt_sigreturn", libc::SYS_rt_sigreturn),
    ("ioctl", libc::SYS_ioctl),
    ("pread64", libc::SYS_pread64),
    ("pwrite64", libc::SYS_pwrite64),
    ("readv", libc::SYS_readv),
    ("writev", libc::SYS_writev),
    ("access", libc::SYS_access),
    ("pipe", libc::SYS_pipe),
    ("select", libc::SYS_select),
    ("sched_yield", libc::SYS_sched_yield),
    ("mremap", libc::SYS_mremap),
    ("msync", libc::SYS_msync),
    ("mincore", libc::SYS_mincore),
    ("madvise", libc::SYS_madvise),
    ("shmget", libc::SYS_shmget),
    ("shmat", libc::SYS_shmat),
    ("shmctl", libc::SYS_shmctl),
    ("dup", libc::SYS_dup),
    ("dup2", libc::SYS_dup2),
    ("pause", libc::SYS_pause),
    ("nanosleep", libc::SYS_nanosleep),
    ("getitimer", libc::SYS_getitimer),
    ("alarm", libc::SYS_alarm),
    ("setitimer", libc::SYS_setitimer),
    ("getpid", libc::SYS_getpid),
    ("sendfile", libc::SYS_sendfile),
    ("connect", libc::SYS_connect),
    ("accept", libc::SYS_accept),
    ("sendto", libc::SYS_sendto),
    ("recvfrom", libc::SYS_recvfrom),
    ("sendmsg", libc::SYS_sendmsg),
    ("recvmsg", libc::SYS_recvmsg),
    ("shutdown", libc::SYS_shutdown),
    ("bind", libc::SYS_bind),
    ("listen", libc::SYS_listen),
    ("getsockname", libc::SYS_getsockname),
    ("getpeername", libc::SYS_getpeername),
    ("socketpair", libc::SYS_socketpair),
    ("setsockopt", libc::SYS_setsockopt),
    ("getsockopt", libc::SYS_getsockopt),
    ("fork", libc::SYS_fork),
    ("vfork", libc::SYS_vfork),
    ("execve", libc::SYS_execve),
    ("exit", libc::SYS_exit),
    ("wait4", libc::SYS_wait4),
    ("kill", libc::SYS_kill),
    ("uname", libc::SYS_uname),
    ("semget", libc::SYS_semget),
    ("semop", libc::SYS_semop),
    ("semctl", libc::SYS_semctl),
    ("shmdt", libc::SYS_shmdt),
    ("msgget", libc::SYS_msgget),
    ("msgsnd", libc::SYS_msgsnd),
    ("msgrcv", libc::SYS_msgrcv),
    ("msgctl", libc::SYS_msgctl),
    ("fcntl", libc::SYS_fcntl),
    ("flock", libc::SYS_flock),
    ("fsync", libc::SYS_fsync),
    ("fdatasync", libc::SYS_fdatasync),
    ("truncate", libc::SYS_truncate),
    ("ftruncate", libc::SYS_ftruncate),
    ("getdents", libc::SYS_getdents),
    ("getcwd", libc::SYS_getcwd),
    ("chdir", libc::SYS_chdir),
    ("fchdir", libc::SYS_fchdir),
    ("rename", libc::SYS_rename),
    ("mkdir", libc::SYS_mkdir),
    ("rmdir", libc::SYS_rmdir),
    ("creat", libc::SYS_creat),
    ("link", libc::SYS_link),
    ("unlink", libc::SYS_unlink),
    ("symlink", libc::SYS_symlink),
    ("readlink", libc::SYS_readlink),
    ("chmod", libc::SYS_chmod),
    ("fchmod", libc::SYS_fchmod),
    ("chown", libc::SYS_chown),
    ("fchown", libc::SYS_fchown),
    ("lchown", libc::SYS_lchown),
    ("umask", libc::SYS_umask),
    ("gettimeofday", libc::SYS_gettimeofday),
    ("getrlimit", libc::SYS_getrlimit),
    ("getrusage", libc::SYS_getrusage),
    ("sysinfo", libc::SYS_sysinfo),
    ("times", libc::SYS_times),
    ("ptrace", libc::SYS_ptrace),
    ("getuid", libc::SYS_getuid),
    ("getgid", libc::SYS_getgid),
    ("setuid", libc::SYS_setuid),
    ("setgid", libc::SYS_setgid),
    ("geteuid", libc::SYS_geteuid),
    ("getegid", libc::SYS_getegid),
    ("setpgid", libc::SYS_setpgid),
    ("getppid", libc::SYS_getppid),
    ("getpgrp", libc::SYS_getpgrp),
    ("setsid", libc::SYS_setsid),
    ("setreuid", libc::SYS_setreuid),
    ("setregid", libc::SYS_setregid),
    ("getgroups", libc::SYS_getgroups),
    ("setgroups", libc::SYS_setgroups),
    ("setresuid", libc::SYS_setresuid),
    ("getresuid", libc::SYS_getresuid),
    ("setresgid", libc::SYS_setresgid),
    ("getresgid", libc::SYS_getresgid),
    ("getpgid", libc::SYS_getpgid),
    ("setfsuid", libc::SYS_setfsuid),
    ("setfsgid", libc::SYS_setfsgid),
    ("getsid", libc::SYS_getsid),
    ("capget", libc::SYS_capget),
    ("capset", libc::SYS_capset),
    ("rt_sigpending", libc::SYS_rt_sigpending),
    ("rt_sigtimedwait", libc::SYS_rt_sigtimedwait),
    ("rt_sigqueueinfo", libc::SYS_rt_sigqueueinfo),
    ("rt_sigsuspend", libc::SYS_rt_sigsuspend),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("utime", libc::SYS_utime),
    ("mknod", libc::SYS_mknod),
    ("statfs", libc::SYS_statfs),
    ("fstatfs", libc::SYS_fstatfs),
    ("getpriority", libc::SYS_getpriority),
    ("setpriority", libc::SYS_setpriority),
    ("sched_setparam", libc::SYS_sched_setparam),
    ("sched_getparam", libc::SYS_sched_getparam),
    ("sched_setscheduler", libc::SYS_sched_setscheduler),
    ("sched_getscheduler", libc::SYS_sched_getscheduler),
    ("sched_get_priority_max", libc::SYS_sched_get_priority_max),
    ("sched_get_priority_min", libc::SYS_sched_get_priority_min),
    ("sched_rr_get_interval", libc::SYS_sched_rr_get_interval),
    ("mlock", libc::SYS_mlock),
    ("munlock", libc::SYS_munlock),
    ("mlockall", libc::SYS_mlockall),
    ("munlockall", libc::SYS_munlockall),
    ("modify_ldt", libc::SYS_modify_ldt),
    ("prctl", libc::SYS_prctl),
    ("arch_prctl", libc::SYS_arch_prctl),
    ("adjtimex", libc::SYS_adjtimex),
    ("setrlimit", libc::SYS_setrlimit),
    ("chroot", libc::SYS_chroot),
    ("sync", libc::SYS_sync),
    ("gettid", libc::SYS_gettid),
    ("readahead", libc::SYS_readahead),
    ("setxattr", libc::SYS_setxattr),
    ("lsetxattr", libc::SYS_lsetxattr),
    ("fsetxattr", libc::SYS_fsetxattr),
    ("getxattr", libc::SYS_getxattr),
    ("lgetxattr", libc::SYS_lgetxattr),
    ("fgetxattr", libc::SYS_fgetxattr),
    ("listxattr", libc::SYS_listxattr),
    ("llistxattr", libc::SYS_llistxattr),
    ("flistxattr", libc::SYS_flistxattr),
    ("removexattr", libc::SYS_removexattr),
    ("lremovexattr", libc::SYS_lremovexattr),
    ("fremovexattr", libc::SYS_fremovexattr),
    ("tkill", libc::SYS_tkill),
    ("time", libc::SYS_time),
    ("futex", libc::SYS_futex),
    ("sched_setaffinity", libc::SYS_sched_setaffinity),
    ("sched_getaffinity", libc::SYS_sched_getaffinity),
    ("set_thread_area", libc::SYS_set_thread_area),
    ("io_setup", libc::SYS_io_setup),
    ("io_destroy", libc::SYS_io_destroy),
    ("io_getevents", libc::SYS_io_getevents),
    ("io_submit", libc::SYS_io_submit),
    ("io_cancel", libc::SYS_io_cancel),
    ("get_thread_area", libc::SYS_get_thread_area),
    ("epoll_create", libc::SYS_epoll_create),
    ("epoll_ctl_old", libc::SYS_epoll_ctl_old),
    ("epoll_wait_old", libc::SYS_epoll_wait_old),
    ("remap_file_pages", libc::SYS_remap_file_pages),
    ("getdents64", libc::SYS_getdents64),
    ("set_tid_address", libc::SYS_set_tid_address),
    ("restart_syscall", libc::SYS_restart_syscall),
    ("semtimedop", libc::SYS_semtimedop),
    ("fadvise64", libc::SYS_fadvise64),
    ("timer_create", libc::SYS_timer_create),
    ("timer_settime", libc::SYS_timer_settime),
    ("timer_gettime", libc::SYS_timer_gettime),
    ("timer_getoverrun", libc::SYS_timer_getoverrun),
    ("timer_delete", libc::SYS_timer_delete),
    ("clock_gettime", libc::SYS_clock_gettime),
    ("clock_getres", libc::SYS_clock_getres),
    ("clock_nanosleep", libc::SYS_clock_nanosleep),
    ("exit_group", libc::SYS_exit_group),
    ("epoll_wait", libc::SYS_epoll_wait),
    ("epoll_ctl", libc::SYS_epoll_ctl),
    ("tgkill", libc::SYS_tgkill),
    ("utimes", libc::SYS_utimes),
    ("mq_open", libc::SYS_mq_open),
    ("mq_unlink", libc::SYS_mq_unlink),
    ("mq_timedsend", libc::SYS_mq_timedsend),
    ("mq_timedreceive", libc::SYS_mq_timedreceive),
    ("mq_notify", libc::SYS_mq_notify),
    ("mq_getsetattr", libc::SYS_mq_getsetattr),
    ("waitid", libc::SYS_waitid),
    ("ioprio_set", libc::SYS_ioprio_set),
    ("ioprio_get", libc::SYS_ioprio_get),
    ("inotify_init", libc::SYS_inotify_init),
    ("inotify_add_watch", libc::SYS_inotify_add_watch),
    ("inotify_rm_watch", libc::SYS_inotify_rm_watch),
    ("openat", libc::SYS_openat),
    ("mkdirat", libc::SYS_mkdirat),
    ("mknodat", libc::SYS_mknodat),
    ("fchownat", libc::SYS_fchownat),
    ("futimesat", libc::SYS_futimesat),
    ("newfstatat", libc::SYS_newfstatat),
    ("unlinkat", libc::SYS_unlinkat),
    ("renameat", libc::SYS_renameat),
    ("linkat", libc::SYS_linkat),
    ("symlinkat", libc::SYS_symlinkat),
    ("readlinkat", libc::SYS_readlinkat),
    ("fchmodat", libc::SYS_fchmodat),
    ("faccessat", libc::SYS_faccessat),
    ("pselect6", libc::SYS_pselect6),
    ("ppoll", libc::SYS_ppoll),
    ("set_robust_list", libc::SYS_set_robust_list),
    ("get_robust_list", libc::SYS_get_robust_list),
    ("splice", libc::SYS_splice),
    ("tee", libc::SYS_tee),
    ("sync_file_range", libc::SYS_sync_file_range),
    ("vmsplice", libc::SYS_vmsplice),
    ("utimensat", libc::SYS_utimensat),
    ("epoll_pwait", libc::SYS_epoll_pwait),
    ("signalfd", libc::SYS_signalfd),
    ("timerfd_create", libc::SYS_timerfd_create),
    ("eventfd", libc::SYS_eventfd),
    ("fallocate", libc::SYS_fallocate),
    ("timerfd_settime", libc::SYS_timerfd_settime),
    ("timerfd_gettime", libc::SYS_timerfd_gettime),
    ("accept4", libc::SYS_accept4),
    ("signalfd4", libc::SYS_signalfd4),
    ("eventfd2", libc::SYS_eventfd2),
    ("epoll_create1", libc::SYS_epoll_create1),
    ("dup3", libc::SYS_dup3),
    ("pipe2", libc::SYS_pipe2),
    ("inotify_init1", libc::SYS_inotify_init1),
    ("preadv", libc::SYS_preadv),
    ("pwritev", libc::SYS_pwritev),
    ("rt_tgsigqueueinfo", libc::SYS_rt_tgsigqueueinfo),
    ("recvmmsg", libc::SYS_recvmmsg),
    ("fanotify_mark", libc::SYS_fanotify_mark),
    ("prlimit64", libc::SYS_prlimit64),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("syncfs", libc::SYS_syncfs),
    ("sendmmsg", libc::SYS_sendmmsg),
    ("getcpu", libc::SYS_getcpu),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("sched_setattr", libc::SYS_sched_setattr),
    ("sched_getattr", libc::SYS_sched_getattr),
    ("renameat2", libc::SYS_renameat2),
    ("seccomp", libc::SYS_seccomp),
    ("getrandom", libc::SYS_getrandom),
    ("memfd_create", libc::SYS_memfd_create),
    ("execveat", libc::SYS_execveat),
    ("membarrier", libc::SYS_membarrier),
    ("mlock2", libc::SYS_mlock2),
    ("copy_file_range", libc::SYS_copy_file_range),
    ("preadv2", libc::SYS_preadv2),
    ("pwritev2", libc::SYS_pwritev2),
    ("pkey_mprotect", libc::SYS_pkey_mprotect),
    ("pkey_alloc", libc::SYS_pkey_alloc),
    ("pkey_free", libc::SYS_pkey_free),
    ("statx", libc::SYS_statx),
    ("io_pgetevents", 333),
    ("rseq", libc::SYS_rseq),
    ("uretprobe", 335),
    ("pidfd_send_signal", libc::SYS_pidfd_send_signal),
    ("pidfd_open", libc::SYS_pidfd_open),
    ("close_range", libc::SYS_close_range),
    ("openat2", libc::SYS_openat2),
    ("faccessat2", libc::SYS_faccessat2),
    ("epoll_pwait2", libc::SYS_epoll_pwait2),
    ("landlock_create_ruleset", libc::SYS_landlock_create_ruleset),
    ("landlock_add_rule", libc::SYS_landlock_add_rule),
    ("landlock_restrict_self", libc::SYS_landlock_restrict_self),
    ("memfd_secret", libc::SYS_memfd_secret),
    ("process_mrelease", libc::SYS_process_mrelease),
    ("futex_waitv", libc::SYS_futex_waitv),
    ("cachestat", 451),
    ("fchmodat2", libc::SYS_fchmodat2),
    ("map_shadow_stack", 453),
    ("futex_wake", 454),
    ("futex_wait", 455),
    ("futex_requeue", 456),
    ("statmount", 457),
    ("listmount", 458),
    ("mseal", libc::SYS_mseal),
    ("setxattrat", 463),
    ("getxattrat", 464),
    ("listxattrat", 465),
    ("removexattrat", 466),
];

/// Calls the sandbox must never make, with why; each is refused with `EPERM`
/// (none is in [`ALLOWED`], which a test checks, and the isolation tests
/// make each call from inside a sandbox).
pub const REFUSED: &[(&str, i64, &str)] = &[
    (
        "unshare",
        libc::SYS_unshare,
        "new namespaces, a user namespace above all",
    ),
    ("setns", libc::SYS_setns, "joining another namespace"),
    ("keyctl", libc::SYS_keyctl, "kernel keyrings"),
    ("add_key", libc::SYS_add_key, "kernel keyrings"),
    ("request_key", libc::SYS_request_key, "kernel keyrings"),
    ("io_uring_setup", libc::SYS_io_uring_setup, "io_uring"),
    ("io_uring_enter", libc::SYS_io_uring_enter, "io_uring"),
    ("io_uring_register", libc::SYS_io_uring_register, "io_uring"),
    ("bpf", libc::SYS_bpf, "eBPF programs and maps"),
    ("perf_event_open", libc::SYS_perf_event_open, "perf events"),
    (
        "userfaultfd",
        libc::SYS_userfaultfd,
        "page faults handled in user space",
    ),
    ("init_module", libc::SYS_init_module, "kernel modules"),
    ("finit_module", libc::SYS_finit_module, "kernel modules"),
    ("delete_module", libc::SYS_delete_module, "kernel modules"),
    ("kexec_load", libc::SYS_kexec_load, "a new kernel"),
    ("kexec_file_load", libc::SYS_kexec_file_load, "a new kernel"),
    ("mount", libc::SYS_mount, "mounts"),
    ("umount2", libc::SYS_umount2, "mounts"),
    ("pivot_root", libc::SYS_pivot_root, "mounts"),
    ("open_tree", libc::SYS_open_tree, "mounts"),
    ("move_mount", libc::SYS_move_mount, "mounts"),
    ("fsopen", libc::SYS_fsopen, "mounts"),
    ("fsconfig", libc::SYS_fsconfig, "mounts"),
    ("fsmount", libc::SYS_fsmount, "mounts"),
    ("fspick", libc::SYS_fspick, "mounts"),
    ("mount_setattr", libc::SYS_mount_setattr, "mounts"),
    ("swapon", libc::SYS_swapon, "swap"),
    ("reboot", libc::SYS_reboot, "the host"),
];

/// `(flags & NAMESPACE_FLAGS) != 0` refuses a `clone`: any new namespace.
pub const NAMESPACE_FLAGS: u64 = 0x7E02_0000;
/// Socket families refused: `AF_ALG` (kernel crypto) and `AF_VSOCK`.
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;
/// `personality` values allowed (Docker's): Linux, Linux32, UNAME26, both, query.
const PERSONALITIES: [u64; 5] = [0, 0x0008, 0x2_0000, 0x2_0008, 0xffff_ffff];

const BPF_RET_K: u16 = 0x06;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGT_K: u16 = 0x25;

/// The compiled filter (built once per process).
pub fn program() -> Result<&'static [sock_filter], String> {
    static PROGRAM: OnceLock<Result<BpfProgram, String>> = OnceLock::new();
    PROGRAM
        .get_or_init(compile)
        .as_ref()
        .map(|p| p.as_slice())
        .map_err(Clone::clone)
}

fn compile() -> Result<BpfProgram, String> {
    let err = |e: seccompiler::BackendError| e.to_string();
    let cond = |op, value| SeccompCondition::new(0, Len::Dword, op, value).map_err(err);
    let rule = |conds: Vec<SeccompCondition>| SeccompRule::new(conds).map_err(err);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&(_, nr)| (nr, Vec::new())).collect();
    let socket = vec![
        rule(vec![cond(Op::Lt, AF_ALG)?])?,
        rule(vec![cond(Op::Gt, AF_ALG)?, cond(Op::Lt, AF_VSOCK)?])?,
        rule(vec![cond(Op::Gt, AF_VSOCK)?])?,
    ];
    let personality = PERSONALITIES
        .iter()
        .map(|&v| rule(vec![cond(Op::Eq, v)?]))
        .collect::<Result<Vec<_>, String>>()?;
    let clone = vec![rule(vec![
        SeccompCondition::new(0, Len::Qword, Op::MaskedEq(NAMESPACE_FLAGS), 0).map_err(err)?,
    ])?];
    rules.insert(libc::SYS_socket, socket);
    rules.insert(libc::SYS_personality, personality);
    rules.insert(libc::SYS_clone, clone);
    let highest = rules.keys().copied().max().unwrap_or(0) as u32;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(err)?;
    let mut prog: BpfProgram = filter.try_into().map_err(err)?;
    patch(&mut prog, highest)?;
    Ok(prog)
}

/// seccompiler's program starts with `ld arch; jeq x86_64, +1; ret KILL;
/// ld nr`. The `KILL` becomes `EPERM` (a 32-bit call is refused, not
/// fatal), and after the first `ld nr`, `clone3` and numbers above
/// `highest` return `ENOSYS`. Jumps are relative and forward, so inserting
/// before the rest of the program keeps them right.
fn patch(prog: &mut BpfProgram, highest: u32) -> Result<(), String> {
    let kill = prog
        .get(2)
        .filter(|i| i.code == BPF_RET_K)
        .ok_or("seccompiler's program does not start with the architecture check")?;
    if kill.k != libc::SECCOMP_RET_KILL_PROCESS && kill.k != libc::SECCOMP_RET_KILL_THREAD {
        return Err(format!(
            "unexpected architecture-mismatch action {:#x}",
            kill.k
        ));
    }
    prog[2].k = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let load_nr = prog[3].clone();
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    let insert = [
        load_nr,
        sock_filter {
            code: BPF_JEQ_K,
            jt: 1,
            jf: 0,
            k: libc::SYS_clone3 as u32,
        },
        sock_filter {
            code: BPF_JGT_K,
            jt: 0,
            jf: 1,
            k: highest,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: enosys,
        },
    ];
    prog.splice(3..3, insert);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowlist_is_docker_s_and_refuses_what_wrenn_must() {
        assert_eq!(ALLOWED.len(), 306);
        let mut seen = std::collections::HashSet::new();
        for (name, nr) in ALLOWED {
            assert!(seen.insert(*nr), "{name} ({nr}) twice");
        }
        for (name, nr, _) in REFUSED {
            assert!(
                !ALLOWED.iter().any(|(_, a)| a == nr),
                "{name} is refused but allowed"
            );
        }
        for special in [
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_socket,
            libc::SYS_personality,
        ] {
            assert!(!ALLOWED.iter().any(|(_, a)| *a == special));
        }
    }

    #[test]
    fn compiles_within_the_kernel_limit_and_is_patched() {
        let p = program().unwrap();
        assert!(p.len() > 1000 && p.len() < 4096, "{} instructions", p.len());
        assert_eq!(p[2].code, BPF_RET_K);
        assert_eq!(p[2].k, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
        assert_eq!((p[4].code, p[4].k), (BPF_JEQ_K, libc::SYS_clone3 as u32));
        assert_eq!((p[5].code, p[5].k), (BPF_JGT_K, 466));
        assert_eq!(p[6].k, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
    }
}
