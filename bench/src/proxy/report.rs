//! The `proxy` scenario's tables, ratios, targets and chart.

use serde::Serialize;
use serde_json::json;

use super::{DOORS, PACED_DOORS, Run, after_before, loaded};
use crate::report::{Report, Table, si, us};
use crate::svg::Chart;
use crate::testbed::Door;

/// Target: the path form serves at least as many requests as nginx.
const TARGET_RATIO_NGINX: f64 = 1.0;
/// Target: p99 added over direct at 256 connections (1 KiB bodies), µs.
const TARGET_ADDED_P99_US: f64 = 500.0;

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The lowest and highest finite value.
pub(super) fn range(v: &[f64]) -> Option<(f64, f64)> {
    let finite = v.iter().copied().filter(|x| x.is_finite());
    let lo = finite.clone().fold(f64::INFINITY, f64::min);
    let hi = finite.fold(f64::NEG_INFINITY, f64::max);
    (lo <= hi).then_some((lo, hi))
}

fn spread(v: &[f64]) -> String {
    match range(v) {
        Some((lo, hi)) if v.len() >= 2 => format!(" ({}–{})", si(lo), si(hi)),
        _ => String::new(),
    }
}

fn ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}×")
    } else {
        "–".into()
    }
}

/// Runs of one (body, connections, door).
fn cell<'a>(runs: &'a [Run], body: &str, c: usize, door: Door) -> Vec<&'a Run> {
    runs.iter()
        .filter(|r| r.body == body && r.connections == c && r.door == door)
        .collect()
}

/// The ratio of two doors' values in each round both ran.
pub(super) fn round_ratios(
    runs: &[Run],
    body: &str,
    c: usize,
    a: Door,
    b: Door,
    f: fn(&Run) -> f64,
) -> Vec<f64> {
    let (xs, ys) = (cell(runs, body, c, a), cell(runs, body, c, b));
    xs.iter()
        .filter_map(|x| ys.iter().find(|y| y.round == x.round).map(|y| f(x) / f(y)))
        .collect()
}

/// A per-round ratio of two doors' values, as a median over rounds.
fn round_ratio(runs: &[Run], body: &str, c: usize, a: Door, b: Door, f: fn(&Run) -> f64) -> f64 {
    median(round_ratios(runs, body, c, a, b, f))
}

pub(super) fn build(runs: Vec<Run>, desc: &str, quick: bool) -> Report {
    let mut report = Report::new("proxy", quick);
    let with_baseline = runs.iter().any(|r| r.door == Door::Baseline);
    let doors: Vec<Door> = loaded(&DOORS, with_baseline, 0);
    let mut levels: Vec<(&'static str, usize)> = Vec::new();
    for r in &runs {
        if !levels.contains(&(r.body, r.connections)) {
            levels.push((r.body, r.connections));
        }
    }
    let mut t = Table::new(
        format!("Requests through each door ({desc})"),
        &[
            "body",
            "conns",
            "door",
            "req/s",
            "p50",
            "p99",
            "p99.9",
            "CPU s / 10k req",
            "RSS MiB",
            "new upstream conns",
        ],
    );
    let mut ratios = Table::new(
        "wrenn against nginx, bare Pingora and direct, and the lean tokio forwarder against nginx (same rounds, median of per-round ratios)",
        &[
            "body",
            "conns",
            "path / nginx req/s",
            "subdomain / nginx req/s",
            "path / bare pingora req/s",
            "bare pingora / nginx req/s",
            "lean tokio / nginx req/s",
            "path / direct req/s",
            "p99 added over direct (path)",
            "CPU path / nginx",
        ],
    );
    let mut chart = Chart {
        title: "wrenn-bench proxy: requests per second".into(),
        y_label: "requests / s".into(),
        categories: levels.iter().map(|(b, c)| format!("{b} × {c}")).collect(),
        series: doors
            .iter()
            .map(|d| (d.name().to_owned(), Vec::new()))
            .collect(),
    };
    let mut missed = Vec::new();
    for &(body, c) in &levels {
        for (di, &door) in doors.iter().enumerate() {
            let rs = cell(&runs, body, c, door);
            let rps: Vec<f64> = rs.iter().map(|r| r.rps).collect();
            chart.series[di].1.push(median(rps.clone()));
            if rs.is_empty() {
                // Not loaded at this level (`--quick`).
                continue;
            }
            let m = |f: fn(&Run) -> f64| median(rs.iter().map(|r| f(r)).collect());
            let cpu = m(|r| r.cpu_s_per_10k.unwrap_or(f64::NAN));
            let rss = rs.iter().filter_map(|r| r.rss_mib).fold(f64::NAN, f64::max);
            t.row(vec![
                body.into(),
                c.to_string(),
                door.name().into(),
                format!("{}{}", si(median(rps.clone())), spread(&rps)),
                us(m(|r| r.wrk.p50_us as f64)),
                us(m(|r| r.wrk.p99_us as f64)),
                us(m(|r| r.wrk.p999_us as f64)),
                if cpu.is_finite() {
                    format!("{cpu:.3}")
                } else {
                    "–".into()
                },
                if rss.is_finite() {
                    format!("{rss:.0}")
                } else {
                    "–".into()
                },
                {
                    let n = m(|r| r.new_upstream_connections.unwrap_or(f64::NAN));
                    if n.is_finite() {
                        format!("{n:.0}")
                    } else {
                        "–".into()
                    }
                },
            ]);
        }
        let path_nginx = round_ratio(&runs, body, c, Door::Path, Door::Nginx, |r| r.rps);
        let sub_nginx = round_ratio(&runs, body, c, Door::Subdomain, Door::Nginx, |r| r.rps);
        let path_direct = round_ratio(&runs, body, c, Door::Path, Door::Direct, |r| r.rps);
        let path_pingora = round_ratio(&runs, body, c, Door::Path, Door::Pingora, |r| r.rps);
        let pingora_nginx = round_ratio(&runs, body, c, Door::Pingora, Door::Nginx, |r| r.rps);
        let lean_nginx = round_ratio(&runs, body, c, Door::Lean, Door::Nginx, |r| r.rps);
        let cpu_ratio = round_ratio(&runs, body, c, Door::Path, Door::Nginx, |r| {
            r.cpu_s_per_10k.unwrap_or(f64::NAN)
        });
        let added_p99 = median(
            cell(&runs, body, c, Door::Path)
                .iter()
                .filter_map(|p| {
                    cell(&runs, body, c, Door::Direct)
                        .into_iter()
                        .find(|d| d.round == p.round)
                        .map(|d| p.wrk.p99_us as f64 - d.wrk.p99_us as f64)
                })
                .collect(),
        );
        ratios.row(vec![
            body.into(),
            c.to_string(),
            ratio(path_nginx),
            ratio(sub_nginx),
            ratio(path_pingora),
            ratio(pingora_nginx),
            ratio(lean_nginx),
            ratio(path_direct),
            us(added_p99.max(0.0)),
            ratio(cpu_ratio),
        ]);
        report.result(json!({
            "kind": "ratios",
            "body": body,
            "connections": c,
            "path_over_nginx_rps": path_nginx,
            "subdomain_over_nginx_rps": sub_nginx,
            "path_over_direct_rps": path_direct,
            "path_over_pingora_rps": path_pingora,
            "pingora_over_nginx_rps": pingora_nginx,
            "lean_over_nginx_rps": lean_nginx,
            "added_p99_us": added_p99,
            "path_over_nginx_cpu": cpu_ratio,
        }));
        if path_nginx < TARGET_RATIO_NGINX {
            missed.push(format!("path/nginx {} at {body} × {c}", ratio(path_nginx)));
        }
        if body == "1k" && c == 256 {
            report.note(format!(
                "p99 added over direct at 256 connections with wrk flat out (1 KiB): {} — queueing at saturation; the latency target is judged on the paced run",
                us(added_p99.max(0.0))
            ));
        }
    }
    report.note(if missed.is_empty() {
        "target: wrenn (path form) ≥ 1.0× nginx req/s at every load level — met".to_owned()
    } else {
        format!(
            "target: wrenn (path form) ≥ 1.0× nginx req/s — MISSED: {}",
            missed.join(", ")
        )
    });
    report.table(t);
    report.table(ratios);
    if with_baseline {
        after_before::wrk(&mut report, &runs, &levels);
    }
    for r in runs {
        report.result(r);
    }
    report.chart(chart);
    report
}

/// One paced run's latencies.
#[derive(Debug, Clone, Serialize)]
pub struct Paced {
    kind: &'static str,
    pub(super) door: Door,
    pub(super) round: usize,
    rate: u32,
    connections: usize,
    count: usize,
    p50_us: f64,
    pub(super) p99_us: f64,
    max_us: f64,
}

impl Paced {
    pub fn new(door: Door, round: usize, s: &crate::stats::Summary) -> Self {
        let v = |d: std::time::Duration| d.as_secs_f64() * 1e6;
        Paced {
            kind: "paced",
            door,
            round,
            rate: super::paced::RATE,
            connections: super::paced::CONNECTIONS,
            count: s.count,
            p50_us: v(s.p50),
            p99_us: v(s.p99),
            max_us: v(s.max),
        }
    }
}

/// The paced table (medians over rounds) and the added-latency target.
pub fn paced(report: &mut Report, runs: Vec<Paced>) {
    let median = |door: Door, f: fn(&Paced) -> f64| {
        let mut v: Vec<f64> = runs.iter().filter(|r| r.door == door).map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let mut t = Table::new(
        format!(
            "Moderate load: {} keep-alive connections, {} requests/s in all, 1 KiB (median of rounds)",
            super::paced::CONNECTIONS,
            super::paced::RATE
        ),
        &["door", "p50", "p99", "max", "p99 added over direct"],
    );
    let direct_p99 = median(Door::Direct, |r| r.p99_us);
    let with_baseline = runs.iter().any(|r| r.door == Door::Baseline);
    for door in loaded(&PACED_DOORS, with_baseline, 0) {
        let p99 = median(door, |r| r.p99_us);
        t.row(vec![
            door.name().into(),
            us(median(door, |r| r.p50_us)),
            us(p99),
            us(median(door, |r| r.max_us)),
            if door == Door::Direct {
                "–".into()
            } else {
                us((p99 - direct_p99).max(0.0))
            },
        ]);
    }
    let added = median(Door::Path, |r| r.p99_us) - direct_p99;
    report.note(format!(
        "target: p99 added over direct ≤ 0.5 ms at 256 connections, moderate load (path form, {} req/s): {} — {}",
        super::paced::RATE,
        us(added.max(0.0)),
        if added <= TARGET_ADDED_P99_US { "met" } else { "MISSED" }
    ));
    report.table(t);
    if with_baseline {
        after_before::paced(report, &runs);
    }
    for r in runs {
        report.result(r);
    }
}
