//! Loop devices with autoclear, attached with `LOOP_CONFIGURE`.
//!
//! Every loop device the runtime attaches has `LO_FLAGS_AUTOCLEAR`: the kernel
//! detaches it when its last user goes — the mount of the filesystem on it or,
//! before mounting, the [`LoopDevice`] handle itself. A sandbox's disk is
//! mounted inside the sandbox's own mount namespace, so when the sandbox's last
//! process exits the mount goes and the loop device frees itself; nothing has
//! to be detached by hand, not even after an agent crash.
//!
//! Devices use direct I/O so the backing file's pages are not cached twice
//! (once by the host, once by the filesystem on the device). A sandbox's
//! disk is attached buffered and switched to direct I/O once the sandbox
//! runs ([`LoopDevice::set_direct_io`]): `LOOP_CONFIGURE` with direct I/O
//! first writes the freshly copied image back to the disk and flushes it,
//! and the mount then reads the filesystem's metadata from the disk instead
//! of from the page cache the copy left — measured 86 ms per attach in a
//! burst of 50 creates.
//!
//! Concurrent attaches of this process never try the same device: the
//! kernel's "first free device" is the same for all of them, and racing
//! for it made each of 50 concurrent attaches open and claim device after
//! device behind the others' locks. A device number some attach of ours is
//! configuring is skipped, and a device past the last is created
//! (`LOOP_CTL_ADD`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const LOOP_CTL_ADD: libc::c_ulong = 0x4C80;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_SET_DIRECT_IO: libc::c_ulong = 0x4C08;
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

    /// Switches the device to direct I/O or back. The kernel writes back
    /// what the page cache holds of the backing file first; I/O on the
    /// device waits meanwhile.
    pub fn set_direct_io(&self, on: bool) -> Result<(), Error> {
        // SAFETY: LOOP_SET_DIRECT_IO takes its argument by value (0 or 1)
        // on a valid open loop device.
        let rc = unsafe {
            libc::ioctl(
                self.dev.as_raw_fd(),
                LOOP_SET_DIRECT_IO,
                libc::c_ulong::from(on),
            )
        };
        if rc < 0 {
            return Err(Error::Io {
                step: "LOOP_SET_DIRECT_IO",
                path: self.path(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

/// How a device reads and writes its backing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    /// Direct I/O from the start.
    Direct,
    /// Through the page cache (switch later with [`LoopDevice::set_direct_io`]).
    Buffered,
}

/// Attaches `backing` to a free loop device with autoclear and direct I/O
/// (see the module docs). Retries when another process takes the free
/// device first.
pub fn attach(backing: &Path, read_only: bool) -> Result<LoopDevice, Error> {
    attach_with(backing, read_only, Caching::Direct)
}

/// Device numbers an attach of this process is configuring.
static CLAIMED: parking_lot::Mutex<std::collections::BTreeSet<u32>> =
    parking_lot::Mutex::new(std::collections::BTreeSet::new());

/// A device number this process is trying; released when dropped.
struct Claim(u32);

impl Drop for Claim {
    fn drop(&mut self) {
        CLAIMED.lock().remove(&self.0);
    }
}

/// The kernel's first free device, or the next one no attach of ours is
/// trying and `busy` does not hold (created when it does not exist yet).
fn claim(
    ctl: &File,
    ctl_path: &Path,
    busy: &std::collections::BTreeSet<u32>,
) -> Result<Claim, Error> {
    let mut claimed = CLAIMED.lock();
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device
    // number or -1; the fd is a valid open /dev/loop-control.
    let free = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
    if free < 0 {
        return Err(Error::Io {
            step: "LOOP_CTL_GET_FREE",
            path: ctl_path.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    let mut n = free as u32;
    while claimed.contains(&n) || busy.contains(&n) {
        n += 1;
    }
    if n != free as u32 {
        // SAFETY: LOOP_CTL_ADD takes the device number by value; it returns
        // the number or fails with EEXIST when the device exists.
        let rc = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_ADD, libc::c_ulong::from(n)) };
        let err = io::Error::last_os_error();
        if rc < 0 && err.raw_os_error() != Some(libc::EEXIST) {
            return Err(Error::Io {
                step: "LOOP_CTL_ADD",
                path: ctl_path.to_owned(),
                source: err,
            });
        }
    }
    claimed.insert(n);
    Ok(Claim(n))
}

/// [`attach`], with the caching chosen.
pub fn attach_with(backing: &Path, read_only: bool, caching: Caching) -> Result<LoopDevice, Error> {
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
    let mut flags = LO_FLAGS_AUTOCLEAR;
    if caching == Caching::Direct {
        flags |= LO_FLAGS_DIRECT_IO;
    }
    if read_only {
        flags |= LO_FLAGS_READ_ONLY;
    }
    let mut last_err = None;
    // Devices found bound by someone else: not tried again by this attach.
    let mut busy = std::collections::BTreeSet::new();
    for _ in 0..64 {
        let claim = claim(&ctl, ctl_path, &busy)?;
        let n = claim.0;
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
            return Ok(LoopDevice { dev, number: n });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EBUSY) {
            busy.insert(n);
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

/// Waits until loop device `number` no longer has a backing file whose path
/// contains `marker` (it was cleared, or reused for another file); false
/// when `timeout` passed first. A sandbox's disk device clears itself
/// (autoclear) only once the kernel has let go of the sandbox's mount
/// namespace, a moment after its processes are gone: its file is complete
/// only then.
pub fn wait_released(number: u32, marker: &str, timeout: std::time::Duration) -> bool {
    let file = PathBuf::from(format!("/sys/block/loop{number}/loop/backing_file"));
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match std::fs::read_to_string(&file) {
            Ok(backing) if backing.contains(marker) => {}
            _ => return true,
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attaches racing in one process get distinct devices at once (none
    /// fails or queues behind another's claim), switch to direct I/O, and
    /// free their devices when closed.
    #[test]
    #[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
    fn concurrent_attaches_get_distinct_devices_and_switch_to_direct_io() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (CI runs as root)"
        );
        let tmp = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..8)
            .map(|i| {
                let p = tmp.path().join(format!("disk{i}"));
                std::fs::File::create(&p).unwrap().set_len(4 << 20).unwrap();
                p
            })
            .collect();
        let barrier = std::sync::Barrier::new(files.len());
        let devices: Vec<LoopDevice> = std::thread::scope(|s| {
            let handles: Vec<_> = files
                .iter()
                .map(|f| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        attach_with(f, false, Caching::Buffered).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut numbers: Vec<u32> = devices.iter().map(|d| d.number()).collect();
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), files.len(), "{numbers:?}");
        assert!(CLAIMED.lock().is_empty(), "claims are released");
        let dio = |d: &LoopDevice| {
            std::fs::read_to_string(format!("/sys/block/loop{}/loop/dio", d.number()))
                .unwrap()
                .trim()
                .to_owned()
        };
        for d in &devices {
            assert_eq!(dio(d), "0");
            d.set_direct_io(true).unwrap();
            assert_eq!(dio(d), "1");
        }
        drop(devices);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !backed_by(tmp.path()).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "loop devices not released: {:?}",
                backed_by(tmp.path())
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
