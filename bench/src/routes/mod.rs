//! `routes`: proxy latency with 10, 1,000 and 10,000 sandboxes in the
//! route table (lookups must not grow with the count).
//!
//! A host cannot run 10,000 sandboxes, so the table is filled the way the
//! real agent fills it, through `WatchSandboxes`: a stand-in agent
//! (`wrenn_proto::fake_agent`) reports one real sandbox — running the bench
//! upstream under `wrenn up` — and as many listed-only sandboxes as the step
//! needs (added and removed as live events). A second `wrenn proxy` process watches the
//! stand-in; wrk loads the real sandbox through it (path form; one
//! connection for the request path's own latency, 64 for load) once the
//! proxy's `wrenn_proxy_routes` gauge shows the expected count. Sizes are measured in turn, `--rounds` times.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use wrenn_proto::fake_agent::FakeAgent;
use wrenn_proto::wrenn::v1::sandbox_event::Kind;
use wrenn_proto::wrenn::v1::{Sandbox, SandboxRef, SandboxState};

use crate::Opts;
use crate::report::{Report, Table, si, us};
use crate::sandbox::UPSTREAM_PORT;
use crate::svg::Chart;
use crate::testbed::Bed;
use crate::wrk::{self, Load, WrkResult};

const SIZES: [usize; 3] = [10, 1_000, 10_000];
/// One connection: the latency of the request path itself; 64: under load.
const CONNECTIONS: [usize; 2] = [1, 64];
/// Allowed growth of the median latency from 10 to 10,000 routes.
const TARGET_GROWTH: f64 = 1.25;

#[derive(Debug, Serialize)]
struct Step {
    routes: usize,
    connections: usize,
    round: usize,
    rps: f64,
    #[serde(flatten)]
    wrk: WrkResult,
    proxy_cpu_s_per_10k: f64,
    proxy_rss_mib: f64,
}

pub async fn run(opts: &Opts) -> anyhow::Result<()> {
    crate::testbed::run_scenario("routes", crate::testbed::Refs::NONE, opts, measure).await
}

async fn measure(bed: &Bed, opts: &Opts) -> anyhow::Result<Report> {
    let duration = Duration::from_secs(if opts.quick { 1 } else { 3 });
    let real = bed
        .client
        .clone()
        .get(SandboxRef {
            sandbox_id: bed.id.clone(),
        })
        .await?
        .into_inner();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let agent = FakeAgent::start_on(listener, Default::default()).await;
    agent.emit(Kind::Running, real.clone());
    let proxy = WatchingProxy::start(&bed.platform.dir, agent.addr).await?;
    let script = wrk::install_script(&bed.platform.dir)?;
    let url = format!(
        "http://{}/proxy/{}/{UPSTREAM_PORT}/1k",
        proxy.listen, real.id
    );
    let load = |connections: usize| Load {
        url: &url,
        host: None,
        connections,
        threads: crate::cores().min(connections),
        duration,
    };
    resize(&agent, &real, SIZES[0]);
    proxy.wait_routes(SIZES[0]).await?;
    wrk::run(
        &script,
        &Load {
            duration: Duration::from_secs(1),
            ..load(64)
        },
    )
    .await?;
    let mut steps = Vec::new();
    for round in 0..opts.rounds {
        for &n in &SIZES {
            resize(&agent, &real, n);
            proxy.wait_routes(n).await?;
            for c in CONNECTIONS {
                let pid = proxy.pid();
                let cpu0 = crate::procstat::cpu_time(pid).context("proxy cpu")?;
                let w = wrk::run(&script, &load(c)).await?;
                let cpu1 = crate::procstat::cpu_time(pid).context("proxy cpu")?;
                if w.errors() > 0 {
                    bail!("{} errors at {n} routes: {w:?}", w.errors());
                }
                println!(
                    "  {n:>6} routes, {c:>2} conns: {:>8} req/s  p50 {:>9}  p99 {:>9}",
                    si(w.rps()),
                    us(w.p50_us as f64),
                    us(w.p99_us as f64)
                );
                steps.push(Step {
                    routes: n,
                    connections: c,
                    round,
                    rps: w.rps(),
                    wrk: w,
                    proxy_cpu_s_per_10k: (cpu1 - cpu0).as_secs_f64() * 10_000.0 / w.requests as f64,
                    proxy_rss_mib: crate::procstat::rss(pid).unwrap_or(0) as f64
                        / f64::from(1 << 20),
                });
            }
        }
    }
    drop(proxy);
    drop(agent);
    Ok(build(steps, opts.quick, duration))
}

/// Makes the stand-in report the real sandbox plus `n − 1` listed-only ones.
fn resize(agent: &FakeAgent, real: &Sandbox, n: usize) {
    let fake = |i: usize| Sandbox {
        id: format!("rt{i:05}"),
        state: SandboxState::Running as i32,
        address: "127.0.0.1".into(),
        generation: 1_000_000 + i as u64,
        backend: "namespace".into(),
        ..Default::default()
    };
    let have = agent.len() - 1;
    for i in have..n.saturating_sub(1) {
        agent.emit(Kind::Running, fake(i));
    }
    for i in n.saturating_sub(1)..have {
        agent.emit(Kind::Destroyed, fake(i));
    }
    debug_assert_eq!(agent.len(), n.max(1));
    let _ = real;
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn build(steps: Vec<Step>, quick: bool, duration: Duration) -> Report {
    let mut report = Report::new("routes", quick);
    let mut t = Table::new(
        format!(
            "1 KiB through a second `wrenn proxy`, {} s per step (median of rounds)",
            duration.as_secs()
        ),
        &[
            "routes",
            "conns",
            "req/s",
            "p50",
            "p99",
            "p99.9",
            "CPU s / 10k req",
            "RSS MiB",
        ],
    );
    let mut chart = Chart {
        title: "wrenn-bench routes: proxy latency against the route table's size".into(),
        y_label: "latency (µs)".into(),
        categories: SIZES.iter().map(|n| format!("{n} routes")).collect(),
        series: vec![
            ("p50, 1 connection".into(), Vec::new()),
            ("p99, 1 connection".into(), Vec::new()),
            ("p50, 64 connections".into(), Vec::new()),
        ],
    };
    let mut single_p50 = Vec::new();
    for n in SIZES {
        for c in CONNECTIONS {
            let of: Vec<&Step> = steps
                .iter()
                .filter(|s| s.routes == n && s.connections == c)
                .collect();
            let m = |f: fn(&Step) -> f64| median(of.iter().map(|s| f(s)).collect());
            let (p50, p99) = (m(|s| s.wrk.p50_us as f64), m(|s| s.wrk.p99_us as f64));
            if c == 1 {
                single_p50.push(p50);
                chart.series[0].1.push(p50);
                chart.series[1].1.push(p99);
            } else {
                chart.series[2].1.push(p50);
            }
            t.row(vec![
                n.to_string(),
                c.to_string(),
                si(m(|s| s.rps)),
                us(p50),
                us(p99),
                us(m(|s| s.wrk.p999_us as f64)),
                format!("{:.3}", m(|s| s.proxy_cpu_s_per_10k)),
                format!("{:.0}", m(|s| s.proxy_rss_mib)),
            ]);
        }
    }
    let growth = single_p50[2] / single_p50[0];
    report.note(format!(
        "one connection: p50 at 10,000 routes is {growth:.2}× the p50 at 10 — {}",
        if growth <= TARGET_GROWTH {
            "lookups do not grow with the count"
        } else {
            "GREW (check the spread with --rounds 3 before concluding)"
        }
    ));
    for s in steps {
        report.result(s);
    }
    report.table(t);
    report.chart(chart);
    report
}

/// `wrenn proxy` watching the stand-in agent, on its own ports.
struct WatchingProxy {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
}

impl WatchingProxy {
    async fn start(dir: &Path, agent: SocketAddr) -> anyhow::Result<Self> {
        let dir = dir.join("routes-proxy");
        std::fs::create_dir_all(&dir)?;
        // The stand-in's sandboxes have no network namespace: dial directly.
        let config = dir.join("proxy.toml");
        std::fs::write(&config, "upstream_connect = \"direct\"\n")?;
        let [listen, admin] = crate::platform::free_ports::<2>()?;
        let log = std::fs::File::create(dir.join("proxy.out"))?;
        // runs: -; the wrenn binary built here
        let child = Command::new(crate::paths::wrenn_bin()?)
            .arg("proxy")
            .arg("--config")
            .arg(&config)
            .args(["--listen", &listen.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--agent", &format!("http://{agent}")])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting wrenn proxy")?;
        let mut p = WatchingProxy {
            child,
            listen,
            admin,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(listen).await.is_err() {
            if let Some(s) = p.child.try_wait()? {
                bail!(
                    "wrenn proxy exited at start ({s}); see {}",
                    dir.join("proxy.out").display()
                );
            }
            if Instant::now() > deadline {
                bail!("wrenn proxy did not listen on {listen}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(p)
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until the proxy's route table holds `n` routes.
    async fn wait_routes(&self, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.routes().await.ok();
            if got == Some(n) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the proxy's route table holds {got:?} routes, expected {n}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `wrenn_proxy_routes` from the admin listener.
    async fn routes(&self) -> anyhow::Result<usize> {
        let v = crate::platform::metric(self.admin, "wrenn_proxy_routes").await?;
        Ok(v as usize)
    }
}

impl Drop for WatchingProxy {
    fn drop(&mut self) {
        crate::procstat::stop(
            &mut self.child,
            nix::sys::signal::Signal::SIGINT,
            Duration::from_secs(15),
        );
    }
}
