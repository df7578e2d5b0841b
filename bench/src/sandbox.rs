//! Sandboxes through the control plane, and the bench upstream inside one.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use wrenn_proto::filesystem::write_request::StartEvent as FileStart;
use wrenn_proto::process::{ProcessConfig, StartRequest};
use wrenn_proto::wrenn::v1::{
    CreateSandboxRequest, ExecRequest, ExecResponse, Sandbox, SandboxRef, SandboxSpec,
    StartBackgroundRequest, WriteFileRequest, WriteFileStart, write_file_request,
};

use crate::platform::Client;

/// The port the upstream listens on inside its sandbox.
pub const UPSTREAM_PORT: u16 = 8080;
const UPSTREAM_PATH: &str = "/usr/local/bin/wrenn-bench-upstream";

/// The spec of a bench sandbox: `vcpus` cores, no internet, a long timeout.
pub fn spec(vcpus: u32) -> SandboxSpec {
    SandboxSpec {
        vcpus,
        internet: Some(false),
        timeout_secs: 3600,
        ..Default::default()
    }
}

/// Creates a sandbox; returns once it is running (the agent waits for the guest).
pub async fn create(client: &mut Client, spec: SandboxSpec) -> anyhow::Result<Sandbox> {
    let sb = client
        .create(CreateSandboxRequest {
            sandbox_id: String::new(),
            spec: Some(spec),
        })
        .await
        .context("creating a sandbox")?
        .into_inner();
    Ok(sb)
}

pub async fn destroy(client: &mut Client, id: &str) -> anyhow::Result<()> {
    client
        .destroy(SandboxRef {
            sandbox_id: id.to_owned(),
        })
        .await
        .with_context(|| format!("destroying sandbox {id}"))?;
    Ok(())
}

/// The sandbox's host-reachable address.
pub fn address(sb: &Sandbox) -> anyhow::Result<IpAddr> {
    sb.address
        .parse()
        .with_context(|| format!("sandbox {} has no usable address {:?}", sb.id, sb.address))
}

/// Copies a local file into the sandbox with the files API.
pub async fn upload(
    client: &mut Client,
    id: &str,
    local: &Path,
    path: &str,
    mode: u32,
) -> anyhow::Result<()> {
    let data = std::fs::read(local).with_context(|| format!("reading {}", local.display()))?;
    let (tx, rx) = mpsc::channel(8);
    let start = WriteFileRequest {
        event: Some(write_file_request::Event::Start(WriteFileStart {
            sandbox_id: id.to_owned(),
            file: Some(FileStart {
                path: path.to_owned(),
                mode: Some(mode),
                owner: None,
                size: Some(data.len() as u64),
            }),
        })),
    };
    let pump = async move {
        tx.send(start).await.ok()?;
        for chunk in data.chunks(256 << 10) {
            let ev = write_file_request::Event::Data(chunk.to_vec());
            tx.send(WriteFileRequest { event: Some(ev) }).await.ok()?;
        }
        Some(())
    };
    let (rpc, _) = tokio::join!(client.write_file(ReceiverStream::new(rx)), pump);
    rpc.with_context(|| format!("uploading {} to {id}:{path}", local.display()))?;
    Ok(())
}

/// Runs `sh -c script` in the sandbox and fails unless it exits 0.
pub async fn sh(client: &mut Client, id: &str, script: &str) -> anyhow::Result<ExecResponse> {
    run(client, id, "/bin/sh", &["-c", script]).await
}

/// Runs `cmd args…` in the sandbox (unary `Exec`) and fails unless it exits 0.
pub async fn run(
    client: &mut Client,
    id: &str,
    cmd: &str,
    args: &[&str],
) -> anyhow::Result<ExecResponse> {
    let script = [cmd]
        .iter()
        .chain(args)
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    let r = client
        .exec(ExecRequest {
            sandbox_id: id.to_owned(),
            start: Some(StartRequest {
                process: Some(ProcessConfig {
                    cmd: cmd.into(),
                    args: args.iter().map(|a| (*a).to_owned()).collect(),
                    ..Default::default()
                }),
                stdin: Some(false),
                ..Default::default()
            }),
            output_limit: 0,
            timeout_secs: 60,
        })
        .await
        .with_context(|| format!("exec in {id}: {script}"))?
        .into_inner();
    if r.exit_code != 0 {
        bail!(
            "`{script}` in {id}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.stderr)
        );
    }
    Ok(r)
}

/// Starts a background process in the sandbox; returns its pid.
pub async fn start_background(
    client: &mut Client,
    id: &str,
    cmd: &str,
    args: &[&str],
) -> anyhow::Result<u32> {
    let r = client
        .start_background(StartBackgroundRequest {
            sandbox_id: id.to_owned(),
            start: Some(StartRequest {
                process: Some(ProcessConfig {
                    cmd: cmd.to_owned(),
                    args: args.iter().map(|a| (*a).to_owned()).collect(),
                    ..Default::default()
                }),
                stdin: Some(false),
                ..Default::default()
            }),
        })
        .await
        .with_context(|| format!("starting {cmd} in {id}"))?;
    Ok(r.into_inner().pid)
}

/// Uploads the bench upstream into the sandbox, starts it on
/// [`UPSTREAM_PORT`] with `threads` threads, and waits until it answers.
pub async fn deploy_upstream(
    client: &mut Client,
    sb: &Sandbox,
    bin: &Path,
    threads: u32,
) -> anyhow::Result<SocketAddr> {
    upload(client, &sb.id, bin, UPSTREAM_PATH, 0o755).await?;
    let listen = format!("0.0.0.0:{UPSTREAM_PORT}");
    let threads = threads.to_string();
    let pid = start_background(
        client,
        &sb.id,
        UPSTREAM_PATH,
        &["--listen", &listen, "--threads", &threads],
    )
    .await?;
    let addr = SocketAddr::new(address(sb)?, UPSTREAM_PORT);
    wait_http(addr, "/healthz", Duration::from_secs(10)).await?;
    // The upstream raises its own limit; a low hard limit would cap the
    // connection counts the scenarios use.
    let limits = sh(
        client,
        &sb.id,
        &format!("grep 'Max open files' /proc/{pid}/limits"),
    )
    .await?;
    let files: Option<u64> = String::from_utf8_lossy(&limits.stdout)
        .split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok());
    if files.is_some_and(|f| f < 8192) {
        bail!("the upstream in the sandbox may open only {files:?} files; the scenarios need 8192");
    }
    Ok(addr)
}

/// Waits until `GET path` on `addr` answers 200.
pub async fn wait_http(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match get_status(addr, path).await {
            Ok(200) => return Ok(()),
            Ok(s) if Instant::now() > deadline => bail!("{addr}{path} answers {s}"),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("{addr}{path} did not answer")));
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn get_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| {
            format!(
                "not an HTTP response: {:?}",
                text.chars().take(80).collect::<String>()
            )
        })
}
