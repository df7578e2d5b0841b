//! Named network namespaces, bind-mounted under `/run/netns/` the way
//! `ip netns add` does it, so `ip netns exec <name>` works for debugging.
//!
//! Code that must run inside a namespace (creating a netlink socket there,
//! writing its sysctls) runs on a fresh OS thread that joins the namespace and
//! then exits: a thread's network namespace is per thread, and a pooled thread
//! must never be left in a sandbox's namespace.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use super::{Error, Result};

pub const RUN_DIR: &str = "/run/netns";

pub fn path(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(name)
}

fn io_err(step: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { step, path, source }
}

fn errno(step: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(nix::Error) -> Error {
    let path = path.into();
    move |e| Error::Io {
        step,
        path,
        source: io::Error::from(e),
    }
}

/// Makes `/run/netns` a shared mount point, once per process (as iproute2
/// does), so namespaces bound there can be unmounted from any mount namespace.
fn prepare_run_dir() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = Path::new(RUN_DIR);
        fs::create_dir_all(dir).map_err(|e| format!("create {RUN_DIR}: {e}"))?;
        let shared = || {
            mount(
                None::<&str>,
                dir,
                None::<&str>,
                MsFlags::MS_SHARED | MsFlags::MS_REC,
                None::<&str>,
            )
        };
        match shared() {
            Ok(()) => Ok(()),
            Err(nix::Error::EINVAL) => {
                mount(
                    Some(dir),
                    dir,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| format!("bind-mount {RUN_DIR} on itself: {e}"))?;
                shared().map_err(|e| format!("make {RUN_DIR} shared: {e}"))
            }
            Err(e) => Err(format!("make {RUN_DIR} shared: {e}")),
        }
    })
    .clone()
    .map_err(|msg| Error::Io {
        step: "prepare",
        path: RUN_DIR.into(),
        source: io::Error::other(msg),
    })
}

/// Creates the named namespace and runs `inside` in it (on a fresh thread).
/// Returns a descriptor of the namespace and what `inside` returned. On error
/// nothing is left behind.
pub async fn create<T, F>(name: &str, inside: F) -> Result<(OwnedFd, T)>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    prepare_run_dir()?;
    let target = path(name);
    on_thread(move || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o444)
            .custom_flags(libc::O_CLOEXEC)
            .open(&target)
            .map_err(io_err("create netns file", &target))?;
        let bound = (|| {
            unshare(CloneFlags::CLONE_NEWNET).map_err(errno("unshare netns", &target))?;
            let own = Path::new("/proc/thread-self/ns/net");
            mount(
                Some(own),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(errno("bind-mount netns", &target))?;
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&target)
                .map(OwnedFd::from)
                .map_err(io_err("open netns", &target))
        })();
        match bound {
            Ok(fd) => Ok((fd, inside())),
            Err(e) => {
                let _ = umount2(&target, MntFlags::MNT_DETACH);
                let _ = fs::remove_file(&target);
                Err(e)
            }
        }
    })
    .await?
}

/// Opens an existing named namespace.
pub fn open(name: &str) -> Result<OwnedFd> {
    let p = path(name);
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&p)
        .map(OwnedFd::from)
        .map_err(io_err("open netns", p))
}

/// True when `/run/netns/<name>` is a bound namespace (not a stale file).
pub fn exists(name: &str) -> bool {
    let p = path(name);
    match (fs::metadata(&p), fs::metadata(RUN_DIR)) {
        // A bind mount of an nsfs inode has a different device than the dir.
        (Ok(m), Ok(d)) => {
            use std::os::unix::fs::MetadataExt;
            m.dev() != d.dev()
        }
        _ => false,
    }
}

/// Unmounts and removes the named namespace. The kernel frees it when its
/// last process has gone. Missing is fine.
pub fn remove(name: &str) -> Result<()> {
    let p = path(name);
    match umount2(&p, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(errno("unmount netns", &p)(e)),
    }
    match fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove netns file", p)(e)),
    }
}

/// Names under `/run/netns`.
pub fn list() -> Vec<String> {
    let Ok(entries) = fs::read_dir(RUN_DIR) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect()
}

/// Runs `f` on a fresh thread that has joined the namespace `ns`.
pub async fn run_in<T, F>(ns: &OwnedFd, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = ns
        .try_clone()
        .map_err(io_err("dup netns fd", "/proc/self/fd"))?;
    on_thread(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(errno("setns", "netns fd"))?;
        Ok(f())
    })
    .await?
}

/// Runs `f` on a new OS thread (which exits afterwards) and awaits its result.
/// The thread may enter the caller's tokio runtime (netlink sockets register
/// with its reactor).
async fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let rt = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("wrenn-netns".into())
        .spawn(move || {
            let _guard = rt.enter();
            let _ = tx.send(f());
        })
        .map_err(io_err("spawn netns thread", "/proc/self/task"))?;
    rx.await.map_err(|_| Error::Io {
        step: "netns thread",
        path: RUN_DIR.into(),
        source: io::Error::other("the namespace thread panicked"),
    })
}
