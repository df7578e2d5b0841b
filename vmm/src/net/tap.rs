//! TAP devices for Firecracker: `tap0` inside the sandbox's netns.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use rtnetlink::Handle;

use super::{Error, Result, link, netns};

/// Name of the TAP device inside the netns.
pub const TAP_NAME: &str = "tap0";
/// Transmit queue length of the TAP device.
pub const TAP_TXQUEUELEN: u32 = 5000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates the persistent TAP `tap0` in `ns`, sets its txqueuelen and brings
/// it up. Returns its index.
pub async fn create(ns: &OwnedFd, inside: &Handle) -> Result<u32> {
    netns::run_in(ns, create_persistent_tap).await??;
    let idx = link::index(inside, TAP_NAME)
        .await?
        .ok_or_else(|| Error::Netlink {
            step: "find tap",
            name: TAP_NAME.into(),
            source: rtnetlink::Error::RequestFailed,
        })?;
    link::set_txqueuelen(inside, idx, TAP_NAME, TAP_TXQUEUELEN).await?;
    link::set_up(inside, idx, TAP_NAME).await?;
    Ok(idx)
}

/// `TUNSETIFF` + `TUNSETPERSIST` on `/dev/net/tun`, in the calling thread's
/// netns. The device outlives the descriptor (Firecracker opens it by name).
fn create_persistent_tap() -> Result<()> {
    let tun = "/dev/net/tun";
    let fd: OwnedFd = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(tun)
        .map_err(|source| Error::Io {
            step: "open",
            path: tun.into(),
            source,
        })?
        .into();
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..TAP_NAME.len()].copy_from_slice(TAP_NAME.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq` (name + flags,
    // padded to its full size above) that outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) } < 0 {
        return Err(Error::Io {
            step: "TUNSETIFF tap0",
            path: tun.into(),
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: TUNSETPERSIST takes an integer argument by value.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        return Err(Error::Io {
            step: "TUNSETPERSIST tap0",
            path: tun.into(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}
