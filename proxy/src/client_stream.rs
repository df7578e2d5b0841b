//! A client connection's socket as both transports use it: a small write
//! buffer, the bytes the listener read ahead to replay to Pingora, and what
//! Pingora asks of a downstream stream (digests, shutdown).

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::net::TcpStream;

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
pub(crate) struct ClientStream {
    inner: BufWriter<TcpStream>,
    /// Read before Pingora got the connection (the fast path reads each
    /// request head first): returned by the next reads, before the socket's.
    replay: Bytes,
    accepted: SystemTime,
    socket_digest: Option<Arc<SocketDigest>>,
}

impl ClientStream {
    pub(crate) fn new(inner: TcpStream) -> Self {
        ClientStream {
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

impl AsyncRead for ClientStream {
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

impl AsyncWrite for ClientStream {
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
impl Shutdown for ClientStream {
    async fn shutdown(&mut self) {
        // Flushes the write buffer first.
        let _ = AsyncWriteExt::shutdown(&mut self.inner).await;
    }
}

impl UniqueID for ClientStream {
    fn id(&self) -> UniqueIDType {
        self.inner.get_ref().as_raw_fd()
    }
}

impl Ssl for ClientStream {}

#[async_trait]
impl Peek for ClientStream {}

impl GetTimingDigest for ClientStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        vec![Some(TimingDigest {
            established_ts: self.accepted,
            establishment_duration: None,
            offload_wait_duration: None,
        })]
    }
}

impl GetProxyDigest for ClientStream {
    /// Clients connect directly (no PROXY protocol).
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for ClientStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.socket_digest.clone()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.socket_digest = Some(Arc::new(digest));
    }
}
