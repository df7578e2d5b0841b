//! `proxy`: wrenn's data plane against a direct connection and nginx.
//!
//! One sandbox (2 vCPUs) runs the bench upstream (`bench/upstream`, static,
//! uploaded with the files API and started as a background process). wrk
//! loads it with 1 KiB and 64 KiB responses at 64, 256 and 1024 keep-alive
//! connections through six doors (seven with a baseline), back to back for
//! every load level so that they see the same machine:
//!
//! - **direct**: the sandbox address itself (the floor);
//! - **path**: wrenn's proxy, `/proxy/<id>/8080/…`;
//! - **subdomain**: wrenn's proxy, `Host: 8080-<id>.localhost`;
//! - **nginx**: Debian's nginx configured like the proxy
//!   (`conf/bench/nginx.conf`: as many workers as the proxy has threads,
//!   keep-alive upstream pool, path form, access log);
//! - **bare pingora**: Pingora's stock server with the least a path-form
//!   proxy does and nothing of wrenn's ([`crate::reference::bare_pingora`]): what Pingora
//!   itself costs, so the gap to nginx splits into Pingora's and wrenn's;
//! - **lean tokio**: the same least work written straight on tokio in the
//!   worker model wrenn's proxy uses, without Pingora ([`crate::reference::lean_tokio`]): what
//!   tokio, Rust and this kernel cost, so the gap splits further;
//! - **path (baseline)**, only with `WRENN_BENCH_BASELINE=/path/to/wrenn`:
//!   a second wrenn proxy from that binary, started as `wrenn up` starts
//!   its own and following the same agent ([`crate::reference::baseline`]),
//!   path form, run right after the path door in every wrk and paced run.
//!   Built from the code before a change, it measures the change before
//!   and after in one run on one machine: the report adds wrenn path ÷
//!   baseline for req/s and CPU per request, and the paced added p99 of
//!   both ([`after_before`]). An unset variable changes nothing; a path
//!   that is not an executable file fails before anything starts.
//!
//! Reported per run: req/s, p50/p99/p99.9, the proxy's (or nginx's) CPU
//! seconds per 10k requests from `/proc/<pid>/stat`, its RSS, and the ratios
//! wrenn/nginx, wrenn/bare pingora, lean tokio/nginx and wrenn/direct. With
//! `--rounds N` every load level is measured N times (interleaved) and the
//! median is reported with the spread. Then a paced run ([`paced`]): 256
//! connections at a steady 2000 req/s in all through every door but the
//! subdomain form, for the added latency at moderate load. Targets (issue 6): path form ≥ 1.0× nginx req/s; added p99 over
//! direct ≤ 0.5 ms at 256 connections (judged on the paced run: wrk's
//! percentiles at 256 connections are queueing at saturation).

mod after_before;
mod paced;
mod report;

use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use crate::Opts;
use crate::report::{Report, si, us};
use crate::testbed::{Bed, Door, Refs};
use crate::wrk::{self, Load, WrkResult};

const NEW_UPSTREAM: &str = "wrenn_proxy_upstream_connections_total{reused=\"false\"}";
/// Every door, in the order each load level runs them; the baseline only
/// with `WRENN_BENCH_BASELINE` ([`loaded`]).
const DOORS: [Door; 7] = [
    Door::Direct,
    Door::Path,
    Door::Baseline,
    Door::Subdomain,
    Door::Nginx,
    Door::Pingora,
    Door::Lean,
];
/// The paced run's doors.
const PACED_DOORS: [Door; 6] = [
    Door::Direct,
    Door::Path,
    Door::Baseline,
    Door::Nginx,
    Door::Pingora,
    Door::Lean,
];

/// `doors` in the order round `round` runs them: without the baseline
/// unless it runs, and with the baseline and the path form swapped on odd
/// rounds, so that neither is always the one loaded right after `direct`.
fn loaded(doors: &[Door], baseline: bool, round: usize) -> Vec<Door> {
    let mut order: Vec<Door> = doors
        .iter()
        .copied()
        .filter(|&d| baseline || d != Door::Baseline)
        .collect();
    let at = |door| order.iter().position(|&d| d == door);
    if round % 2 == 1
        && let (Some(p), Some(b)) = (at(Door::Path), at(Door::Baseline))
    {
        order.swap(p, b);
    }
    order
}

/// One wrk run and what the proxy in the middle spent on it.
#[derive(Debug, Clone, Serialize)]
struct Run {
    body: &'static str,
    connections: usize,
    door: Door,
    round: usize,
    rps: f64,
    #[serde(flatten)]
    wrk: WrkResult,
    /// CPU seconds the proxy (or nginx, master + workers) used per 10k requests.
    cpu_s_per_10k: Option<f64>,
    /// Resident memory of the proxy (or nginx, all processes) after the run.
    rss_mib: Option<f64>,
    /// Upstream connections the proxy opened during the run (not from its pool).
    new_upstream_connections: Option<f64>,
}

struct Plan {
    bodies: &'static [&'static str],
    connections: &'static [usize],
    duration: Duration,
    warmup: Duration,
    /// Length of each paced run ([`paced`]).
    paced: Duration,
    quick: bool,
}

impl Plan {
    /// Whether `door` is loaded with `body`: `--quick` runs every door with
    /// 1 KiB and only direct and path (and the baseline) with 64 KiB, to
    /// stay within 15 s.
    fn runs(&self, body: &str, door: Door) -> bool {
        !self.quick || body == "1k" || matches!(door, Door::Direct | Door::Path | Door::Baseline)
    }

    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                bodies: &["1k", "64k"],
                connections: &[64],
                duration: Duration::from_secs(1),
                // --quick checks that everything runs, within 15 s.
                warmup: Duration::ZERO,
                paced: Duration::from_millis(500),
                quick,
            }
        } else {
            Plan {
                bodies: &["1k", "64k"],
                connections: &[64, 256, 1024],
                duration: Duration::from_secs(2),
                warmup: Duration::from_secs(1),
                paced: Duration::from_secs(3),
                quick,
            }
        }
    }
}

/// The bed and the pids of the processes in the middle.
struct Doors<'a> {
    bed: &'a Bed,
    proxy_pid: i32,
    nginx_pid: i32,
    pingora_pid: i32,
    lean_pid: i32,
    baseline_pid: Option<i32>,
}

impl Doors<'_> {
    /// The URL wrk connects to and the Host header it sends.
    fn url(&self, door: Door, body: &str) -> (String, Option<String>) {
        let (addr, target, host) = self.bed.target(door, &format!("/{body}"));
        let host = (door == Door::Subdomain).then_some(host);
        (format!("http://{addr}{target}"), host)
    }

    /// (cpu time, rss) of the process in the middle, if any.
    fn middle(&self, door: Door) -> Option<(Duration, u64)> {
        use crate::procstat::{cpu_time, rss, tree_cpu_time, tree_rss};
        match door {
            Door::Direct => None,
            Door::Path | Door::Subdomain => Some((cpu_time(self.proxy_pid)?, rss(self.proxy_pid)?)),
            Door::Nginx => Some((tree_cpu_time(self.nginx_pid)?, tree_rss(self.nginx_pid)?)),
            Door::Pingora => Some((cpu_time(self.pingora_pid)?, rss(self.pingora_pid)?)),
            Door::Lean => Some((cpu_time(self.lean_pid)?, rss(self.lean_pid)?)),
            Door::Baseline => {
                let pid = self.baseline_pid?;
                Some((cpu_time(pid)?, rss(pid)?))
            }
        }
    }

    /// Upstream connections the wrenn proxy behind `door` has opened so far.
    async fn new_upstream(&self, door: Door) -> Option<f64> {
        let platform = &self.bed.platform;
        match door {
            Door::Path | Door::Subdomain => platform.proxy_metric(NEW_UPSTREAM).await.ok(),
            Door::Baseline => {
                let admin = self.bed.baseline.as_ref()?.admin;
                crate::platform::metric(admin, NEW_UPSTREAM).await.ok()
            }
            _ => None,
        }
    }
}

pub async fn run(opts: &Opts) -> anyhow::Result<()> {
    // Checked before anything starts.
    let refs = Refs {
        baseline: crate::reference::baseline::bin()?,
        ..Refs::ALL
    };
    crate::testbed::run_scenario("proxy", refs, opts, measure).await
}

async fn measure(bed: &Bed, opts: &Opts) -> anyhow::Result<Report> {
    let plan = Plan::new(opts.quick);
    let threads = crate::cores();
    let nginx = bed.nginx.as_ref().context("nginx is not running")?;
    let pingora = bed
        .pingora
        .as_ref()
        .context("bare pingora is not running")?;
    let lean = bed.lean.as_ref().context("lean tokio is not running")?;
    let doors = Doors {
        bed,
        proxy_pid: bed.platform.proxy_pid()?,
        nginx_pid: nginx.pid(),
        pingora_pid: pingora.pid(),
        lean_pid: lean.pid(),
        baseline_pid: bed.baseline.as_ref().map(|b| b.pid()),
    };
    let with_baseline = bed.baseline.is_some();
    // The door column of the progress lines, as wide as the longest name.
    let w = if with_baseline { 21 } else { 16 };
    let script = wrk::install_script(&bed.platform.dir)?;
    println!(
        "proxy: sandbox {} upstream {}; wrenn proxy {} (pid {}), nginx {} ({threads} workers), bare pingora {} and lean tokio {} ({threads} threads each); wrk {threads} threads; {} round(s) of {} s",
        bed.id,
        bed.upstream,
        bed.platform.proxy,
        doors.proxy_pid,
        nginx.listen,
        pingora.listen,
        lean.listen,
        opts.rounds,
        plan.duration.as_secs()
    );
    if let Some(b) = &bed.baseline {
        println!(
            "proxy: baseline wrenn proxy {} from {} (pid {})",
            b.listen,
            b.bin.display(),
            b.pid()
        );
    }
    for door in loaded(&DOORS, with_baseline, 0)
        .into_iter()
        .filter(|_| !plan.warmup.is_zero())
    {
        let (url, host) = doors.url(door, "1k");
        let load = Load {
            url: &url,
            host: host.as_deref(),
            connections: 64,
            threads,
            duration: plan.warmup,
        };
        wrk::run(&script, &load)
            .await
            .with_context(|| format!("warming up {}", door.name()))?;
    }
    let mut runs = Vec::new();
    for &body in plan.bodies {
        for &connections in plan.connections {
            for round in 0..opts.rounds {
                for door in loaded(&DOORS, with_baseline, round)
                    .into_iter()
                    .filter(|&d| plan.runs(body, d))
                {
                    let r = one(
                        &doors,
                        &script,
                        door,
                        body,
                        connections,
                        threads,
                        plan.duration,
                    )
                    .await
                    .with_context(|| {
                        format!("{} {body} at {connections} connections", door.name())
                    })?;
                    println!(
                        "  {body:>3} c={connections:<5} {:<w$} {:>8} req/s  p50 {:>9}  p99 {:>9}  p99.9 {:>9}{}",
                        door.name(),
                        si(r.rps),
                        us(r.wrk.p50_us as f64),
                        us(r.wrk.p99_us as f64),
                        us(r.wrk.p999_us as f64),
                        r.cpu_s_per_10k
                            .map(|c| format!("  cpu {c:.3} s/10k"))
                            .unwrap_or_default()
                    );
                    runs.push(Run { round, ..r });
                }
            }
        }
    }
    let mut paced_runs = Vec::new();
    for round in 0..opts.rounds {
        for door in loaded(&PACED_DOORS, with_baseline, round) {
            let s = paced::run(bed, door, plan.paced)
                .await
                .with_context(|| format!("paced load through {}", door.name()))?;
            println!(
                "  paced {} req/s over {} connections, {:<w$} p50 {:>9}  p99 {:>9}  max {:>9}",
                paced::RATE,
                paced::CONNECTIONS,
                door.name(),
                us(s.p50.as_secs_f64() * 1e6),
                us(s.p99.as_secs_f64() * 1e6),
                us(s.max.as_secs_f64() * 1e6),
            );
            paced_runs.push(report::Paced::new(door, round, &s));
        }
    }
    let mut report = report::build(runs, &plan_desc(&plan, opts.rounds), opts.quick);
    report::paced(&mut report, paced_runs);
    Ok(report)
}

fn plan_desc(plan: &Plan, rounds: usize) -> String {
    format!(
        "{} s per run, {rounds} round(s), wrk with {} threads, keep-alive",
        plan.duration.as_secs(),
        crate::cores()
    )
}

async fn one(
    doors: &Doors<'_>,
    script: &std::path::Path,
    door: Door,
    body: &'static str,
    connections: usize,
    threads: usize,
    duration: Duration,
) -> anyhow::Result<Run> {
    let (url, host) = doors.url(door, body);
    let conns_before = doors.new_upstream(door).await;
    let before = doors.middle(door);
    let w = wrk::run(
        script,
        &Load {
            url: &url,
            host: host.as_deref(),
            connections,
            threads,
            duration,
        },
    )
    .await?;
    let after = doors.middle(door);
    let conns_after = doors.new_upstream(door).await;
    if w.errors() > 0 {
        anyhow::bail!("{} errors in {} requests: {w:?}", w.errors(), w.requests);
    }
    let (cpu, rss) = match (before, after) {
        (Some((c0, _)), Some((c1, rss))) => (
            Some((c1 - c0).as_secs_f64() * 10_000.0 / w.requests as f64),
            Some(rss as f64 / (1 << 20) as f64),
        ),
        _ => (None, None),
    };
    Ok(Run {
        body,
        connections,
        door,
        round: 0,
        rps: w.rps(),
        wrk: w,
        cpu_s_per_10k: cpu,
        rss_mib: rss,
        new_upstream_connections: conns_before.zip(conns_after).map(|(a, b)| b - a),
    })
}
