//! `lifecycle`: sandboxes through the control plane, as a client sees them.
//!
//! 1. **Latency** — 200 sandboxes (`base` template) one after another:
//!    `Create` until it returns a running sandbox (the agent waits for the
//!    guest), one `Exec` of `true` (round trip through control → agent →
//!    guest), then `Destroy` of each; p50/p99. Target: create → ready p50
//!    ≤ 20 ms.
//! 2. **Exec** — `true` 500 times in one running sandbox through the
//!    in-process client (target p50 ≤ 4 ms), and 100 runs of the whole
//!    `wrenn exec <id> -- true` command.
//! 3. **Density** — idle sandboxes created 16 at a time up to 1000 (bounded
//!    by the slot range and the time budget), with create latency against
//!    the count and host memory per sandbox: the growth of the kernel's
//!    non-cache memory plus the anonymous and file memory of the sandboxes'
//!    cgroups (as the `runtime` scenario measures it).
//! 4. **What the hardening costs** — first (before the density run leaves
//!    the kernel a thousand namespaces to tear down), a `wrenn up` whose
//!    agent runs sandboxes without user namespace and seccomp (a runtime
//!    setting for benchmarks only), the same create → ready and exec runs,
//!    and what the hardened platform adds (target ≤ 10 %).
//!
//! The slot range is `WRENN_BENCH_SLOTS` (default 6500-6999, 500 slots);
//! 1000 sandboxes need `WRENN_BENCH_SLOTS=5000-6999` and nothing else using
//! the bench's range at the same time.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use wrenn_proto::wrenn::v1::SandboxSpec;

use crate::Opts;
use crate::platform::{Client, Platform};
use crate::report::{Report, Table, us};
use crate::sandbox;
use crate::stats::Latencies;
use crate::svg::Chart;

const TARGET_CREATE_P50: Duration = Duration::from_millis(20);
const TARGET_EXEC_P50: Duration = Duration::from_millis(4);
const PARALLEL: usize = 16;

fn spec() -> SandboxSpec {
    SandboxSpec {
        vcpus: 1,
        memory_mb: 128,
        disk_mb: 512,
        ..sandbox::spec(1)
    }
}

pub async fn run(opts: &Opts) -> anyhow::Result<()> {
    let started = Instant::now();
    // The unhardened platform first: after the density run the kernel still
    // tears down a thousand network namespaces in the background.
    let unhardened = unhardened_p50s(opts).await?;
    let platform = Platform::start("lifecycle").await?;
    let result = measure(&platform, opts, started).await;
    let stopped = platform.stop();
    let (mut report, hardened) = result?;
    stopped?;
    hardening_cost(opts, &mut report, hardened, unhardened);
    report.finish(&opts.out)?;
    Ok(())
}

/// p50s of the hardened platform: create → ready, exec of `true`.
struct P50s {
    create: Duration,
    exec: Duration,
}

/// The same creates and execs on a platform without the hardening.
async fn unhardened_p50s(opts: &Opts) -> anyhow::Result<P50s> {
    let dir = crate::paths::scratch_dir("lifecycle-agent-config")?;
    let config = dir.join("agent.toml");
    std::fs::write(&config, "[runtime]\nunhardened_for_benchmarks = true\n")?;
    let p = Platform::start_with("lifecycle-unhardened", &[("WRENN_AGENT_CONFIG", config)]).await?;
    let n = if opts.quick { 15 } else { 200 };
    let result = async {
        let mut client = p.client().await?;
        let mut create = Latencies::new("create → ready", n);
        let mut exec = Latencies::new("Exec `true`", n);
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let sb = sandbox::create(&mut client, spec()).await?;
            create.record(t.elapsed());
            ids.push(sb.id);
        }
        for _ in 0..n {
            let t = Instant::now();
            sandbox::run(&mut client, &ids[0], "true", &[]).await?;
            exec.record(t.elapsed());
        }
        for id in &ids {
            sandbox::destroy(&mut client, id).await?;
        }
        anyhow::Ok((create.summary().p50, exec.summary().p50))
    }
    .await;
    let stopped = p.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let (create, exec) = result?;
    stopped?;
    Ok(P50s { create, exec })
}

/// What the hardening adds, hardened against unhardened p50s.
fn hardening_cost(opts: &Opts, report: &mut Report, hardened: P50s, unhardened: P50s) {
    let n = if opts.quick { 15 } else { 200 };
    let P50s { create, exec } = unhardened;
    let v = |d: Duration| d.as_secs_f64() * 1e6;
    let added =
        |h: Duration, u: Duration| (h.as_secs_f64() / u.as_secs_f64().max(1e-9) - 1.0) * 100.0;
    let mut t = Table::new(
        format!(
            "What the hardening costs: user namespace and seccomp on and off ({n} sandboxes each)"
        ),
        &["step", "hardened p50", "unhardened p50", "added"],
    );
    for (name, h, u) in [
        ("create → ready", hardened.create, create),
        ("Exec `true`, in-process client", hardened.exec, exec),
    ] {
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
    let worst = added(hardened.create, create).max(added(hardened.exec, exec));
    report.note(format!(
        "target: the hardening adds ≤ 10 % to create → ready and exec p50: {worst:+.1} % — {}",
        if worst <= 10.0 { "met" } else { "MISSED" }
    ));
}

async fn measure(p: &Platform, opts: &Opts, started: Instant) -> anyhow::Result<(Report, P50s)> {
    let (latency_n, density_n, budget) = if opts.quick {
        (15, 32, Duration::from_secs(12))
    } else {
        (200, 1000, Duration::from_secs(50))
    };
    let slots = p.slot_count();
    let density_n = density_n.min(slots.saturating_sub(1));
    let mut client = p.client().await?;
    let mut report = Report::new("lifecycle", opts.quick);

    let mut create = Latencies::new("create → ready", latency_n);
    let mut exec = Latencies::new("first exec of `true`", latency_n);
    let mut destroy = Latencies::new("destroy", latency_n);
    let mut ids = Vec::with_capacity(latency_n);
    for _ in 0..latency_n {
        let t = Instant::now();
        let sb = sandbox::create(&mut client, spec()).await?;
        create.record(t.elapsed());
        let t = Instant::now();
        sandbox::run(&mut client, &sb.id, "true", &[]).await?;
        exec.record(t.elapsed());
        ids.push(sb.id);
    }
    for id in &ids {
        let t = Instant::now();
        sandbox::destroy(&mut client, id).await?;
        destroy.record(t.elapsed());
    }
    let mut t = Table::new(
        format!("One sandbox at a time through the control plane ({latency_n} sandboxes)"),
        &["step", "p50", "p99", "max"],
    );
    for l in [&create, &exec, &destroy] {
        let s = l.summary();
        let v = |d: Duration| d.as_secs_f64() * 1e6;
        t.row(vec![
            l.name().into(),
            us(v(s.p50)),
            us(v(s.p99)),
            us(v(s.max)),
        ]);
        report.result(
            json!({"kind": "latency", "step": l.name(), "count": s.count,
            "p50_us": v(s.p50), "p99_us": v(s.p99), "max_us": v(s.max)}),
        );
    }
    report.table(t);
    let p50 = create.summary().p50;
    report.note(format!(
        "target: create → ready p50 ≤ 20 ms: {} — {}",
        us(p50.as_secs_f64() * 1e6),
        if p50 <= TARGET_CREATE_P50 {
            "met"
        } else {
            "MISSED"
        }
    ));

    let exec_p50 = warm_exec(p, &mut client, &mut report, opts.quick).await?;
    density(&mut client, &mut report, density_n, started + budget, slots).await?;
    Ok((
        report,
        P50s {
            create: p50,
            exec: exec_p50,
        },
    ))
}

/// `true` again and again in one running sandbox: the in-process client
/// (`Exec` through control → agent → guest) and the whole `wrenn exec`
/// command (process start, key, connection, exec, exit), as a person sees it.
async fn warm_exec(
    p: &Platform,
    client: &mut Client,
    report: &mut Report,
    quick: bool,
) -> anyhow::Result<Duration> {
    let (n_rpc, n_cli) = if quick { (50, 10) } else { (500, 100) };
    let sb = sandbox::create(client, spec()).await?;
    let result = async {
        let mut rpc = Latencies::new("Exec `true`, in-process client", n_rpc);
        for _ in 0..n_rpc {
            let t = Instant::now();
            sandbox::run(client, &sb.id, "true", &[]).await?;
            rpc.record(t.elapsed());
        }
        let wrenn = crate::paths::wrenn_bin()?;
        let control = format!("http://{}", p.control);
        let mut cli = Latencies::new("`wrenn exec <id> -- true`, whole CLI", n_cli);
        for _ in 0..n_cli {
            let t = Instant::now();
            // runs: -; the wrenn binary built here
            let out = tokio::process::Command::new(&wrenn)
                .args(["exec", "--control", &control, &sb.id, "--", "true"])
                .env("WRENN_DIR", &p.dir)
                .stdin(std::process::Stdio::null())
                .output()
                .await?;
            cli.record(t.elapsed());
            anyhow::ensure!(
                out.status.success(),
                "wrenn exec failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        anyhow::Ok((rpc, cli))
    }
    .await;
    sandbox::destroy(client, &sb.id).await?;
    let (rpc, cli) = result?;
    let mut t = Table::new(
        "Exec round trip of `true` in one running sandbox".to_owned(),
        &["client", "runs", "p50", "p99", "max"],
    );
    let v = |d: Duration| d.as_secs_f64() * 1e6;
    for l in [&rpc, &cli] {
        let s = l.summary();
        t.row(vec![
            l.name().into(),
            s.count.to_string(),
            us(v(s.p50)),
            us(v(s.p99)),
            us(v(s.max)),
        ]);
        report.result(json!({"kind": "exec", "client": l.name(), "count": s.count,
            "p50_us": v(s.p50), "p99_us": v(s.p99), "max_us": v(s.max)}));
    }
    report.table(t);
    let p50 = rpc.summary().p50;
    report.note(format!(
        "target: exec round trip p50 ≤ 4 ms (in-process client): {} — {}",
        us(v(p50)),
        if p50 <= TARGET_EXEC_P50 {
            "met"
        } else {
            "MISSED"
        }
    ));
    Ok(p50)
}

async fn density(
    client: &mut Client,
    report: &mut Report,
    target: usize,
    deadline: Instant,
    slots: usize,
) -> anyhow::Result<()> {
    settle().await;
    let before = crate::memory::MemInfo::read()?;
    let fill = Instant::now();
    let mut ids: Vec<String> = Vec::with_capacity(target);
    // Create latency by how many sandboxes were already up.
    let mut buckets: Vec<(usize, Latencies)> = Vec::new();
    let bucket = (target / 5).max(PARALLEL);
    let mut stopped_by = None;
    while ids.len() < target {
        if Instant::now() > deadline {
            stopped_by = Some("the time budget".to_owned());
            break;
        }
        let n = PARALLEL.min(target - ids.len());
        let base = ids.len();
        let creates = (0..n).map(|_| {
            let mut c = client.clone();
            async move {
                let t = Instant::now();
                sandbox::create(&mut c, spec())
                    .await
                    .map(|sb| (sb.id, t.elapsed()))
            }
        });
        for r in futures::future::join_all(creates).await {
            match r {
                Ok((id, took)) => {
                    let b = base / bucket * bucket;
                    match buckets.iter_mut().find(|(k, _)| *k == b) {
                        Some((_, l)) => l.record(took),
                        None => {
                            let mut l = Latencies::new(format!("{b}…"), bucket);
                            l.record(took);
                            buckets.push((b, l));
                        }
                    }
                    ids.push(id);
                }
                Err(e) => stopped_by = Some(format!("{e:#}")),
            }
        }
        if stopped_by.is_some() {
            break;
        }
    }
    let fill = fill.elapsed();
    settle().await;
    let after = crate::memory::MemInfo::read()?;
    let user: u64 = ids
        .iter()
        .map(|id| crate::memory::sandbox_memory(crate::platform::PREFIX, id).unwrap_or(0))
        .sum();
    let up = ids.len();
    let per = |b: u64| b as f64 / up.max(1) as f64 / f64::from(1 << 20);
    let kernel = after.kernel.saturating_sub(before.kernel);
    let host = per(kernel + user);
    let mut t = Table::new(
        format!(
            "Density: {up} idle sandboxes, {PARALLEL} created at a time, in {:.1} s{}",
            fill.as_secs_f64(),
            stopped_by
                .as_ref()
                .map(|s| format!(" (stopped by {s})"))
                .unwrap_or_default()
        ),
        &[
            "sandboxes already up",
            "creates",
            "create p50",
            "create p99",
        ],
    );
    let mut chart = Chart {
        title: "wrenn-bench lifecycle: create → ready against the number of sandboxes".into(),
        y_label: "create latency (ms)".into(),
        categories: Vec::new(),
        series: vec![("p50".into(), Vec::new()), ("p99".into(), Vec::new())],
    };
    for (b, l) in &buckets {
        let s = l.summary();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        t.row(vec![
            format!("{b}–{}", b + bucket - 1),
            s.count.to_string(),
            us(ms(s.p50) * 1e3),
            us(ms(s.p99) * 1e3),
        ]);
        chart.categories.push(format!("{b}+"));
        chart.series[0].1.push(ms(s.p50));
        chart.series[1].1.push(ms(s.p99));
        report.result(
            json!({"kind": "density_create", "already_up_from": b, "count": s.count,
            "p50_us": ms(s.p50) * 1e3, "p99_us": ms(s.p99) * 1e3}),
        );
    }
    report.result(
        json!({"kind": "density", "sandboxes": up, "fill_s": fill.as_secs_f64(),
        "host_mib_per_sandbox": host, "kernel_mib_per_sandbox": per(kernel),
        "user_mib_per_sandbox": per(user),
        "memavailable_mib_per_sandbox": per(before.available.saturating_sub(after.available)),
        "stopped_by": stopped_by, "slots": slots}),
    );
    report.table(t);
    report.note(format!(
        "host memory per idle sandbox: {host:.2} MiB = kernel {:.2} MiB (unreclaimable slab, stacks, page tables, per-cpu) + sandbox processes and files {:.2} MiB; MemAvailable fell by {:.2} MiB per sandbox (noisy on a shared host)",
        per(kernel),
        per(user),
        per(before.available.saturating_sub(after.available))
    ));
    if up < 1000 {
        let why = match &stopped_by {
            Some(s) => format!("stopped by {s}"),
            None if target < 1000 && slots <= target + 1 => format!(
                "the slot range holds {slots} sandboxes (WRENN_BENCH_SLOTS=5000-6999 allows 1000)"
            ),
            None => "--quick".to_owned(),
        };
        report.note(format!("density went to {up} sandboxes, not 1000: {why}"));
    }
    report.chart(chart);
    let t = Instant::now();
    for chunk in ids.chunks(PARALLEL) {
        let destroys = chunk.iter().map(|id| {
            let mut c = client.clone();
            async move { sandbox::destroy(&mut c, id).await }
        });
        for r in futures::future::join_all(destroys).await {
            r.context("destroying the density sandboxes")?;
        }
    }
    println!(
        "density: {up} sandboxes destroyed in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Lets freed memory and deferred kernel work settle before a reading.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}
