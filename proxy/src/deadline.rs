//! The request-header deadline Pingora lacks, for the heads Pingora reads.
//!
//! # Design
//! Pingora limits each *read* while it waits for request headers (by the
//! keep-alive timeout), not the total, so a client sending one header byte
//! per second holds a connection forever. wrenn's listener reads every
//! request head itself under a deadline (`listener.rs`); Pingora reads one
//! only when the listener cannot tell where it ends (it is not a request
//! head httparse accepts). For those the connection's [`ConnState`] holds
//! the same deadline, checked by the connection's own task:
//! - armed (to end when the listener's would have) before Pingora reads;
//! - stopped when Pingora has parsed the headers (the proxy's
//!   `on_connection_reuse` hook, which runs right after the header read).
//!
//! When the deadline passes the connection task drops the whole connection
//! future, closing the socket without a log line per client.
//!
//! # Limitations
//! Body reads are not covered: a slow request body is limited per read by
//! `read_timeout_secs`.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

const DISARMED: u64 = 0;

/// The header deadline of one client connection.
#[derive(Debug)]
pub struct ConnState {
    base: Instant,
    /// `DISARMED` or 1 + the deadline in ms since `base`.
    state: AtomicU64,
    changed: Notify,
}

impl ConnState {
    pub(crate) fn new() -> Self {
        ConnState {
            base: Instant::now(),
            state: AtomicU64::new(DISARMED),
            changed: Notify::new(),
        }
    }

    /// Starts the deadline to end at `at`.
    pub(crate) fn arm_until(&self, at: std::time::Instant) {
        let at = Instant::from_std(at).saturating_duration_since(self.base);
        self.state.store(encode(at), Ordering::Release);
        self.changed.notify_one();
    }

    /// The headers are in: no deadline until the next request starts.
    pub(crate) fn disarm(&self) {
        self.state.store(DISARMED, Ordering::Release);
    }

    /// Resolves when an armed deadline passes while still armed.
    pub(crate) async fn expired(&self) {
        loop {
            let s = self.state.load(Ordering::Acquire);
            if s == DISARMED {
                self.changed.notified().await;
                continue;
            }
            let at = self.base + Duration::from_millis(s - 1);
            tokio::select! {
                () = tokio::time::sleep_until(at) => {
                    if self.state.load(Ordering::Acquire) == s {
                        return;
                    }
                }
                () = self.changed.notified() => {}
            }
        }
    }
}

/// The state value of a deadline `at` after `base`.
fn encode(at: Duration) -> u64 {
    u64::try_from(at.as_millis())
        .unwrap_or(u64::MAX - 1)
        .min(u64::MAX - 1)
        + 1
}

/// Bytes of response written before they are sent. Pingora leaves a response
/// head with a `Content-Length` unflushed so it leaves in one segment with the
/// body; without a buffer that is two `send`s per response.
const WRITE_BUFFER: usize = 4096;

/// A client socket with a small write buffer (Pingora's own listeners have
/// one too) and bytes to replay (the head the listener read).
///
/// It holds the tokio socket itself rather than Pingora's L4 `Stream`, which
/// times every read and write that waits (two clock reads each) for digests
/// nothing here reads; this type gives Pingora what it asks of a downstream
/// stream (socket digest, timing digest with the accept time, shutdown).
#[derive(Debug)]
pub(crate) struct DeadlineStream {
    inner: BufWriter<TcpStream>,
    /// Read before Pingora got the connection (the fast path reads each
    /// request head first): returned by the next reads, before the socket's.
    replay: Bytes,
    accepted: SystemTime,
    socket_digest: Option<Arc<SocketDigest>>,
}

impl DeadlineStream {
    pub(crate) fn new(inner: TcpStream) -> Self {
        DeadlineStream {
            inner: BufWriter::with_capacity(WRITE_BUFFER, inner),
            replay: Bytes::new(),
            accepted: SystemTime::now(),
            socket_digest: None,
        }
    }

    /// Makes `bytes` the next bytes read, ahead of any still unread replay.
    pub(crate) fn replay(&mut self, bytes: Bytes) {
        self.replay = if self.replay.is_empty() {
            bytes
        } else {
            [&bytes[..], &self.replay[..]].concat().into()
        };
    }
}

impl AsyncRead for DeadlineStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            let bytes = self.replay.split_to(n);
            buf.put_slice(&bytes);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for DeadlineStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for DeadlineStream {
    async fn shutdown(&mut self) {
        // Flushes the write buffer first.
        let _ = AsyncWriteExt::shutdown(&mut self.inner).await;
    }
}

impl UniqueID for DeadlineStream {
    fn id(&self) -> UniqueIDType {
        self.inner.get_ref().as_raw_fd()
    }
}

impl Ssl for DeadlineStream {}

#[async_trait]
impl Peek for DeadlineStream {}

impl GetTimingDigest for DeadlineStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        vec![Some(TimingDigest {
            established_ts: self.accepted,
            establishment_duration: None,
            offload_wait_duration: None,
        })]
    }
}

impl GetProxyDigest for DeadlineStream {
    /// Clients connect directly (no PROXY protocol).
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for DeadlineStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.socket_digest.clone()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.socket_digest = Some(Arc::new(digest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_only_while_armed() {
        let c = Arc::new(ConnState::new());
        let in_10s = || (Instant::now() + Duration::from_secs(10)).into_std();
        c.arm_until(in_10s());
        let t0 = Instant::now();
        c.expired().await;
        assert_eq!(t0.elapsed().as_secs(), 10);

        // Disarmed before the deadline: never fires until armed again.
        c.arm_until(in_10s());
        tokio::time::advance(Duration::from_secs(5)).await;
        c.disarm();
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.expired().await }
        });
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!waiter.is_finished(), "a disarmed deadline never fires");
        let t1 = Instant::now();
        c.arm_until(in_10s());
        waiter.await.unwrap();
        assert_eq!(t1.elapsed().as_secs(), 10);
    }
}
