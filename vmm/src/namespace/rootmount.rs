//! A sandbox's root filesystem, built as a detached overlay before its first
//! process exists.
//!
//! # Design
//!
//! The template's read-only mount and the sandbox's disk are idmapped with
//! the sandbox's user namespace ([`super::userns`]): files the template
//! holds as root appear as the sandbox's root, and what the sandbox writes
//! is stored on its disk with the ids it has inside (a file of uid 1000 in
//! the sandbox is uid 1000 on the disk), so a disk does not depend on the
//! slot it was written from. No image is copied or chowned.
//!
//! With the new mount API (kernel 5.12+ for idmapped mounts, 6.8+ for
//! overlay layers given as descriptors) nothing here is attached anywhere:
//!
//! 1. the template: a clone of its mount (`open_tree`), idmapped;
//! 2. the disk: ext4 on its loop device (`fsopen`/`fsmount`), idmapped;
//! 3. the overlay: lower = 1, upper and work = directories of 2, made with
//!    the thread's filesystem ids set to the sandbox's root (overlay does
//!    its own work in upper and work with the credentials it was mounted
//!    with, and host root has no id on an idmapped disk: the overlay would
//!    silently come up read-only).
//!
//! The sandbox's first process moves the overlay onto its root directory
//! inside its own mount namespace; when that namespace goes, the overlay,
//! the disk and its loop device (autoclear) go with it. If the start fails
//! earlier, closing the descriptors dissolves everything.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::userns::IdRange;

/// A failed step, with what it worked on.
#[derive(Debug, thiserror::Error)]
#[error("{step} {what}")]
pub struct Error {
    pub step: &'static str,
    pub what: String,
    #[source]
    pub source: io::Error,
}

type Result<T> = std::result::Result<T, Error>;

fn fail(step: &'static str, what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error { step, what, source }
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"))
}

/// A descriptor returned by a system call, or its error.
fn fd_result(rc: libc::c_long) -> io::Result<OwnedFd> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

fn unit_result(rc: libc::c_long) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets mount attributes (e.g. an idmapping) on a detached mount.
fn set_attr(mnt: &OwnedFd, attr: &libc::mount_attr) -> io::Result<()> {
    // SAFETY: `attr` is a valid `mount_attr` whose size is passed; the path
    // is empty and AT_EMPTY_PATH makes the call act on `mnt` itself.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })
}

fn idmap_attr(userns: &OwnedFd, extra: u64) -> libc::mount_attr {
    libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP | extra,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    }
}

/// A filesystem context (`fsopen`), configured key by key.
struct FsContext {
    fd: OwnedFd,
    fstype: &'static CStr,
}

impl FsContext {
    fn open(fstype: &'static CStr) -> io::Result<FsContext> {
        // SAFETY: `fstype` is a NUL-terminated string; the flag is plain.
        let fd = fd_result(unsafe {
            libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), libc::FSOPEN_CLOEXEC)
        })?;
        Ok(FsContext { fd, fstype })
    }

    fn config(
        &self,
        cmd: libc::c_uint,
        key: Option<&CStr>,
        value: *const libc::c_void,
        aux: libc::c_int,
    ) -> io::Result<()> {
        let key = key.map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: `key` is NUL-terminated or null, `value` is what `cmd`
        // expects (a string, or null with `aux` a descriptor).
        unit_result(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                cmd,
                key,
                value,
                aux,
            )
        })
    }

    fn string(&self, key: &CStr, value: &CStr) -> io::Result<()> {
        self.config(
            libc::FSCONFIG_SET_STRING,
            Some(key),
            value.as_ptr().cast(),
            0,
        )
    }

    fn flag(&self, key: &CStr) -> io::Result<()> {
        self.config(libc::FSCONFIG_SET_FLAG, Some(key), std::ptr::null(), 0)
    }

    fn fd(&self, key: &CStr, fd: &OwnedFd) -> io::Result<()> {
        self.config(
            libc::FSCONFIG_SET_FD,
            Some(key),
            std::ptr::null(),
            fd.as_raw_fd(),
        )
    }

    /// Creates the superblock and returns a detached mount of it.
    fn mount(self, attrs: u64) -> io::Result<OwnedFd> {
        self.config(libc::FSCONFIG_CMD_CREATE, None, std::ptr::null(), 0)?;
        // SAFETY: plain integer arguments on our own context descriptor.
        fd_result(unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                self.fd.as_raw_fd(),
                libc::FSMOUNT_CLOEXEC,
                attrs,
            )
        })
    }
}

impl std::fmt::Debug for FsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FsContext({:?})", self.fstype)
    }
}

/// The user namespace a root is idmapped with, and its host ids.
#[derive(Debug)]
pub struct Idmap<'a> {
    pub ids: IdRange,
    pub userns: &'a OwnedFd,
}

/// Builds the sandbox's root (see the module docs) and returns the detached
/// overlay. `template` is the template's mount point in the calling thread's
/// mount namespace, `disk` the loop device of the sandbox's disk image;
/// without `idmap` (benchmarks of the unhardened runtime) the layers keep
/// host ids. Blocking; changes the calling thread's filesystem ids for a
/// moment, so run it on a thread of its own.
pub fn assemble(template: &Path, disk: &Path, idmap: Option<Idmap<'_>>) -> Result<OwnedFd> {
    let tpath = cpath(template).map_err(fail("prepare path", template.display().to_string()))?;
    // SAFETY: `tpath` is NUL-terminated; the flags are plain.
    let lower = fd_result(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            tpath.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
        )
    })
    .map_err(fail("clone template mount", template.display().to_string()))?;
    if let Some(m) = &idmap {
        set_attr(&lower, &idmap_attr(m.userns, libc::MOUNT_ATTR_RDONLY))
            .map_err(fail("idmap template mount", template.display().to_string()))?;
    }

    let dpath = cpath(disk).map_err(fail("prepare path", disk.display().to_string()))?;
    let ext4 = FsContext::open(c"ext4").map_err(fail("open ext4 context", ""))?;
    ext4.string(c"source", &dpath)
        .and_then(|()| ext4.flag(c"noinit_itable"))
        .map_err(fail("configure disk", disk.display().to_string()))?;
    let upper_fs = ext4
        .mount(libc::MOUNT_ATTR_NOATIME | libc::MOUNT_ATTR_NODEV)
        .map_err(fail("mount disk", disk.display().to_string()))?;
    if let Some(m) = &idmap {
        set_attr(&upper_fs, &idmap_attr(m.userns, 0))
            .map_err(fail("idmap disk", disk.display().to_string()))?;
    }
    let dir = |name: &CStr| {
        // SAFETY: `name` is NUL-terminated and relative to the disk's root.
        let fd = unsafe {
            libc::openat(
                upper_fs.as_raw_fd(),
                name.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        };
        fd_result(fd.into()).map_err(fail("open on disk", name.to_string_lossy()))
    };
    let (upper, work) = (dir(c"upper")?, dir(c"work")?);

    let overlay = FsContext::open(c"overlay").map_err(fail("open overlay context", ""))?;
    overlay
        .fd(c"lowerdir+", &lower)
        .and_then(|()| overlay.fd(c"upperdir", &upper))
        .and_then(|()| overlay.fd(c"workdir", &work))
        .map_err(fail("configure overlay", template.display().to_string()))?;
    let Some(m) = idmap else {
        return overlay
            .mount(libc::MOUNT_ATTR_NODEV)
            .map_err(fail("mount overlay", template.display().to_string()));
    };
    set_fsids(m.ids.base).map_err(fail("set filesystem ids", m.ids.base.to_string()))?;
    let root = overlay.mount(libc::MOUNT_ATTR_NODEV);
    set_fsids(0).map_err(fail("restore filesystem ids", "0"))?;
    root.map_err(fail("mount overlay", template.display().to_string()))
}

/// Sets the calling thread's filesystem uid and gid to `id`, with every
/// capability it holds still effective.
fn set_fsids(id: u32) -> io::Result<()> {
    // SAFETY: setfsgid/setfsuid act on the calling thread only and take an
    // id by value; they return the previous id, so success is checked by
    // reading the new one back.
    unsafe {
        libc::setfsgid(id);
        libc::setfsuid(id);
        if libc::setfsuid(u32::MAX) as u32 != id || libc::setfsgid(u32::MAX) as u32 != id {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
    }
    // Leaving uid 0 for the filesystem clears the filesystem capabilities
    // from the effective set; the overlay must be made with them.
    super::caps::raise_effective().map_err(io::Error::from)
}
