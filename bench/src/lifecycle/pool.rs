//! The burst again, served by the agent's warm pool: a `wrenn up` whose
//! agent keeps as many default sandboxes ready as the burst has creates
//! (`WRENN_POOL_SIZE`), the burst sent once the pool is full, then the same
//! number of creates one at a time after it refilled.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use wrenn_proto::wrenn::v1::SandboxSpec;

use crate::platform::Platform;
use crate::report::{Report, Table, us};
use crate::sandbox;
use crate::stats::Latencies;

/// How long the pool may take to fill.
const FILL_WITHIN: Duration = Duration::from_secs(120);

/// A create with every default: what the pool holds.
fn default_spec() -> SandboxSpec {
    SandboxSpec {
        timeout_secs: 3600,
        ..Default::default()
    }
}

pub async fn run(report: &mut Report, n: usize) -> anyhow::Result<()> {
    let size = PathBuf::from(n.to_string());
    let p = Platform::start_with("lifecycle-pool", &[("WRENN_POOL_SIZE", size)]).await?;
    let result = measure(&p, report, n).await;
    let stopped = p.stop();
    result?;
    stopped
}

async fn measure(p: &Platform, report: &mut Report, n: usize) -> anyhow::Result<()> {
    let filled = wait_full(p, n).await?;
    let client = p.client().await?;
    let before = super::steps::Steps::read(p).await?;
    super::burst::run(
        &client,
        report,
        n,
        default_spec(),
        &format!(" from a warm pool of {n}"),
    )
    .await?;
    let burst = super::steps::Steps::read(p).await?.since(&before);
    // One at a time, each from the (refilled) pool.
    wait_full(p, n).await?;
    let before = super::steps::Steps::read(p).await?;
    let mut client = client;
    let mut create = Latencies::new("create → ready", n);
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let sb = sandbox::create(&mut client, default_spec()).await?;
        create.record(t.elapsed());
        ids.push(sb.id);
    }
    let one = super::steps::Steps::read(p).await?.since(&before);
    for id in &ids {
        sandbox::destroy(&mut client, id).await?;
    }
    report.table(super::steps::table(
        "Per-step means of a create served by the warm pool".into(),
        &[
            (format!("burst of {n}"), burst),
            ("one at a time".to_owned(), one),
        ],
    ));
    let s = create.summary();
    let v = |d: Duration| d.as_secs_f64() * 1e6;
    let mut t = Table::new(
        format!("{n} creates one at a time from the warm pool"),
        &["step", "p50", "p99", "max", "pool filled in"],
    );
    t.row(vec![
        create.name().into(),
        us(v(s.p50)),
        us(v(s.p99)),
        us(v(s.max)),
        us(v(filled)),
    ]);
    report.table(t);
    report.result(
        json!({"kind": "pooled", "step": create.name(), "count": s.count,
        "p50_us": v(s.p50), "p99_us": v(s.p99), "max_us": v(s.max), "fill_us": v(filled)}),
    );
    Ok(())
}

/// Waits until the agent reports `n` pooled sandboxes ready; how long it took.
async fn wait_full(p: &Platform, n: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let text = p.agent_metrics().await?;
        let ready = gauge(&text, "wrenn_pool_ready").unwrap_or(0.0);
        if ready as usize >= n {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < FILL_WITHIN,
            "the warm pool holds {ready} of {n} after {FILL_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of an unlabelled metric in Prometheus text.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_an_unlabelled_gauge() {
        let text = "# HELP wrenn_pool_ready x\nwrenn_pool_ready_total 9\nwrenn_pool_ready 7\n";
        assert_eq!(super::gauge(text, "wrenn_pool_ready"), Some(7.0));
        assert_eq!(super::gauge(text, "wrenn_pool_missing"), None);
    }
}
