//! `ws`: WebSocket echo through the proxy against a direct connection (and
//! nginx, configured like the proxy).
//!
//! 1. **Round trip**: one connection sends a 32-byte binary message and
//!    waits for its echo, again and again; p50/p99/max per door.
//! 2. **Messages/s**: 64 connections each echo 1 KiB messages in a closed
//!    loop for a few seconds; total messages per second, the round trips'
//!    p50/p99, and the proxy's CPU per 10k messages.
//!
//! The upstream is the bench upstream's `/ws/echo` inside a sandbox. Doors
//! are measured back to back, `--rounds` times.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::Opts;
use crate::report::{Report, Table, si, us};
use crate::stats::Latencies;
use crate::svg::Chart;
use crate::testbed::{Bed, Door};

const DOORS: [Door; 4] = [Door::Direct, Door::Path, Door::Subdomain, Door::Nginx];

type Ws = WebSocketStream<TcpStream>;

/// Opens `/ws/echo` (or another path) through `door`.
pub async fn connect(bed: &Bed, door: Door, path: &str) -> anyhow::Result<Ws> {
    let (addr, target, host) = bed.target(door, path);
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let request = format!("ws://{host}{target}").into_client_request()?;
    let (ws, _) = tokio_tungstenite::client_async(request, tcp)
        .await
        .with_context(|| format!("WebSocket upgrade through {} ({host}{target})", door.name()))?;
    Ok(ws)
}

/// Upgrades that were torn down right after their `101` (Pingora issue
/// #946: when the upstream's `101` is read before the upgrade request's own
/// empty body, the proxy ends the tunnel). Clients reconnect, as browsers'
/// apps do; every scenario reports the count.
pub static TORN_DOWN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// [`connect`] to `/ws/echo`, checked with one echo; a tunnel torn down
/// right after its upgrade is counted in [`TORN_DOWN`] and opened again.
pub async fn connect_echo(bed: &Bed, door: Door) -> anyhow::Result<Ws> {
    let mut last = None;
    for _ in 0..20 {
        let mut ws = connect(bed, door, "/ws/echo").await?;
        match echo(&mut ws, b"hello").await {
            Ok(_) => return Ok(ws),
            Err(e) => {
                TORN_DOWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                last = Some(e);
            }
        }
    }
    Err(last
        .expect("20 attempts")
        .context("20 WebSocket upgrades in a row were torn down"))
}

/// The number of torn-down upgrades so far.
pub fn torn_down() -> u64 {
    TORN_DOWN.load(std::sync::atomic::Ordering::Relaxed)
}

/// Sends one binary message and waits for its echo.
async fn echo(ws: &mut Ws, payload: &[u8]) -> anyhow::Result<Duration> {
    let t = Instant::now();
    ws.send(Message::Binary(payload.to_vec().into())).await?;
    loop {
        match ws.next().await.context("the WebSocket closed")?? {
            Message::Binary(b) if b.len() == payload.len() => return Ok(t.elapsed()),
            Message::Binary(b) => bail!("echo of {} bytes came back as {}", payload.len(), b.len()),
            Message::Close(c) => bail!("the WebSocket closed: {c:?}"),
            _ => {}
        }
    }
}

#[derive(Debug, Serialize)]
struct Throughput {
    door: Door,
    round: usize,
    connections: usize,
    messages: u64,
    seconds: f64,
    messages_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    proxy_cpu_s_per_10k: Option<f64>,
}

pub async fn run(opts: &Opts) -> anyhow::Result<()> {
    crate::testbed::run_scenario("ws", crate::testbed::Refs::NGINX, opts, measure).await
}

async fn measure(bed: &Bed, opts: &Opts) -> anyhow::Result<Report> {
    let (n, conns, secs) = if opts.quick {
        (300, 16, 1.0)
    } else {
        (3000, 64, 3.0)
    };
    let proxy_pid = bed.platform.proxy_pid()?;
    let nginx_pid = bed.nginx.as_ref().map(|n| n.pid());
    let mut report = Report::new("ws", opts.quick);
    let mut rtt = Table::new(
        format!(
            "Round trip of a 32-byte message, one connection ({n} messages per door and round)"
        ),
        &["door", "p50", "p99", "max"],
    );
    let mut samples: Vec<Latencies> = DOORS
        .iter()
        .map(|d| Latencies::new(d.name(), n * opts.rounds))
        .collect();
    for _ in 0..opts.rounds {
        for (i, door) in DOORS.into_iter().enumerate() {
            let mut ws = connect_echo(bed, door).await?;
            for _ in 0..50 {
                echo(&mut ws, &[7; 32]).await?;
            }
            for _ in 0..n {
                samples[i].record(echo(&mut ws, &[7; 32]).await?);
            }
            let _ = ws.close(None).await;
        }
    }
    for (door, l) in DOORS.iter().zip(&samples) {
        let s = l.summary();
        let v = |d: Duration| d.as_secs_f64() * 1e6;
        rtt.row(vec![
            door.name().into(),
            us(v(s.p50)),
            us(v(s.p99)),
            us(v(s.max)),
        ]);
        report.result(json!({"kind": "round_trip", "door": door, "count": s.count,
            "p50_us": v(s.p50), "p99_us": v(s.p99), "max_us": v(s.max)}));
    }
    let mut tput = Table::new(
        format!("1 KiB echo, {conns} connections, {secs} s per door and round (median of rounds)"),
        &["door", "messages/s", "p50", "p99", "CPU s / 10k messages"],
    );
    let mut all: Vec<Throughput> = Vec::new();
    for round in 0..opts.rounds {
        for door in DOORS {
            let pid = match door {
                Door::Direct => None,
                Door::Nginx => nginx_pid,
                _ => Some(proxy_pid),
            };
            let t = closed_loop(bed, door, conns, Duration::from_secs_f64(secs), pid).await?;
            println!(
                "  {:<16} {:>8} msg/s  p50 {:>9}  p99 {:>9}",
                door.name(),
                si(t.messages_per_s),
                us(t.p50_us),
                us(t.p99_us)
            );
            all.push(Throughput { round, ..t });
        }
    }
    let mut chart = Chart {
        title: format!("wrenn-bench ws: 1 KiB echo messages per second ({conns} connections)"),
        y_label: "messages / s".into(),
        categories: vec!["messages/s".into()],
        series: Vec::new(),
    };
    for door in DOORS {
        let of: Vec<&Throughput> = all.iter().filter(|t| t.door == door).collect();
        let med = |f: fn(&Throughput) -> f64| {
            let mut v: Vec<f64> = of.iter().map(|t| f(t)).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let cpu = med(|t| t.proxy_cpu_s_per_10k.unwrap_or(f64::NAN));
        chart
            .series
            .push((door.name().into(), vec![med(|t| t.messages_per_s)]));
        tput.row(vec![
            door.name().into(),
            si(med(|t| t.messages_per_s)),
            us(med(|t| t.p50_us)),
            us(med(|t| t.p99_us)),
            if cpu.is_finite() {
                format!("{cpu:.3}")
            } else {
                "–".into()
            },
        ]);
    }
    for t in all {
        report.result(t);
    }
    let torn = torn_down();
    report.result(json!({"kind": "upgrades_torn_down", "count": torn}));
    if torn > 0 {
        report.note(format!(
            "{torn} WebSocket upgrades through a proxy were torn down right after their 101 and opened again (Pingora issue #946; nginx and direct are not affected)"
        ));
    }
    report.table(rtt);
    report.table(tput);
    report.chart(chart);
    Ok(report)
}

/// `conns` connections echo 1 KiB messages for `duration`.
async fn closed_loop(
    bed: &Bed,
    door: Door,
    conns: usize,
    duration: Duration,
    pid: Option<i32>,
) -> anyhow::Result<Throughput> {
    let mut sockets = Vec::with_capacity(conns);
    for _ in 0..conns {
        sockets.push(connect_echo(bed, door).await?);
    }
    let cpu0 = pid.and_then(crate::procstat::tree_cpu_time);
    let started = Instant::now();
    let deadline = started + duration;
    let tasks = sockets.into_iter().map(|mut ws| {
        tokio::spawn(async move {
            let payload = vec![b'x'; 1024];
            let mut rtts = Vec::new();
            while Instant::now() < deadline {
                rtts.push(echo(&mut ws, &payload).await?);
            }
            let _ = ws.close(None).await;
            anyhow::Ok(rtts)
        })
    });
    let mut l = Latencies::new(door.name(), 1 << 16);
    for t in futures::future::join_all(tasks).await {
        for d in t?? {
            l.record(d);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu1 = pid.and_then(crate::procstat::tree_cpu_time);
    let s = l.summary();
    let messages = s.count as u64;
    Ok(Throughput {
        door,
        round: 0,
        connections: conns,
        messages,
        seconds,
        messages_per_s: messages as f64 / seconds,
        p50_us: s.p50.as_secs_f64() * 1e6,
        p99_us: s.p99.as_secs_f64() * 1e6,
        proxy_cpu_s_per_10k: match (cpu0, cpu1) {
            (Some(a), Some(b)) => Some((b - a).as_secs_f64() * 10_000.0 / messages as f64),
            _ => None,
        },
    })
}
