//! System calls without a safe wrapper in `std`, `nix` or `tokio`, made
//! safe here, one function each. The agent's one other `unsafe` is the
//! `pre_exec` hook in `process/spawn.rs`, whose contract is about the
//! closure it registers (async-signal-safe steps between fork and exec).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::pty::PtyMaster;
use nix::sys::inotify::Inotify;
use tokio::io::unix::{AsyncFd, AsyncFdRegisterError};

/// A type that owns one descriptor, keeps it open until dropped and
/// returns it from every `as_raw_fd`: what tokio's reactor needs of what it
/// watches.
///
/// # Safety
/// Implement it only for types that do exactly that.
pub(crate) unsafe trait OwnsFd: AsRawFd {}

// SAFETY: `OwnedFd` closes its descriptor only on drop and never changes it.
unsafe impl OwnsFd for OwnedFd {}
// SAFETY: `PtyMaster` wraps an `OwnedFd` (as above).
unsafe impl OwnsFd for PtyMaster {}
// SAFETY: `InotifyFd` wraps an `Inotify`, which wraps an `OwnedFd` (as above).
unsafe impl OwnsFd for InotifyFd {}

/// `Inotify` with the `AsRawFd` that `AsyncFd` needs.
pub(crate) struct InotifyFd(pub Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// `fd` registered with the current tokio reactor for reads and writes.
pub(crate) fn register<T: OwnsFd>(fd: T) -> Result<AsyncFd<T>, AsyncFdRegisterError<T>> {
    // SAFETY: `OwnsFd` promises what `register` requires: the descriptor
    // stays open and the same while the `AsyncFd` owns `fd`.
    unsafe { AsyncFd::register(fd) }
}

/// Sets the window size of the terminal `tty` (`TIOCSWINSZ`).
pub(crate) fn set_winsize(tty: BorrowedFd<'_>, ws: &libc::winsize) -> Result<(), Errno> {
    // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, borrowed
    // for the call; the descriptor is borrowed open.
    let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, ws) };
    Errno::result(rc).map(drop)
}

/// The window size of the terminal `tty` (`TIOCGWINSZ`).
#[cfg(test)]
pub(crate) fn winsize(tty: BorrowedFd<'_>) -> Result<libc::winsize, Errno> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the live local `ws`.
    let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    Errno::result(rc).map(|_| ws)
}

/// In the child, between `fork` and `exec`: makes stdin (the slave) the
/// controlling terminal of the new session. Async-signal-safe.
pub(crate) fn make_controlling_terminal() -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal); fd 0
    // is the slave, installed by `Command` before this hook runs.
    let rc = unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Attaches the classic BPF `program` to the socket `fd`
/// (`SO_ATTACH_FILTER`; nix has no wrapper for it).
pub(crate) fn attach_filter(fd: BorrowedFd<'_>, program: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(program.len()).map_err(|_| io::Error::other("BPF program too long"))?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `program`, both alive for the call; the
    // kernel copies the program and never writes through the pointer.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
