//! Requests, selectors, and reading process event streams.

use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use tonic::{Code, Status};
use wrenn_proto::process::process_event::{EndEvent, Event, data_event};
use wrenn_proto::process::{
    ConnectRequest, ProcessConfig, ProcessEvent, ProcessInput, ProcessSelector, Pty,
    SendInputRequest, StartRequest, process_input, process_selector, pty,
};

use super::agent::{Agent, PATIENCE};

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
