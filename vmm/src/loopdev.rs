//! Loop devices with autoclear, attached with `LOOP_CONFIGURE`.
//!
//! Every loop device the runtime attaches has `LO_FLAGS_AUTOCLEAR`: the kernel
//! detaches it when its last user goes — the mount of the filesystem on it or,
//! before mounting, the [`LoopDevice`] handle itself. A sandbox's disk is
//! mounted inside the sandbox's own mount namespace, so when the sandbox's last
//! process exits the mount goes and the loop device frees itself; nothing has
//! to be detached by hand, not even after an agent crash.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An attached loop device. Dropping it closes the device; with autoclear the
/// kernel detaches it once nothing (no mount) uses it any more.
#[derive(Debug)]
pub struct LoopDevice {
    dev: File,
    number: u32,
}

impl LoopDevice {
    /// `/dev/loop<N>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/loop{}", self.number))
    }

    pub fn number(&self) -> u32 {
        self.number
    }

    pub fn as_raw_fd(&self) -> i32 {
        self.dev.as_raw_fd()
    }
}

/// Attaches `backing` to a free loop device with autoclear (and direct I/O,
/// so the backing file's pages are not cached twice). Retries when another
/// process takes the free device first.
pub fn attach(backing: &Path, read_only: bool) -> Result<LoopDevice, Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(libc::O_CLOEXEC)
        .open(backing)
        .map_err(|source| Error::Io {
            step: "open loop backing file",
            path: backing.to_owned(),
            source,
        })?;
    let ctl_path = Path::new("/dev/loop-control");
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(ctl_path)
        .map_err(|source| Error::Io {
            step: "open",
            path: ctl_path.to_owned(),
            source,
        })?;
    let mut flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO;
    if read_only {
        flags |= LO_FLAGS_READ_ONLY;
    }
    let mut last_err = None;
    for _ in 0..64 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device
        // number or -1; the fd is a valid open /dev/loop-control.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(Error::Io {
                step: "LOOP_CTL_GET_FREE",
                path: ctl_path.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| Error::Io {
                step: "open loop device",
                path: path.clone(),
                source,
            })?;
        let mut name = [0u8; 64];
        let b = backing.as_os_str().as_encoded_bytes();
        let len = b.len().min(63);
        name[..len].copy_from_slice(&b[..len]);
        let config = LoopConfig {
            fd: file.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: flags,
                lo_file_name: name,
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config` (laid out as
        // above with repr(C)) that lives for the duration of the call.
        let rc = unsafe {
            libc::ioctl(
                dev.as_raw_fd(),
                LOOP_CONFIGURE,
                &config as *const LoopConfig,
            )
        };
        if rc == 0 {
            return Ok(LoopDevice {
                dev,
                number: n as u32,
            });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EBUSY) {
            last_err = Some((path, err));
            continue;
        }
        return Err(Error::Io {
            step: "LOOP_CONFIGURE",
            path,
            source: err,
        });
    }
    let (path, source) =
        last_err.unwrap_or_else(|| (ctl_path.to_owned(), io::Error::other("no free loop device")));
    Err(Error::Io {
        step: "LOOP_CONFIGURE (every free device was taken)",
        path,
        source,
    })
}

/// Loop devices whose backing file is `path` or lies under it (read from
/// `/sys/block/loop*/loop/backing_file`; a deleted file still counts).
pub fn backed_by(path: &Path) -> Vec<(u32, PathBuf)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_prefix("loop"))
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(backing) = std::fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.trim_end_matches('\n');
        let backing = PathBuf::from(backing.strip_suffix(" (deleted)").unwrap_or(backing));
        if backing.starts_with(path) {
            out.push((n, backing));
        }
    }
    out
}
