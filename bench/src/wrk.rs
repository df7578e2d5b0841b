//! HTTP load from `wrk` (Debian's package), summarised as JSON by a Lua
//! `done` hook.
//!
//! Why wrk and not a Rust client of our own: on a 2-core machine the load
//! generator shares the cores with the proxy, the upstream and nginx, so it
//! must be as cheap per request as possible and the same for every target.
//! wrk is a small C event loop (about a third of the CPU per request of a
//! hyper client), keeps connections alive, records every latency in an HDR
//! histogram (µs resolution, p99.9 included) and is what people use to
//! compare proxies, so the numbers are easy to reproduce without wrenn.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

const SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean))
end
"#;

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct WrkResult {
    pub requests: u64,
    pub duration_us: u64,
    pub bytes: u64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    /// Responses that were not 2xx/3xx.
    pub status_errors: u64,
    pub timeouts: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl WrkResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }

    pub fn errors(&self) -> u64 {
        self.connect_errors
            + self.read_errors
            + self.write_errors
            + self.status_errors
            + self.timeouts
    }
}

/// One load run.
#[derive(Debug, Clone)]
pub struct Load<'a> {
    pub url: &'a str,
    /// Extra `Host` header (subdomain form).
    pub host: Option<&'a str>,
    pub connections: usize,
    pub threads: usize,
    pub duration: Duration,
}

/// Writes the Lua script into `dir` (once per scenario).
pub fn install_script(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join("wrk-summary.lua");
    std::fs::write(&path, SCRIPT)?;
    Ok(path)
}

/// Runs wrk and parses its summary.
pub async fn run(script: &Path, load: &Load<'_>) -> anyhow::Result<WrkResult> {
    let secs = load.duration.as_secs().max(1);
    let mut cmd = tokio::process::Command::new("wrk");
    cmd.arg(format!("-t{}", load.threads.min(load.connections).max(1)))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{secs}s"))
        .args(["--timeout", "5s", "-s"])
        .arg(script);
    if let Some(h) = load.host {
        cmd.args(["-H", &format!("Host: {h}")]);
    }
    cmd.arg(load.url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .context("running wrk (Debian package `wrk`)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("WRK ")) else {
        bail!(
            "wrk {} gave no summary ({}): {}{}",
            load.url,
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    };
    let r: WrkResult = serde_json::from_str(line).with_context(|| format!("wrk summary {line}"))?;
    if r.requests == 0 {
        bail!("wrk {}: no request completed ({})", load.url, stdout.trim());
    }
    Ok(r)
}
