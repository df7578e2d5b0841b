//! `wrenn-probe`: run inside a sandbox by the isolation tests (built static
//! for `x86_64-unknown-linux-musl`, copied in). Each subcommand is an attack
//! or a question a test asks from the inside; the answers are plain lines.
//!
//! - `syscalls NAME…`: makes each system call with arguments under which the
//!   kernel, if it let the call through, would succeed or fail with
//!   something other than `EPERM` where it can; prints `NAME ERRNO` (0: it
//!   succeeded).
//! - `inotify N`: opens up to N inotify instances, prints how many opened
//!   and the errno that stopped it, then holds them until killed.
//! - `identity`: prints the seccomp mode, the uid map, the bounding set and
//!   `no_new_privs`.

use std::io::Write;

/// Arguments for each call the tests expect to be refused.
fn args(name: &str) -> Option<(libc::c_long, [libc::c_long; 6])> {
    let z = [0; 6];
    let with = |a: &[libc::c_long]| {
        let mut v = z;
        v[..a.len()].copy_from_slice(a);
        v
    };
    let user = c"user".as_ptr() as libc::c_long;
    let desc = c"wrenn-probe".as_ptr() as libc::c_long;
    let payload = c"x".as_ptr() as libc::c_long;
    Some(match name {
        "unshare" => (
            libc::SYS_unshare,
            with(&[(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) as libc::c_long]),
        ),
        "setns" => (libc::SYS_setns, with(&[-1, 0])),
        "clone_newuser" => (
            libc::SYS_clone,
            with(&[(libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_long]),
        ),
        // KEYCTL_GET_KEYRING_ID of the user keyring, creating it.
        "keyctl" => (
            libc::SYS_keyctl,
            with(&[0, libc::KEY_SPEC_USER_KEYRING as libc::c_long, 1]),
        ),
        "add_key" => (
            libc::SYS_add_key,
            with(&[
                user,
                desc,
                payload,
                1,
                libc::KEY_SPEC_USER_KEYRING as libc::c_long,
            ]),
        ),
        "request_key" => (libc::SYS_request_key, with(&[user, desc, 0, 0])),
        "io_uring_setup" => {
            static mut PARAMS: [u8; 120] = [0; 120];
            (
                libc::SYS_io_uring_setup,
                with(&[4, (&raw mut PARAMS) as libc::c_long]),
            )
        }
        "io_uring_enter" => (libc::SYS_io_uring_enter, with(&[-1, 0, 0, 0, 0, 0])),
        "io_uring_register" => (libc::SYS_io_uring_register, with(&[-1, 0, 0, 0])),
        "bpf" => (libc::SYS_bpf, with(&[-1, 0, 0])),
        "perf_event_open" => (libc::SYS_perf_event_open, with(&[0, 0, -1, -1, 0])),
        "userfaultfd" => (libc::SYS_userfaultfd, with(&[0])),
        "init_module" => (libc::SYS_init_module, with(&[0, 0, 0])),
        "finit_module" => (libc::SYS_finit_module, with(&[-1, 0, 0])),
        "delete_module" => (libc::SYS_delete_module, with(&[desc, 0])),
        "kexec_load" => (libc::SYS_kexec_load, with(&[0, 0, 0, 0])),
        "kexec_file_load" => (libc::SYS_kexec_file_load, with(&[-1, -1, 0, 0, 0])),
        "mount" => (libc::SYS_mount, with(&[0, 0, 0, 0, 0])),
        "umount2" => (
            libc::SYS_umount2,
            with(&[c"/proc".as_ptr() as libc::c_long, 0]),
        ),
        "pivot_root" => (libc::SYS_pivot_root, with(&[0, 0])),
        "open_tree" => (libc::SYS_open_tree, with(&[-1, 0, 0])),
        "move_mount" => (libc::SYS_move_mount, with(&[-1, 0, -1, 0, 0])),
        "fsopen" => (
            libc::SYS_fsopen,
            with(&[c"tmpfs".as_ptr() as libc::c_long, 0]),
        ),
        "fsconfig" => (libc::SYS_fsconfig, with(&[-1, 0, 0, 0, 0])),
        "fsmount" => (libc::SYS_fsmount, with(&[-1, 0, 0])),
        "fspick" => (libc::SYS_fspick, with(&[-1, 0, 0])),
        "mount_setattr" => (libc::SYS_mount_setattr, with(&[-1, 0, 0, 0, 0])),
        "swapon" => (libc::SYS_swapon, with(&[0, 0])),
        "reboot" => (libc::SYS_reboot, with(&[0, 0, 0, 0])),
        _ => return None,
    })
}

fn syscalls(names: &[String]) -> i32 {
    let mut out = std::io::stdout().lock();
    for name in names {
        let Some((nr, a)) = args(name) else {
            let _ = writeln!(out, "{name} unknown");
            continue;
        };
        // SAFETY: each recipe passes null or invalid descriptors and small
        // static buffers; a call the filter lets through fails harmlessly
        // or creates an object this short-lived process drops at exit.
        let rc = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
        if rc == 0 && nr == libc::SYS_clone {
            // A clone the filter let through: this is the child.
            // SAFETY: _exit ends the child at once.
            unsafe { libc::_exit(0) };
        }
        let errno = if rc < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        } else {
            0
        };
        let _ = writeln!(out, "{name} {errno}");
    }
    0
}

fn inotify(n: usize) -> i32 {
    let mut opened = 0;
    let mut errno = 0;
    for _ in 0..n {
        // SAFETY: inotify_init1 takes flags by value.
        if unsafe { libc::inotify_init1(0) } < 0 {
            errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(-1);
            break;
        }
        opened += 1;
    }
    println!("{opened} {errno}");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

fn identity() -> i32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status.lines() {
        if ["Seccomp:", "CapBnd:", "CapEff:", "NoNewPrivs:", "Uid:"]
            .iter()
            .any(|k| line.starts_with(k))
        {
            println!("{}", line.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    println!(
        "uid_map {}",
        map.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("syscalls") => syscalls(&args[1..]),
        Some("inotify") => inotify(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1024)),
        Some("identity") => identity(),
        _ => {
            eprintln!("usage: wrenn-probe syscalls NAME… | inotify N | identity");
            2
        }
    };
    std::process::exit(code);
}
