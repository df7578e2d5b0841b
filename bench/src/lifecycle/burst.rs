//! A burst: `n` creates of the default sandbox size sent at once through
//! the control plane, as an agent framework starts one sandbox per task.

use std::time::{Duration, Instant};

use serde_json::json;

use wrenn_proto::wrenn::v1::SandboxSpec;

use crate::platform::Client;
use crate::report::{Report, Table, us};
use crate::sandbox;
use crate::stats::Latencies;

const TARGET_P50: Duration = Duration::from_millis(60);
const TARGET_P99: Duration = Duration::from_millis(120);

/// Creates `n` default-sized sandboxes at once, reports how many succeeded
/// and their latencies, destroys them. Fails when any create failed.
/// `from`: what the creates are served from, for the report ("" when made).
pub async fn run(
    client: &Client,
    report: &mut Report,
    n: usize,
    spec: SandboxSpec,
    from: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let creates = (0..n).map(|_| {
        let mut c = client.clone();
        let spec = spec.clone();
        async move {
            let t = Instant::now();
            sandbox::create(&mut c, spec)
                .await
                .map(|sb| (sb.id, t.elapsed()))
        }
    });
    let results = futures::future::join_all(creates).await;
    let wall = started.elapsed();
    let mut lat = Latencies::new("create → ready", n);
    let mut ids = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok((id, took)) => {
                lat.record(took);
                ids.push(id);
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let destroys = ids.iter().map(|id| {
        let mut c = client.clone();
        async move { sandbox::destroy(&mut c, id).await }
    });
    let destroyed = futures::future::join_all(destroys).await;
    let s = lat.summary();
    let v = |d: Duration| d.as_secs_f64() * 1e6;
    let mut t = Table::new(
        format!("A burst of {n} default-sized creates (512 MiB, 2 GiB disk) at once{from}"),
        &["succeeded", "p50", "p99", "max", "all done in"],
    );
    t.row(vec![
        format!("{} of {n}", ids.len()),
        us(v(s.p50)),
        us(v(s.p99)),
        us(v(s.max)),
        us(v(wall)),
    ]);
    report.table(t);
    report.result(
        json!({"kind": "burst", "from": from.trim(), "creates": n, "succeeded": ids.len(),
        "p50_us": v(s.p50), "p99_us": v(s.p99), "max_us": v(s.max), "wall_us": v(wall),
        "errors": errors.iter().take(3).collect::<Vec<_>>()}),
    );
    let met = errors.is_empty() && s.p50 <= TARGET_P50 && s.p99 <= TARGET_P99;
    report.note(format!(
        "target: a burst of {n} creates{from} all succeed with p50 ≤ 60 ms and p99 ≤ 120 ms: {} of {n}, \
         p50 {}, p99 {} — {}",
        ids.len(),
        us(v(s.p50)),
        us(v(s.p99)),
        if met { "met" } else { "MISSED" }
    ));
    for r in destroyed {
        r?;
    }
    if let Some(e) = errors.first() {
        anyhow::bail!(
            "{} of {n} creates in the burst failed; first: {e}",
            errors.len()
        );
    }
    Ok(())
}
