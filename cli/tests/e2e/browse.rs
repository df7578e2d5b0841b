//! Issue 5 §13 end to end: `wrenn up`; a sandbox serves `python3 -m
//! http.server 8000` over a directory tree; headless Chromium (Debian's
//! `chromium`, driven by `proxy/e2e/browse.mjs` with playwright-core) browses
//! the listing through both URL forms `wrenn url` prints, clicks into a
//! subdirectory and back, follows a missing trailing slash (one redirect,
//! inside the prefix) and downloads a file whose SHA-256 must match.
//! Screenshots are kept in `target/e2e-artifacts/browse/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::common::net::wait_http;
use crate::common::{WRENN, proc};

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../proxy/e2e")
}

/// Installs playwright-core (no browser download: Debian's Chromium is used).
fn ensure_playwright() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is missing: run scripts/setup --tests"
    );
    if e2e_dir()
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(e2e_dir())
        .status()
        .expect("npm is missing: run scripts/setup --tests (installs nodejs and npm)");
    assert!(status.success(), "npm ci in {} failed", e2e_dir().display());
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn chromium_browses_a_sandbox_http_server_through_both_url_forms() {
    ensure_playwright();
    let shared = crate::stores::sqlite();
    let p = &shared.platform;
    let sb = p.sandbox(&["--timeout", "600"]);

    let local = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let sha256 = hex::encode(Sha256::digest(&data));
    let file = local.path().join("data.bin");
    std::fs::write(&file, &data).unwrap();
    std::fs::write(local.path().join("hello.txt"), "hello from the sandbox\n").unwrap();
    p.cli_ok(&["files", "mkdir", &sb.id, "/srv/site/sub"]);
    let hello = local.path().join("hello.txt");
    p.cli_ok(&[
        "files",
        "put",
        &sb.id,
        hello.to_str().unwrap(),
        "/srv/site/hello.txt",
    ]);
    p.cli_ok(&[
        "files",
        "put",
        &sb.id,
        file.to_str().unwrap(),
        "/srv/site/sub/data.bin",
    ]);
    p.cli_ok(&[
        "exec",
        "-d",
        "--tag",
        "http",
        "--cwd",
        "/srv/site",
        &sb.id,
        "--",
        "python3",
        "-m",
        "http.server",
        "8000",
        "--bind",
        "0.0.0.0",
    ]);

    // `wrenn url` prints the subdomain form, then the path form.
    let urls = p.cli_ok(&["url", &sb.id, "8000"]);
    let urls: Vec<&str> = urls.lines().collect();
    let port = p.proxy.port();
    assert_eq!(
        urls,
        [
            format!("http://8000-{}.localhost:{port}/", sb.id),
            format!("http://localhost:{port}/proxy/{}/8000/", sb.id),
        ],
        "wrenn url"
    );
    wait_http(
        p.proxy,
        "localhost",
        &format!("/proxy/{}/8000/", sb.id),
        200,
        Duration::from_secs(30),
    );

    let target = Path::new(WRENN).parent().and_then(Path::parent).unwrap();
    let artifacts = target.join("e2e-artifacts/browse");
    let spec = serde_json::json!({
        "forms": [
            {"name": "path", "base": urls[1]},
            {"name": "subdomain", "base": urls[0]},
        ],
        "dir": "sub",
        "file": "data.bin",
        "sha256": sha256,
        "entries": ["hello.txt", "sub/"],
        "artifacts": artifacts,
    });
    // runs: node chromium; the script starts Debian's chromium
    let mut cmd = Command::new("node");
    cmd.arg(e2e_dir().join("browse.mjs"))
        .arg(spec.to_string())
        .stdin(Stdio::null());
    let out = proc::run(cmd, Duration::from_secs(180));
    assert_eq!(out.code, 0, "browser run failed: {out}");
    let last = out.stdout.lines().last().unwrap_or_default();
    let result: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(result["ok"], true, "{result}");
    let results = result["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{result}");
    for r in results {
        assert_eq!(r["redirects"], 1, "{r}");
        assert_eq!(r["download"]["sha256"], sha256.as_str(), "{r}");
        let shot = std::fs::metadata(r["screenshot"].as_str().unwrap()).unwrap();
        assert!(shot.len() > 1000, "screenshot too small: {r}");
    }
    // One access line per request, in the proxy's log file and not on `wrenn
    // up`'s terminal (where they would bury everything else). They are
    // written in batches, at most 100 ms late.
    let access_lines = || {
        std::fs::read_to_string(p.dir.join("logs/proxy.log"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"wrenn_proxy::access\"") && l.contains(&sb.id))
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut lines = access_lines();
    while lines < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        lines = access_lines();
    }
    assert!(
        lines >= 4,
        "{lines} access lines for {} in proxy.log",
        sb.id
    );
    assert!(
        !p.output().contains("wrenn_proxy::access"),
        "access lines on wrenn up's output:\n{}",
        p.output()
    );
}
