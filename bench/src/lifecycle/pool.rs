//! The burst again, served by the agent's warm pool: a `wrenn up` whose
//! agent keeps as many default sandboxes ready as the burst has creates
//! (`WRENN_POOL_SIZE`), the burst sent once the pool is full, then the same
//! number of creates one at a time after it refilled, with no other sandbox
//! up and with the density phase's count up (made the usual way).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use wrenn_proto::wrenn::v1::SandboxSpec;

use futures::StreamExt as _;

use crate::platform::{Client, Platform};
use crate::report::{Report, Table, us};
use crate::sandbox;

/// How long the pool may take to fill.
const FILL_WITHIN: Duration = Duration::from_secs(120);

/// A create with every default: what the pool holds.
fn default_spec() -> SandboxSpec {
    SandboxSpec {
        timeout_secs: 3600,
        ..Default::default()
    }
}

pub async fn run(report: &mut Report, n: usize, density: usize) -> anyhow::Result<()> {
    let size = PathBuf::from(n.to_string());
    let p = Platform::start_with("lifecycle-pool", &[("WRENN_POOL_SIZE", size)]).await?;
    let result = measure(&p, report, n, density).await;
    let stopped = p.stop();
    result?;
    stopped
}

async fn measure(
    p: &Platform,
    report: &mut Report,
    n: usize,
    density: usize,
) -> anyhow::Result<()> {
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
    // One at a time, each from the (refilled) pool, with none up and
    // with `density` up (made the usual way, another shape).
    wait_full(p, n).await?;
    let mut client = client;
    let (at_0, one) = super::one_at_a_time(p, &mut client, n, default_spec()).await?;
    let density = density.min(p.slot_count().saturating_sub(2 * n + 1));
    let ids = fill(&client, density).await;
    let at_full = async {
        let ids = ids.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        wait_full(p, n).await?;
        let (lat, _) = super::one_at_a_time(p, &mut client, n, default_spec()).await?;
        anyhow::Ok((ids.len(), lat))
    }
    .await;
    let emptied = futures::stream::iter(ids.iter().flatten().map(|id| {
        let mut c = client.clone();
        async move { sandbox::destroy(&mut c, id).await }
    }))
    .buffer_unordered(super::DESTROY_PARALLEL)
    .collect::<Vec<_>>()
    .await;
    let (up, at_full) = at_full?;
    for r in emptied {
        r?;
    }
    report.table(super::steps::table(
        "Per-step means of a create served by the warm pool".into(),
        &[
            (format!("burst of {n}"), burst),
            ("one at a time".to_owned(), one),
        ],
    ));
    let v = |d: Duration| d.as_secs_f64() * 1e6;
    let mut t = Table::new(
        format!(
            "{n} creates one at a time from the warm pool (filled in {})",
            us(v(filled))
        ),
        &[
            "sandboxes up",
            "create → ready p50",
            "p99",
            "max",
            "p50 against 0 up",
        ],
    );
    let p50_0 = at_0.summary().p50;
    for (up, l) in [(0, &at_0), (up, &at_full)] {
        let s = l.summary();
        let ratio = s.p50.as_secs_f64() / p50_0.as_secs_f64().max(1e-9);
        t.row(vec![
            up.to_string(),
            us(v(s.p50)),
            us(v(s.p99)),
            us(v(s.max)),
            format!("{ratio:.2}×"),
        ]);
        report.result(json!({"kind": "pooled", "up": up, "count": s.count,
            "p50_us": v(s.p50), "p99_us": v(s.p99), "max_us": v(s.max), "fill_us": v(filled)}));
    }
    report.table(t);
    let ratio = at_full.summary().p50.as_secs_f64() / p50_0.as_secs_f64().max(1e-9);
    report.note(format!(
        "target (served by the warm pool): create → ready p50 with {up} up ≤ 1.2× the p50 with none: {ratio:.2}× — {}",
        if ratio <= 1.2 { "met" } else { "MISSED" }
    ));
    Ok(())
}

/// `n` sandboxes of the bench's small shape (not the pool's), made
/// [`super::PARALLEL`] at a time; their ids, or the first error.
async fn fill(client: &Client, n: usize) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let k = super::PARALLEL.min(n - ids.len());
        let made = futures::future::join_all((0..k).map(|_| {
            let mut c = client.clone();
            async move { sandbox::create(&mut c, super::spec()).await }
        }))
        .await;
        for r in made {
            ids.push(r?.id);
        }
    }
    Ok(ids)
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
