//! What a scenario leaves behind: `<out>/<scenario>.json` (every
//! measurement), `<out>/<scenario>.md` (the tables) and `<out>/<scenario>.svg`
//! (a chart). The tables are printed too.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::svg::Chart;

/// The load average when the scenario started ([`mark_start`]).
static START_LOAD: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();

/// Records the machine's load as the scenario starts.
pub fn mark_start() {
    let _ = START_LOAD.set(crate::procstat::load_average());
}

/// A markdown table.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: impl Into<String>, header: &[&str]) -> Self {
        Table {
            title: title.into(),
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn markdown(&self) -> String {
        let mut s = format!("### {}\n\n", self.title);
        let _ = writeln!(s, "| {} |", self.header.join(" | "));
        let _ = writeln!(
            s,
            "|{}",
            self.header.iter().map(|_| "---|").collect::<String>()
        );
        for r in &self.rows {
            let _ = writeln!(s, "| {} |", r.join(" | "));
        }
        s
    }
}

/// Everything one run of a scenario measured.
#[derive(Debug)]
pub struct Report {
    scenario: &'static str,
    quick: bool,
    started: u64,
    load_before: Option<f64>,
    tables: Vec<Table>,
    results: Vec<Value>,
    notes: Vec<String>,
    chart: Option<Chart>,
}

impl Report {
    pub fn new(scenario: &'static str, quick: bool) -> Self {
        Report {
            scenario,
            quick,
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            load_before: START_LOAD.get().copied().flatten(),
            tables: Vec::new(),
            results: Vec::new(),
            notes: Vec::new(),
            chart: None,
        }
    }

    /// One measurement (any serialisable record) for the JSON file.
    pub fn result(&mut self, r: impl Serialize) {
        self.results
            .push(serde_json::to_value(r).unwrap_or_else(|e| json!({ "error": e.to_string() })));
    }

    pub fn table(&mut self, t: Table) {
        self.tables.push(t);
    }

    /// A line printed under the tables (targets met or missed, caveats).
    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    pub fn chart(&mut self, c: Chart) {
        self.chart = Some(c);
    }

    fn markdown(&self, load_after: Option<f64>) -> String {
        let mut s = format!(
            "## wrenn-bench {}{}\n\n",
            self.scenario,
            if self.quick { " --quick" } else { "" }
        );
        let _ = writeln!(
            s,
            "{} cores, load average {} before / {} after.\n",
            cores(),
            fmt_load(self.load_before),
            fmt_load(load_after)
        );
        for t in &self.tables {
            s.push_str(&t.markdown());
            s.push('\n');
        }
        for n in &self.notes {
            let _ = writeln!(s, "- {n}");
        }
        s
    }

    /// Prints the tables and writes the three files into `out`. Fails when
    /// the scenario produced no measurement.
    pub fn finish(self, out: &Path) -> anyhow::Result<PathBuf> {
        if self.results.is_empty() {
            bail!("{}: no measurement was produced", self.scenario);
        }
        let load_after = crate::procstat::load_average();
        let md = self.markdown(load_after);
        println!("\n{md}");
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let base = out.join(self.scenario);
        let json = json!({
            "scenario": self.scenario,
            "quick": self.quick,
            "started_unix": self.started,
            "cores": cores(),
            "load_average_before": self.load_before,
            "load_average_after": load_after,
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "results": self.results,
            "tables": self.tables,
            "notes": self.notes,
            "chart": self.chart,
        });
        std::fs::write(
            base.with_extension("json"),
            serde_json::to_string_pretty(&json)?,
        )?;
        std::fs::write(base.with_extension("md"), &md)?;
        if let Some(c) = &self.chart {
            std::fs::write(base.with_extension("svg"), c.render())?;
        }
        println!(
            "wrote {}.{{json,md{}}}",
            base.display(),
            if self.chart.is_some() { ",svg" } else { "" }
        );
        Ok(base)
    }
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn fmt_load(l: Option<f64>) -> String {
    l.map_or_else(|| "?".into(), |l| format!("{l:.2}"))
}

/// `12345` → `12.3k`; rates and counts in tables.
pub fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Microseconds as `850 µs` or `1.25 ms`.
pub fn us(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_table_and_units() {
        let mut t = Table::new("T", &["a", "b"]);
        t.row(vec!["1".into(), "2".into()]);
        assert_eq!(t.markdown(), "### T\n\n| a | b |\n|---|---|\n| 1 | 2 |\n");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(us(1_250.0), "1.25 ms");
        assert_eq!(us(850.0), "850 µs");
    }

    #[test]
    fn a_report_without_results_fails() {
        let dir = tempfile::tempdir().unwrap();
        let r = Report::new("proxy", true);
        assert!(r.finish(dir.path()).is_err());
        let mut r = Report::new("proxy", true);
        r.result(json!({"rps": 1.0}));
        let base = r.finish(dir.path()).unwrap();
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(base.with_extension("json")).unwrap())
                .unwrap();
        assert_eq!(written["results"][0]["rps"], 1.0);
    }
}
