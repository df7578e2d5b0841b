//! A network namespace laid out like a namespace sandbox's: netns
//! `wrenn-tf-<slot>`, veth `wv<slot>` (host, `10.210.0.0 + 2·slot`/31) ↔
//! `eth0` (inside, `+ 1`), loopback up. Made with iproute2, removed on drop
//! (also when the test fails); a leftover of a killed run is removed first.
//! Slots 8100–8199 belong to these tests (docs/DEVELOPING.md).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;

use tokio::net::TcpListener;
use wrenn_proxy::netns::Home;

pub const PREFIX: &str = "wrenn-tf";

pub struct TestNet {
    pub name: String,
    pub path: PathBuf,
    /// Host end of the veth (the sandbox's gateway).
    pub host: Ipv4Addr,
    /// The sandbox's address (`eth0`).
    pub addr: Ipv4Addr,
    pub link: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e} (apt-get install iproute2)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl TestNet {
    pub fn new(slot: u16) -> TestNet {
        assert!((8100..=8199).contains(&slot), "slot {slot} is not ours");
        assert!(
            nix::unistd::geteuid().is_root(),
            "network namespace tests need root (CI runs them as root)"
        );
        let base = u32::from(Ipv4Addr::new(10, 210, 0, 0)) + 2 * u32::from(slot);
        let net = TestNet {
            name: format!("{PREFIX}-{slot}"),
            path: PathBuf::from(format!("/run/netns/{PREFIX}-{slot}")),
            host: Ipv4Addr::from(base),
            addr: Ipv4Addr::from(base + 1),
            link: format!("wv{slot}"),
        };
        net.remove();
        // From here on `net` is dropped (and removes everything) on any failure.
        let (ns, link) = (net.name.as_str(), net.link.as_str());
        let host = format!("{}/31", net.host);
        let addr = format!("{}/31", net.addr);
        let steps: [&[&str]; 7] = [
            &["netns", "add", ns],
            &[
                "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
            &["addr", "add", &host, "dev", link],
            &["link", "set", link, "up"],
            &["-n", ns, "addr", "add", &addr, "dev", "eth0"],
            &["-n", ns, "link", "set", "eth0", "up"],
            &["-n", ns, "link", "set", "lo", "up"],
        ];
        for step in steps {
            ip(step).unwrap_or_else(|e| panic!("setting up {ns}: {e}"));
        }
        net
    }

    /// A listener on `addr` inside the namespace (the socket is made there).
    pub fn listen(&self, addr: SocketAddr) -> TcpListener {
        let home = Home::current().unwrap();
        let socket = home.socket_in(&self.path, addr.is_ipv6()).unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket
            .bind(addr)
            .unwrap_or_else(|e| panic!("binding {addr} in {}: {e}", self.name));
        socket.listen(1024).unwrap()
    }

    pub fn loopback(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    }

    /// Whether the host end of the veth still exists (it goes with the netns).
    pub fn link_exists(&self) -> bool {
        std::path::Path::new("/sys/class/net")
            .join(&self.link)
            .exists()
    }

    /// Deletes the namespace (the kernel frees it, and the veth, once nothing
    /// holds it any more).
    pub fn delete_netns(&self) {
        let _ = ip(&["netns", "del", &self.name]);
    }

    fn remove(&self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.link]);
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        self.remove();
    }
}
