//! Harness: the agent as a child process, clients, and stream helpers.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt as _};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use wrenn_proto::filesystem::filesystem_client::FilesystemClient;
use wrenn_proto::process::process_client::ProcessClient;
use wrenn_proto::process::process_event::{EndEvent, Event, data_event};
use wrenn_proto::process::{
    ConnectRequest, ProcessConfig, ProcessEvent, ProcessInput, ProcessSelector, Pty,
    SendInputRequest, StartRequest, process_input, process_selector, pty,
};

/// Upper bound for anything a test waits for; only reached when broken.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The agent binary built for this test run (glibc, dynamically linked).
pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wrenn-guest"))
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root (CI runs them as root)"
    );
}

/// A running agent; stopped with SIGTERM (then SIGKILL) on drop.
pub struct Agent {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub channel: Channel,
}

/// How to start an agent.
pub struct AgentBuilder {
    command: Command,
}

impl AgentBuilder {
    pub fn arg(mut self, arg: &str) -> Self {
        self.command.arg(arg);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    pub async fn start(mut self) -> Agent {
        require_root();
        let mut child = self
            .command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting wrenn-guest");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(PATIENCE)
            .expect("wrenn-guest did not print its address");
        let addr: SocketAddr = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad address line {line:?}"));
        let channel = connect(addr).await;
        Agent {
            child: Some(child),
            addr,
            channel,
        }
    }
}

pub async fn connect(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connecting to wrenn-guest")
}

impl Agent {
    /// `wrenn-guest --listen 127.0.0.1:0 --print-addr --log-level warn`.
    pub fn builder() -> AgentBuilder {
        Self::builder_for(&agent_bin(), &[])
    }

    /// Runs `prefix... <bin> <flags>` (e.g. through `unshare` and `chroot`).
    pub fn builder_for(bin: &Path, prefix: &[&str]) -> AgentBuilder {
        let mut command = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        // WRENN_TEST_GUEST_LOG=debug shows the agent's logs while debugging a test.
        let level = std::env::var("WRENN_TEST_GUEST_LOG").unwrap_or_else(|_| "warn".into());
        command.args([
            "--listen",
            "127.0.0.1:0",
            "--print-addr",
            "--log-level",
            &level,
        ]);
        AgentBuilder { command }
    }

    pub async fn start() -> Agent {
        Self::builder().start().await
    }

    pub fn process(&self) -> ProcessClient<Channel> {
        ProcessClient::new(self.channel.clone())
    }

    pub fn fs(&self) -> FilesystemClient<Channel> {
        FilesystemClient::new(self.channel.clone())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The agent still answers health checks and runs commands.
    pub async fn assert_serving(&self) {
        let mut health = HealthClient::new(self.channel.clone());
        for service in ["", "process.Process", "filesystem.Filesystem"] {
            let reply = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap_or_else(|e| panic!("health of {service:?}: {e}"));
            assert_eq!(
                reply.into_inner().status(),
                ServingStatus::Serving,
                "service {service:?}"
            );
        }
        let out = run(self, sh("echo alive")).await;
        assert_eq!(out.stdout, b"alive\n");
    }

    /// Waits for an exit that something else caused.
    pub fn terminate_wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("agent already stopped");
        wait_child(&mut child, PATIENCE).expect("wrenn-guest did not exit")
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("agent already stopped");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        wait_child(&mut child, PATIENCE).expect("wrenn-guest did not exit after SIGTERM")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            if wait_child(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `condition` every 10 ms until true; panics with `what` after [`PATIENCE`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn cmd(program: &str, args: &[&str]) -> StartRequest {
    StartRequest {
        process: Some(ProcessConfig {
            cmd: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn sh(script: &str) -> StartRequest {
    cmd("/bin/sh", &["-c", script])
}

pub fn with_pty(mut req: StartRequest, cols: u32, rows: u32) -> StartRequest {
    req.pty = Some(Pty {
        size: Some(pty::Size { cols, rows }),
    });
    req
}

pub fn by_pid(pid: u32) -> Option<ProcessSelector> {
    Some(ProcessSelector {
        selector: Some(process_selector::Selector::Pid(pid)),
    })
}

pub fn by_tag(tag: &str) -> Option<ProcessSelector> {
    Some(ProcessSelector {
        selector: Some(process_selector::Selector::Tag(tag.into())),
    })
}

pub fn pty_input(pid: u32, data: &[u8]) -> SendInputRequest {
    SendInputRequest {
        process: by_pid(pid),
        input: Some(ProcessInput {
            input: Some(process_input::Input::Pty(data.to_vec())),
        }),
    }
}

pub fn stdin_input(pid: u32, data: &[u8]) -> SendInputRequest {
    SendInputRequest {
        process: by_pid(pid),
        input: Some(ProcessInput {
            input: Some(process_input::Input::Stdin(data.to_vec())),
        }),
    }
}

/// Process events of a `Start` or `Connect` stream.
pub type Events = Pin<Box<dyn Stream<Item = Result<ProcessEvent, Status>> + Send>>;

pub async fn start(agent: &Agent, req: StartRequest) -> Events {
    let stream = agent
        .process()
        .start(req)
        .await
        .expect("Start")
        .into_inner();
    Box::pin(stream.map(|r| r.map(|m| m.event.expect("event missing"))))
}

pub async fn start_err(agent: &Agent, req: StartRequest) -> Status {
    match agent.process().start(req).await {
        Ok(_) => panic!("Start succeeded but should have failed"),
        Err(status) => status,
    }
}

pub async fn attach(agent: &Agent, selector: Option<ProcessSelector>) -> Events {
    let req = ConnectRequest { process: selector };
    let stream = agent
        .process()
        .connect(req)
        .await
        .expect("Connect")
        .into_inner();
    Box::pin(stream.map(|r| r.map(|m| m.event.expect("event missing"))))
}

/// Next event, failing the test after [`PATIENCE`].
pub async fn next(events: &mut Events) -> Option<Event> {
    let item = tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("no event in time");
    item.map(|r| r.expect("stream error").event.expect("event body missing"))
}

/// Everything a stream delivered.
#[derive(Debug, Default)]
pub struct Collected {
    pub pid: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub pty: Vec<u8>,
    pub keepalives: usize,
    pub end: Option<EndEvent>,
}

impl Collected {
    pub fn end(&self) -> &EndEvent {
        self.end
            .as_ref()
            .expect("stream ended without an end event")
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn pty_str(&self) -> String {
        String::from_utf8_lossy(&self.pty).into_owned()
    }

    /// Adds one event; checks the order start → data → end.
    pub fn add(&mut self, event: Event) {
        assert!(self.end.is_none(), "event after end: {event:?}");
        match event {
            Event::Start(start) => {
                assert_eq!(self.pid, 0, "second start event");
                self.pid = start.pid;
            }
            Event::Data(data) => {
                assert_ne!(self.pid, 0, "data before start");
                match data.output.expect("empty data event") {
                    data_event::Output::Stdout(b) => self.stdout.extend(b),
                    data_event::Output::Stderr(b) => self.stderr.extend(b),
                    data_event::Output::Pty(b) => self.pty.extend(b),
                }
            }
            Event::End(end) => self.end = Some(end),
            Event::Keepalive(_) => self.keepalives += 1,
        }
    }
}

/// Reads a stream to its end.
pub async fn collect(events: Events) -> Collected {
    drain(events, Collected::default()).await
}

/// Reads the rest of a stream whose start event was already consumed.
pub async fn collect_rest(events: Events, pid: u32) -> Collected {
    drain(
        events,
        Collected {
            pid,
            ..Default::default()
        },
    )
    .await
}

async fn drain(mut events: Events, mut out: Collected) -> Collected {
    while let Some(event) = next(&mut events).await {
        out.add(event);
    }
    out
}

/// Starts `req` and reads its stream until stdout contains `ready`: for scripts
/// that must have set up (a `trap`, say) before the test acts. Returns the pid.
pub async fn start_ready(agent: &Agent, req: StartRequest) -> (u32, Events) {
    let mut events = start(agent, req).await;
    let mut out = Collected::default();
    while !out.stdout_str().contains("ready") {
        out.add(
            next(&mut events)
                .await
                .expect("stream ended before `ready`"),
        );
    }
    (out.pid, events)
}

pub async fn run(agent: &Agent, req: StartRequest) -> Collected {
    collect(start(agent, req).await).await
}

/// An interactive PTY stream that accumulates output.
pub struct Session {
    pub events: Events,
    pub out: Collected,
}

impl Session {
    pub async fn start(agent: &Agent, req: StartRequest) -> Session {
        let mut events = start(agent, req).await;
        let mut out = Collected::default();
        out.add(next(&mut events).await.expect("stream ended before start"));
        Session { events, out }
    }

    pub fn pid(&self) -> u32 {
        self.out.pid
    }

    /// Next event; on timeout the panic shows the output so far.
    async fn step(&mut self) -> Option<Event> {
        match tokio::time::timeout(PATIENCE, self.events.next()).await {
            Ok(item) => item.map(|r| r.expect("stream error").event.expect("event body missing")),
            Err(_) => panic!(
                "no event in time; PTY output so far: {:?}",
                self.out.pty_str()
            ),
        }
    }

    /// Reads until the PTY output from `from` on contains `needle`; returns the
    /// offset just past it.
    pub async fn expect(&mut self, from: usize, needle: &str) -> usize {
        loop {
            if let Some(at) = find(
                &self.out.pty[from.min(self.out.pty.len())..],
                needle.as_bytes(),
            ) {
                return from + at + needle.len();
            }
            match self.step().await {
                Some(event) => self.out.add(event),
                None => panic!(
                    "stream ended before {needle:?}; output: {:?}",
                    self.out.pty_str()
                ),
            }
        }
    }

    /// Reads to the end of the stream.
    pub async fn finish(mut self) -> Collected {
        while let Some(event) = self.step().await {
            self.out.add(event);
        }
        self.out
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn assert_code(status: &Status, code: Code, needle: &str) {
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    assert!(
        status.message().contains(needle),
        "message {:?} does not mention {needle:?}",
        status.message()
    );
}

/// A user (and an extra group it belongs to) created with `useradd`; removed on
/// drop, home included.
pub struct TestUser {
    pub name: String,
    pub group: String,
    pub home: PathBuf,
}

impl TestUser {
    pub fn create(tag: &str) -> TestUser {
        require_root();
        let suffix = format!("{}{}", std::process::id() % 100_000, tag);
        let name = format!("wtg{suffix}");
        let group = format!("wtgx{suffix}");
        let home = PathBuf::from(format!("/home/{name}"));
        // Concurrent tests may hold the passwd lock for a moment: retry.
        let status = |c: &mut Command| {
            (0..50).any(|_| {
                let ok = c.status().expect("running useradd/groupadd").success();
                if !ok {
                    std::thread::sleep(Duration::from_millis(100));
                }
                ok
            })
        };
        assert!(
            status(Command::new("groupadd").arg(&group)),
            "groupadd {group}"
        );
        let user = TestUser { name, group, home };
        assert!(
            status(Command::new("useradd").args([
                "-m",
                "-s",
                "/bin/sh",
                "-G",
                &user.group,
                &user.name
            ])),
            "useradd {}",
            user.name
        );
        user
    }

    pub fn uid(&self) -> u32 {
        id_of(&["-u", &self.name])
    }

    pub fn gid(&self) -> u32 {
        id_of(&["-g", &self.name])
    }
}

fn id_of(args: &[&str]) -> u32 {
    let out = Command::new("id").args(args).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel")
            .args(["-r", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("groupdel").arg(&self.group).status();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// True while `/proc/<pid>` exists (running or zombie).
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}
