//! System calls without a safe wrapper in `std`, `nix` or `tokio`, made
//! safe here, one function each. The other `unsafe` of this crate sits in
//! modules named for what they do at the system-call level: `loopdev`
//! (loop device ioctls), `net::tap` (TUN ioctls), `namespace::userns`,
//! `namespace::caps`, `namespace::rootmount` (mount API) and
//! `namespace::spawn` (`clone` and the child's steps before `execve`).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// `fd` registered with the current tokio reactor for readability.
pub(crate) fn readable(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `AsyncFd` owns the `OwnedFd`, which stays open and returns
    // the same descriptor from `as_raw_fd` until it is dropped with the
    // `AsyncFd`: what `register_with_interest` requires.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)
}

/// A non-blocking pidfd of `pid`: readable once the process exits.
pub(crate) fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new
    // descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Fills `buf` from the kernel's random pool (`getrandom`, blocking only
/// until the pool is initialised at boot).
pub(crate) fn random_bytes(buf: &mut [u8]) {
    let mut got = 0;
    while got < buf.len() {
        let rest = &mut buf[got..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`,
        // which is borrowed mutably for the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            got += n as usize;
        }
    }
}

/// Copies up to `len` bytes from `from` at `*off_in` to `to` at
/// `*off_out` in the kernel, moving both offsets; the bytes copied (0 at
/// the end of `from`). nix has a wrapper behind a feature this workspace
/// does not build.
pub(crate) fn copy_file_range(
    from: &File,
    off_in: &mut i64,
    to: &File,
    off_out: &mut i64,
    len: usize,
) -> io::Result<usize> {
    // SAFETY: both descriptors are borrowed open for the call; the offsets
    // are exclusive borrows of two i64s that outlive it.
    let n =
        unsafe { libc::copy_file_range(from.as_raw_fd(), off_in, to.as_raw_fd(), off_out, len, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The KVM API version `/dev/kvm`, opened as `kvm`, answers.
pub(crate) fn kvm_api_version(kvm: &File) -> i32 {
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    // SAFETY: KVM_GET_API_VERSION takes no argument and returns an int.
    unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION, 0) }
}

/// The extended attribute `name` of `path` itself (a symlink is not
/// followed); `None` when it has none of that name.
pub(crate) fn lgetxattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let c_name = CString::new(name).map_err(io::Error::other)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: both strings are NUL-terminated and live for the call;
        // the kernel writes at most `buf.len()` bytes into `buf`.
        let n = unsafe {
            libc::lgetxattr(
                c_path.as_ptr(),
                c_name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 64 * 1024 => buf.resize(buf.len() * 4, 0),
            _ => return Err(e),
        }
    }
}

/// Sets the extended attribute `name` of `path` itself (tests make overlay
/// upper layers with it).
#[cfg(test)]
pub(crate) fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let c_name = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: both strings are NUL-terminated and live for the call; the
    // kernel reads `value.len()` bytes of `value`.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
