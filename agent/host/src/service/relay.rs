//! Relays between a guest stream and a caller's stream.
//!
//! Design: one task per relay reads the guest's stream and sends into a
//! bounded channel of [`RELAY_CAPACITY`] messages that tonic drains towards
//! the caller. A caller that stops reading fills the channel, the task stops
//! reading, and HTTP/2 flow control pushes back to the guest: nothing holds a
//! whole output stream. The task ends when the guest's stream ends, when the
//! caller goes away, or when the sandbox is destroyed (the caller then gets
//! `ABORTED` naming the reason).

use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::manager::Sandbox;

/// Messages buffered between a guest stream and its caller.
pub const RELAY_CAPACITY: usize = 256;

/// The stream a streaming RPC returns.
pub type RelayStream<T> = ReceiverStream<Result<T, Status>>;

pub fn channel<T>() -> (mpsc::Sender<Result<T, Status>>, RelayStream<T>) {
    let (tx, rx) = mpsc::channel(RELAY_CAPACITY);
    (tx, ReceiverStream::new(rx))
}

/// Forwards `upstream` to a new caller stream, mapping each message (`None`
/// drops it).
pub fn relay<S, T, U, F>(sb: Arc<Sandbox>, upstream: S, map: F) -> RelayStream<U>
where
    S: Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
    T: Send + 'static,
    U: Send + 'static,
    F: FnMut(T) -> Option<U> + Send + 'static,
{
    let (tx, rx) = channel();
    tokio::spawn(forward(sb, upstream, map, tx));
    rx
}

/// The body of [`relay`], for callers that keep their own sender.
pub async fn forward<S, T, U, F>(
    sb: Arc<Sandbox>,
    mut upstream: S,
    mut map: F,
    tx: mpsc::Sender<Result<U, Status>>,
) where
    S: Stream<Item = Result<T, Status>> + Unpin,
    F: FnMut(T) -> Option<U>,
{
    loop {
        let next = tokio::select! {
            biased;
            _ = sb.cancel.cancelled() => {
                let _ = tx.try_send(Err(sb.ended_status()));
                return;
            }
            _ = tx.closed() => return,
            next = upstream.next() => next,
        };
        let item = match next {
            None => return,
            Some(Ok(t)) => match map(t) {
                Some(u) => Ok(u),
                None => continue,
            },
            Some(Err(s)) => Err(crate::service::guest_err(&sb, s)),
        };
        let last = item.is_err();
        tokio::select! {
            biased;
            _ = sb.cancel.cancelled() => {
                let _ = tx.try_send(Err(sb.ended_status()));
                return;
            }
            sent = tx.send(item) => if sent.is_err() { return },
        }
        if last {
            return;
        }
    }
}
