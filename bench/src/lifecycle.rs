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
//! 3. **Burst** — 50 creates of the default size (512 MiB, 2 GiB disk) at
//!    once: all must succeed; p50/p99 (targets 60 ms / 120 ms).
//! 4. **Density** — idle sandboxes created [`PARALLEL`] at a time up to 1000
//!    (bounded by the slot range and the time budget; target ≤ 20 s, the
//!    sustained creates/s reported), with create latency against the count
//!    and host memory per sandbox: the growth of the kernel's non-cache
//!    memory plus the anonymous and file memory of the sandboxes' cgroups
//!    (as the `runtime` scenario measures it). Then, with all of them up,
//!    sandboxes one after another again: create → ready p50 against the
//!    first phase's (target ≤ 1.2×), and the agent's per-step means at 0
//!    and at N (`wrenn_create_step_seconds` of its `/metrics`). Then all
//!    are destroyed at once (target ≤ 5 s for 1000).
//! 5. **The warm pool** — last, once the CPU is idle again, a `wrenn up`
//!    whose agent keeps 50 default sandboxes ready: the burst again (served
//!    by the pool), and 50 creates one at a time from it with none and with
//!    1000 other sandboxes up (same target, ≤ 1.2×).
//! 6. **What the hardening costs** — first (before the density run leaves
//!    the kernel a thousand namespaces to tear down), two `wrenn up`s side
//!    by side, one whose agent runs sandboxes without user namespace and
//!    seccomp (a runtime setting for benchmarks only), creates and execs
//!    alternating between them, and what the hardened platform adds
//!    (target ≤ 10 %); see [`hardening`].
//!
//! The slot range is `WRENN_BENCH_SLOTS` (default 6500-6999, 500 slots);
//! 1000 sandboxes need `WRENN_BENCH_SLOTS=5000-6999` and nothing else using
//! the bench's range at the same time.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use serde_json::json;
use wrenn_proto::wrenn::v1::SandboxSpec;

use crate::Opts;
use crate::platform::{Client, Platform};
use crate::report::{Report, Table, us};
use crate::sandbox;
use crate::stats::Latencies;
use crate::svg::Chart;

mod burst;
mod hardening;
mod pool;
mod steps;

const TARGET_CREATE_P50: Duration = Duration::from_millis(20);
const TARGET_EXEC_P50: Duration = Duration::from_millis(4);
/// Creates in flight while filling the host.
const PARALLEL: usize = 32;
/// Destroys in flight while emptying it.
const DESTROY_PARALLEL: usize = 128;
const TARGET_FILL: Duration = Duration::from_secs(20);
const TARGET_EMPTY: Duration = Duration::from_secs(5);
/// create → ready p50 with the host full, against the p50 with it empty.
const TARGET_FLAT: f64 = 1.2;

fn spec() -> SandboxSpec {
    SandboxSpec {
        vcpus: 1,
        memory_mb: 128,
        disk_mb: 512,
        ..sandbox::spec(1)
    }
}

pub async fn run(opts: &Opts) -> anyhow::Result<()> {
    // The hardening's cost first: after the density run the kernel still
    // tears down a thousand network namespaces in the background.
    let hardening = hardening::measure(if opts.quick { 15 } else { 200 }, spec).await?;
    let platform = Platform::start("lifecycle").await?;
    let result = measure(&platform, opts).await;
    let stopped = platform.stop();
    let mut report = result?;
    stopped?;
    hardening.report(&mut report);
    let (pool_n, pool_density) = if opts.quick { (16, 32) } else { (50, 1000) };
    // The kernel tears the density run's namespaces down in the background
    // for a while after they were destroyed: the pool's burst would pay it.
    quiet_cpu(Duration::from_secs(90)).await;
    pool::run(&mut report, pool_n, pool_density).await?;
    report.finish(&opts.out)?;
    Ok(())
}

async fn measure(p: &Platform, opts: &Opts) -> anyhow::Result<Report> {
    let (latency_n, burst_n, density_n, budget) = if opts.quick {
        (15, 16, 32, Duration::from_secs(12))
    } else {
        (200, 50, 1000, Duration::from_secs(90))
    };
    let slots = p.slot_count();
    let density_n = density_n.min(slots.saturating_sub(1));
    let mut client = p.client().await?;
    let mut report = Report::new("lifecycle", opts.quick);

    let mut create = Latencies::new("create → ready", latency_n);
    let mut exec = Latencies::new("first exec of `true`", latency_n);
    let mut destroy = Latencies::new("destroy", latency_n);
    let mut ids = Vec::with_capacity(latency_n);
    let steps_before = steps::Steps::read(p).await?;
    for _ in 0..latency_n {
        let t = Instant::now();
        let sb = sandbox::create(&mut client, spec()).await?;
        create.record(t.elapsed());
        let t = Instant::now();
        sandbox::run(&mut client, &sb.id, "true", &[]).await?;
        exec.record(t.elapsed());
        ids.push(sb.id);
    }
    let steps_at_0 = steps::Steps::read(p).await?.since(&steps_before);
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

    warm_exec(p, &mut client, &mut report, opts.quick).await?;
    let before = steps::Steps::read(p).await?;
    burst::run(&client, &mut report, burst_n, sandbox::spec(1), "").await?;
    let steps_burst = steps::Steps::read(p).await?.since(&before);
    let full = Full {
        target: density_n,
        deadline: Instant::now() + budget,
        slots,
        latency_n: latency_n.min(50),
        p50_at_0: p50,
        steps: vec![
            ("0 up, one at a time".to_owned(), steps_at_0),
            (format!("burst of {burst_n}"), steps_burst),
        ],
    };
    density(p, &mut client, &mut report, full).await?;
    Ok(report)
}

/// `true` again and again in one running sandbox: the in-process client
/// (`Exec` through control → agent → guest) and the whole `wrenn exec`
/// command (process start, key, connection, exec, exit), as a person sees it.
async fn warm_exec(
    p: &Platform,
    client: &mut Client,
    report: &mut Report,
    quick: bool,
) -> anyhow::Result<()> {
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
    Ok(())
}

/// What the density phase is given.
struct Full {
    target: usize,
    deadline: Instant,
    slots: usize,
    /// Sequential creates once the host is full.
    latency_n: usize,
    p50_at_0: Duration,
    /// Per-step means of the earlier phases, by phase.
    steps: Vec<(String, steps::Means)>,
}

async fn density(
    p: &Platform,
    client: &mut Client,
    report: &mut Report,
    full: Full,
) -> anyhow::Result<()> {
    let target = full.target;
    settle().await;
    let before = crate::memory::MemInfo::read()?;
    let fill = Instant::now();
    let mut ids: Vec<String> = Vec::with_capacity(target);
    // Create latency by how many sandboxes were already up.
    let mut buckets: Vec<(usize, Latencies)> = Vec::new();
    let bucket = (target / 5).max(PARALLEL);
    let mut stopped_by = None;
    while ids.len() < target {
        if Instant::now() > full.deadline {
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
    let up = ids.len();
    let result = async {
        let at_full = one_at_a_time(p, client, full.latency_n, spec()).await?;
        settle().await;
        let after = crate::memory::MemInfo::read()?;
        anyhow::Ok((at_full, after))
    }
    .await;
    // Emptied whatever happened above.
    let emptying = Instant::now();
    let destroyed = futures::stream::iter(ids.iter().map(|id| {
        let mut c = client.clone();
        async move { sandbox::destroy(&mut c, id).await }
    }))
    .buffer_unordered(DESTROY_PARALLEL)
    .collect::<Vec<_>>()
    .await;
    let emptied = emptying.elapsed();
    let ((at_full, steps_at_full), after) = result?;
    for r in destroyed {
        r.context("destroying the density sandboxes")?;
    }
    let user: u64 = ids
        .iter()
        .map(|id| crate::memory::sandbox_memory(crate::platform::PREFIX, id).unwrap_or(0))
        .sum();
    let per = |b: u64| b as f64 / up.max(1) as f64 / f64::from(1 << 20);
    let kernel = after.kernel.saturating_sub(before.kernel);
    let host = per(kernel + user);
    let rate = up as f64 / fill.as_secs_f64().max(1e-9);
    let mut t = Table::new(
        format!(
            "Density: {up} idle sandboxes, {PARALLEL} created at a time, in {:.1} s ({rate:.0} creates/s){}",
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
    let v = |d: Duration| d.as_secs_f64() * 1e6;
    report.result(
        json!({"kind": "density", "sandboxes": up, "fill_s": fill.as_secs_f64(),
        "creates_per_s": rate, "destroy_all_s": emptied.as_secs_f64(),
        "host_mib_per_sandbox": host, "kernel_mib_per_sandbox": per(kernel),
        "user_mib_per_sandbox": per(user),
        "memavailable_mib_per_sandbox": per(before.available.saturating_sub(after.available)),
        "stopped_by": stopped_by, "slots": full.slots}),
    );
    report.table(t);
    let s = at_full.summary();
    let ratio = s.p50.as_secs_f64() / full.p50_at_0.as_secs_f64().max(1e-9);
    report.result(
        json!({"kind": "create_at_density", "sandboxes_up": up, "count": s.count,
        "p50_us": v(s.p50), "p99_us": v(s.p99), "p50_at_0_us": v(full.p50_at_0), "ratio": ratio}),
    );
    let mut t = Table::new(
        format!("One sandbox at a time again, with {up} up"),
        &[
            "sandboxes up",
            "creates",
            "create → ready p50",
            "p99",
            "p50 against 0 up",
        ],
    );
    t.row(vec![
        up.to_string(),
        s.count.to_string(),
        us(v(s.p50)),
        us(v(s.p99)),
        format!("{ratio:.2}×"),
    ]);
    report.table(t);
    let mut phases = full.steps;
    phases.push((format!("{up} up, one at a time"), steps_at_full));
    for (phase, means) in &phases {
        for (step, (mean, n)) in means {
            report.result(json!({"kind": "create_step", "phase": phase, "step": step,
                "mean_us": mean, "count": n}));
        }
    }
    report.table(steps::table(
        "Per-step means of a create (the agent's wrenn_create_step_seconds)".to_owned(),
        &phases,
    ));
    report.note(format!(
        "target: create → ready p50 with {up} up ≤ {TARGET_FLAT}× the p50 with none: {ratio:.2}× — {}",
        if ratio <= TARGET_FLAT { "met" } else { "MISSED" }
    ));
    if up >= 1000 {
        report.note(format!(
            "target: 1000 idle sandboxes up in ≤ 20 s: {:.1} s — {}; destroyed in ≤ 5 s: {:.1} s — {}",
            fill.as_secs_f64(),
            if fill <= TARGET_FILL { "met" } else { "MISSED" },
            emptied.as_secs_f64(),
            if emptied <= TARGET_EMPTY { "met" } else { "MISSED" }
        ));
    }
    report.note(format!(
        "host memory per idle sandbox: {host:.2} MiB = kernel {:.2} MiB (unreclaimable slab, stacks, page tables, per-cpu) + sandbox processes and files {:.2} MiB; MemAvailable fell by {:.2} MiB per sandbox (noisy on a shared host)",
        per(kernel),
        per(user),
        per(before.available.saturating_sub(after.available))
    ));
    if up < 1000 {
        let why = match &stopped_by {
            Some(s) => format!("stopped by {s}"),
            None if target < 1000 && full.slots <= target + 1 => format!(
                "the slot range holds {} sandboxes (WRENN_BENCH_SLOTS=5000-6999 allows 1000)",
                full.slots
            ),
            None => "--quick".to_owned(),
        };
        report.note(format!("density went to {up} sandboxes, not 1000: {why}"));
    }
    report.chart(chart);
    println!(
        "density: {up} sandboxes up in {:.1} s, destroyed in {:.1} s",
        fill.as_secs_f64(),
        emptied.as_secs_f64()
    );
    Ok(())
}

/// `n` sandboxes created and destroyed one after another; the create
/// latencies and the agent's per-step means over them.
async fn one_at_a_time(
    p: &Platform,
    client: &mut Client,
    n: usize,
    spec: SandboxSpec,
) -> anyhow::Result<(Latencies, steps::Means)> {
    let mut lat = Latencies::new("create → ready", n);
    let before = steps::Steps::read(p).await?;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let sb = sandbox::create(client, spec.clone()).await?;
        lat.record(t.elapsed());
        ids.push(sb.id);
    }
    let means = steps::Steps::read(p).await?.since(&before);
    for id in &ids {
        sandbox::destroy(client, id).await?;
    }
    Ok((lat, means))
}

/// Waits (up to `within`) until the host's CPUs are at least 90 % idle over
/// half a second.
async fn quiet_cpu(within: Duration) {
    fn busy_idle() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let v: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        let idle = v.get(3)? + v.get(4)?;
        Some((v.iter().take(8).sum::<u64>(), idle))
    }
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let Some((t0, i0)) = busy_idle() else { return };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some((t1, i1)) = busy_idle() else { return };
        if (i1 - i0) as f64 >= 0.9 * (t1 - t0).max(1) as f64 {
            return;
        }
    }
}

/// Lets freed memory and deferred kernel work settle before a reading.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}
