//! The background load: N clients, half REST pollers and half WebSocket
//! streams, either through the proxy (the design) or as gRPC streams on the
//! PTY's own HTTP/2 connection (the `shared` baseline). Both move the same
//! bytes at the same pace: a poller fetches 1 KiB every [`POLL_EVERY`] (a
//! notebook polling its kernels); a stream receives [`STREAM_CHUNK`] bytes
//! every [`STREAM_EVERY`] (kernel output, HMR messages).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use wrenn_proto::wrenn::v1::ReadFileRequest;

use crate::platform::Client;
use crate::testbed::{Bed, Door};

pub const POLL_EVERY: Duration = Duration::from_secs(1);
pub const STREAM_EVERY: Duration = Duration::from_millis(250);
pub const STREAM_CHUNK: usize = 4096;
/// Files the shared baseline reads inside the sandbox.
pub const SMALL_FILE: &str = "/tmp/wrenn-bench-1k";
pub const BIG_FILE: &str = "/tmp/wrenn-bench-big";
pub const BIG_FILE_BYTES: usize = 4 << 20;

/// Running clients; dropping it stops them.
pub struct Background {
    pub bytes: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
    /// The proxied clients' own threads (see [`proxied`]).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Background {
    fn new() -> (Self, watch::Receiver<bool>) {
        let (stop, rx) = watch::channel(false);
        (
            Background {
                bytes: Arc::default(),
                requests: Arc::default(),
                stop,
                tasks: JoinSet::new(),
                runtime: None,
            },
            rx,
        )
    }

    /// Stops every client and returns how many failed. Clients still stuck
    /// after a few seconds (a starved shared connection) are aborted and
    /// counted as failed. `Err` only when a client's task panicked.
    pub async fn finish(mut self) -> anyhow::Result<usize> {
        let _ = self.stop.send(true);
        let mut failed = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(Ok(Ok(())))) => {}
                Ok(Some(Ok(Err(e)))) => {
                    if failed == 0 {
                        println!("  first failed client: {e:#}");
                    }
                    failed += 1;
                }
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(None) => break,
                Err(_) => {
                    failed += self.tasks.len();
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        Ok(failed)
    }
}

/// A start offset that spreads `n` clients evenly over `period`.
fn offset(i: usize, n: usize, period: Duration) -> Duration {
    period.mul_f64(i as f64 / n.max(1) as f64)
}

/// `n` clients through wrenn's proxy (path form), all connected before this
/// returns. They run on threads of their own, as browsers are processes of
/// their own: on the PTY's runtime their work would delay the echo timing in
/// this process, not in wrenn.
pub async fn proxied(bed: &Bed, n: usize) -> anyhow::Result<Background> {
    let (mut bg, stop) = Background::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-load")
        .enable_all()
        .build()?;
    let poll = bed.target(Door::Path, "/1k");
    let path = format!(
        "/ws/stream?size={STREAM_CHUNK}&every_ms={}",
        STREAM_EVERY.as_millis()
    );
    let stream = bed.target(Door::Path, &path);
    let (bytes, requests) = (bg.bytes.clone(), bg.requests.clone());
    let connected = runtime.spawn(connect_clients(n, poll, stream, bytes, requests, stop));
    bg.runtime = Some(runtime);
    bg.tasks = connected.await??;
    Ok(bg)
}

type Target = (SocketAddr, String, String);

/// Connects the clients of [`proxied`] and starts them on the current runtime.
async fn connect_clients(
    n: usize,
    poll: Target,
    stream: Target,
    bytes: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<JoinSet<anyhow::Result<()>>> {
    let mut tasks = JoinSet::new();
    let pollers = n / 2;
    for i in 0..pollers {
        let (addr, target, host) = poll.clone();
        let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
        let tcp = connect(addr).await?;
        let (bytes, requests, stop) = (bytes.clone(), requests.clone(), stop.clone());
        let start = offset(i, pollers, POLL_EVERY);
        tasks.spawn(poll_http(tcp, addr, request, start, bytes, requests, stop));
    }
    for _ in pollers..n {
        let (addr, target, host) = stream.clone();
        let mut ws = open_stream(addr, &target, &host).await?;
        let (bytes, mut stop) = (bytes.clone(), stop.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = stopped(&mut stop) => return Ok(()),
                    m = ws.next() => match m {
                        Some(Ok(m)) => {
                            bytes.fetch_add(m.len() as u64, Ordering::Relaxed);
                        }
                        // A tunnel torn down after its upgrade: open it again.
                        _ => ws = open_stream(addr, &target, &host).await?,
                    }
                }
            }
        });
    }
    Ok(tasks)
}

/// A WebSocket stream through the proxy that delivered its first message;
/// upgrades torn down right after their `101` are counted
/// ([`crate::ws::TORN_DOWN`]) and opened again.
async fn open_stream(
    addr: SocketAddr,
    target: &str,
    host: &str,
) -> anyhow::Result<WebSocketStream<TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    for _ in 0..20 {
        let tcp = connect(addr).await?;
        let request = format!("ws://{host}{target}").into_client_request()?;
        let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await?;
        match tokio::time::timeout(STREAM_EVERY * 20, ws.next()).await {
            Ok(Some(Ok(_))) => return Ok(ws),
            _ => {
                crate::ws::TORN_DOWN.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    bail!("20 WebSocket upgrades in a row were torn down")
}

/// Resolves once `rx` reads true (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

async fn poll_http(
    mut tcp: TcpStream,
    addr: SocketAddr,
    request: Vec<u8>,
    start: Duration,
    bytes: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + start, POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = Vec::with_capacity(4096);
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return Ok(()),
            _ = tick.tick() => {}
        }
        let got = match get(&mut tcp, &mut buf, &request).await {
            Ok(n) => n,
            // The proxy closed a kept-alive connection (request limit): reconnect once.
            Err(_) => {
                tcp = connect(addr).await?;
                get(&mut tcp, &mut buf, &request).await?
            }
        };
        bytes.fetch_add(got as u64, Ordering::Relaxed);
        requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// One keep-alive GET; returns the body length.
pub(crate) async fn get(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    request: &[u8],
) -> anyhow::Result<usize> {
    tcp.write_all(request).await?;
    buf.clear();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                bail!("poll answered {}", head.lines().next().unwrap_or(""));
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .context("no content-length")?;
            while buf.len() < end + 4 + len {
                if tcp.read_buf(buf).await? == 0 {
                    bail!("connection closed mid-body");
                }
            }
            return Ok(len);
        }
        if tcp.read_buf(buf).await? == 0 {
            bail!("connection closed");
        }
    }
}

/// `n` gRPC clients on `client`'s connection (the PTY's own), reading files
/// in the sandbox at the same pace as [`proxied`]'s clients.
pub async fn shared(client: &Client, id: &str, n: usize) -> anyhow::Result<Background> {
    let (mut bg, stop) = Background::new();
    let pollers = n / 2;
    for i in 0..n {
        let (mut client, id) = (client.clone(), id.to_owned());
        let (bytes, requests, mut stop) = (bg.bytes.clone(), bg.requests.clone(), stop.clone());
        if i < pollers {
            let start = offset(i, pollers, POLL_EVERY);
            bg.tasks.spawn(async move {
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + start, POLL_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = stopped(&mut stop) => return Ok(()),
                        _ = tick.tick() => {}
                    }
                    let got = tokio::select! {
                        () = stopped(&mut stop) => return Ok(()),
                        r = read_all(&mut client, &id, SMALL_FILE) => r?,
                    };
                    bytes.fetch_add(got, Ordering::Relaxed);
                    requests.fetch_add(1, Ordering::Relaxed);
                }
            });
        } else {
            bg.tasks.spawn(async move {
                // A browser reads [`STREAM_CHUNK`] bytes every
                // [`STREAM_EVERY`] from what it has received; the next
                // message is read once the last one is used up.
                let mut tick = tokio::time::interval(STREAM_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut buffered = 0u64;
                loop {
                    let req = ReadFileRequest {
                        sandbox_id: id.clone(),
                        path: BIG_FILE.into(),
                    };
                    let mut s = tokio::select! {
                        () = stopped(&mut stop) => return Ok(()),
                        r = client.read_file(req) => r?.into_inner(),
                    };
                    loop {
                        if buffered == 0 {
                            let next = tokio::select! {
                                () = stopped(&mut stop) => return Ok(()),
                                m = s.next() => m,
                            };
                            let Some(m) = next else { break };
                            buffered = m?.data.len() as u64;
                        }
                        tokio::select! {
                            () = stopped(&mut stop) => return Ok(()),
                            _ = tick.tick() => {}
                        }
                        let used = buffered.min(STREAM_CHUNK as u64);
                        buffered -= used;
                        bytes.fetch_add(used, Ordering::Relaxed);
                    }
                }
            });
        }
    }
    Ok(bg)
}

async fn read_all(client: &mut Client, id: &str, path: &str) -> anyhow::Result<u64> {
    let req = ReadFileRequest {
        sandbox_id: id.to_owned(),
        path: path.to_owned(),
    };
    let mut s = client.read_file(req).await?.into_inner();
    let mut n = 0;
    while let Some(m) = s.next().await {
        n += m?.data.len() as u64;
    }
    Ok(n)
}
