//! The `wrenn` binary's system calls, each behind a safe function: the only
//! `unsafe` of this crate.

/// Restores the default `SIGPIPE` disposition, so that a client command
/// writing into a closed pipe (`wrenn sandbox ls | head`) ends quietly
/// instead of panicking. Call before any thread exists.
pub fn default_sigpipe() {
    // SAFETY: sets the disposition of one signal to the default; no handler
    // runs Rust code, and the caller runs it before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The child `cmd` starts gets `signal` when this process dies
/// (`PR_SET_PDEATHSIG`, set between fork and exec).
pub fn die_with_parent(cmd: &mut tokio::process::Command, signal: libc::c_int) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no
    // memory of the parent; it runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The size of the terminal on standard output as (columns, rows); `None`
/// when it is not a terminal or reports no size.
pub fn window_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointer we pass, which
    // points to a live, properly aligned local.
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}
