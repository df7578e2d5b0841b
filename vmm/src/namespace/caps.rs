//! The calling thread's capability sets (`capget`/`capset`, version 3), for
//! the spawn path: no allocation, errors as errno.

use nix::errno::Errno;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

/// One 32-bit half of the three sets.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Half {
    pub effective: u32,
    pub permitted: u32,
    pub inheritable: u32,
}

const VERSION_3: u32 = 0x2008_0522;

/// The calling thread's sets (low half, high half).
pub(super) fn get() -> Result<[Half; 2], Errno> {
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Half {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget fills two `Half` for version 3 for the calling thread;
    // both structs are repr(C) and live across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        )
    };
    Errno::result(rc).map(|_| data)
}

pub(super) fn set(data: &[Half; 2]) -> Result<(), Errno> {
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    // SAFETY: as in `get`; capset only reads the structures.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    Errno::result(rc).map(drop)
}

/// Makes every permitted capability effective (after a change of the
/// filesystem ids dropped the filesystem ones).
pub(super) fn raise_effective() -> Result<(), Errno> {
    let mut data = get()?;
    for d in &mut data {
        d.effective = d.permitted;
    }
    set(&data)
}

/// Empties the inheritable (and so the ambient) set.
pub(super) fn clear_inheritable() -> Result<(), Errno> {
    let mut data = get()?;
    for d in &mut data {
        d.inheritable = 0;
    }
    set(&data)
}

/// Drops every capability in `drop` from the bounding set (`EINVAL`, a
/// number this kernel does not know, is skipped).
pub(super) fn drop_bounding(drop: &[libc::c_ulong]) -> Result<(), Errno> {
    for cap in drop {
        // SAFETY: PR_CAPBSET_DROP takes a capability number by value.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, *cap, 0, 0, 0) };
        match Errno::result(rc) {
            Ok(_) | Err(Errno::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
