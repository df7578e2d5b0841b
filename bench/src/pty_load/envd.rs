//! One PTY session the way E2B's SDKs drive one (`sandbox.pty.create`,
//! `send_stdin`): Connect JSON over HTTP/1.1 through wrenn's proxy to the
//! guest's envd port (49983), routed by the `E2b-Sandbox-Id` and
//! `E2b-Sandbox-Port` headers as with `E2B_SANDBOX_URL` — `Start` with a
//! PTY as a server stream on one connection, each keystroke a unary
//! `SendInput` on a keep-alive connection of its own.
//!
//! The HTTP/1.1 is written here by hand (request lines, chunked response
//! bodies, Connect envelopes): the bench measures the wire, not a client
//! library.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;

const ENVD_PORT: u16 = 49983;
const READY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct EnvdPty {
    proxy: SocketAddr,
    id: String,
    token: String,
    pid: u64,
    input: BufReader<TcpStream>,
    output: mpsc::Receiver<Vec<u8>>,
    reader: tokio::task::JoinHandle<()>,
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn unb64(s: &str) -> anyhow::Result<Vec<u8>> {
    Ok(base64::engine::general_purpose::STANDARD.decode(s)?)
}

impl EnvdPty {
    fn head(&self, procedure: &str, content_type: &str, len: usize) -> String {
        format!(
            "POST /{procedure} HTTP/1.1\r\nhost: {}\r\ncontent-type: {content_type}\r\n\
             connect-protocol-version: 1\r\ne2b-sandbox-id: {}\r\ne2b-sandbox-port: {ENVD_PORT}\r\n\
             x-access-token: {}\r\ncontent-length: {len}\r\n\r\n",
            self.proxy, self.id, self.token
        )
    }

    /// Starts `cat` on a PTY in raw mode, as `pty.create` would a shell, and
    /// waits until it is ready.
    pub async fn start(proxy: SocketAddr, id: &str, token: &str) -> anyhow::Result<Self> {
        let body = json!({
            "process": {"cmd": "/bin/sh", "args": ["-c", "stty raw -echo; echo ready; exec cat"],
                        "envs": {"TERM": "xterm-256color"}},
            "pty": {"size": {"cols": 80, "rows": 24}},
        })
        .to_string();
        let mut envelope = vec![0u8];
        envelope.extend_from_slice(&(body.len() as u32).to_be_bytes());
        envelope.extend_from_slice(body.as_bytes());
        let input = BufReader::new(TcpStream::connect(proxy).await?);
        input.get_ref().set_nodelay(true)?;
        let (tx, output) = mpsc::channel(256);
        let mut p = EnvdPty {
            proxy,
            id: id.to_owned(),
            token: token.to_owned(),
            pid: 0,
            input,
            output,
            reader: tokio::spawn(async {}),
        };
        let stream = TcpStream::connect(proxy).await?;
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        write
            .write_all(
                p.head(
                    "process.Process/Start",
                    "application/connect+json",
                    envelope.len(),
                )
                .as_bytes(),
            )
            .await?;
        write.write_all(&envelope).await?;
        let (pid_tx, pid_rx) = tokio::sync::oneshot::channel();
        p.reader = tokio::spawn(async move {
            let _keep_open = write;
            if let Err(e) = read_stream(read, pid_tx, tx).await {
                eprintln!("  envd PTY stream: {e:#}");
            }
        });
        p.pid = tokio::time::timeout(READY_TIMEOUT, pid_rx)
            .await
            .context("no start event within 10 s")?
            .context("the Start stream ended before its start event")?;
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("ready") {
            let chunk = tokio::time::timeout(READY_TIMEOUT, p.output.recv())
                .await
                .context("no PTY output within 10 s")?
                .context("the PTY stream ended")?;
            seen.extend(chunk);
        }
        Ok(p)
    }

    /// One `SendInput` on the keep-alive input connection.
    async fn send(&mut self, data: &[u8]) -> anyhow::Result<()> {
        let body = json!({"process": {"pid": self.pid}, "input": {"pty": b64(data)}}).to_string();
        let head = self.head("process.Process/SendInput", "application/json", body.len());
        let s = self.input.get_mut();
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await?;
        let (status, len) = read_head(&mut self.input).await?;
        let mut rest = vec![0; len];
        self.input.read_exact(&mut rest).await?;
        if status != 200 {
            bail!(
                "SendInput answered {status}: {}",
                String::from_utf8_lossy(&rest)
            );
        }
        Ok(())
    }

    /// Types `key` and waits until it comes back, for at most `limit`
    /// (`None`: it did not come back in time).
    pub async fn echo(&mut self, key: u8, limit: Duration) -> anyhow::Result<Option<Duration>> {
        let t = Instant::now();
        self.send(&[key]).await?;
        let wait = async {
            loop {
                let chunk = self.output.recv().await.context("the PTY stream ended")?;
                if chunk.contains(&key) {
                    return anyhow::Ok(t.elapsed());
                }
            }
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Kills the process (`SendSignal`, as the SDK's `kill`) and drops the
    /// connections.
    pub async fn close(mut self) {
        let body = json!({"process": {"pid": self.pid}, "signal": "SIGNAL_SIGKILL"}).to_string();
        let head = self.head("process.Process/SendSignal", "application/json", body.len());
        let kill = async {
            let s = self.input.get_mut();
            s.write_all(head.as_bytes()).await?;
            s.write_all(body.as_bytes()).await?;
            read_head(&mut self.input).await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), kill).await;
        self.reader.abort();
    }
}

/// Status and content length of a response on a keep-alive connection.
async fn read_head(r: &mut BufReader<TcpStream>) -> anyhow::Result<(u16, usize)> {
    let mut status = 0;
    let mut len = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            bail!("the connection closed mid-response");
        }
        let l = line.trim_end();
        if l.is_empty() {
            return Ok((status, len));
        }
        if status == 0 {
            status = l.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
        } else if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
}

/// Reads the Start stream: chunked body → envelopes → PTY bytes.
async fn read_stream(
    read: OwnedReadHalf,
    pid: tokio::sync::oneshot::Sender<u64>,
    out: mpsc::Sender<Vec<u8>>,
) -> anyhow::Result<()> {
    let mut r = BufReader::new(read);
    let mut line = String::new();
    // Status line and headers.
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            bail!("no response");
        }
        if line.starts_with("HTTP/") && !line.contains(" 200") {
            bail!("Start answered {}", line.trim());
        }
        if line.trim_end().is_empty() {
            break;
        }
    }
    let mut pid = Some(pid);
    let mut buf: Vec<u8> = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let size = usize::from_str_radix(line.trim(), 16).context("a chunk size")?;
        if size == 0 {
            return Ok(());
        }
        let mut chunk = vec![0; size + 2];
        r.read_exact(&mut chunk).await?;
        buf.extend_from_slice(&chunk[..size]);
        while buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() < 5 + len {
                break;
            }
            let flags = buf[0];
            let msg: Value = serde_json::from_slice(&buf[5..5 + len])?;
            buf.drain(..5 + len);
            if flags & 2 != 0 {
                return Ok(());
            }
            let event = &msg["event"];
            if let Some(p) = event["start"]["pid"].as_u64()
                && let Some(tx) = pid.take()
            {
                let _ = tx.send(p);
            }
            if let Some(data) = event["data"]["pty"].as_str()
                && out.send(unb64(data)?).await.is_err()
            {
                return Ok(());
            }
        }
    }
}
