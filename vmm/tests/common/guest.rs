//! A client for the real guest agent: health and `process.Process/Start`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use wrenn_proto::auth::{AuthChannel, Bearer, with_bearer};
use wrenn_proto::process::process_client::ProcessClient;
use wrenn_proto::process::process_event::{Event, data_event::Output as Stream};
use wrenn_proto::process::{ProcessConfig, StartRequest};
use wrenn_vmm::SandboxHandle;

pub async fn channel(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
}

/// Polls the guest's gRPC health service until it reports SERVING.
pub async fn wait_healthy(addr: SocketAddr, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        match check(addr).await {
            Ok(()) => return Ok(start.elapsed()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Err(format!("not healthy after {timeout:?}: {last}"))
}

pub async fn check(addr: SocketAddr) -> Result<(), String> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let ch = channel(addr).await.map_err(|e| format!("connect: {e}"))?;
    let resp = HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|e| format!("check: {e}"))?;
    if resp.get_ref().status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        Err(format!("status {}", resp.get_ref().status))
    }
}

#[derive(Debug, Default, Clone)]
pub struct Output {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `sh -c script` in the sandbox (as root) and collects its output.
pub async fn sh(h: &SandboxHandle, script: &str) -> Output {
    run(h, "/bin/sh", &["-c", script], None).await
}

/// A process client for the sandbox's guest, presenting its token.
pub async fn process(h: &SandboxHandle) -> ProcessClient<AuthChannel> {
    let ch = channel(h.guest_addr).await.expect("connect to guest");
    ProcessClient::new(with_bearer(ch, Bearer::new(&h.guest_token).unwrap()))
}

/// Writes `bytes` to `path` in the sandbox (`filesystem.Filesystem/Write`).
pub async fn put(h: &SandboxHandle, path: &str, bytes: Vec<u8>, mode: u32) {
    use wrenn_proto::filesystem::WriteRequest;
    use wrenn_proto::filesystem::filesystem_client::FilesystemClient;
    use wrenn_proto::filesystem::write_request::{Event as W, StartEvent};
    let ch = channel(h.guest_addr).await.expect("connect to guest");
    let mut fs = FilesystemClient::new(with_bearer(ch, Bearer::new(&h.guest_token).unwrap()))
        .max_encoding_message_size(usize::MAX);
    let size = bytes.len() as u64;
    let mut msgs = vec![WriteRequest {
        event: Some(W::Start(StartEvent {
            path: path.into(),
            mode: Some(mode),
            owner: None,
            size: Some(size),
        })),
    }];
    msgs.extend(bytes.chunks(64 * 1024).map(|c| WriteRequest {
        event: Some(W::Data(c.to_vec())),
    }));
    fs.write(tokio_stream::iter(msgs)).await.expect("Write");
}

/// The static probe (`vmm/probe`): `WRENN_PROBE_BIN`, else the workspace's
/// musl build.
pub fn probe_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("WRENN_PROBE_BIN") {
        return p.into();
    }
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/x86_64-unknown-linux-musl");
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("wrenn-probe"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "wrenn-probe not found under {}: build it with `cargo build -p wrenn-probe --target x86_64-unknown-linux-musl` (scripts/setup does)",
                target.display()
            )
        })
}

/// Copies the probe into the sandbox at `/probe`.
pub async fn install_probe(h: &SandboxHandle) {
    let bytes = std::fs::read(probe_bin()).expect("read wrenn-probe");
    put(h, "/probe", bytes, 0o755).await;
}

/// Runs a command in the sandbox through `process.Process/Start`.
pub async fn run(h: &SandboxHandle, cmd: &str, args: &[&str], user: Option<&str>) -> Output {
    let mut client = process(h).await;
    let req = StartRequest {
        process: Some(ProcessConfig {
            cmd: cmd.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            envs: Default::default(),
            cwd: None,
        }),
        pty: None,
        tag: None,
        stdin: Some(false),
        user: user.map(str::to_owned),
    };
    let mut stream = client.start(req).await.expect("Start").into_inner();
    let mut out = Output::default();
    while let Some(msg) = stream.next().await {
        let msg = msg.expect("Start stream");
        match msg.event.and_then(|e| e.event) {
            Some(Event::Data(d)) => match d.output {
                Some(Stream::Stdout(b)) => out.stdout.push_str(&String::from_utf8_lossy(&b)),
                Some(Stream::Stderr(b)) => out.stderr.push_str(&String::from_utf8_lossy(&b)),
                _ => {}
            },
            Some(Event::End(e)) => {
                out.exit_code = e.exit_code;
                return out;
            }
            _ => {}
        }
    }
    out.exit_code = -1;
    out
}

/// A long-running process's output stream, read as numbers one per line.
pub struct Lines {
    stream: tonic::Streaming<wrenn_proto::process::StartResponse>,
    buf: String,
}

/// Starts `cmd` and keeps its output stream open.
pub async fn stream(h: &SandboxHandle, cmd: &str, args: &[&str]) -> Lines {
    let req = StartRequest {
        process: Some(ProcessConfig {
            cmd: cmd.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            envs: Default::default(),
            cwd: None,
        }),
        pty: None,
        tag: None,
        stdin: Some(false),
        user: None,
    };
    let stream = process(h)
        .await
        .start(req)
        .await
        .expect("Start")
        .into_inner();
    Lines {
        stream,
        buf: String::new(),
    }
}

impl Lines {
    /// The next line printed (10 s at most).
    pub async fn next_line(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self.buf.find('\n') {
                let line: String = self.buf.drain(..=i).collect();
                return line.trim_end().to_owned();
            }
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("no line within 10 s")
                .expect("the stream ended");
            if let Some(Event::Data(d)) = msg.expect("stream").event.and_then(|e| e.event)
                && let Some(Stream::Stdout(b)) = d.output
            {
                self.buf.push_str(&String::from_utf8_lossy(&b));
            }
        }
    }

    /// The next number printed, waiting as long as it takes (10 s at most).
    pub async fn next_number(&mut self) -> u64 {
        self.number_within(Duration::from_secs(10))
            .await
            .expect("no output within 10 s")
    }

    /// The next number printed within `wait`, if any.
    pub async fn number_within(&mut self, wait: Duration) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(i) = self.buf.find('\n') {
                let line: String = self.buf.drain(..=i).collect();
                return Some(line.trim().parse().expect("a number"));
            }
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??;
            if let Some(Event::Data(d)) = msg.expect("stream").event.and_then(|e| e.event)
                && let Some(Stream::Stdout(b)) = d.output
            {
                self.buf.push_str(&String::from_utf8_lossy(&b));
            }
        }
    }
}
