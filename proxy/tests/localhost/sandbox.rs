//! Sandboxes and the processes the tests run in them (through the host
//! agent's gRPC API), and a plain HTTP client for the proxy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use wrenn_proto::process::process_event::{Event, data_event::Output};
use wrenn_proto::process::{ProcessConfig, ProcessSelector, StartRequest, process_selector};
use wrenn_proto::wrenn::v1::{
    CreateSandboxRequest, ExecRequest, KillProcessRequest, Sandbox, SandboxSpec,
};

use crate::env::Client;

/// A running sandbox of the base template; `forward` turns the guest's
/// localhost forwarder on (as for a Firecracker sandbox).
pub async fn create(client: &mut Client, id: &str, forward: bool) -> Sandbox {
    let mut env = HashMap::new();
    if forward {
        env.insert("WRENN_GUEST_FORWARD_LOCALHOST".into(), "1".into());
    }
    client
        .create_sandbox(CreateSandboxRequest {
            sandbox_id: id.into(),
            spec: Some(SandboxSpec {
                internet: Some(false),
                timeout_secs: 600,
                env,
                ..Default::default()
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("creating {id}: {e:?}"))
        .into_inner()
}

/// A process started through `ExecStream`; its stdout lines arrive on `lines`.
pub struct Process {
    pub pid: u32,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Process {
    /// Starts `cmd args…` (`PYTHONUNBUFFERED=1`) in sandbox `id`.
    pub async fn start(client: &mut Client, id: &str, cmd: &str, args: &[&str]) -> Process {
        let req = ExecRequest {
            sandbox_id: id.into(),
            start: Some(StartRequest {
                process: Some(ProcessConfig {
                    cmd: cmd.into(),
                    args: args.iter().map(|a| a.to_string()).collect(),
                    envs: [("PYTHONUNBUFFERED".to_string(), "1".to_string())].into(),
                    cwd: None,
                }),
                stdin: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut events = client
            .exec_stream(req)
            .await
            .unwrap_or_else(|e| panic!("starting {cmd}: {e:?}"))
            .into_inner();
        let pid = match events.next().await {
            Some(Ok(e)) => match e.event {
                Some(Event::Start(s)) => s.pid,
                other => panic!("{cmd}: first event {other:?}"),
            },
            other => panic!("{cmd}: no start event: {other:?}"),
        };
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut pending = String::new();
            while let Some(Ok(e)) = events.next().await {
                let Some(Event::Data(d)) = e.event else {
                    continue;
                };
                let bytes = match d.output {
                    Some(Output::Stdout(b)) | Some(Output::Stderr(b)) => b,
                    _ => continue,
                };
                pending.push_str(&String::from_utf8_lossy(&bytes));
                while let Some(i) = pending.find('\n') {
                    let line: String = pending.drain(..=i).collect();
                    let _ = tx.send(line.trim_end().to_owned());
                }
            }
        });
        Process { pid, lines }
    }

    /// Waits for an output line containing `needle`; returns when it came.
    pub async fn wait_line(&mut self, needle: &str) -> Instant {
        let deadline = Duration::from_secs(20);
        let found = tokio::time::timeout(deadline, async {
            while let Some(line) = self.lines.recv().await {
                if line.contains(needle) {
                    return Some(Instant::now());
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(at)) => at,
            Ok(None) => panic!("pid {}: output ended before {needle:?}", self.pid),
            Err(_) => panic!("pid {}: no {needle:?} within {deadline:?}", self.pid),
        }
    }

    /// SIGKILL (the default signal).
    pub async fn kill(&self, client: &mut Client, id: &str) {
        client
            .kill_process(KillProcessRequest {
                sandbox_id: id.into(),
                process: Some(ProcessSelector {
                    selector: Some(process_selector::Selector::Pid(self.pid)),
                }),
                signal: wrenn_proto::process::Signal::Sigkill as i32,
            })
            .await
            .unwrap_or_else(|e| panic!("killing {}: {e:?}", self.pid));
    }
}

/// Runs `sh -c script` to completion; panics unless it exits 0.
pub async fn sh(client: &mut Client, id: &str, script: &str) {
    let r = client
        .exec(ExecRequest {
            sandbox_id: id.into(),
            start: Some(StartRequest {
                process: Some(ProcessConfig {
                    cmd: "sh".into(),
                    args: vec!["-c".into(), script.into()],
                    ..Default::default()
                }),
                stdin: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.exit_code,
        0,
        "{script}: {}",
        String::from_utf8_lossy(&r.stderr)
    );
}

/// A response through the proxy.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: String,
}

/// `GET target` with `Host: host`, on a fresh connection that closes.
pub async fn get(proxy: SocketAddr, host: &str, target: &str) -> Resp {
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("a response within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Resp { status, body }
}

/// The two URL forms of port `port` of sandbox `id` behind `proxy`: (Host, target).
pub fn forms(proxy: SocketAddr, id: &str, port: u16) -> [(String, String); 2] {
    let p = proxy.port();
    [
        (format!("localhost:{p}"), format!("/proxy/{id}/{port}/")),
        (format!("{port}-{id}.localhost:{p}"), "/".to_owned()),
    ]
}

/// A minimal WebSocket echo server on `127.0.0.1:<argv[1]>` (stdlib only).
pub const WS_ECHO: &str = r#"
import base64, hashlib, socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(16)
print("listening", flush=True)
while True:
    c, _ = srv.accept()
    head = b""
    while b"\r\n\r\n" not in head:
        d = c.recv(4096)
        if not d:
            break
        head += d
    key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key:")]
    if not key:
        c.close()
        continue
    accept = base64.b64encode(hashlib.sha1(key[0] + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    f = c.makefile("rb")
    while True:
        h = f.read(2)
        if len(h) < 2:
            break
        op, n = h[0] & 15, h[1] & 127
        if n == 126:
            n = int.from_bytes(f.read(2), "big")
        elif n == 127:
            n = int.from_bytes(f.read(8), "big")
        mask = f.read(4)
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(f.read(n)))
        if op == 8:
            c.sendall(b"\x88\x00")
            break
        if op in (1, 2):
            size = bytes([n]) if n < 126 else bytes([126]) + n.to_bytes(2, "big")
            c.sendall(bytes([0x80 | op]) + size + data)
    c.close()
"#;
