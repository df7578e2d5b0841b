//! What the hardening costs: two `wrenn up`s side by side — one as shipped,
//! one whose agent runs sandboxes without user namespace and seccomp (a
//! runtime setting for benchmarks only) — each with half the bench's slots
//! and a prefix of its own. Creates and execs alternate between them
//! (hardened first on even rounds, unhardened first on odd ones), so both
//! sides see the same warm-up, the same drift of the host and the same
//! background work; two platforms one after the other differed by up to
//! ±25 % run to run on this alone.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use wrenn_proto::wrenn::v1::SandboxSpec;

use crate::platform::{Client, PREFIX, Platform, slot_range};
use crate::report::{Report, Table, us};
use crate::sandbox;
use crate::stats::Latencies;

const TARGET_ADDED_PERCENT: f64 = 10.0;

/// create → ready and exec p50s of one side.
struct P50s {
    create: Duration,
    exec: Duration,
}

/// Both sides' p50s, measured interleaved.
pub struct Comparison {
    n: usize,
    hardened: P50s,
    unhardened: P50s,
}

/// `n` creates and `n` execs of `true` on each side, alternating.
pub async fn measure(n: usize, spec: impl Fn() -> SandboxSpec) -> anyhow::Result<Comparison> {
    let (first, last) = slot_range()?;
    let mid = first + (last - first) / 2;
    anyhow::ensure!(
        usize::from(mid - first) >= n,
        "the hardening comparison needs {} slots per side; WRENN_BENCH_SLOTS has {}",
        n + 1,
        last - first + 1
    );
    let config_dir = crate::paths::scratch_dir("lifecycle-agent-config")?;
    let config = config_dir.join("agent.toml");
    std::fs::write(&config, "[runtime]\nunhardened_for_benchmarks = true\n")?;
    let env: [(&str, PathBuf); 1] = [("WRENN_AGENT_CONFIG", config)];
    let started = async {
        let h = Platform::start_beside("lifecycle-hardened", &[], PREFIX, (first, mid)).await?;
        let prefix = format!("{PREFIX}u");
        let u = Platform::start_beside("lifecycle-unhardened", &env, &prefix, (mid + 1, last));
        anyhow::Ok((h, u.await?))
    }
    .await;
    let _ = std::fs::remove_dir_all(&config_dir);
    let (hardened, unhardened) = started?;
    let result = interleaved(&hardened, &unhardened, n, &spec).await;
    let stopped = [hardened.stop(), unhardened.stop()];
    let (hardened, unhardened) = result?;
    for s in stopped {
        s?;
    }
    Ok(Comparison {
        n,
        hardened,
        unhardened,
    })
}

async fn interleaved(
    hardened: &Platform,
    unhardened: &Platform,
    n: usize,
    spec: &impl Fn() -> SandboxSpec,
) -> anyhow::Result<(P50s, P50s)> {
    let mut sides = [
        Side::new(hardened.client().await?, n),
        Side::new(unhardened.client().await?, n),
    ];
    let result = async {
        for round in 0..n {
            for i in order(round) {
                let side = &mut sides[i];
                let t = Instant::now();
                let sb = sandbox::create(&mut side.client, spec()).await?;
                side.create.record(t.elapsed());
                side.ids.push(sb.id);
            }
        }
        for round in 0..n {
            for i in order(round) {
                let side = &mut sides[i];
                let t = Instant::now();
                sandbox::run(&mut side.client, &side.ids[0], "true", &[]).await?;
                side.exec.record(t.elapsed());
            }
        }
        anyhow::Ok(())
    }
    .await;
    for side in &mut sides {
        for id in std::mem::take(&mut side.ids) {
            sandbox::destroy(&mut side.client, &id).await?;
        }
    }
    result?;
    let [h, u] = sides.map(|s| P50s {
        create: s.create.summary().p50,
        exec: s.exec.summary().p50,
    });
    Ok((h, u))
}

/// Hardened first on even rounds, unhardened first on odd ones.
fn order(round: usize) -> [usize; 2] {
    if round.is_multiple_of(2) {
        [0, 1]
    } else {
        [1, 0]
    }
}

struct Side {
    client: Client,
    create: Latencies,
    exec: Latencies,
    ids: Vec<String>,
}

impl Side {
    fn new(client: Client, n: usize) -> Self {
        Side {
            client,
            create: Latencies::new("create → ready", n),
            exec: Latencies::new("Exec `true`", n),
            ids: Vec::with_capacity(n),
        }
    }
}

impl Comparison {
    /// The table, one result per step, and the target's note.
    pub fn report(&self, report: &mut Report) {
        let v = |d: Duration| d.as_secs_f64() * 1e6;
        let added =
            |h: Duration, u: Duration| (h.as_secs_f64() / u.as_secs_f64().max(1e-9) - 1.0) * 100.0;
        let mut t = Table::new(
            format!(
                "What the hardening costs: user namespace and seccomp on and off, two platforms side by side, creates and execs alternating ({} each)",
                self.n
            ),
            &["step", "hardened p50", "unhardened p50", "added"],
        );
        let (h, u) = (&self.hardened, &self.unhardened);
        let rows = [
            ("create → ready", h.create, u.create),
            ("Exec `true`, in-process client", h.exec, u.exec),
        ];
        for (name, h, u) in rows {
            t.row(vec![
                name.into(),
                us(v(h)),
                us(v(u)),
                format!("{:+.1} %", added(h, u)),
            ]);
            report.result(json!({"kind": "hardening", "step": name,
                "hardened_p50_us": v(h), "unhardened_p50_us": v(u), "added_percent": added(h, u)}));
        }
        report.table(t);
        let worst = added(h.create, u.create).max(added(h.exec, u.exec));
        report.note(format!(
            "target: the hardening adds ≤ {TARGET_ADDED_PERCENT} % to create → ready and exec p50: {worst:+.1} % — {}",
            if worst <= TARGET_ADDED_PERCENT {
                "met"
            } else {
                "MISSED"
            }
        ));
    }
}
