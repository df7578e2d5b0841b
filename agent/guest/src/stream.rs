//! Server streams fed by a bounded channel, with `keepalive` messages whenever
//! the stream has been idle for the keepalive interval.

use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tonic::Status;

/// Messages a stream buffers before the producer waits (back pressure).
pub const STREAM_CAPACITY: usize = 256;

/// Yields `wrap(item)` for every item from `rx`, and `keepalive()` after each
/// `every` without one; ends when every sender is gone or right after an item
/// for which `is_last` holds.
///
/// Ending right after the last item (rather than when the producer drops its
/// sender) lets the server write the last message and the trailers together. A
/// client that drops the stream once it has the last message, before the
/// trailers arrived, makes its h2 reset the stream and count the late trailers
/// as a local error; 1024 of those and h2 closes the whole connection
/// (`ENHANCE_YOUR_CALM`, "too_many_internal_resets", hyperium/h2#856).
pub fn with_keepalive<T, U>(
    rx: mpsc::Receiver<T>,
    every: Duration,
    is_last: fn(&T) -> bool,
    wrap: fn(T) -> U,
    keepalive: fn() -> U,
) -> impl Stream<Item = Result<U, Status>> + Send + 'static
where
    T: Send + 'static,
    U: Send + 'static,
{
    futures::stream::unfold(Some(rx), move |rx| async move {
        let mut rx = rx?;
        match tokio::time::timeout(every, rx.recv()).await {
            Ok(Some(item)) => {
                let next = if is_last(&item) { None } else { Some(rx) };
                Some((Ok(wrap(item)), next))
            }
            Ok(None) => None,
            Err(_elapsed) => Some((Ok(keepalive()), Some(rx))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;

    #[tokio::test(start_paused = true)]
    async fn idle_streams_carry_keepalives_and_end_with_the_sender() {
        let (tx, rx) = mpsc::channel::<u32>(4);
        let stream = with_keepalive(rx, Duration::from_secs(30), |_| false, |n| n as i64, || -1);
        tokio::pin!(stream);
        tx.send(7).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), 7);
        // Nothing for 30 s (virtual time): a keepalive.
        assert_eq!(stream.next().await.unwrap().unwrap(), -1);
        tx.send(8).await.unwrap();
        drop(tx);
        assert_eq!(stream.next().await.unwrap().unwrap(), 8);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn the_stream_ends_right_after_the_last_item() {
        let (tx, rx) = mpsc::channel::<u32>(4);
        let stream = with_keepalive(rx, Duration::from_secs(30), |n| *n == 0, |n| n, || 99);
        tokio::pin!(stream);
        tx.send(1).await.unwrap();
        tx.send(0).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), 1);
        assert_eq!(stream.next().await.unwrap().unwrap(), 0);
        // The sender is still alive, yet the stream is over.
        assert!(stream.next().await.is_none());
        drop(tx);
    }
}
