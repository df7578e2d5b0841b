//! Creating a TCP socket inside another network namespace, on the calling
//! thread, and coming straight back.
//!
//! A socket belongs to the network namespace of the thread that created it,
//! for its whole life; `connect` and every later call may happen anywhere.
//! So only `socket(2)` runs inside: open the namespace file, `setns` in,
//! create the socket, `setns` back to the proxy's own namespace (held open as
//! [`Home`]). No `.await` happens in between, so no other task ever runs on a
//! thread that is inside a sandbox's namespace.
//!
//! Going back cannot fail in practice (the same capability that let the thread
//! in lets it out, and the home descriptor stays valid); if it ever did, the
//! thread would create later sockets — other sandboxes' included — in the
//! wrong namespace, so the process aborts instead (see [`Back`]).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use tokio::net::TcpSocket;

/// The calling thread's own network namespace.
pub const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// A privileged step that failed, with the namespace it was for.
#[derive(Debug, thiserror::Error)]
#[error("{step} {path}")]
pub struct NetnsError {
    pub step: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl NetnsError {
    fn new(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NetnsError {
        let path = path.to_owned();
        move |source| NetnsError { step, path, source }
    }

    fn errno(step: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> NetnsError {
        let f = Self::new(step, path);
        move |e| f(std::io::Error::from(e))
    }

    /// Whether the namespace file is gone (the sandbox was destroyed).
    pub fn is_gone(&self) -> bool {
        self.source.kind() == std::io::ErrorKind::NotFound
    }
}

/// The namespace the proxy's threads live in, to come back to.
#[derive(Debug)]
pub struct Home {
    fd: OwnedFd,
}

impl Home {
    /// The calling thread's namespace (call it from a thread in the proxy's own).
    pub fn current() -> Result<Home, NetnsError> {
        let path = Path::new(THREAD_NETNS);
        let fd = open_netns(path)?;
        Ok(Home { fd })
    }

    /// A new TCP socket (IPv6 when `v6`) in the namespace at `netns`.
    pub fn socket_in(&self, netns: &Path, v6: bool) -> Result<TcpSocket, NetnsError> {
        let target = open_netns(netns)?;
        let back = self.enter(&target, netns)?;
        let socket = new_socket(v6, netns);
        drop(back);
        socket
    }

    fn enter(&self, target: &OwnedFd, path: &Path) -> Result<Back<'_>, NetnsError> {
        setns(target.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(NetnsError::errno("enter network namespace", path))?;
        Ok(Back { home: self })
    }
}

/// Opens a namespace file (`/run/netns/<name>`, `/proc/…/ns/net`).
fn open_netns(path: &Path) -> Result<OwnedFd, NetnsError> {
    File::open(path)
        .map(OwnedFd::from)
        .map_err(NetnsError::new("open network namespace", path))
}

fn new_socket(v6: bool, path: &Path) -> Result<TcpSocket, NetnsError> {
    let socket = if v6 {
        TcpSocket::new_v6()
    } else {
        TcpSocket::new_v4()
    };
    socket.map_err(NetnsError::new(
        "create a socket in network namespace",
        path,
    ))
}

/// Puts the thread back into [`Home`] when dropped, also while unwinding.
struct Back<'a> {
    home: &'a Home,
}

impl Drop for Back<'_> {
    fn drop(&mut self) {
        if let Err(e) = setns(self.home.fd.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Continuing would let this thread open other sandboxes' (and the
            // proxy's own) sockets in a sandbox's namespace.
            tracing::error!(error = %e, "cannot return to the proxy's network namespace; aborting");
            eprintln!("wrenn-proxy: setns back to the proxy's network namespace failed: {e}");
            std::process::abort();
        }
    }
}

/// Whether this process may enter network namespaces (CAP_SYS_ADMIN): tries
/// to enter its own on a throwaway thread.
pub fn probe() -> Result<(), NetnsError> {
    std::thread::Builder::new()
        .name("wrenn-netns-probe".into())
        .spawn(|| {
            let path = Path::new(THREAD_NETNS);
            let own = open_netns(path)?;
            setns(own.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(NetnsError::errno("enter network namespace", path))
        })
        .map_err(NetnsError::new(
            "start a thread to probe",
            Path::new(THREAD_NETNS),
        ))?
        .join()
        .unwrap_or_else(|_| {
            Err(NetnsError::new("probe", Path::new(THREAD_NETNS))(
                std::io::Error::other("the probe thread panicked"),
            ))
        })
}
