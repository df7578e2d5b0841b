//! Relaying a file upload (`WriteFile`, a client stream) so that an upload
//! the caller did not finish is never committed on the host.
//!
//! # Design
//!
//! The trap: tonic reports a caller's `RST_STREAM(CANCEL)` as a *clean* end of
//! its request stream (`Ok(None)`), exactly like a finished upload, and hyper
//! resets a stream with `CANCEL` whenever a client call is dropped. The guest
//! renames the uploaded file into place when its stream ends cleanly, so
//! naive relaying would commit half a file whenever anyone along the way
//! hangs up.
//!
//! So, at this hop:
//!
//! - The agent call runs in a task of its own, fed through a channel of
//!   [`RELAY_CAPACITY`](super::relay::RELAY_CAPACITY) messages, so dropping
//!   this handler never drops the call (no `CANCEL` towards the agent).
//! - The caller's clean end is believed only after one yield: hyper drops a
//!   handler that is pending after its stream was reset, and tonic's `Ok(None)`
//!   for a reset comes from a reset already received, so a cancelled caller
//!   never gets past that point.
//! - Every other way out (the caller's stream broke, the handler was dropped)
//!   sends [`UploadFrame::Abort`] down the channel. The codec refuses to encode
//!   it, so hyper resets the agent's stream with `INTERNAL_ERROR`, which the
//!   agent's tonic reports as an error: the agent aborts the guest's upload.
//! - The request stream ends cleanly only once marked complete; a dropped
//!   sender alone never ends it.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Status, Streaming};
use tonic_prost::{ProstDecoder, ProstEncoder};

use wrenn_proto::filesystem::WriteResponse;
use wrenn_proto::wrenn::v1::WriteFileRequest;

use super::relay::RELAY_CAPACITY;
use crate::hosts::MAX_AGENT_MESSAGE;

/// A message of an upload towards an agent, or the order to abort it.
#[derive(Debug)]
pub(crate) enum UploadFrame<T> {
    Message(T),
    Abort,
}

/// The request stream of an agent upload (see the module docs).
pub(crate) struct UploadStream<T> {
    rx: mpsc::Receiver<UploadFrame<T>>,
    complete: Arc<AtomicBool>,
}

impl<T> Stream for UploadStream<T> {
    type Item = UploadFrame<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(None) if !self.complete.load(Ordering::Acquire) => Poll::Pending,
            other => other,
        }
    }
}

/// Prost encoding whose [`UploadFrame::Abort`] fails, so that hyper resets
/// the stream with `INTERNAL_ERROR` instead of ending it.
#[derive(Debug)]
pub(crate) struct AbortableCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for AbortableCodec<T, U> {
    fn default() -> Self {
        AbortableCodec(PhantomData)
    }
}

impl<T, U> Codec for AbortableCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = UploadFrame<T>;
    type Decode = U;
    type Encoder = AbortableEncoder<T>;
    type Decoder = AbortableDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        AbortableEncoder(ProstEncoder::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        AbortableDecoder(ProstDecoder::default())
    }
}

#[derive(Debug)]
pub(crate) struct AbortableEncoder<T>(ProstEncoder<T>);

impl<T: prost::Message> Encoder for AbortableEncoder<T> {
    type Item = UploadFrame<T>;
    type Error = Status;

    fn encode(&mut self, item: UploadFrame<T>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            UploadFrame::Message(m) => self.0.encode(m, dst),
            UploadFrame::Abort => Err(Status::aborted("upload aborted by the control plane")),
        }
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

#[derive(Debug)]
pub(crate) struct AbortableDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for AbortableDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(src)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// The sending side of an upload; aborts it when dropped unfinished.
struct UploadGuard<T: Send + 'static> {
    tx: Option<mpsc::Sender<UploadFrame<T>>>,
    complete: Arc<AtomicBool>,
}

impl<T: Send + 'static> UploadGuard<T> {
    /// The caller finished: end the agent's stream cleanly.
    fn finish(&mut self) {
        self.complete.store(true, Ordering::Release);
        self.tx = None;
    }

    /// Anything else: make the agent discard the upload.
    fn abort(&mut self) {
        let Some(tx) = self.tx.take() else { return };
        if let Err(mpsc::error::TrySendError::Full(frame)) = tx.try_send(UploadFrame::Abort) {
            tokio::spawn(async move {
                let _ = tx.send(frame).await;
            });
        }
    }
}

impl<T: Send + 'static> Drop for UploadGuard<T> {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Relays a caller's upload (`first`, then the rest of `inbound`) to the agent
/// call `call` starts on an [`UploadStream`] (see the module docs).
pub(crate) async fn relay_upload<T, R, C, F>(
    first: T,
    inbound: Streaming<T>,
    call: F,
) -> Result<R, Status>
where
    T: Send + 'static,
    R: Send + 'static,
    F: FnOnce(UploadStream<T>) -> C,
    C: Future<Output = Result<R, Status>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(RELAY_CAPACITY);
    tx.try_send(UploadFrame::Message(first))
        .map_err(|_| Status::internal("cannot queue the first message of an upload"))?;
    let complete = Arc::new(AtomicBool::new(false));
    let mut guard = UploadGuard {
        tx: Some(tx),
        complete: complete.clone(),
    };
    let mut call = tokio::spawn(call(UploadStream { rx, complete }));
    let joined = |r: Result<Result<R, Status>, tokio::task::JoinError>| {
        r.map_err(|e| Status::internal(format!("upload task failed: {e}")))?
    };
    let forwarded = {
        let Some(tx) = guard.tx.as_ref() else {
            return Err(Status::internal("upload sender missing"));
        };
        let forward = forward_messages(inbound, tx);
        tokio::pin!(forward);
        tokio::select! {
            res = &mut call => return joined(res),
            fwd = &mut forward => fwd,
        }
    };
    match forwarded {
        Ok(()) => {
            // A caller's reset looks like this clean end; hyper drops this
            // handler right here if it was one (see the module docs).
            tokio::task::yield_now().await;
            guard.finish();
            joined(call.await)
        }
        Err(status) => {
            guard.abort();
            Err(Status::new(
                status.code(),
                format!(
                    "upload interrupted, nothing was written: {}",
                    status.message()
                ),
            ))
        }
    }
}

/// `HostAgent.WriteFile` on `channel`, as the generated client makes it but
/// with [`AbortableCodec`].
pub(crate) async fn write_file(
    channel: wrenn_proto::auth::AuthChannel,
    upload: UploadStream<WriteFileRequest>,
) -> Result<tonic::Response<WriteResponse>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(MAX_AGENT_MESSAGE)
        .max_encoding_message_size(MAX_AGENT_MESSAGE);
    grpc.ready()
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    let path = http::uri::PathAndQuery::from_static("/wrenn.v1.HostAgent/WriteFile");
    let mut req = tonic::Request::new(upload);
    req.extensions_mut()
        .insert(tonic::GrpcMethod::new("wrenn.v1.HostAgent", "WriteFile"));
    grpc.client_streaming(req, path, AbortableCodec::default())
        .await
}

/// Forwards the caller's messages into `tx` until the caller half-closes (or
/// the agent stops reading); the caller's error if its stream broke.
async fn forward_messages<T: Send + 'static>(
    mut inbound: Streaming<T>,
    tx: &mpsc::Sender<UploadFrame<T>>,
) -> Result<(), Status> {
    loop {
        let msg = tokio::select! {
            biased;
            _ = tx.closed() => return Ok(()),
            msg = inbound.message() => msg?,
        };
        let Some(msg) = msg else { return Ok(()) };
        if tx.send(UploadFrame::Message(msg)).await.is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{FutureExt, StreamExt};

    #[tokio::test]
    async fn an_upload_stream_ends_only_when_complete() {
        let (tx, rx) = mpsc::channel(4);
        let complete = Arc::new(AtomicBool::new(false));
        let mut s = UploadStream {
            rx,
            complete: complete.clone(),
        };
        tx.send(UploadFrame::Message(1)).await.unwrap();
        drop(tx);
        assert!(matches!(s.next().await, Some(UploadFrame::Message(1))));
        assert!(
            s.next().now_or_never().is_none(),
            "a dropped sender is no clean end"
        );

        let (tx, rx) = mpsc::channel(4);
        let s = UploadStream {
            rx,
            complete: complete.clone(),
        };
        tx.send(UploadFrame::Message(2)).await.unwrap();
        complete.store(true, Ordering::Release);
        drop(tx);
        let all: Vec<_> = s.collect().await;
        assert!(matches!(all.as_slice(), [UploadFrame::Message(2)]));
    }

    #[tokio::test]
    async fn a_dropped_guard_sends_abort_even_when_the_channel_is_full() {
        let (tx, mut rx) = mpsc::channel(1);
        tx.try_send(UploadFrame::Message(0u8)).unwrap();
        let guard = UploadGuard {
            tx: Some(tx),
            complete: Arc::new(AtomicBool::new(false)),
        };
        drop(guard);
        assert!(matches!(rx.recv().await, Some(UploadFrame::Message(0))));
        assert!(matches!(rx.recv().await, Some(UploadFrame::Abort)));
        assert!(rx.recv().await.is_none());
    }
}
