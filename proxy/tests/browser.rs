//! Headless Chromium browses a real `python3 -m http.server` through the
//! proxy, in both URL forms (driver: `proxy/e2e/browse.mjs`). The server runs
//! on loopback and the proxy routes a static sandbox to it; the end-to-end
//! variant with `wrenn up` and a real sandbox reuses the same driver.
//!
//! Needs Debian's `chromium`, `nodejs` and `npm` (`scripts/setup --tests`);
//! installs playwright-core into `proxy/e2e/node_modules` if it is missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wrenn_proxy::{Proxy, ProxyConfig, Route, RouteOptions, RouteState, RouteTable};

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e")
}

/// Installs playwright-core (no browser download: Debian's Chromium is used).
fn ensure_playwright() {
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

/// A `python3 -m http.server` child, killed when dropped.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn start(root: &Path) -> HttpServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "http.server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn chromium_browses_http_server_through_both_url_forms() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "run scripts/setup --tests (installs chromium)"
    );
    ensure_playwright();

    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("hello.txt"), "hello from the sandbox\n").unwrap();
    std::fs::create_dir(root.path().join("sub")).unwrap();
    let data: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(root.path().join("sub/data.bin"), &data).unwrap();
    let sha256 = hex::encode(Sha256::digest(&data));
    let server = HttpServer::start(root.path());

    let table = Arc::new(RouteTable::new());
    table.replace_all([Route::new(
        "sbbrowser".parse().unwrap(),
        RouteState::Running,
        Some("127.0.0.1".parse().unwrap()),
        1,
        RouteOptions::default(),
    )]);
    let config = ProxyConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: None,
        threads: 2,
        ..ProxyConfig::default()
    };
    let proxy = Proxy::new(config.clone())
        .static_routes(table)
        .start()
        .unwrap();
    let pport = proxy.listen_addr().port();
    let id = "sbbrowser".parse().unwrap();
    let urls = wrenn_proxy::sandbox_urls(&config.domain, "localhost", pport, &id, server.port);

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wrenn-proxy-e2e");
    let spec = serde_json::json!({
        "forms": [
            {"name": "path", "base": urls.path},
            {"name": "subdomain", "base": urls.subdomain},
        ],
        "dir": "sub",
        "file": "data.bin",
        "sha256": sha256,
        "entries": ["hello.txt", "sub/"],
        "artifacts": artifacts,
    });
    // runs: node chromium; the script starts Debian's chromium
    let out = Command::new("node")
        .arg(e2e_dir().join("browse.mjs"))
        .arg(spec.to_string())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(result["ok"], true, "{result}");
    let results = result["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        assert_eq!(r["redirects"], 1, "{r}");
        assert_eq!(r["download"]["sha256"], sha256.as_str(), "{r}");
        let shot = std::fs::metadata(r["screenshot"].as_str().unwrap()).unwrap();
        assert!(shot.len() > 1000, "screenshot too small: {r}");
    }
    let m = proxy.metrics().render();
    assert!(
        m.contains("wrenn_proxy_requests_total{class=\"3xx\"} 2"),
        "one slash redirect per form:\n{m}"
    );
    drop(proxy);
    drop(server);
}
