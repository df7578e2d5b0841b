//! The spawn mount namespace: where sandboxes are cloned from.
//!
//! # Design
//!
//! `clone(CLONE_NEWNS)` copies the caller's whole mount table, and the child
//! then walks it twice more (making it private, detaching the old root). In
//! the host's namespace that table grows by one `/run/netns` binding per
//! sandbox, so starting a sandbox got slower with every sandbox on the host
//! (measured: ~15 ms with 10 sandboxes, ~30 ms with 430). The runtime
//! therefore creates one private mount namespace when it starts, with
//! `/run/netns` unmounted inside it, and clones every sandbox from a thread
//! that has joined it: the copied table stays the size of the host's base
//! table however many sandboxes run.
//!
//! The read-only template mounts (overlay lower layers) live in this
//! namespace only, so the host's mount table holds nothing of the runtime
//! but the netns bindings. The namespace is kept alive by a descriptor; when
//! the runtime goes (even by a crash) it goes with its template mounts, and
//! running sandboxes keep their own references through their overlays.
//!
//! Joining a mount namespace needs a thread that shares no filesystem state
//! (`unshare(CLONE_FS)`), so each operation runs on a fresh OS thread.
//!
//! # Limitations
//!
//! Mounts the host makes after the runtime started (e.g. a filesystem
//! mounted later under `$WRENN_DIR`) are not visible in the namespace.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::runtime::{Error, Result};

/// A private mount namespace without `/run/netns` (see the module docs).
#[derive(Debug)]
pub struct SpawnNs {
    fd: OwnedFd,
}

fn ns_err(step: &'static str, path: &str) -> impl FnOnce(nix::Error) -> Error {
    let path = path.to_owned();
    move |e| Error::Io {
        step,
        path: path.into(),
        source: e.into(),
    }
}

impl SpawnNs {
    /// Creates the namespace (on a thread of its own, which then exits).
    pub fn new() -> Result<SpawnNs> {
        let fd = on_thread(|| {
            unshare(CloneFlags::CLONE_NEWNS).map_err(ns_err("unshare mount namespace", "/"))?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(ns_err("make mounts private", "/"))?;
            match umount2(crate::net::netns::RUN_DIR, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
                Err(e) => return Err(ns_err("unmount", crate::net::netns::RUN_DIR)(e)),
            }
            let own = Path::new("/proc/thread-self/ns/mnt");
            File::open(own)
                .map(OwnedFd::from)
                .map_err(|source| Error::Io {
                    step: "open mount namespace",
                    path: own.into(),
                    source,
                })
        })??;
        Ok(SpawnNs { fd })
    }

    /// Runs `f` on a fresh thread inside the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let fd = &self.fd;
        on_thread(move || {
            unshare(CloneFlags::CLONE_FS).map_err(ns_err("unshare filesystem attributes", "/"))?;
            setns(fd, CloneFlags::CLONE_NEWNS)
                .map_err(ns_err("join the spawn mount namespace", "/"))?;
            Ok(f())
        })?
    }
}

/// Runs `f` on a new scoped OS thread (which exits afterwards).
fn on_thread<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("wrenn-mountns".into())
            .spawn_scoped(s, f)
            .map_err(|source| Error::Io {
                step: "spawn thread",
                path: "/proc/self/task".into(),
                source,
            })?
            .join()
            .map_err(|_| Error::Io {
                step: "mount namespace thread",
                path: "/".into(),
                source: io::Error::other("panicked"),
            })
    })
}
