//! Each sandbox's user namespace and the host ids behind it.
//!
//! # Design
//!
//! Ids 0–65535 inside a sandbox map to host ids `slot × 65536 …` (slot 1:
//! 65536–131071, slot 65534: up to 4294901759, below the invalid
//! 4294967295): a range of its own per slot, so two sandboxes never share
//! a host id and instances with disjoint slot ranges never collide. The range
//! follows from the slot, which the sandbox's record keeps, so recovery
//! after an agent restart finds the same range. Slots whose range holds an
//! id of a host user or group, or a subordinate range of `/etc/subuid` or
//! `/etc/subgid`, are never allocated ([`reserved_slots`]).
//!
//! The namespace is made before the sandbox's first process, by a child
//! that takes the host uid and gid of the range's base, unshares a user
//! namespace and exits at once (`CLONE_VM | CLONE_VFORK`: no copy of the
//! runtime's page tables; about 0.1 ms). The runtime writes the maps of the
//! exited child and keeps the namespace by a descriptor: it idmaps the
//! sandbox's root filesystem with it and the first process joins it last
//! (see [`super::spawn`]). Because the namespace's owner is the range's
//! base and not root, the kernel's per-user counts that climb the
//! namespace tree (inotify instances, user namespaces, processes) are
//! charged to the sandbox's own host user, not shared with host root and
//! every other sandbox.
//!
//! `setgroups` stays allowed in the namespace (the maps are written by a
//! process privileged in the parent), so `sudo` and `su` work inside.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use crate::slot::Slot;

/// Ids inside a sandbox.
pub const IDS: u32 = 65536;

/// The host ids of one sandbox: `base .. base + 65536`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub base: u32,
}

impl IdRange {
    pub fn for_slot(slot: Slot) -> IdRange {
        IdRange {
            base: u32::from(slot.get()) * IDS,
        }
    }

    /// The host id of id `inside` of the sandbox.
    pub fn host(self, inside: u32) -> u32 {
        self.base + inside
    }

    /// `/proc/<pid>/uid_map` and `gid_map` text.
    pub fn map(self) -> String {
        format!("0 {} {IDS}\n", self.base)
    }
}

/// Slots whose host id range holds an id the host uses: a user or group of
/// `/etc/passwd` and `/etc/group`, or a range of `/etc/subuid` and
/// `/etc/subgid` (read from under `etc`).
pub fn reserved_slots(etc: &Path) -> Vec<u16> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for file in ["passwd", "group"] {
        for line in fs::read_to_string(etc.join(file))
            .unwrap_or_default()
            .lines()
        {
            if let Some(id) = line.split(':').nth(2).and_then(|f| f.parse::<u64>().ok()) {
                ranges.push((id, 1));
            }
        }
    }
    for file in ["subuid", "subgid"] {
        for line in fs::read_to_string(etc.join(file))
            .unwrap_or_default()
            .lines()
        {
            let mut f = line.split(':').skip(1);
            if let (Some(Ok(start)), Some(Ok(count))) = (
                f.next().map(|s| s.trim().parse::<u64>()),
                f.next().map(|s| s.trim().parse::<u64>()),
            ) {
                ranges.push((start, count));
            }
        }
    }
    let mut slots: Vec<u16> = ranges
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .flat_map(|(start, count)| {
            let first = start / u64::from(IDS);
            let last = (start + count - 1) / u64::from(IDS);
            (first..=last.min(u64::from(u16::MAX))).map(|s| s as u16)
        })
        .filter(|s| *s != 0)
        .collect();
    slots.sort_unstable();
    slots.dedup();
    slots
}

/// Creates a user namespace mapping ids 0–65535 to `ids`, owned by host uid
/// `ids.base` (see the module docs). Blocking; the calling thread must be
/// privileged (root).
pub fn create(ids: IdRange) -> io::Result<OwnedFd> {
    let base = ids.base;
    let mut stack = [0u8; 16 * 1024];
    let child: nix::sched::CloneCb = Box::new(move || become_owner_and_unshare(base));
    // SAFETY: CLONE_VM | CLONE_VFORK: the child runs on `stack` in this
    // address space while this thread is suspended, makes only raw system
    // calls (no allocation, no locks: the closure was boxed before; it opens
    // and closes no descriptor) and exits; `clone` returns once it has.
    // CLONE_FILES: it shares the descriptor table instead of copying the
    // runtime's (three descriptors per sandbox: copying and closing them
    // made this step grow with the sandboxes on the host, 0.8 ms → 4 ms at
    // 1000).
    let pid = unsafe {
        nix::sched::clone(
            child,
            &mut stack,
            nix::sched::CloneFlags::CLONE_VM
                | nix::sched::CloneFlags::CLONE_VFORK
                | nix::sched::CloneFlags::CLONE_FILES,
            Some(libc::SIGCHLD),
        )
    }
    .map_err(io::Error::from)?;
    let result = (|| {
        let proc = format!("/proc/{pid}");
        let status = nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(pid),
            nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
        )
        .map_err(io::Error::from)?;
        if !matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)) {
            return Err(io::Error::other(format!(
                "the user namespace helper failed: {status:?}"
            )));
        }
        let map = ids.map();
        fs::write(format!("{proc}/uid_map"), &map)?;
        fs::write(format!("{proc}/gid_map"), &map)?;
        let fd = fs::File::open(format!("{proc}/ns/user"))?;
        Ok(OwnedFd::from(fd))
    })();
    let _ = nix::sys::wait::waitpid(pid, None);
    result
}

/// The helper child: host uid/gid `base`, then a new user namespace.
fn become_owner_and_unshare(base: u32) -> isize {
    // SAFETY: raw system calls with integer arguments. Raw, not libc's
    // wrappers: glibc's set*id would signal every thread of the address
    // space this child shares with the runtime.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
            || libc::syscall(libc::SYS_setresgid, base, base, base) != 0
            || libc::syscall(libc::SYS_setresuid, base, base, base) != 0
            || libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) != 0
        {
            return 1;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_slots_and_stay_valid() {
        let one = IdRange::for_slot(Slot::new(1).unwrap());
        assert_eq!(one.base, 65536);
        assert_eq!(one.host(1000), 66536);
        assert_eq!(one.map(), "0 65536 65536\n");
        let last = IdRange::for_slot(Slot::new(65534).unwrap());
        assert!(last.host(IDS - 1) < u32::MAX - 1, "{}", last.host(IDS - 1));
    }

    #[test]
    fn host_ids_reserve_their_slots() {
        let etc = tempfile::tempdir().unwrap();
        std::fs::write(
            etc.path().join("passwd"),
            "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\nbig:x:70000:70000::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(etc.path().join("group"), "g:x:200000:\n").unwrap();
        std::fs::write(etc.path().join("subuid"), "alice:100000:65536\n").unwrap();
        // 70000 is slot 1; 200000 slot 3; 100000..165535 slots 1 and 2.
        assert_eq!(reserved_slots(etc.path()), vec![1, 2, 3]);
        assert_eq!(
            reserved_slots(&etc.path().join("missing")),
            Vec::<u16>::new()
        );
    }

    #[test]
    #[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
    fn creates_a_mapped_namespace_owned_by_the_range() {
        if !nix::unistd::geteuid().is_root() {
            panic!("needs root (CI is root)");
        }
        let ids = IdRange::for_slot(Slot::new(1999).unwrap());
        let fd = create(ids).unwrap();
        use std::os::fd::AsRawFd;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert!(link.to_string_lossy().starts_with("user:["), "{link:?}");
        // NS_GET_OWNER_UID: the owner is the range's base, not root.
        let mut owner: libc::uid_t = u32::MAX;
        const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;
        // SAFETY: the ioctl writes one uid_t into `owner`.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_OWNER_UID, &mut owner) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        assert_eq!(owner, ids.base);
    }
}
