//! `e2b`: E2B's unmodified Python SDK against wrenn, beside wrenn's own CLI
//! doing the same work, on a `wrenn up` of its own.
//!
//! The SDK side is `bench/e2b/sdk_bench.py`, run with the pinned SDKs that
//! `scripts/e2b-sdks` installs (`$WRENN_CACHE_DIR/e2b-sdks/python`), pointed
//! at the platform with `E2B_API_URL`, `E2B_SANDBOX_URL` and `E2B_API_KEY`
//! as a user would. It times, in-process: `Sandbox.create()` (target p50
//! ≤ 100 ms, the SDK's own overhead included), `commands.run("true")`
//! (≤ 10 ms), a 1 MiB `files.write` and `files.read`, and — without
//! `--quick`, which skips the template build that needs PyPI —
//! `run_code("1+1")` on a warm kernel (≤ 50 ms) from the
//! `code-interpreter-v1` template built from `conf/templates/code-interpreter`.
//! The CLI side times the whole `wrenn sandbox create`, `wrenn exec … true`,
//! `wrenn files put` and `get` commands (process start included).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::Opts;
use crate::platform::Platform;
use crate::report::{Report, Table};
use crate::stats::Latencies;

const TARGET_CREATE: Duration = Duration::from_millis(100);
const TARGET_RUN: Duration = Duration::from_millis(10);
const TARGET_RUN_CODE: Duration = Duration::from_millis(50);

/// The pinned SDKs' virtualenv's python (`scripts/e2b-sdks`).
fn sdk_python() -> anyhow::Result<PathBuf> {
    let cache = std::env::var_os("WRENN_CACHE_DIR").unwrap_or_else(|| "/var/cache/wrenn".into());
    let python = PathBuf::from(cache).join("e2b-sdks/python/bin/python");
    if !python.is_file() {
        bail!(
            "{} is missing: run scripts/e2b-sdks (scripts/setup --tests runs it)",
            python.display()
        );
    }
    Ok(python)
}

pub async fn run(opts: &Opts) -> anyhow::Result<()> {
    crate::require_root("e2b")?;
    let python = sdk_python()?;
    let platform = Platform::start("e2b").await?;
    let result = measure(&platform, opts, &python);
    let stopped = platform.stop();
    let report = result?;
    stopped?;
    report.finish(&opts.out)?;
    Ok(())
}

/// `wrenn <args>` against the platform; its stdout.
fn wrenn(p: &Platform, args: &[&str]) -> anyhow::Result<String> {
    // runs: -; the wrenn binary built here
    let out = Command::new(crate::paths::wrenn_bin()?)
        .args(args)
        .env("WRENN_CONTROL", format!("http://{}", p.control))
        .env("WRENN_DIR", &p.dir)
        .env_remove("WRENN_API_KEY")
        .output()
        .with_context(|| format!("running wrenn {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "wrenn {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn timed(
    lat: &mut Latencies,
    f: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<String> {
    let started = Instant::now();
    let out = f()?;
    lat.record(started.elapsed());
    Ok(out)
}

fn measure(p: &Platform, opts: &Opts, python: &PathBuf) -> anyhow::Result<Report> {
    let quick = opts.quick;
    let n = if quick { 5 } else { 30 };
    let mut report = Report::new("e2b", quick);
    if !quick {
        crate::templates::ca_template(p)?;
        let registries = crate::templates::registry_access();
        let recipe = crate::paths::workspace().join("conf/templates/code-interpreter/wrenn.recipe");
        let mut extra = vec!["--from", "bench-ca"];
        if !registries.is_empty() {
            extra.extend(["--allow-out", registries.as_str()]);
        }
        crate::templates::build(p, "code-interpreter-v1", &recipe, &extra)?;
    }

    // The SDK.
    let key = std::fs::read_to_string(p.dir.join("admin.key")).context("reading admin.key")?;
    let script = crate::paths::workspace().join("bench/e2b/sdk_bench.py");
    let mut cmd = Command::new(python); // runs: -; the SDKs' virtualenv python (scripts/e2b-sdks)
    cmd.arg(&script)
        .arg(n.to_string())
        .env("E2B_API_URL", format!("http://{}", p.control))
        .env("E2B_SANDBOX_URL", format!("http://{}", p.proxy))
        .env("E2B_API_KEY", key.trim());
    if !quick {
        cmd.arg("--code-interpreter");
    }
    let out = cmd.output().context("running bench/e2b/sdk_bench.py")?;
    if !out.status.success() {
        bail!(
            "bench/e2b/sdk_bench.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sdk: Value = serde_json::from_slice(&out.stdout).context("sdk_bench.py's JSON")?;
    let samples = |name: &str| -> Latencies {
        let mut l = Latencies::new(name, n * 4);
        for v in sdk[name].as_array().into_iter().flatten() {
            l.record(Duration::from_secs_f64(v.as_f64().unwrap_or(0.0) / 1000.0));
        }
        l
    };

    // wrenn's CLI doing the same.
    let mut cli_create = Latencies::new("create", n);
    for _ in 0..n {
        let id = timed(&mut cli_create, || {
            wrenn(p, &["sandbox", "create", "--timeout", "120"])
        })?;
        wrenn(p, &["sandbox", "rm", id.trim()])?;
    }
    let id = wrenn(p, &["sandbox", "create", "--timeout", "600"])?;
    let id = id.trim();
    let mut cli_exec = Latencies::new("exec", n * 4);
    let mut cli_put = Latencies::new("put", n);
    let mut cli_get = Latencies::new("get", n);
    let dir = tempfile::tempdir()?;
    let local = dir.path().join("payload.bin");
    std::fs::write(&local, vec![7u8; 1 << 20])?;
    let back = dir.path().join("back.bin");
    let (local, back) = (local.to_str().unwrap(), back.to_str().unwrap());
    let measured = (|| -> anyhow::Result<()> {
        wrenn(p, &["exec", id, "--", "true"])?;
        for _ in 0..n * 4 {
            timed(&mut cli_exec, || wrenn(p, &["exec", id, "--", "true"]))?;
        }
        for i in 0..n {
            let remote = format!("/tmp/bench-{i}.bin");
            timed(&mut cli_put, || {
                wrenn(p, &["files", "put", id, local, &remote])
            })?;
            timed(&mut cli_get, || {
                wrenn(p, &["files", "get", id, &remote, back])
            })?;
        }
        Ok(())
    })();
    wrenn(p, &["sandbox", "rm", id])?;
    measured?;

    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    let mbps = |d: Duration| format!("{:.0} MiB/s", 1.0 / d.as_secs_f64().max(1e-9));
    let mut table = Table::new(
        "E2B's Python SDK (e2b 2.64.0) against wrenn, beside wrenn's CLI doing the same (p50 / p99)",
        &[
            "operation",
            "SDK",
            "wrenn CLI (whole command)",
            "target (SDK p50)",
        ],
    );
    // (operation, SDK samples, the CLI's, target p50, a throughput row)
    type Row<'a> = (
        &'a str,
        Latencies,
        Option<&'a Latencies>,
        Option<Duration>,
        bool,
    );
    let rows: [Row<'_>; 5] = [
        (
            "create → ready",
            samples("create"),
            Some(&cli_create),
            Some(TARGET_CREATE),
            false,
        ),
        (
            "run `true`",
            samples("run_true"),
            Some(&cli_exec),
            Some(TARGET_RUN),
            false,
        ),
        (
            "write 1 MiB",
            samples("write_1mib"),
            Some(&cli_put),
            None,
            true,
        ),
        (
            "read 1 MiB",
            samples("read_1mib"),
            Some(&cli_get),
            None,
            true,
        ),
        (
            "run_code(\"1+1\"), warm kernel",
            samples("run_code"),
            None,
            Some(TARGET_RUN_CODE),
            false,
        ),
    ];
    for (label, sdk, cli, target, throughput) in rows {
        if sdk.is_empty() {
            continue;
        }
        let s = sdk.summary();
        let cell = |s: &crate::stats::Summary| {
            let base = format!("{} / {}", ms(s.p50), ms(s.p99));
            if throughput {
                format!("{base} ({})", mbps(s.p50))
            } else {
                base
            }
        };
        let c = cli.map(Latencies::summary);
        table.row(vec![
            label.into(),
            cell(&s),
            c.as_ref().map_or("—".into(), cell),
            target.map_or(String::new(), |t| format!("≤ {}", ms(t))),
        ]);
        report.result(json!({
            "operation": label,
            "sdk_p50_ms": s.p50.as_secs_f64() * 1000.0,
            "sdk_p99_ms": s.p99.as_secs_f64() * 1000.0,
            "cli_p50_ms": c.as_ref().map(|c| c.p50.as_secs_f64() * 1000.0),
            "cli_p99_ms": c.as_ref().map(|c| c.p99.as_secs_f64() * 1000.0),
            "target_p50_ms": target.map(|t| t.as_secs_f64() * 1000.0),
            "samples": s.count,
        }));
    }
    report.table(table);
    if quick {
        report.note(
            "--quick: run_code is left out (the code-interpreter template's build needs PyPI).",
        );
    }
    Ok(report)
}
