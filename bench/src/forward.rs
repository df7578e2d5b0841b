//! `forward`: what reaching an app bound to `127.0.0.1` inside a sandbox costs
//! through the proxy, against the same app bound to `0.0.0.0` (issue 7 §5;
//! forwarding must cost ≤ 10 % throughput).
//!
//! Two namespace sandboxes (busybox template, the real guest agent as PID 1;
//! the second with `WRENN_GUEST_FORWARD_LOCALHOST=1`). In each, a small
//! HTTP/1.1 upstream (1 KiB answers, built once) listens on `0.0.0.0` and on
//! `127.0.0.1`, once keeping connections alive and once closing each one (so
//! every request is a new upstream connect). The upstream runs in this
//! process on sockets made inside the sandbox's netns: the path from the
//! proxy to them is exactly an in-sandbox app's. The real proxy (in-process,
//! static routes) serves wrk (Debian's package, one thread, 32 connections,
//! path form). Rows:
//!
//! | row | route |
//! |---|---|
//! | `0.0.0.0 app, direct` | the baseline: the proxy dials the sandbox's address |
//! | `0.0.0.0 app, netns connector` | the default connector on a normal app |
//! | `127.0.0.1 app, netns fast path` | refused at the address, then `127.0.0.1` inside the netns |
//! | `127.0.0.1 app, guest forwarder` | the sandbox's address → the guest's forwarder → `127.0.0.1` (the Firecracker path) |
//!
//! The same with the upstream closing every connection (`…, close`): one
//! upstream connect per request. Columns: req/s, p50/p99 (wrk), the upstream
//! connections the app accepted (pooling at work), and the sandbox's CPU
//! time per request from its cgroup (the forwarder's own cost, which machine
//! load does not blur). Rows run interleaved, 3 rounds (1 with `--quick`);
//! the table shows each row's median round. Runs as root with prefix `wrenn-tf`, slots 8900–8999,
//! in `/var/tmp/wrenn-tf/bench` (cleaned before and after).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wrenn_proxy::netns::Home;
use wrenn_proxy::{
    NetnsConnector, Proxy, ProxyConfig, Route, RouteOptions, RouteState, RouteTable,
};
use wrenn_vmm::{Runtime, SandboxHandle, SandboxId, SandboxSpec};

use crate::Opts;

const PREFIX: &str = "wrenn-tf";
const SLOTS: std::ops::RangeInclusive<u16> = 8900..=8999;
const DIR: &str = "/var/tmp/wrenn-tf/bench";
const CONNECTIONS: u32 = 32;
/// Upstream ports: wide (0.0.0.0) / local (127.0.0.1), keep-alive / close.
const WIDE: u16 = 8080;
const LOCAL: u16 = 8081;
const WIDE_CLOSE: u16 = 8090;
const LOCAL_CLOSE: u16 = 8091;

pub async fn run(opts: &Opts) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the forward benchmark needs root (namespace sandboxes)");
    }
    which_wrk()?;
    let cfg = crate::namespace::config(DIR, PREFIX, SLOTS)?;
    crate::namespace::clean(&cfg).await?;
    std::fs::create_dir_all(&cfg.dir)?;
    wrenn_vmm::image::build_busybox(&cfg.dir, "busybox")?;
    let runtime = wrenn_vmm::build(cfg.clone())?;
    runtime.recover().await?;
    let result = measure(&runtime, opts).await;
    for h in runtime.list() {
        let _ = runtime.destroy(&h.id).await;
    }
    runtime.shutdown(Duration::from_secs(30)).await?;
    crate::namespace::clean(&cfg).await?;
    std::fs::remove_dir_all(&cfg.dir)?;
    result
}

/// One measured configuration: which sandbox route and port.
struct Row {
    name: &'static str,
    route: &'static str,
    port: u16,
}

async fn measure(runtime: &Arc<dyn Runtime>, opts: &Opts) -> anyhow::Result<()> {
    let plain = up(runtime, "tfbplain", false).await?;
    let fwd = up(runtime, "tfbfwd", true).await?;
    let mut apps = Vec::new();
    // (sandbox address, port) → connections its app accepted.
    let mut accepted: HashMap<(Ipv4Addr, u16), Arc<AtomicU64>> = HashMap::new();
    for h in [&plain, &fwd] {
        let netns = h.netns.clone().context("a namespace sandbox has a netns")?;
        for (ip, port, close) in [
            (Ipv4Addr::UNSPECIFIED, WIDE, false),
            (Ipv4Addr::LOCALHOST, LOCAL, false),
            (Ipv4Addr::UNSPECIFIED, WIDE_CLOSE, true),
            (Ipv4Addr::LOCALHOST, LOCAL_CLOSE, true),
        ] {
            let l = listen_in(&netns, SocketAddr::new(IpAddr::V4(ip), port))?;
            let count = accepted.entry((h.address, port)).or_default().clone();
            apps.push(tokio::spawn(serve(l, close, count)));
        }
    }
    // The guest's forwarder picks the loopback listeners up within a scan.
    for port in [LOCAL, LOCAL_CLOSE] {
        wait_connectable(SocketAddr::new(fwd.address.into(), port))
            .await
            .with_context(|| {
                format!(
                    "the guest of {} never forwarded port {port}: is {} older than the forwarder?",
                    fwd.id,
                    crate::paths::guest_bin().unwrap_or_default().display()
                )
            })?;
    }

    let routes = Arc::new(RouteTable::new());
    let route = |id: &str, h: &SandboxHandle, netns: bool| {
        let r = Route::new(
            id.parse().expect("valid id"),
            RouteState::Running,
            Some(h.address.into()),
            1,
            RouteOptions::default(),
        );
        match (&h.netns, netns) {
            (Some(n), true) => r.with_netns(n.as_path()),
            _ => r,
        }
    };
    routes.replace_all([
        route("direct", &plain, false),
        route("fast", &plain, true),
        route("fwd", &fwd, false),
    ]);
    let config = ProxyConfig {
        listen: "127.0.0.1:0".parse()?,
        admin_listen: None,
        access_log: false,
        ..ProxyConfig::default()
    };
    let proxy = Proxy::new(config)
        .connector(NetnsConnector::new()?)
        .static_routes(routes)
        .start()?;
    let base = format!("http://127.0.0.1:{}", proxy.listen_addr().port());
    let rows = [
        Row {
            name: "0.0.0.0 app, direct",
            route: "direct",
            port: WIDE,
        },
        Row {
            name: "0.0.0.0 app, netns connector",
            route: "fast",
            port: WIDE,
        },
        Row {
            name: "127.0.0.1 app, netns fast path",
            route: "fast",
            port: LOCAL,
        },
        Row {
            name: "127.0.0.1 app, guest forwarder",
            route: "fwd",
            port: LOCAL,
        },
        Row {
            name: "0.0.0.0 app, direct, close",
            route: "direct",
            port: WIDE_CLOSE,
        },
        Row {
            name: "127.0.0.1 app, fast path, close",
            route: "fast",
            port: LOCAL_CLOSE,
        },
        Row {
            name: "127.0.0.1 app, forwarder, close",
            route: "fwd",
            port: LOCAL_CLOSE,
        },
    ];
    let (rounds, secs) = if opts.quick { (1, 1) } else { (3, 3) };
    println!(
        "forward: proxy → apps in namespace sandboxes, wrk -t1 -c{CONNECTIONS}, {secs} s × {rounds} rounds, 1 KiB answers"
    );
    let mut results: Vec<Vec<Wrk>> = rows.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, row) in rows.iter().enumerate() {
            let url = format!("{base}/proxy/{}/{}/", row.route, row.port);
            if round == 0 {
                wrk(&url, 1).await?; // warm-up: pools, caches
            }
            let sandbox = if row.route == "fwd" { &fwd } else { &plain };
            let count = &accepted[&(sandbox.address, row.port)];
            let before = count.load(Ordering::Relaxed);
            let cpu_before = runtime.metrics(&sandbox.id).await?.cpu_usage_usec;
            let mut r = wrk(&url, secs).await?;
            r.connections = count.load(Ordering::Relaxed) - before;
            r.sandbox_cpu_us = runtime.metrics(&sandbox.id).await?.cpu_usage_usec - cpu_before;
            if r.errors > 0 {
                bail!(
                    "{}: {} errors in {} requests",
                    row.name,
                    r.errors,
                    r.requests
                );
            }
            results[i].push(r);
        }
    }
    drop(proxy);
    for a in apps {
        a.abort();
    }
    report(&rows, &mut results)
}

fn report(rows: &[Row], results: &mut [Vec<Wrk>]) -> anyhow::Result<()> {
    let medians: Vec<Wrk> = results
        .iter_mut()
        .map(|r| {
            r.sort_by(|a, b| a.rps().total_cmp(&b.rps()));
            r[r.len() / 2]
        })
        .collect();
    println!(
        "{:<34} {:>10} {:>9} {:>9} {:>12} {:>9} {:>13}",
        "row", "req/s", "p50 µs", "p99 µs", "vs baseline", "upstream", "sandbox µs/req"
    );
    for (i, (row, m)) in rows.iter().zip(&medians).enumerate() {
        // Keep-alive rows compare with row 0, closing rows with row 4.
        let base = if i < 4 { medians[0] } else { medians[4] };
        let ratio = m.rps() / base.rps();
        println!(
            "{:<34} {:>10.0} {:>9} {:>9} {:>11.1}% {:>9} {:>13.1}",
            row.name,
            m.rps(),
            m.p50_us,
            m.p99_us,
            (ratio - 1.0) * 100.0,
            m.connections,
            m.sandbox_cpu_per_request()
        );
        println!(
            "RESULT {{\"name\":\"forward/{}\",\"rps\":{:.0},\"p50_us\":{},\"p99_us\":{},\"vs_baseline\":{:.3},\"upstream_connections\":{},\"sandbox_cpu_us_per_request\":{:.2}}}",
            row.name,
            m.rps(),
            m.p50_us,
            m.p99_us,
            ratio,
            m.connections,
            m.sandbox_cpu_per_request()
        );
    }
    for (i, row) in rows.iter().enumerate().skip(2).take(2) {
        let cost = 1.0 - medians[i].rps() / medians[0].rps();
        let verdict = if cost <= 0.10 { "met" } else { "MISSED" };
        println!(
            "{}: costs {:.1} % throughput against the 0.0.0.0 app (target ≤ 10 %: {verdict})",
            row.name,
            cost * 100.0
        );
    }
    Ok(())
}

/// Creates and starts a busybox sandbox; returns once its guest answers.
async fn up(runtime: &Arc<dyn Runtime>, id: &str, forward: bool) -> anyhow::Result<SandboxHandle> {
    let mut s = SandboxSpec::new(id.parse::<SandboxId>().context("valid id")?);
    s.template = "busybox".into();
    s.memory_mb = 128;
    s.disk_mb = 256;
    s.internet = false;
    if forward {
        s.env
            .insert("WRENN_GUEST_FORWARD_LOCALHOST".into(), "1".into());
    }
    let h = runtime.create(s).await?;
    runtime.start(&h.id).await?;
    wait_connectable(h.guest_addr)
        .await
        .context("the guest agent never listened")?;
    Ok(h)
}

/// A listener on `addr` inside the network namespace at `netns`.
fn listen_in(netns: &Path, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = Home::current()?.socket_in(netns, false)?;
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("binding {addr} in {}", netns.display()))?;
    Ok(socket.listen(1024)?)
}

async fn wait_connectable(addr: SocketAddr) -> anyhow::Result<()> {
    let start = Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("nothing accepts connections on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

const BODY: [u8; 1024] = [b'x'; 1024];

fn response(close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{connection}\r\n",
        BODY.len()
    )
    .into_bytes();
    r.extend_from_slice(&BODY);
    r
}

/// A fixed 1 KiB answer to every request head; `close` ends each connection
/// after one answer. Counts the connections it accepts.
async fn serve(listener: TcpListener, close: bool, accepted: Arc<AtomicU64>) {
    let answer: Arc<[u8]> = response(close).into();
    while let Ok((s, _)) = listener.accept().await {
        accepted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(s, answer.clone(), close));
    }
}

async fn connection(mut s: TcpStream, answer: Arc<[u8]>, close: bool) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut have = 0;
    loop {
        while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            s.write_all(&answer).await?;
            if close {
                return Ok(());
            }
            buf.copy_within(end + 4..have, 0);
            have -= end + 4;
        }
        if have == buf.len() {
            return Ok(());
        }
        let n = s.read(&mut buf[have..]).await?;
        if n == 0 {
            return Ok(());
        }
        have += n;
    }
}

/// What one wrk run measured (from the `done` hook of [`WRK_SCRIPT`]).
#[derive(Debug, Clone, Copy)]
struct Wrk {
    requests: u64,
    duration_us: u64,
    errors: u64,
    p50_us: u64,
    p99_us: u64,
    /// Upstream connections the app accepted during the run.
    connections: u64,
    /// CPU time the sandbox (its guest agent: the forwarder) used meanwhile.
    sandbox_cpu_us: u64,
}

impl Wrk {
    fn rps(&self) -> f64 {
        self.requests as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }

    /// Sandbox CPU per request, µs: what forwarding costs inside the sandbox.
    fn sandbox_cpu_per_request(&self) -> f64 {
        self.sandbox_cpu_us as f64 / self.requests.max(1) as f64
    }
}

const WRK_SCRIPT: &str = r#"
done = function(s, latency, requests)
  local e = s.errors
  io.write(string.format("WRK %d %d %d %d %d\n", s.requests, s.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"#;

fn which_wrk() -> anyhow::Result<()> {
    std::process::Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("wrk is missing: apt-get install wrk (scripts/setup --tests)")?;
    Ok(())
}

async fn wrk(url: &str, secs: u64) -> anyhow::Result<Wrk> {
    let script =
        std::env::temp_dir().join(format!("wrenn-bench-forward-{}.lua", std::process::id()));
    std::fs::write(&script, WRK_SCRIPT)?;
    let out = tokio::process::Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{secs}s"),
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .context("running wrk")?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("WRK "))
        .with_context(|| {
            format!(
                "wrk printed no summary for {url}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("wrk summary {line:?}"))?;
    let [requests, duration_us, errors, p50_us, p99_us] = v[..] else {
        bail!("wrk summary {line:?}");
    };
    Ok(Wrk {
        requests,
        duration_us,
        errors,
        p50_us,
        p99_us,
        connections: 0,
        sandbox_cpu_us: 0,
    })
}
