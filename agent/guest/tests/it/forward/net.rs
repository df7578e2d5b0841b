//! A network namespace laid out like a sandbox's (netns `wrenn-tf-<slot>`,
//! veth `wv<slot>` ↔ `eth0`, the addressing plan's /31, loopback up) and
//! processes inside it (`ip netns exec`), all removed on drop, also when the
//! test fails. Slots 8200–8299 belong to these tests (docs/DEVELOPING.md).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Net {
    pub name: String,
    pub host: Ipv4Addr,
    /// The sandbox's address (`eth0`).
    pub addr: Ipv4Addr,
    link: String,
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

impl Net {
    pub fn new(slot: u16) -> Net {
        assert!((8200..=8299).contains(&slot), "slot {slot} is not ours");
        crate::common::require_root();
        let base = u32::from(Ipv4Addr::new(10, 210, 0, 0)) + 2 * u32::from(slot);
        let net = Net {
            name: format!("wrenn-tf-{slot}"),
            host: Ipv4Addr::from(base),
            addr: Ipv4Addr::from(base + 1),
            link: format!("wv{slot}"),
        };
        net.remove();
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

    /// `program args…` inside the namespace, stdout piped, killed on drop.
    pub fn spawn(&self, program: &Path, args: &[&str], stderr: Stdio) -> Proc {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("ip netns exec");
        Proc { child }
    }

    /// The guest agent with the forwarder on, listening on `listen`; returns
    /// once it printed its address.
    pub fn guest(&self, listen: &str) -> Proc {
        // WRENN_TEST_GUEST_LOG=info shows what the forwarder does.
        let level = std::env::var("WRENN_TEST_GUEST_LOG").unwrap_or_else(|_| "warn".into());
        let bin = crate::common::agent_bin();
        let mut g = self.spawn(
            &bin,
            &[
                "--listen",
                listen,
                "--print-addr",
                "--log-level",
                &level,
                "--forward-localhost",
            ],
            Stdio::inherit(),
        );
        let line = g.line_containing(":", Duration::from_secs(10));
        assert!(
            line.trim().parse::<SocketAddr>().is_ok(),
            "guest printed {line:?}"
        );
        g
    }

    /// `python3 -m http.server <port> --bind <bind>` serving `dir`; returns
    /// once it printed that it listens, with the moment it did.
    pub fn http_server(&self, bind: &str, port: u16, dir: &Path) -> (Proc, Instant) {
        let mut p = self.spawn(
            Path::new("python3"),
            &[
                "-u",
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                bind,
                "--directory",
                dir.to_str().unwrap(),
            ],
            // One access-log line per request.
            Stdio::null(),
        );
        p.line_containing("Serving HTTP", Duration::from_secs(10));
        (p, Instant::now())
    }

    pub fn at(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.addr, port))
    }

    /// Listening sockets inside the namespace, as `ss -Htln` prints them.
    pub fn listeners(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "ss", "-Htln"])
            .output()
            .expect("ss (apt-get install iproute2)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn remove(&self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.link]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A process inside the namespace.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Reads stdout until a line contains `needle`; panics after `timeout`.
    fn line_containing(&mut self, needle: &str, timeout: Duration) -> String {
        let stdout: ChildStdout = self.child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        let wanted = needle.to_owned();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                if line.contains(&wanted) {
                    let _ = tx.send(line);
                    break;
                }
            }
            // Keep draining so the process never blocks on a full pipe.
            for _ in lines {}
        });
        rx.recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("no line containing {needle:?} within {timeout:?}"))
    }

    /// SIGKILL and wait: the process and its sockets are gone on return.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it has exited (e.g. because its bind failed).
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET /` on a fresh connection; the response, or the connect error.
pub fn get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: sandbox\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// Polls `cond` every 5 ms until it holds; returns how long that took.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}
