//! The after / before section, when a baseline proxy ran
//! (`WRENN_BENCH_BASELINE`, [`crate::reference::baseline`]): wrenn path ÷
//! baseline for req/s and CPU per request at every load level, and the
//! paced run's added p99 of both. Every round runs the baseline next to
//! the path door (before it on odd rounds), so each round gives one ratio
//! of two runs seconds apart; the median of those is the figure and their
//! range the spread. The bar
//! for a proxy change (issue: "before and after, in one run on the same
//! machine"): 1 KiB req/s and CPU per request within ±5 %, paced added p99
//! not worse.

use serde_json::json;

use super::Run;
use super::report::{Paced, median, range, round_ratios};
use crate::report::{Report, Table, us};
use crate::testbed::Door;

/// How far from 1.0 a 1 KiB ratio may be (the issue's ±5 %).
const TOLERANCE: f64 = 0.05;

/// `1.013×`, and with two or more rounds ` (0.982–1.041)`.
fn ratio_spread(v: &[f64]) -> String {
    let m = median(v.to_vec());
    if !m.is_finite() {
        return "–".into();
    }
    match range(v) {
        Some((lo, hi)) if v.len() > 1 => format!("{m:.3}× ({lo:.3}–{hi:.3})"),
        _ => format!("{m:.3}×"),
    }
}

/// `+12 µs` / `−30 µs`.
fn signed_us(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    format!("{}{}", if v < 0.0 { "−" } else { "+" }, us(v.abs()))
}

/// A signed difference in µs, with two or more rounds its range.
fn diff_spread(v: &[f64]) -> String {
    let m = median(v.to_vec());
    match range(v) {
        Some((lo, hi)) if v.len() > 1 => {
            format!("{} ({} … {})", signed_us(m), signed_us(lo), signed_us(hi))
        }
        _ => signed_us(m),
    }
}

/// The wrk runs' table: path ÷ baseline per load level, and a note on the
/// 1 KiB levels against the ±5 % bar.
pub(super) fn wrk(report: &mut Report, runs: &[Run], levels: &[(&'static str, usize)]) {
    let mut t = Table::new(
        "After / before: wrenn path ÷ baseline (same rounds, median of per-round ratios, range over rounds)",
        &["body", "conns", "req/s", "CPU s / 10k req"],
    );
    let mut rps_1k = Vec::new();
    let mut cpu_1k = Vec::new();
    let (mut better_by, mut worse_by) = (Vec::new(), Vec::new());
    for &(body, c) in levels {
        let ratios =
            |f: fn(&Run) -> f64| round_ratios(runs, body, c, Door::Path, Door::Baseline, f);
        let rps = ratios(|r| r.rps);
        if rps.is_empty() {
            continue;
        }
        let cpu = ratios(|r| r.cpu_s_per_10k.unwrap_or(f64::NAN));
        t.row(vec![
            body.into(),
            c.to_string(),
            ratio_spread(&rps),
            ratio_spread(&cpu),
        ]);
        let (rps_m, cpu_m) = (median(rps.clone()), median(cpu.clone()));
        let (rps_r, cpu_r) = (range(&rps), range(&cpu));
        report.result(json!({
            "kind": "after_before",
            "body": body,
            "connections": c,
            "rounds": rps.len(),
            "path_over_baseline_rps": rps_m,
            "path_over_baseline_rps_range": rps_r.map(|(lo, hi)| [lo, hi]),
            "path_over_baseline_cpu": cpu_m,
            "path_over_baseline_cpu_range": cpu_r.map(|(lo, hi)| [lo, hi]),
        }));
        if body == "1k" {
            rps_1k.push(format!("{rps_m:.3}×"));
            cpu_1k.push(format!("{cpu_m:.3}×"));
            // More req/s and less CPU per request are better.
            for (what, m, better) in [("req/s", rps_m, rps_m > 1.0), ("CPU", cpu_m, cpu_m < 1.0)] {
                if !((1.0 - TOLERANCE)..=(1.0 + TOLERANCE)).contains(&m) {
                    let cell = format!("{what} {m:.3}× at {c} connections");
                    if better {
                        better_by.push(cell);
                    } else {
                        worse_by.push(cell);
                    }
                }
            }
        }
    }
    if !rps_1k.is_empty() {
        report.note(format!(
            "after / before, 1 KiB (wrenn path ÷ baseline, at {} connections): req/s {}, CPU per request {} — {}",
            levels
                .iter()
                .filter(|(b, _)| *b == "1k")
                .map(|(_, c)| c.to_string())
                .collect::<Vec<_>>()
                .join(" / "),
            rps_1k.join(" / "),
            cpu_1k.join(" / "),
            match (worse_by.is_empty(), better_by.is_empty()) {
                (true, true) => "within ±5 %".to_owned(),
                (true, false) => format!("not worse; better by more than 5 %: {}", better_by.join(", ")),
                (false, _) => format!("WORSE by more than 5 %: {}", worse_by.join(", ")),
            }
        ));
    }
    report.table(t);
}

/// The paced run's added p99 over direct, path and baseline, and their
/// per-round difference.
pub(super) fn paced(report: &mut Report, runs: &[Paced]) {
    let p99 = |door: Door, round: usize| {
        runs.iter()
            .find(|r| r.door == door && r.round == round)
            .map(|r| r.p99_us)
    };
    let (mut path, mut baseline, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    let mut rounds: Vec<usize> = runs.iter().map(|r| r.round).collect();
    rounds.sort_unstable();
    rounds.dedup();
    for round in rounds {
        if let (Some(d), Some(p), Some(b)) = (
            p99(Door::Direct, round),
            p99(Door::Path, round),
            p99(Door::Baseline, round),
        ) {
            path.push(p - d);
            baseline.push(b - d);
            diff.push(p - b);
        }
    }
    let mut t = Table::new(
        "After / before at moderate load: p99 added over direct, paced run (median of rounds, range over rounds)",
        &["wrenn path", "baseline", "path − baseline (per round)"],
    );
    t.row(vec![
        diff_spread(&path),
        diff_spread(&baseline),
        diff_spread(&diff),
    ]);
    let m = median(diff.clone());
    report.note(format!(
        "after / before, paced added p99: wrenn path {} vs baseline {}, path − baseline {} — {}",
        signed_us(median(path.clone())),
        signed_us(median(baseline.clone())),
        diff_spread(&diff),
        match m {
            m if !m.is_finite() => "not measured",
            m if m <= 0.0 => "not worse",
            _ => "worse",
        }
    ));
    report.result(json!({
        "kind": "after_before_paced",
        "rounds": diff.len(),
        "path_added_p99_us": median(path),
        "baseline_added_p99_us": median(baseline),
        "path_minus_baseline_p99_us": m,
        "path_minus_baseline_p99_us_range": range(&diff).map(|(lo, hi)| [lo, hi]),
    }));
    report.table(t);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Value;

    use super::super::report::{Paced, build, paced};
    use super::super::{DOORS, Run};
    use crate::stats::Summary;
    use crate::testbed::Door;
    use crate::wrk::WrkResult;

    fn run(door: Door, round: usize, rps: f64, cpu: f64) -> Run {
        Run {
            body: "1k",
            connections: 64,
            door,
            round,
            rps,
            wrk: WrkResult {
                requests: 1000,
                p99_us: 500,
                ..WrkResult::default()
            },
            cpu_s_per_10k: Some(cpu),
            rss_mib: Some(20.0),
            new_upstream_connections: None,
        }
    }

    fn paced_run(door: Door, round: usize, p99_us: u64) -> Paced {
        let d = Duration::from_micros(p99_us);
        let s = Summary {
            count: 100,
            p50: d / 2,
            p99: d,
            mean: d / 2,
            max: d * 2,
        };
        Paced::new(door, round, &s)
    }

    /// Two rounds through every door but the baseline; with `baseline`, the
    /// baseline too (path serves 1.2× and 1.0× its req/s at the same CPU,
    /// and adds 20 and 40 µs more p99 in the paced run).
    fn report(baseline: bool) -> Value {
        let mut runs = Vec::new();
        let mut paced_runs = Vec::new();
        for round in 0..2 {
            for door in DOORS
                .into_iter()
                .filter(|&d| baseline || d != Door::Baseline)
            {
                let rps = match (door, round) {
                    (Door::Path, 0) => 120.0,
                    _ => 100.0,
                };
                runs.push(run(door, round, rps, 0.15));
                if matches!(door, Door::Direct | Door::Path | Door::Baseline) {
                    let p99 = match door {
                        Door::Direct => 200,
                        Door::Path => 300 + 20 * (round as u64 + 1),
                        _ => 300,
                    };
                    paced_runs.push(paced_run(door, round, p99));
                }
            }
        }
        let mut r = build(runs, "test", true);
        paced(&mut r, paced_runs);
        let dir = tempfile::tempdir().unwrap();
        let base = r.finish(dir.path()).unwrap();
        serde_json::from_str(&std::fs::read_to_string(base.with_extension("json")).unwrap())
            .unwrap()
    }

    #[test]
    fn without_a_baseline_nothing_is_added() {
        let mut j = report(false);
        // (The command line holds the test's filter.)
        j.as_object_mut().unwrap().remove("command");
        let text = j.to_string();
        assert!(!text.contains("baseline"), "{text}");
        assert!(!text.contains("After / before"), "{text}");
    }

    #[test]
    fn path_over_baseline_per_round_with_the_range() {
        let j = report(true);
        let tables = j["tables"].as_array().unwrap();
        let find = |title: &str| {
            tables
                .iter()
                .find(|t| t["title"].as_str().unwrap().starts_with(title))
                .unwrap_or_else(|| panic!("no table {title}"))
        };
        let rows = &find("Requests through each door")["rows"];
        assert!(
            rows.as_array()
                .unwrap()
                .iter()
                .any(|r| r[2] == "wrenn path (baseline)")
        );
        let wrk = &find("After / before: wrenn path ÷ baseline")["rows"][0];
        assert_eq!(wrk[2], "1.100× (1.000–1.200)");
        assert_eq!(wrk[3], "1.000× (1.000–1.000)");
        let paced = &find("After / before at moderate load")["rows"][0];
        assert_eq!(paced[2], "+30 µs (+20 µs … +40 µs)");
        let notes = j["notes"].to_string();
        assert!(
            notes.contains("not worse; better by more than 5 %: req/s 1.100× at 64 connections"),
            "{notes}"
        );
        assert!(notes.contains("path − baseline +30 µs"), "{notes}");
        let doors: Vec<&Value> = j["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r.get("door"))
            .collect();
        assert!(doors.iter().any(|d| *d == "baseline"), "{doors:?}");
        assert!(
            j["results"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["kind"] == "after_before" && r["path_over_baseline_rps"] == 1.1)
        );
    }
}
