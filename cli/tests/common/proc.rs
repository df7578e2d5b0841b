//! Child processes of the tests: long-running ones ([`Proc`]: output
//! captured, SIGINT and wait, killed when dropped) and short ones ([`run`]:
//! exit code and output, killed on timeout).

use std::fmt;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A long-running child (`wrenn up`, `wrenn agent`, …) whose stdout and
/// stderr are collected, interleaved, in memory. Dropping it kills it.
pub struct Proc {
    pub name: String,
    child: Child,
    output: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdin empty and its output captured.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({:?}): {e}", cmd.get_program()));
        let output = Arc::new(Mutex::new(String::new()));
        super::pump(child.stdout.take().unwrap(), output.clone());
        super::pump(child.stderr.take().unwrap(), output.clone());
        Proc {
            name: name.to_owned(),
            child,
            output,
            status: None,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Its exit status if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits until its output contains `needle`. Panics with the output when
    /// it exits first or `timeout` passes (stopping it is the owner's job).
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        // Not `&mut self`: poll the exit through a pid probe instead.
        loop {
            if self.output().contains(needle) {
                return;
            }
            let exited = kill(self.pid(), None).is_err() || is_zombie(self.pid());
            if exited || Instant::now() > deadline {
                let why = if exited {
                    "exited".to_owned()
                } else {
                    format!("did not get there within {timeout:?}")
                };
                panic!(
                    "{} {why} before printing {needle:?}; its output:\n{}",
                    self.name,
                    super::tail(&self.output(), 200)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (unless it already exited).
    pub fn signal(&mut self, signal: Signal) {
        if self.try_status().is_none() {
            let _ = kill(self.pid(), signal);
        }
    }

    /// Waits for it to exit; after `timeout` kills it and says so.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let s = self.child.wait();
                self.status = s.as_ref().ok().copied();
                return Err(format!(
                    "{} did not exit within {timeout:?}; killed it",
                    self.name
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT, then [`wait`](Self::wait).
    pub fn interrupt_and_wait(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        self.signal(Signal::SIGINT);
        self.wait(timeout)
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) -> ExitStatus {
        self.signal(Signal::SIGKILL);
        match self.wait(Duration::from_secs(10)) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn is_zombie(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// What a short command did.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// The exit code, or 128 + the signal that ended it.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for CliOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to its end (stdin empty unless the caller set it) and returns
/// its exit code and output; kills it and panics after `timeout`.
pub fn run(mut cmd: Command, timeout: Duration) -> CliOutput {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for a child") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} ran over {timeout:?}; killed it\n--- stdout ---\n{}\n--- stderr ---\n{}",
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    CliOutput {
        code: exit_code(status),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// The exit code, or 128 + the signal number.
pub fn exit_code(s: ExitStatus) -> i32 {
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
}
