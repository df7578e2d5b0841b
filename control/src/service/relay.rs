//! Relaying streams between a caller and a host agent as they flow.
//!
//! # Design
//!
//! Each direction of a stream is one task moving messages through a bounded
//! channel of [`RELAY_CAPACITY`] messages. When the channel is full the task
//! stops reading, HTTP/2 flow control pushes back on the sender, and nothing
//! ever holds a whole stream in memory. When the caller goes away the task
//! notices (the channel closes) and drops the agent's stream, which cancels the
//! call on the agent; an error from the agent is passed to the caller as the
//! stream's last item, never turned into a clean end.
//!
//! Uploads (client streams whose clean end commits a file) need more care;
//! see `upload.rs`.

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

/// Messages buffered per relayed direction.
pub const RELAY_CAPACITY: usize = 256;

/// Aborts a task when dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Relays `upstream` (an agent's response stream) to a caller. `keep` lives as
/// long as the relay (e.g. the task pumping the caller's input upstream).
pub(crate) fn relay_response<T, S, K>(upstream: S, keep: K) -> ReceiverStream<Result<T, Status>>
where
    T: Send + 'static,
    S: Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
    K: Send + 'static,
{
    let (tx, rx) = mpsc::channel(RELAY_CAPACITY);
    tokio::spawn(async move {
        let _keep = keep;
        pump(upstream, tx).await;
    });
    ReceiverStream::new(rx)
}

/// Moves items from `upstream` to `tx` until either side ends. An upstream
/// error is delivered and ends the pump.
async fn pump<T, S>(mut upstream: S, tx: mpsc::Sender<Result<T, Status>>)
where
    S: Stream<Item = Result<T, Status>> + Unpin,
{
    loop {
        let item = tokio::select! {
            biased;
            _ = tx.closed() => return,
            item = upstream.next() => item,
        };
        let Some(item) = item else { return };
        let last = item.is_err();
        if tx.send(item).await.is_err() || last {
            return;
        }
    }
}

/// Forwards a caller's request stream (after its first message, already read)
/// into `tx`, whose receiver is an agent call's request stream. Ends when the
/// caller half-closes; returns the caller's error if its stream broke.
pub(crate) async fn forward_requests<T>(
    mut inbound: Streaming<T>,
    tx: &mpsc::Sender<T>,
) -> Result<(), Status>
where
    T: Send + 'static,
{
    loop {
        let msg = tokio::select! {
            biased;
            _ = tx.closed() => return Ok(()),
            msg = inbound.message() => msg?,
        };
        let Some(msg) = msg else { return Ok(()) };
        if tx.send(msg).await.is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    #[tokio::test]
    async fn relays_in_order_and_stops_after_an_error() {
        let items: Vec<Result<u32, Status>> =
            vec![Ok(1), Ok(2), Err(Status::data_loss("broken")), Ok(3)];
        let out: Vec<_> = relay_response(stream::iter(items), ()).collect().await;
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].as_ref().unwrap(), &1);
        assert_eq!(out[1].as_ref().unwrap(), &2);
        assert_eq!(out[2].as_ref().unwrap_err().code(), tonic::Code::DataLoss);
    }

    #[tokio::test]
    async fn dropping_the_receiver_drops_the_upstream() {
        struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Flag(dropped.clone());
        // An upstream that never yields, holding the flag.
        let upstream = stream::pending::<Result<u32, Status>>().map(move |x| {
            let _ = &flag;
            x
        });
        let rx = relay_response(Box::pin(upstream), ());
        drop(rx);
        for _ in 0..1000 {
            if dropped.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        panic!("upstream was not dropped after the caller went away");
    }
}
