//! End-to-end harness: the real `wrenn` binary, run as root.
//!
//! ```ignore
//! mod common;
//! use common::{Platform, PlatformOptions};
//!
//! let p = Platform::start(PlatformOptions::new("wrenn-te", 3000..=3019));
//! let id = p.cli_ok(&["sandbox", "create"]).trim().to_owned();
//! let out = p.cli(&["exec", &id, "--", "echo", "hi"]);
//! assert_eq!((out.code, out.stdout.as_str()), (0, "hi\n"));
//! drop(p); // SIGINT to `wrenn up`, wait, assert nothing of it is left
//! ```
//!
//! [`Platform::start`] runs `wrenn up` on its own `$WRENN_DIR`
//! (`/var/tmp/<prefix>/<first>-<last>`), free loopback ports, and its own
//! prefix and slot range, and returns once it printed "wrenn is up". Dropping
//! it (also while a test panics) sends SIGINT, waits, and asserts that nothing
//! of it is left on the machine: its processes, network namespaces and veths
//! of its slot range, mounts and loop devices under its directory, the
//! cgroups and processes of every sandbox it ever had, its nftables table.
//! Then the directory is removed. A run killed before its guard ran is
//! cleaned up by the next start on the same slot range.
//!
//! Give every `Platform` alive at the same time its own slot range (test
//! threads run in parallel); [`shared`] lets the tests of one binary share one.

#![allow(dead_code)]

pub mod leftovers;
pub mod net;
pub mod pg;
pub mod proc;
pub mod templates;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub use proc::{CliOutput, Proc};

/// The `wrenn` binary under test.
pub const WRENN: &str = env!("CARGO_BIN_EXE_wrenn");
/// How long `wrenn up` may take to be ready (the first run on a machine
/// builds the `base` template, about a minute and a half).
pub const START_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `wrenn up` may take to stop after SIGINT.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(90);

/// What to start. Only `prefix` and `slots` are required.
#[derive(Debug, Clone)]
pub struct PlatformOptions {
    /// Prefix of host-global names (docs/DEVELOPING.md: one per suite).
    pub prefix: String,
    /// Network slots of this instance, disjoint from every other instance
    /// running at the same time.
    pub slots: RangeInclusive<u16>,
    /// PostgreSQL store (`DATABASE_URL`); SQLite in `$WRENN_DIR` when `None`.
    pub database_url: Option<String>,
    /// Extra environment for `wrenn up` and its components, e.g.
    /// `WRENN_RECONCILE_INTERVAL` or `WRENN_DEFAULT_TIMEOUT`.
    pub env: Vec<(String, String)>,
}

impl PlatformOptions {
    pub fn new(prefix: &str, slots: RangeInclusive<u16>) -> Self {
        PlatformOptions {
            prefix: prefix.to_owned(),
            slots,
            database_url: None,
            env: Vec::new(),
        }
    }

    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// A running `wrenn up`.
pub struct Platform {
    /// `$WRENN_DIR` of this instance.
    pub dir: PathBuf,
    /// The control plane, e.g. `http://127.0.0.1:41234`.
    pub control_url: String,
    /// The host agent's gRPC address.
    pub agent: SocketAddr,
    /// The admin API key (from `$WRENN_DIR/admin.key`).
    pub admin_key: String,
    /// The proxy browsers connect to.
    pub proxy: SocketAddr,
    /// The proxy's admin listener (`/metrics`, `/readyz`).
    pub proxy_admin: SocketAddr,
    pub options: PlatformOptions,
    control: SocketAddr,
    guest: PathBuf,
    up: Option<Proc>,
    /// Released after the teardown (fields drop after `Drop::drop`).
    _claim: DirClaim,
}

/// How a platform's `wrenn up` ends.
enum Ending {
    /// SIGINT, then a clean exit.
    Interrupt,
    /// It exits by itself, with a failure, within the time.
    FailsByItself(Duration),
}

/// The children of `pid` (from `/proc/<pid>/task/*/children`).
fn children(pid: nix::unistd::Pid) -> Vec<nix::unistd::Pid> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .map(nix::unistd::Pid::from_raw),
        );
    }
    out
}

impl Platform {
    /// The `wrenn up` command of this platform.
    fn up_command(&self) -> Command {
        // runs: -; the wrenn binary built here
        let mut cmd = Command::new(WRENN);
        cmd.arg("up")
            .arg("--dir")
            .arg(&self.dir)
            .args(["--control-listen", &self.control.to_string()])
            .args(["--agent-listen", &self.agent.to_string()])
            .args(["--proxy-listen", &self.proxy.to_string()])
            .args(["--proxy-admin", &self.proxy_admin.to_string()])
            .args(["--stop-timeout", "60"]);
        component_env(&mut cmd, &self.options, &self.guest);
        cmd
    }

    /// Starts `wrenn up` and waits until it is ready. Panics with its output
    /// when it exits or is not ready within [`START_TIMEOUT`].
    pub fn start(options: PlatformOptions) -> Platform {
        assert_root();
        let guest = guest_bin();
        let claim = prepare_dir(&options);
        let dir = claim.path().to_owned();
        let [control, agent, proxy, proxy_admin] = free_ports();
        // Built before it is ready, so that a failed start is torn down and
        // checked like any other.
        let mut p = Platform {
            dir,
            control_url: format!("http://{control}"),
            agent,
            admin_key: String::new(),
            proxy,
            proxy_admin,
            control,
            guest,
            options,
            up: None,
            _claim: claim,
        };
        p.up = Some(Proc::spawn("wrenn up", p.up_command()));
        p.up.as_ref()
            .unwrap()
            .wait_for_output("wrenn is up", START_TIMEOUT);
        let key = p.dir.join("admin.key");
        p.admin_key = std::fs::read_to_string(&key)
            .unwrap_or_else(|e| panic!("read {}: {e}", key.display()))
            .trim()
            .to_owned();
        p
    }

    /// A `wrenn` command aimed at this platform (`WRENN_CONTROL`,
    /// `WRENN_DIR`; the admin key is read from the directory). Nothing of the
    /// caller's environment that could point elsewhere is inherited.
    pub fn command(&self) -> Command {
        client_command(&self.control_url, &self.dir)
    }

    /// Runs `wrenn <args>` against this platform, stdin empty, and returns
    /// its exit code and output. Panics if it runs over 120 s.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let mut cmd = self.command();
        cmd.args(args);
        proc::run(cmd, Duration::from_secs(120))
    }

    /// Like [`cli`](Self::cli) but panics unless the exit code is 0; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert_eq!(out.code, 0, "wrenn {} failed: {out}", args.join(" "));
        out.stdout
    }

    /// `wrenn sandbox create <extra…>`; returns the new sandbox's id.
    pub fn create_sandbox(&self, extra: &[&str]) -> String {
        let mut args = vec!["sandbox", "create"];
        args.extend_from_slice(extra);
        let id = self.cli_ok(&args).trim().to_owned();
        assert!(
            wrenn_types::SandboxId::is_valid(&id),
            "sandbox create printed {id:?}, not an id"
        );
        id
    }

    /// Creates a sandbox (`wrenn sandbox create <extra…>`) that is
    /// destroyed when the returned guard drops.
    pub fn sandbox(&self, extra: &[&str]) -> Sandbox<'_> {
        Sandbox {
            id: self.create_sandbox(extra),
            platform: self,
        }
    }

    /// Everything `wrenn up` printed so far (stdout and stderr, interleaved).
    pub fn output(&self) -> String {
        self.up.as_ref().map(Proc::output).unwrap_or_default()
    }

    /// The components `wrenn up` runs now: `(name, pid)` of each child.
    pub fn components(&self) -> Vec<(String, nix::unistd::Pid)> {
        let Some(up) = &self.up else {
            return Vec::new();
        };
        children(up.pid())
            .into_iter()
            .filter_map(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let name = cmdline.split(|b| *b == 0).nth(1)?;
                Some((String::from_utf8_lossy(name).into_owned(), pid))
            })
            .collect()
    }

    /// The pid of component `name` (`agent`, `control`, `proxy`).
    pub fn component(&self, name: &str) -> nix::unistd::Pid {
        self.components()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
            .unwrap_or_else(|| panic!("no {name} under wrenn up: {:?}", self.components()))
    }

    /// SIGKILLs `wrenn up` first and, a moment later, every component (as
    /// `pkill -9` may, giving the components time to see their parent die),
    /// waits until all are gone, and starts `wrenn up` again on the same
    /// directory and ports. Sandboxes are not touched.
    pub fn kill_everything_and_start_again(&mut self) {
        let mut up = self.up.take().expect("running");
        let parts = self.components_of(&up);
        up.kill();
        std::thread::sleep(Duration::from_millis(150));
        for (_, pid) in &parts {
            let _ = nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGKILL);
        }
        for (name, pid) in &parts {
            eventually(Duration::from_secs(10), &format!("{name} gone"), || {
                (nix::sys::signal::kill(*pid, None).is_err()).then_some(())
            });
        }
        let fresh = Proc::spawn("wrenn up", self.up_command());
        fresh.wait_for_output("wrenn is up", START_TIMEOUT);
        self.up = Some(fresh);
    }

    fn components_of(&self, up: &Proc) -> Vec<(String, nix::unistd::Pid)> {
        children(up.pid())
            .into_iter()
            .map(|pid| (pid.to_string(), pid))
            .collect()
    }

    /// Waits until `wrenn up` exits by itself, asserts it failed, and checks
    /// that nothing of it is left.
    pub fn expect_failed_exit(mut self, timeout: Duration) {
        self.end(Ending::FailsByItself(timeout));
    }

    /// Stops the platform now and asserts nothing is left (what `Drop` does).
    pub fn stop(mut self) {
        self.teardown();
    }

    fn teardown(&mut self) {
        self.end(Ending::Interrupt);
    }

    fn end(&mut self, how: Ending) {
        let Some(mut up) = self.up.take() else { return };
        // Every sandbox this instance ever had, for the cgroup/process check.
        let mut ids = self.known_ids();
        let problem = match how {
            Ending::Interrupt => match up.interrupt_and_wait(STOP_TIMEOUT) {
                Ok(s) if s.success() => None,
                Ok(s) => Some(format!("wrenn up exited with {s}")),
                Err(e) => Some(e),
            },
            Ending::FailsByItself(timeout) => match up.wait(timeout) {
                Ok(s) if !s.success() => None,
                Ok(s) => Some(format!("wrenn up exited with {s}, expected a failure")),
                Err(e) => Some(e),
            },
        };
        ids.extend(leftovers::sandbox_dirs(&self.dir));
        finish(
            &self.options,
            &self.dir,
            &ids,
            problem,
            || up.output(),
            "wrenn up",
        );
    }

    /// Ids of every sandbox in the store (stopped ones included) and under
    /// `sandboxes/`, best effort.
    fn known_ids(&self) -> BTreeSet<String> {
        let mut ids = leftovers::sandbox_dirs(&self.dir);
        let mut cmd = self.command();
        cmd.args(["sandbox", "ls", "--all", "--json"]);
        let out = proc::run(cmd, Duration::from_secs(30));
        if let Ok(serde_json::Value::Array(list)) = serde_json::from_str(&out.stdout) {
            ids.extend(
                list.iter()
                    .filter_map(|s| s["id"].as_str().map(str::to_owned)),
            );
        }
        ids
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A sandbox destroyed (`wrenn sandbox rm`) when dropped; one already gone
/// is fine.
pub struct Sandbox<'a> {
    pub id: String,
    pub platform: &'a Platform,
}

impl Sandbox<'_> {
    /// `wrenn exec <id> -- sh -c <script>`.
    pub fn sh(&self, script: &str) -> CliOutput {
        self.platform
            .cli(&["exec", &self.id, "--", "sh", "-c", script])
    }

    /// Like [`sh`](Self::sh), panicking unless it exits 0; returns stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert_eq!(out.code, 0, "in sandbox {}: {script:?}: {out}", self.id);
        out.stdout
    }

    /// `wrenn sandbox get --json <id>`.
    pub fn get(&self) -> serde_json::Value {
        let out = self
            .platform
            .cli_ok(&["sandbox", "get", "--json", &self.id]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("sandbox get --json: {e}: {out}"))
    }
}

impl Drop for Sandbox<'_> {
    fn drop(&mut self) {
        let out = self.platform.cli(&["sandbox", "rm", &self.id]);
        if out.code != 0 && out.code != 3 && !std::thread::panicking() {
            panic!("sandbox rm {}: {out}", self.id);
        }
    }
}

/// After the platform's processes are gone: asserts nothing of it is left,
/// cleans up by force if something is, removes the directory, and panics
/// with what went wrong (or only prints it when the test already panics).
pub fn finish(
    options: &PlatformOptions,
    dir: &Path,
    ids: &BTreeSet<String>,
    mut problem: Option<String>,
    output: impl Fn() -> String,
    what: &str,
) {
    let left = leftovers::wait_clean(&options.prefix, &options.slots, dir, ids);
    if !left.is_empty() {
        leftovers::force_clean(options, dir);
        problem
            .get_or_insert_with(String::new)
            .push_str(&format!("\nleft behind after {what} stopped: {left:#?}"));
    }
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        problem
            .get_or_insert_with(String::new)
            .push_str(&format!("\ncannot remove {}: {e}", dir.display()));
    }
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent); // only when empty
    }
    if let Some(p) = problem {
        let msg = format!("{what}: {p}\n--- output ---\n{}", tail(&output(), 150));
        if std::thread::panicking() {
            eprintln!("{msg}");
        } else {
            panic!("{msg}");
        }
    } else if std::thread::panicking() {
        // The test failed: what the platform said helps find out why.
        eprintln!(
            "{what} (the test failed)\n--- output ---\n{}",
            tail(&output(), 150)
        );
    }
}

/// One platform shared by the tests of a test binary that ask for it with
/// the same `slot`: the first caller starts it, the last holder to drop its
/// handle stops it (and checks that nothing is left). Tests overlap in
/// parallel threads, so it usually lives through the whole binary; if all
/// holders happen to finish at once, the next caller starts a fresh one.
pub fn shared<T: Send + Sync + 'static>(
    slot: &'static Mutex<Weak<T>>,
    start: impl FnOnce() -> T,
) -> Arc<T> {
    let mut held = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = held.upgrade() {
        return p;
    }
    let p = Arc::new(start());
    *held = Arc::downgrade(&p);
    p
}

/// The static `wrenn-guest` binary: `WRENN_GUEST_BIN`, else the musl build
/// of this profile, else of the other one. Panics with the build command.
pub fn guest_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WRENN_GUEST_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "WRENN_GUEST_BIN={} does not exist",
            p.display()
        );
        return p;
    }
    // target/<profile>/wrenn → target/
    let target = Path::new(WRENN).parent().and_then(Path::parent).unwrap();
    let musl = target.join("x86_64-unknown-linux-musl");
    let profiles = if cfg!(debug_assertions) {
        ["debug", "release"]
    } else {
        ["release", "debug"]
    };
    for profile in profiles {
        let p = musl.join(profile).join("wrenn-guest");
        if p.is_file() {
            return p;
        }
    }
    let flag = if cfg!(debug_assertions) {
        ""
    } else {
        " --release"
    };
    panic!(
        "the static guest agent is missing (looked in {}/{{release,debug}}/wrenn-guest; or set WRENN_GUEST_BIN): \
         build it with `cargo build{flag} -p wrenn-guest --target x86_64-unknown-linux-musl`",
        musl.display()
    );
}

pub fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the end-to-end tests run sandboxes and need root (CI is root): run them with sudo"
    );
}

/// Environment of the platform's processes: the instance's prefix, slots,
/// guest and store, and nothing of the caller's that could point elsewhere.
pub fn component_env(cmd: &mut Command, options: &PlatformOptions, guest: &Path) {
    clear_wrenn_env(cmd);
    cmd.env("WRENN_PREFIX", &options.prefix)
        .env(
            "WRENN_SLOTS",
            format!("{}-{}", options.slots.start(), options.slots.end()),
        )
        .env("WRENN_GUEST_BIN", guest)
        .env("LOG_LEVEL", "info");
    if let Some(url) = &options.database_url {
        cmd.env("DATABASE_URL", url);
    }
    for (k, v) in &options.env {
        cmd.env(k, v);
    }
}

/// A `wrenn` client command for the control plane at `control_url`.
pub fn client_command(control_url: &str, dir: &Path) -> Command {
    // runs: -; the wrenn binary built here
    let mut cmd = Command::new(WRENN);
    clear_wrenn_env(&mut cmd);
    cmd.env("WRENN_CONTROL", control_url).env("WRENN_DIR", dir);
    cmd
}

/// Removes every `WRENN_*` variable (but the template cache) and
/// `DATABASE_URL` from a command's environment.
fn clear_wrenn_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if (k.starts_with("WRENN_") && k != "WRENN_CACHE_DIR") || k == "DATABASE_URL" {
            cmd.env_remove(&*k);
        }
    }
}

/// The exclusive use of one instance directory within this test process:
/// taken before a platform starts, released after its teardown finished,
/// so a platform that starts while another of the same slot range is still
/// stopping waits for it instead of sharing its directory.
pub struct DirClaim {
    dir: PathBuf,
}

static CLAIMED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
static RELEASED: std::sync::Condvar = std::sync::Condvar::new();

impl DirClaim {
    fn take(dir: PathBuf) -> DirClaim {
        let mut claimed = CLAIMED.lock().unwrap_or_else(|p| p.into_inner());
        while claimed.contains(&dir) {
            claimed = RELEASED.wait(claimed).unwrap_or_else(|p| p.into_inner());
        }
        claimed.insert(dir.clone());
        DirClaim { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for DirClaim {
    fn drop(&mut self) {
        CLAIMED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.dir);
        RELEASED.notify_all();
    }
}

/// Claims `/var/tmp/<prefix>/<first>-<last>` (see [`DirClaim`]) and empties
/// it of anything a killed earlier run on the same slot range left.
pub fn prepare_dir(options: &PlatformOptions) -> DirClaim {
    let claim = DirClaim::take(PathBuf::from(format!(
        "/var/tmp/{}/{}-{}",
        options.prefix,
        options.slots.start(),
        options.slots.end()
    )));
    let dir = claim.path();
    if dir.exists() {
        eprintln!(
            "{} is left from an earlier run: cleaning it up",
            dir.display()
        );
        leftovers::force_clean(options, dir);
        std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("remove {}: {e}", dir.display()));
    }
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    claim
}

/// Four distinct loopback ports that were free a moment ago.
pub fn free_ports<const N: usize>() -> [SocketAddr; N] {
    let listeners: Vec<_> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap())
}

/// Polls `cond` every 20 ms until it returns `Some`, or panics naming `what`.
pub fn eventually<T>(timeout: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Reads a child's pipe line by line into `sink` (used by [`Proc`]).
fn pump(pipe: impl std::io::Read + Send + 'static, sink: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(pipe);
        let mut line = Vec::new();
        while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_str(&String::from_utf8_lossy(&line));
            line.clear();
        }
    });
}

/// Ensures a command's stdin is not the test's.
pub fn no_stdin(cmd: &mut Command) -> &mut Command {
    cmd.stdin(Stdio::null())
}
