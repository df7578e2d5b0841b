//! The browser side: a node script (`jupyter.mjs`, `next.mjs`) driving
//! Debian's Chromium through playwright-core, spoken to over a line protocol
//! (see `lib.mjs`): JSON events and a last `{"ok": …}` line on its stdout,
//! commands as lines on its stdin.
//!
//! The driver runs in its own process group so that dropping a [`Driver`]
//! (also while a test panics) kills node and the Chromium it started, and
//! its Chromium profile is a temporary directory removed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

/// `cli/tests/apps`: the scripts and their package.json.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps")
}

/// Installs playwright-core from the lock file once per test binary (no
/// browser download: Debian's Chromium is used), and checks Chromium is there.
fn ensure_installed() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        assert!(
            Path::new("/usr/bin/chromium").exists(),
            "Debian's chromium is missing: run scripts/setup --tests (apt-get install chromium)"
        );
        if dir()
            .join("node_modules/playwright-core/package.json")
            .exists()
        {
            return;
        }
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir())
            .status()
            .expect("npm is missing: run scripts/setup --tests (installs nodejs and npm)");
        assert!(status.success(), "npm ci in {} failed", dir().display());
    });
}

/// A running driver script.
pub struct Driver {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    reaped: bool,
    _profile: tempfile::TempDir,
}

impl Driver {
    /// Starts `node <script> <spec>`; `spec` gets a fresh Chromium profile
    /// directory as `profile`.
    pub fn start(script: &str, mut spec: Value) -> Driver {
        ensure_installed();
        let profile = tempfile::Builder::new()
            .prefix("wrenn-tw-chromium-")
            .tempdir()
            .expect("create a Chromium profile directory");
        spec["profile"] = Value::from(profile.path().to_str().unwrap());
        // runs: node chromium; the script starts Debian's chromium
        let mut cmd = Command::new("node");
        cmd.arg(dir().join(script))
            .arg(spec.to_string())
            .current_dir(dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start node {script}: {e} (is nodejs installed?)"));
        let (tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Driver {
            name: script.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            reaped: false,
            _profile: profile,
        }
    }

    /// The next protocol line, parsed. Panics on a failure line, on exit, or
    /// after `timeout`.
    fn next(&mut self, waiting_for: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("no {waiting_for} within {timeout:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("exited before {waiting_for}"))
                }
            };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                // Not ours (a library printing to stdout): keep it for the record.
                self.stderr.lock().unwrap().push_str(&format!("{line}\n"));
                continue;
            };
            if v["ok"] == false {
                self.fail(&format!(
                    "failed: {}\nscreenshots: {}",
                    v["error"].as_str().unwrap_or_default(),
                    v["screenshots"]
                ));
            }
            return v;
        }
    }

    /// Waits for `{"event": name, …}` and returns it.
    pub fn expect_event(&mut self, name: &str, timeout: Duration) -> Value {
        let v = self.next(&format!("event {name:?}"), timeout);
        assert_eq!(v["event"], name, "{}: unexpected line {v}", self.name);
        v
    }

    /// Sends one command line.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: write {line:?}: {e}", self.name));
    }

    /// Skips events until the final `{"ok": true, …}` line, waits for node to
    /// exit, and returns that line.
    pub fn finish(mut self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.next("its result", left);
            if v["ok"] == true {
                break v;
            }
        };
        self.stdin.take();
        // It closed the browser before printing the result; give it a moment
        // to exit, then [`kill`](Self::kill) makes sure of it.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if kill(Pid::from_raw(self.child.id() as i32), None).is_err()
                || is_zombie(self.child.id())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        result
    }

    fn fail(&mut self, what: &str) -> ! {
        self.kill();
        panic!(
            "browser driver {} {what}\n--- its stderr ---\n{}",
            self.name,
            crate::common::tail(&self.stderr.lock().unwrap(), 60)
        );
    }

    /// Kills node and every Chromium process it started (its process
    /// group) and waits until the group is empty, so that the profile
    /// directory is removed after the last writer is gone. Only once: until
    /// node is reaped its pid cannot be reused, and while any member lives
    /// the group id cannot be either.
    fn kill(&mut self) {
        if self.reaped {
            return;
        }
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
        self.reaped = true;
        let deadline = Instant::now() + Duration::from_secs(10);
        while killpg(group, None).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.kill();
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}
