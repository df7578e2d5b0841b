//! `templates`: building templates from recipes, and sandboxes from them.
//!
//! Through the `wrenn` CLI as a user runs it (`wrenn template build --json`
//! against a `wrenn up` of its own):
//!
//! 1. **First build** of `conf/templates/jupyter` (JupyterLab from PyPI in
//!    a virtualenv; with `--quick`, a small recipe of a few steps that needs
//!    no network): wall time, steps, flatten time.
//! 2. **Rebuild, nothing changed**: every step from the cache (target
//!    ≤ 1.5 s wall).
//! 3. **Rebuild, last step changed**: the recipe with one more `RUN` at the
//!    end, then with that step changed.
//! 4. **Image**: the template's minimum filesystem size (after `resize2fs
//!    -M`), its size as stored (grown to `WRENN_DEFAULT_ROOTFS_SIZE`) and
//!    the bytes it takes on disk (sparse).
//! 5. **Create → ready** from the built template without START/READY
//!    next to `base`, alternating (target: within 10 %), and from the
//!    Jupyter template with its READY (create returns once Jupyter answers).
//!
//! Where egress goes through a TLS-inspecting gateway (as on the machines
//! this project is tested on), PyPI is reachable only with its CA: the
//! builds start from a template `bench-ca`, base plus the host's CA bundle.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use wrenn_proto::wrenn::v1::SandboxSpec;

use crate::Opts;
use crate::platform::Platform;
use crate::report::{Report, Table};
use crate::sandbox;
use crate::stats::Latencies;

const TARGET_REBUILD: Duration = Duration::from_millis(1500);
const TARGET_CREATE_RATIO: f64 = 1.10;

/// A small recipe that needs no network (`--quick`).
const QUICK_RECIPE: &str = "RUN echo built > /home/wrenn-user/built.txt\n\
    ENV APP=/home/wrenn-user/app\nWORKDIR app\nCOPY data/ ./\nRUN ls -la > listing.txt\n";

/// One `wrenn template build`: its wall time and its last event.
pub(crate) struct Built {
    wall: Duration,
    template: Value,
    cached: usize,
    run: usize,
}

pub(crate) fn build(
    p: &Platform,
    name: &str,
    recipe: &Path,
    extra: &[&str],
) -> anyhow::Result<Built> {
    let wrenn = crate::paths::wrenn_bin()?;
    let started = Instant::now();
    // runs: -; the wrenn binary built here
    let out = Command::new(&wrenn)
        .args(["template", "build", name, "-f"])
        .arg(recipe)
        .arg("--json")
        .args(extra)
        .env("WRENN_CONTROL", format!("http://{}", p.control))
        .env("WRENN_DIR", &p.dir)
        .env_remove("WRENN_API_KEY")
        .output()
        .context("running wrenn template build")?;
    let wall = started.elapsed();
    if !out.status.success() {
        bail!(
            "wrenn template build {name} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(&String::from_utf8_lossy(&out.stdout), 2000)
        );
    }
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let steps: Vec<&Value> = events.iter().filter(|e| e["event"] == "step").collect();
    let template = events
        .iter()
        .find(|e| e["event"] == "template")
        .cloned()
        .context("the build ended without its template")?;
    Ok(Built {
        wall,
        cached: steps.iter().filter(|e| e["cached"] == true).count(),
        run: steps.iter().filter(|e| e["cached"] == false).count(),
        template,
    })
}

fn tail(s: &str, n: usize) -> &str {
    &s[s.len().saturating_sub(n)..]
}

/// The recipe and its context in a scratch directory; `extra` appended.
fn recipe_dir(quick: bool, extra: &str) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let recipe = dir.path().join("wrenn.recipe");
    if quick {
        std::fs::create_dir_all(dir.path().join("data"))?;
        for i in 0..20 {
            std::fs::write(
                dir.path().join(format!("data/file-{i}.txt")),
                vec![b'x'; 4096 * i],
            )?;
        }
        std::fs::write(&recipe, format!("{QUICK_RECIPE}{extra}"))?;
    } else {
        let src = crate::paths::workspace().join("conf/templates/jupyter");
        std::fs::copy(
            src.join("requirements.txt"),
            dir.path().join("requirements.txt"),
        )?;
        let text = std::fs::read_to_string(src.join("wrenn.recipe"))?;
        std::fs::write(&recipe, format!("{text}{extra}"))?;
    }
    Ok((dir, recipe))
}

/// `--allow-out` for the addresses PyPI has from this host: where the
/// registries answer from a private or test address (a mirror; this
/// machine's answer is in 203.0.113.0/24) the sandboxes' default egress
/// policy refuses them, as a user there would find.
pub(crate) fn registry_access() -> String {
    use std::net::ToSocketAddrs as _;
    let mut nets: Vec<String> = ["pypi.org", "files.pythonhosted.org"]
        .iter()
        .filter_map(|h| (*h, 443).to_socket_addrs().ok())
        .flatten()
        .filter(|a| a.is_ipv4())
        .map(|a| format!("{}/32", a.ip()))
        .collect();
    nets.sort();
    nets.dedup();
    nets.join(",")
}

/// `bench-ca`: base with the host's CA bundle.
pub(crate) fn ca_template(p: &Platform) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        dir.path().join("ca.crt"),
    )
    .context("the host's CA bundle (apt-get install ca-certificates)")?;
    let recipe = dir.path().join("wrenn.recipe");
    std::fs::write(
        &recipe,
        "COPY ca.crt /home/wrenn-user/.host-ca.crt\n\
         RUN sudo cp /home/wrenn-user/.host-ca.crt /etc/ssl/certs/ca-certificates.crt && rm /home/wrenn-user/.host-ca.crt\n",
    )?;
    build(p, "bench-ca", &recipe, &[])?;
    Ok(())
}

/// Bytes a file takes on disk.
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

pub async fn run(opts: &Opts) -> anyhow::Result<()> {
    crate::require_root("templates")?;
    let platform = Platform::start("templates").await?;
    let result = measure(&platform, opts).await;
    let stopped = platform.stop();
    let report = result?;
    stopped?;
    report.finish(&opts.out)?;
    Ok(())
}

async fn measure(p: &Platform, opts: &Opts) -> anyhow::Result<Report> {
    let quick = opts.quick;
    let mut report = Report::new("templates", quick);
    let registries = registry_access();
    let mut from: Vec<&str> = Vec::new();
    if !quick {
        ca_template(p)?;
        from.extend(["--from", "bench-ca"]);
        if !registries.is_empty() {
            from.extend(["--allow-out", registries.as_str()]);
        }
    }
    let from = from.as_slice();
    let name = if quick {
        "bench-small"
    } else {
        "bench-jupyter"
    };
    let what = if quick {
        "a small recipe (RUN, ENV, WORKDIR, COPY)"
    } else {
        "conf/templates/jupyter"
    };

    let (_d1, recipe) = recipe_dir(quick, "")?;
    let first = build(p, name, &recipe, from)?;
    let again = build(p, name, &recipe, from)?;
    let (_d2, longer) = recipe_dir(quick, "RUN echo one > /home/wrenn-user/.bench-last\n")?;
    let added = build(p, name, &longer, from)?;
    let (_d3, changed) = recipe_dir(quick, "RUN echo two > /home/wrenn-user/.bench-last\n")?;
    let last = build(p, name, &changed, from)?;
    if again.run != 0 || last.run != 2 {
        bail!(
            "the step cache did not hold: {} steps ran in the unchanged rebuild, {} (of 2 expected) with the last step changed",
            again.run,
            last.run
        );
    }
    let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    let ms = |v: &Value, k: &str| format!("{:.2} s", v[k].as_f64().unwrap_or(0.0) / 1000.0);
    let mut builds = Table::new(
        format!("Template builds of {what}, through `wrenn template build`"),
        &["build", "wall", "steps run / cached", "flatten", "target"],
    );
    for (label, b, target) in [
        ("first", &first, String::new()),
        (
            "nothing changed",
            &again,
            format!("≤ {}", secs(TARGET_REBUILD)),
        ),
        ("one step added at the end", &added, String::new()),
        ("last step changed", &last, String::new()),
    ] {
        builds.row(vec![
            label.into(),
            secs(b.wall),
            format!("{} / {}", b.run, b.cached),
            ms(&b.template, "flatten_ms"),
            target,
        ]);
        report.result(json!({
            "build": label,
            "wall_ms": b.wall.as_millis() as u64,
            "steps_run": b.run,
            "steps_cached": b.cached,
            "flatten_ms": b.template["flatten_ms"],
        }));
    }
    report.table(builds);
    report.note(format!(
        "rebuild with nothing changed: {} (target ≤ {}: {})",
        secs(again.wall),
        secs(TARGET_REBUILD),
        if again.wall <= TARGET_REBUILD {
            "met"
        } else {
            "missed"
        }
    ));

    let image = wrenn_vmm::image::template_path(&p.dir, name);
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    let min = last.template["size_bytes"].as_u64().unwrap_or(0);
    let stored = last.template["image_bytes"].as_u64().unwrap_or(0);
    let mut sizes = Table::new(
        "The template's image",
        &[
            "minimum (resize2fs -M)",
            "as stored (grown)",
            "on disk (sparse)",
        ],
    );
    sizes.row(vec![mib(min), mib(stored), mib(allocated(&image))]);
    report.table(sizes);
    report.result(json!({"image_min_bytes": min, "image_bytes": stored, "image_allocated_bytes": allocated(&image)}));

    // A variant without START/READY (the same cached steps): create → ready
    // next to base, alternating.
    let plain = if quick {
        name.to_owned()
    } else {
        let (_d4, r) = recipe_dir(false, "")?;
        let text = std::fs::read_to_string(&r)?;
        let stripped: String = strip_start_ready(&text);
        std::fs::write(&r, stripped)?;
        build(p, "bench-plain", &r, from)?;
        "bench-plain".to_owned()
    };
    let n = if quick { 10 } else { 100 };
    let mut client = p.client().await?;
    let mut lat_base = Latencies::new("create → ready, base", n);
    let mut lat_tpl = Latencies::new(format!("create → ready, {plain}"), n);
    for i in 0..n {
        for which in crate::stats::alternate(i) {
            let (template, lat) = if which == 0 {
                ("base", &mut lat_base)
            } else {
                (plain.as_str(), &mut lat_tpl)
            };
            let t = Instant::now();
            let sb = sandbox::create(
                &mut client,
                SandboxSpec {
                    template: template.into(),
                    ..sandbox::spec(1)
                },
            )
            .await?;
            lat.record(t.elapsed());
            sandbox::destroy(&mut client, &sb.id).await?;
        }
    }
    let (b, t) = (lat_base.summary(), lat_tpl.summary());
    let ratio = t.p50.as_secs_f64() / b.p50.as_secs_f64();
    let mut creates = Table::new(
        "Create → ready (one at a time, alternating)",
        &["template", "p50", "p99", "vs base (p50)", "target"],
    );
    let msf = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    creates.row(vec![
        "base".into(),
        msf(b.p50),
        msf(b.p99),
        "1.00×".into(),
        String::new(),
    ]);
    creates.row(vec![
        plain.clone(),
        msf(t.p50),
        msf(t.p99),
        format!("{ratio:.2}×"),
        format!("≤ {TARGET_CREATE_RATIO:.2}×"),
    ]);
    report.result(json!({"create_base_p50_us": b.p50.as_micros() as u64, "create_base_p99_us": b.p99.as_micros() as u64,
        "create_template_p50_us": t.p50.as_micros() as u64, "create_template_p99_us": t.p99.as_micros() as u64, "ratio": ratio}));
    if !quick {
        let mut lat_ready = Latencies::new("create → Jupyter answering", 5);
        for _ in 0..5 {
            let t = Instant::now();
            let sb = sandbox::create(
                &mut client,
                SandboxSpec {
                    template: name.into(),
                    ..sandbox::spec(1)
                },
            )
            .await?;
            lat_ready.record(t.elapsed());
            sandbox::destroy(&mut client, &sb.id).await?;
        }
        let r = lat_ready.summary();
        creates.row(vec![
            format!("{name} (READY: Jupyter answers)"),
            msf(r.p50),
            msf(r.p99),
            String::new(),
            String::new(),
        ]);
        report.result(json!({"create_ready_jupyter_p50_us": r.p50.as_micros() as u64}));
    }
    report.table(creates);
    report.note(format!(
        "create → ready from a built template: {ratio:.2}× base at p50 (target ≤ {TARGET_CREATE_RATIO:.2}×: {})",
        if ratio <= TARGET_CREATE_RATIO { "met" } else { "missed" }
    ));
    Ok(report)
}

/// The recipe without its START and READY lines (and their continuations).
fn strip_start_ready(text: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        let t = line.trim_start();
        if !skipping && (t.starts_with("START ") || t.starts_with("READY ")) {
            skipping = true;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
        if skipping && !line.ends_with('\\') {
            skipping = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn start_and_ready_are_stripped_with_their_continuations() {
        let text = "RUN a\nSTART x \\\n  y\nREADY z\nENV A=1\n";
        assert_eq!(super::strip_start_ready(text), "RUN a\nENV A=1\n");
    }
}
