//! `runtime`: namespace sandboxes with the real guest agent.
//!
//! 1. **Latency** — 200 sandboxes one after another: create → start → the
//!    guest's gRPC health service answers SERVING (the whole path the host
//!    agent waits for), then destroy of each, p50/p99. Targets: create →
//!    healthy p50 ≤ 50 ms, destroy p50 ≤ 20 ms.
//! 2. **Density** — idle sandboxes created 16 at a time until 1000 (or the
//!    first failure), then host memory per sandbox: the growth of the
//!    kernel's non-cache memory (unreclaimable slab, stacks, page tables,
//!    per-cpu: netns, veth, mounts, cgroups, loop devices, tasks) plus the
//!    anonymous and file memory of the sandboxes' cgroups (the guests). The
//!    drop of `MemAvailable` is printed too; on a host shared with other work
//!    it is noisy. Target ≤ 8 MiB per idle sandbox.
//!
//! 3. **What the hardening costs** — the latency run is made on two
//!    runtimes side by side, the shipped one and one that starts sandboxes
//!    without user namespace and seccomp (a setting for benchmarks only),
//!    creates and destroys alternating between them so that both see the
//!    same warm-up and drift (before the density run, whose thousand netns
//!    teardowns the kernel finishes in the background), and what the
//!    hardened runtime adds (target ≤ 10 %).
//!
//! Runs as root with prefix `wrenn-tb` (`wrenn-tbu` unhardened), slots 5000–6999, in
//! `/var/tmp/wrenn-tb/runtime` (cleaned before and after through the
//! runtime's own adopt-or-clean). Template: the busybox test image.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use wrenn_vmm::{Runtime, SandboxId, SandboxSpec};

use crate::Opts;
use crate::memory::{MemInfo, sandbox_memory};
use crate::stats::Latencies;

const PREFIX: &str = "wrenn-tb";
const SLOTS: std::ops::RangeInclusive<u16> = 5000..=6999;
const DIR: &str = "/var/tmp/wrenn-tb/runtime";
/// The unhardened runtime's directory (prefix `wrenn-tbu`).
const PLAIN_DIR: &str = "/var/tmp/wrenn-tb/runtime-unhardened";
const PARALLEL: usize = 16;

pub async fn run(opts: &Opts) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the runtime benchmark needs root (namespaces, mounts, cgroups)");
    }
    let (latency_n, density_n) = if opts.quick { (20, 50) } else { (200, 1000) };
    let cfg = crate::namespace::config(DIR, PREFIX, SLOTS)?;
    crate::namespace::clean(&cfg).await?;
    std::fs::create_dir_all(&cfg.dir)?;
    wrenn_vmm::image::build_busybox(&cfg.dir, "busybox")?;
    println!(
        "runtime: namespace backend, busybox template, guest {}",
        cfg.guest_bin.display()
    );
    // The hardening's cost: a hardened and an unhardened runtime side by
    // side, each with half the slots and a prefix and directory of its own,
    // creates and destroys alternating between them.
    let (first, last) = (*SLOTS.start(), *SLOTS.end());
    let mid = first + (last - first) / 2;
    let hardened_cfg = wrenn_vmm::RuntimeConfig {
        slots: first..=mid,
        ..cfg.clone()
    };
    let plain_cfg = wrenn_vmm::RuntimeConfig {
        unhardened: true,
        prefix: format!("{PREFIX}u"),
        dir: PathBuf::from(PLAIN_DIR),
        slots: mid + 1..=last,
        ..cfg.clone()
    };
    crate::namespace::clean(&plain_cfg).await?;
    std::fs::create_dir_all(&plain_cfg.dir)?;
    wrenn_vmm::image::build_busybox(&plain_cfg.dir, "busybox")?;
    let mut hardened = Samples::new("");
    let mut plain = Samples::new(" (unhardened)");
    let result = async {
        let sides = [(&hardened_cfg, &mut hardened), (&plain_cfg, &mut plain)];
        side_by_side(sides, latency_n).await?;
        phase(&cfg, async |rt| density(rt, density_n).await).await
    }
    .await;
    crate::namespace::clean(&cfg).await?;
    crate::namespace::clean(&plain_cfg).await?;
    std::fs::remove_dir_all(&cfg.dir)?;
    std::fs::remove_dir_all(&plain_cfg.dir)?;
    result?;
    let hardened = hardened.report();
    let unhardened = plain.report();
    let added = (hardened.as_secs_f64() / unhardened.as_secs_f64().max(1e-9) - 1.0) * 100.0;
    println!(
        "hardening (user namespace + seccomp): create→healthy p50 {:.2} ms vs {:.2} ms unhardened: {added:+.1} % (target ≤ 10 %: {})",
        hardened.as_secs_f64() * 1e3,
        unhardened.as_secs_f64() * 1e3,
        if added <= 10.0 { "met" } else { "MISSED" }
    );
    println!(
        "RESULT {}",
        serde_json::json!({"scenario": "runtime", "kind": "hardening",
            "hardened_p50_us": hardened.as_secs_f64() * 1e6,
            "unhardened_p50_us": unhardened.as_secs_f64() * 1e6, "added_percent": added})
    );
    Ok(())
}

/// Runs `f` on a runtime of its own, then destroys whatever is left and
/// shuts the runtime down, whatever `f` returned.
async fn phase<F>(cfg: &wrenn_vmm::RuntimeConfig, f: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&Arc<dyn Runtime>) -> anyhow::Result<()>,
{
    let runtime = wrenn_vmm::build(cfg.clone())?;
    runtime.recover().await?;
    let result = f(&runtime).await;
    for h in runtime.list() {
        let _ = runtime.destroy(&h.id).await;
    }
    runtime.shutdown(Duration::from_secs(30)).await?;
    result
}

/// `n` sandboxes on each of two runtimes, created one after another
/// alternating between them (the first side first on even rounds, the
/// second on odd ones), then destroyed the same way; both runtimes are shut
/// down whatever happened.
async fn side_by_side(
    sides: [(&wrenn_vmm::RuntimeConfig, &mut Samples); 2],
    n: usize,
) -> anyhow::Result<()> {
    let [(a, sa), (b, sb)] = sides;
    let runtimes = [wrenn_vmm::build(a.clone())?, wrenn_vmm::build(b.clone())?];
    let mut samples = [sa, sb];
    let order = |round: usize| {
        if round.is_multiple_of(2) {
            [0, 1]
        } else {
            [1, 0]
        }
    };
    let result = async {
        for rt in &runtimes {
            rt.recover().await?;
        }
        let mut ids: [Vec<SandboxId>; 2] = Default::default();
        for round in 0..n {
            for i in order(round) {
                let (id, took) = up(&runtimes[i], round).await?;
                samples[i].create.record(took);
                ids[i].push(id);
            }
        }
        // `round` picks both the order and the sandbox of each side.
        #[allow(clippy::needless_range_loop)]
        for round in 0..n {
            for i in order(round) {
                let t = Instant::now();
                runtimes[i].destroy(&ids[i][round]).await?;
                samples[i].destroy.record(t.elapsed());
            }
        }
        anyhow::Ok(())
    }
    .await;
    for rt in &runtimes {
        for h in rt.list() {
            let _ = rt.destroy(&h.id).await;
        }
        rt.shutdown(Duration::from_secs(30)).await?;
    }
    result
}

/// Create → healthy and destroy latencies of one runtime setting.
struct Samples {
    create: Latencies,
    destroy: Latencies,
}

impl Samples {
    fn new(label: &str) -> Self {
        Samples {
            create: Latencies::new(format!("create→healthy{label}"), 0),
            destroy: Latencies::new(format!("destroy{label}"), 0),
        }
    }

    /// Prints both against their targets; returns the create → healthy p50.
    fn report(&self) -> Duration {
        self.destroy.report(Some(Duration::from_millis(20)), None);
        self.create
            .report(Some(Duration::from_millis(50)), None)
            .p50
    }
}

fn spec(n: usize) -> SandboxSpec {
    let mut s = SandboxSpec::new(format!("tb{n}").parse::<SandboxId>().expect("valid id"));
    s.template = "busybox".into();
    s.memory_mb = 128;
    s.disk_mb = 256;
    s.internet = false;
    s
}

async fn up(runtime: &Arc<dyn Runtime>, n: usize) -> anyhow::Result<(SandboxId, Duration)> {
    let t = Instant::now();
    let h = runtime.create(spec(n)).await?;
    runtime.start(&h.id).await?;
    wait_healthy(h.guest_addr, Duration::from_secs(30))
        .await
        .with_context(|| runtime.guest_output(&h.id, 2000).unwrap_or_default())?;
    Ok((h.id, t.elapsed()))
}

async fn density(runtime: &Arc<dyn Runtime>, n: usize) -> anyhow::Result<()> {
    settle().await;
    let before = MemInfo::read()?;
    let start = Instant::now();
    let mut up_count = 0;
    let mut failure = None;
    'outer: for batch in (0..n).collect::<Vec<_>>().chunks(PARALLEL) {
        let ups = batch.iter().map(|i| up(runtime, 10_000 + i));
        for r in futures::future::join_all(ups).await {
            match r {
                Ok(_) => up_count += 1,
                Err(e) => {
                    failure = Some(format!("{e:#}"));
                    break 'outer;
                }
            }
        }
    }
    let fill = start.elapsed();
    settle().await;
    let after = MemInfo::read()?;
    let ids: Vec<_> = runtime.list().into_iter().map(|h| h.id).collect();
    let user: u64 = ids
        .iter()
        .map(|id| sandbox_memory(PREFIX, id.as_str()).unwrap_or(0))
        .sum();
    let n = up_count.max(1) as f64;
    let mib = |b: u64| b as f64 / n / f64::from(1 << 20);
    let kernel = after.kernel.saturating_sub(before.kernel);
    let attributed = mib(kernel + user);
    let available = mib(before.available.saturating_sub(after.available));
    let verdict = if attributed <= 8.0 { "met" } else { "MISSED" };
    println!(
        "density: {up_count} idle sandboxes up in {:.1} s ({PARALLEL} at a time){}",
        fill.as_secs_f64(),
        failure
            .map(|f| format!(", stopped by: {f}"))
            .unwrap_or_default()
    );
    println!(
        "density: host memory per idle sandbox {attributed:.2} MiB (target ≤ 8 MiB: {verdict}) = kernel {:.2} MiB (unreclaimable slab, stacks, page tables, per-cpu) + sandbox processes and files {:.2} MiB; MemAvailable fell by {available:.2} MiB per sandbox (noisy on a shared host)",
        mib(kernel),
        mib(user)
    );
    println!(
        "RESULT {{\"name\":\"density\",\"sandboxes\":{up_count},\"host_mib_per_sandbox\":{attributed:.2},\"kernel_mib_per_sandbox\":{:.2},\"user_mib_per_sandbox\":{:.2},\"memavailable_mib_per_sandbox\":{available:.2},\"fill_s\":{:.1}}}",
        mib(kernel),
        mib(user),
        fill.as_secs_f64()
    );
    let t = Instant::now();
    for chunk in ids.chunks(PARALLEL) {
        for r in futures::future::join_all(chunk.iter().map(|id| runtime.destroy(id))).await {
            r?;
        }
    }
    println!(
        "density: {} sandboxes destroyed in {:.1} s",
        ids.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Lets freed memory and deferred kernel work settle before a reading.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(3)).await;
}

async fn wait_healthy(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let endpoint =
        Endpoint::from_shared(format!("http://{addr}"))?.connect_timeout(Duration::from_secs(1));
    loop {
        if let Ok(ch) = endpoint.connect().await {
            let resp = HealthClient::new(ch)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            if matches!(resp, Ok(r) if r.get_ref().status == ServingStatus::Serving as i32) {
                return Ok(());
            }
        }
        if start.elapsed() > timeout {
            bail!("guest at {addr} not healthy after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}
