//! The host agent's per-step create timings (`wrenn_create_step_seconds`)
//! between two readings of its `/metrics`.

use std::collections::BTreeMap;

use crate::platform::Platform;
use crate::report::{Table, us};

/// The order steps are shown in: the agent's, then the runtime's create and
/// start (see `wrenn_vmm::steps`).
const ORDER: &[&str] = &[
    "total",
    "admission",
    "runtime_create",
    "reserve",
    "directory",
    "network",
    "cgroup",
    "disk",
    "userns",
    "create",
    "runtime_start",
    "template",
    "loop",
    "rootfs",
    "spawn",
    "record",
    "start",
    "guest_ready",
];

/// Mean time (µs) and count of each step over a phase.
pub type Means = BTreeMap<String, (f64, u64)>;

/// Sum (seconds) and count of every step, as read at one moment.
#[derive(Debug, Clone, Default)]
pub struct Steps(BTreeMap<String, (f64, u64)>);

impl Steps {
    pub async fn read(p: &Platform) -> anyhow::Result<Steps> {
        Ok(Steps::parse(&p.agent_metrics().await?))
    }

    pub fn parse(text: &str) -> Steps {
        let mut out: BTreeMap<String, (f64, u64)> = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("wrenn_create_step_seconds_") else {
                continue;
            };
            let (kind, rest) = match rest.split_once("{step=\"") {
                Some(("sum", r)) => (0, r),
                Some(("count", r)) => (1, r),
                _ => continue,
            };
            let Some((step, value)) = rest.split_once("\"} ") else {
                continue;
            };
            let Ok(v) = value.trim().parse::<f64>() else {
                continue;
            };
            let e = out.entry(step.to_owned()).or_default();
            if kind == 0 {
                e.0 = v;
            } else {
                e.1 = v as u64;
            }
        }
        Steps(out)
    }

    /// Mean time (µs) and count of each step between `before` and `self`.
    pub fn since(&self, before: &Steps) -> Means {
        self.0
            .iter()
            .filter_map(|(k, (sum, n))| {
                let (sum0, n0) = before.0.get(k).copied().unwrap_or_default();
                let dn = n.checked_sub(n0).filter(|d| *d > 0)?;
                Some((k.clone(), ((sum - sum0) / dn as f64 * 1e6, dn)))
            })
            .collect()
    }
}

/// A table of per-step means, one column per phase.
pub fn table(title: String, phases: &[(String, Means)]) -> Table {
    let mut header = vec!["step"];
    header.extend(phases.iter().map(|(name, _)| name.as_str()));
    let mut t = Table::new(title, &header);
    let known = ORDER.iter().map(|s| s.to_string());
    let others = phases
        .iter()
        .flat_map(|(_, m)| m.keys().cloned())
        .filter(|k| !ORDER.contains(&k.as_str()))
        .collect::<std::collections::BTreeSet<_>>();
    for step in known.chain(others) {
        if phases.iter().all(|(_, m)| !m.contains_key(&step)) {
            continue;
        }
        let mut row = vec![step.clone()];
        for (_, m) in phases {
            row.push(m.get(&step).map(|(mean, _)| us(*mean)).unwrap_or_default());
        }
        t.row(row);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_between_two_readings() {
        let a = Steps::parse(
            "# HELP x\nwrenn_create_step_seconds_sum{step=\"network\"} 0.010\n\
             wrenn_create_step_seconds_count{step=\"network\"} 2\n\
             wrenn_create_step_seconds_bucket{step=\"network\",le=\"0.1\"} 2\n",
        );
        let b = Steps::parse(
            "wrenn_create_step_seconds_sum{step=\"network\"} 0.040\n\
             wrenn_create_step_seconds_count{step=\"network\"} 5\n\
             wrenn_create_step_seconds_sum{step=\"spawn\"} 0.003\n\
             wrenn_create_step_seconds_count{step=\"spawn\"} 1\n",
        );
        let d = b.since(&a);
        let (mean, n) = d["network"];
        assert_eq!(n, 3);
        assert!((mean - 10_000.0).abs() < 1e-6, "{mean}");
        assert_eq!(d["spawn"].1, 1);
        assert!(b.since(&b).is_empty());
    }
}
