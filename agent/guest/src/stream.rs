//! Server streams fed by a bounded channel, with `keepalive` messages whenever
//! the stream has been idle for the keepalive interval.

use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tonic::Status;

/// Messages a stream buffers before the producer waits (back pressure).
pub const STREAM_CAPACITY: usize = 256;

/// Yields `wrap(item)` for every item from `rx`, and `keepalive()` after each
/// `every` without one; ends when every sender is gone.
pub fn with_keepalive<T, U>(
    rx: mpsc::Receiver<T>,
    every: Duration,
    wrap: fn(T) -> U,
    keepalive: fn() -> U,
) -> impl Stream<Item = Result<U, Status>> + Send + 'static
where
    T: Send + 'static,
    U: Send + 'static,
{
    futures::stream::unfold(rx, move |mut rx| async move {
        match tokio::time::timeout(every, rx.recv()).await {
            Ok(Some(item)) => Some((Ok(wrap(item)), rx)),
            Ok(None) => None,
            Err(_elapsed) => Some((Ok(keepalive()), rx)),
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
        let stream = with_keepalive(rx, Duration::from_secs(30), |n| n as i64, || -1);
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
}
