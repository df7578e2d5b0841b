//! `guest`: the guest agent alone, over loopback, no sandbox.
//!
//! - **exec round trip**: `Start` of `true` until its `end` event arrives — the
//!   gRPC call, fork/exec, exit, reaping and the end event. Target p50 ≤ 2 ms.
//! - **PTY keystroke echo**: one byte of input into a PTY running
//!   `stty raw -echo; exec cat` (the program echoes, as a shell does) until that
//!   byte comes back as output. Measured through `StreamInput` (one open input
//!   stream, as an interactive client holds) and through `SendInput` (one unary
//!   call per keystroke). Target p99 ≤ 1 ms.
//!
//! The agent binary is found as everywhere in wrenn: `WRENN_GUEST_BIN`, else
//! next to this executable, else the musl builds in `target/`. With
//! `WRENN_BENCH_GUEST_ADDR=<ip>:<port>` the scenario measures an agent that is
//! already running instead (inside a sandbox, say, or with debug logs).

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use wrenn_proto::process::process_client::ProcessClient;
use wrenn_proto::process::process_event::{Event, data_event};
use wrenn_proto::process::{
    ProcessConfig, ProcessInput, ProcessSelector, Pty, SendInputRequest, StartRequest,
    StreamInputRequest, process_input, process_selector, pty, stream_input_request,
};

use crate::Opts;
use crate::stats::Latencies;

const EXEC_TARGET_P50: Duration = Duration::from_millis(2);
const ECHO_TARGET_P99: Duration = Duration::from_millis(1);

pub async fn run(opts: &Opts) -> anyhow::Result<()> {
    let (warmup, iterations) = if opts.quick { (20, 200) } else { (200, 5000) };
    if let Ok(addr) = std::env::var("WRENN_BENCH_GUEST_ADDR") {
        println!("guest: running agent at {addr} (warm-up {warmup}, iterations {iterations})");
        return measure(&addr, warmup, iterations).await;
    }
    let bin = guest_bin()?;
    println!(
        "guest: {} (warm-up {warmup}, iterations {iterations})",
        bin.display()
    );
    let mut agent = Guest::start(&bin)?;
    let result = measure(&agent.addr, warmup, iterations).await;
    if result.is_err()
        && let Ok(Some(status)) = agent.child.try_wait()
    {
        return result.with_context(|| format!("wrenn-guest exited: {status}"));
    }
    result
}

async fn measure(addr: &str, warmup: usize, iterations: usize) -> anyhow::Result<()> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .context("connecting to wrenn-guest")?;
    let mut client = ProcessClient::new(channel);

    let mut exec = Latencies::new("exec round trip (true)", iterations);
    for i in 0..warmup + iterations {
        let elapsed = exec_true(&mut client).await?;
        if i >= warmup {
            exec.record(elapsed);
        }
    }
    exec.report(Some(EXEC_TARGET_P50), None);

    let mut echo = Echo::start(&mut client).await?;
    let mut streamed = Latencies::new("pty echo (StreamInput)", iterations);
    let mut unary = Latencies::new("pty echo (SendInput)", iterations);
    for i in 0..warmup + iterations {
        let key = b'a' + (i % 26) as u8;
        let elapsed = echo.via_stream(key).await?;
        if i >= warmup {
            streamed.record(elapsed);
        }
        let elapsed = echo.via_send_input(&mut client, key).await?;
        if i >= warmup {
            unary.record(elapsed);
        }
    }
    streamed.report(None, Some(ECHO_TARGET_P99));
    unary.report(None, Some(ECHO_TARGET_P99));
    Ok(())
}

/// Reads the stream to its very end (the trailers), as every client of the guest
/// must: dropping it right after `end` makes the client's h2 reset the stream,
/// and with more than 50 such resets a second h2 counts the late trailers toward
/// a lifetime limit of 1024, then closes the whole connection with
/// `GOAWAY(ENHANCE_YOUR_CALM, "too_many_internal_resets")`. The time measured
/// is until `end` arrives.
async fn exec_true(client: &mut ProcessClient<Channel>) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let request = StartRequest {
        process: Some(ProcessConfig {
            cmd: "true".into(),
            ..Default::default()
        }),
        stdin: Some(false),
        ..Default::default()
    };
    let mut stream = client.start(request).await?.into_inner();
    let mut ended = None;
    while let Some(message) = stream.next().await {
        if let Some(Event::End(end)) = message?.event.and_then(|e| e.event) {
            if end.exit_code != 0 {
                bail!("`true` exited with {}", end.status);
            }
            ended = Some(started.elapsed());
        }
    }
    ended.context("the exec stream ended without an end event")
}

/// A PTY running `cat` in raw mode, with an open input stream.
struct Echo {
    pid: u32,
    input: mpsc::Sender<StreamInputRequest>,
    output: tonic::Streaming<wrenn_proto::process::StartResponse>,
}

impl Echo {
    async fn start(client: &mut ProcessClient<Channel>) -> anyhow::Result<Self> {
        let request = StartRequest {
            process: Some(ProcessConfig {
                cmd: "/bin/sh".into(),
                args: vec!["-c".into(), "stty raw -echo; echo ready; exec cat".into()],
                ..Default::default()
            }),
            pty: Some(Pty {
                size: Some(pty::Size { cols: 80, rows: 24 }),
            }),
            ..Default::default()
        };
        let mut output = client.start(request).await?.into_inner();
        let pid = match output
            .next()
            .await
            .transpose()?
            .and_then(|m| m.event)
            .and_then(|e| e.event)
        {
            Some(Event::Start(start)) => start.pid,
            other => bail!("expected a start event, got {other:?}"),
        };
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("ready") {
            seen.extend(next_pty(&mut output).await?);
        }
        let (input, rx) = mpsc::channel(16);
        let selector = Some(ProcessSelector {
            selector: Some(process_selector::Selector::Pid(pid)),
        });
        input
            .send(StreamInputRequest {
                event: Some(stream_input_request::Event::Start(
                    stream_input_request::StartEvent { process: selector },
                )),
            })
            .await?;
        let mut stream_client = client.clone();
        tokio::spawn(async move { stream_client.stream_input(ReceiverStream::new(rx)).await });
        Ok(Self { pid, input, output })
    }

    async fn via_stream(&mut self, key: u8) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let data = stream_input_request::DataEvent {
            input: Some(pty_input(key)),
        };
        self.input
            .send(StreamInputRequest {
                event: Some(stream_input_request::Event::Data(data)),
            })
            .await
            .context("the input stream closed")?;
        self.await_echo(key).await?;
        Ok(started.elapsed())
    }

    async fn via_send_input(
        &mut self,
        client: &mut ProcessClient<Channel>,
        key: u8,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let selector = Some(ProcessSelector {
            selector: Some(process_selector::Selector::Pid(self.pid)),
        });
        client
            .send_input(SendInputRequest {
                process: selector,
                input: Some(pty_input(key)),
            })
            .await?;
        self.await_echo(key).await?;
        Ok(started.elapsed())
    }

    async fn await_echo(&mut self, key: u8) -> anyhow::Result<()> {
        loop {
            let data = next_pty(&mut self.output).await?;
            if data.contains(&key) {
                return Ok(());
            }
        }
    }
}

fn pty_input(key: u8) -> ProcessInput {
    ProcessInput {
        input: Some(process_input::Input::Pty(vec![key])),
    }
}

async fn next_pty(
    output: &mut tonic::Streaming<wrenn_proto::process::StartResponse>,
) -> anyhow::Result<Vec<u8>> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), output.next())
            .await
            .context("no PTY output within 10 s")?
            .context("the PTY stream ended")??;
        match message.event.and_then(|e| e.event) {
            Some(Event::Data(data)) => {
                if let Some(data_event::Output::Pty(bytes)) = data.output {
                    return Ok(bytes);
                }
            }
            Some(Event::End(end)) => bail!("the PTY process ended: {}", end.status),
            _ => {}
        }
    }
}

/// `WRENN_GUEST_BIN`, next to this executable, or the musl builds in `target/`.
fn guest_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("WRENN_GUEST_BIN") {
        return Ok(bin.into());
    }
    let exe = std::env::current_exe().context("locating wrenn-bench")?;
    let beside = exe.with_file_name("wrenn-guest");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let musl = |profile: &str| {
        workspace
            .join("target/x86_64-unknown-linux-musl")
            .join(profile)
            .join("wrenn-guest")
    };
    [beside, musl("release"), musl("debug")].into_iter().find(|p| p.is_file()).context(
        "wrenn-guest not found: build it with `cargo build -p wrenn-guest --target x86_64-unknown-linux-musl` \
         or set WRENN_GUEST_BIN",
    )
}

/// The agent as a child process, stopped with SIGTERM on drop.
struct Guest {
    child: Child,
    addr: String,
}

impl Guest {
    fn start(bin: &Path) -> anyhow::Result<Self> {
        // runs: -; the guest agent built here
        let mut child = Command::new(bin)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--print-addr",
                "--log-level",
                "warn",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("no stdout")?;
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the guest's address")?;
        let addr = line.trim().to_owned();
        if addr.is_empty() {
            bail!("wrenn-guest exited without printing its address");
        }
        Ok(Self { child, addr })
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        let _ = self.child.wait();
    }
}
