//! One forwarded port: a listener on each of the sandbox's own addresses, and
//! every accepted connection relayed to the app's loopback address.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// Relay buffers, per direction and connection.
const BUF: usize = 32 * 1024;
const BACKLOG: u32 = 1024;

/// Why a port could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("the sandbox has no address other than loopback")]
    NoAddress,
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

impl ForwardError {
    /// Someone else holds the address (an app binding it or `0.0.0.0`).
    pub fn in_use(&self) -> bool {
        matches!(self, ForwardError::Bind { source, .. } if source.kind() == io::ErrorKind::AddrInUse)
    }
}

/// A forwarded port; [`Forward::stop`] closes its listeners. Connections
/// already relayed carry on until either side closes them.
#[derive(Debug)]
pub struct Forward {
    pub target: SocketAddr,
    /// The forwarder's own listening addresses.
    pub bound: Vec<SocketAddr>,
    accept: Vec<JoinHandle<()>>,
}

impl Forward {
    /// Listens on `port` of every address in `addrs` and relays to `target`.
    /// All or nothing: on error, listeners already bound are closed.
    pub fn start(port: u16, target: SocketAddr, addrs: &[IpAddr]) -> Result<Forward, ForwardError> {
        if addrs.is_empty() {
            return Err(ForwardError::NoAddress);
        }
        let listeners = addrs
            .iter()
            .map(|ip| listen(SocketAddr::new(*ip, port)))
            .collect::<Result<Vec<_>, _>>()?;
        let bound = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let accept = listeners
            .into_iter()
            .map(|l| tokio::spawn(accept_loop(l, target)))
            .collect();
        Ok(Forward {
            target,
            bound,
            accept,
        })
    }

    /// Closes the listeners; returns once they are closed, so the port is
    /// free for an app the moment this returns.
    pub async fn stop(self) {
        for task in &self.accept {
            task.abort();
        }
        for task in self.accept {
            let _ = task.await;
        }
    }
}

/// A listening socket on `addr`. `SO_REUSEADDR` lets a forward restart while
/// connections of the previous one linger in `TIME_WAIT`.
fn listen(addr: SocketAddr) -> Result<TcpListener, ForwardError> {
    let err = |source| ForwardError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(BACKLOG).map_err(err)
}

async fn accept_loop(listener: TcpListener, target: SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((inbound, _)) => {
                tokio::spawn(relay(inbound, target));
            }
            // Out of descriptors or memory: back off instead of spinning.
            Err(e) => {
                tracing::warn!(error = %e, %target, "forwarder accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn relay(mut inbound: TcpStream, target: SocketAddr) {
    let _ = inbound.set_nodelay(true);
    let mut outbound = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => {
            // The app stopped between the scan and this connection: reset,
            // so the client sees a failed upstream rather than a silent EOF.
            tracing::debug!(error = %e, %target, "forwarded connection refused by the app");
            let _ = inbound.set_zero_linger();
            return;
        }
    };
    let _ = outbound.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional_with_sizes(&mut inbound, &mut outbound, BUF, BUF).await;
}

/// The sandbox's own addresses: every IPv4 address of an interface that is
/// up, loopback excepted (`eth0`'s in a namespace sandbox, `169.254.0.21` in a
/// Firecracker guest).
pub fn sandbox_addrs() -> Vec<IpAddr> {
    let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = ifaddrs
        .filter(|i| i.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
        .filter_map(|i| i.address?.as_sockaddr_in().map(|a| IpAddr::V4(a.ip())))
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .collect();
    out.sort();
    out.dedup();
    out
}
