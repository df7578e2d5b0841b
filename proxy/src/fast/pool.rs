//! The fast path's idle upstream connections, one pool per proxy thread.
//!
//! Keyed by the peer's `reuse_hash`, which covers Pingora's `group_key`
//! (sandbox id, generation and port), so a recycled address never hands one
//! sandbox another's socket. Pingora's own pool spawns a task per idle
//! connection to watch it and checks the peer with `getpeername` on every
//! reuse; this one keeps idle connections in a map, checks them without a
//! system call when taken (a closed or chatty connection has its readiness
//! set, so a non-blocking read sees it) and drops expired and closed ones in
//! a sweep every [`SWEEP_EVERY`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// How often idle connections are checked for expiry and upstream closes.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// Idle upstream connections of one proxy thread.
pub(crate) struct Pool {
    inner: Mutex<Idle>,
    capacity: usize,
}

#[derive(Default)]
struct Idle {
    /// Most recently used last.
    by_key: HashMap<u64, Vec<(TcpStream, Instant)>>,
    count: usize,
}

impl Pool {
    pub(crate) fn new(capacity: usize) -> Self {
        Pool {
            inner: Mutex::new(Idle::default()),
            capacity,
        }
    }

    /// The most recently used live connection for `key` idle less than `max_idle`.
    pub(crate) fn take(&self, key: u64, max_idle: Duration) -> Option<TcpStream> {
        let mut idle = self.lock();
        let Idle { by_key, count } = &mut *idle;
        let list = by_key.get_mut(&key)?;
        let mut found = None;
        while let Some((stream, since)) = list.pop() {
            *count -= 1;
            if since.elapsed() < max_idle && still_idle(&stream) {
                found = Some(stream);
                break;
            }
        }
        if list.is_empty() {
            by_key.remove(&key);
        }
        found
    }

    /// Keeps `stream` for reuse unless the pool is full (then it closes).
    pub(crate) fn put(&self, key: u64, stream: TcpStream) {
        let mut idle = self.lock();
        if idle.count >= self.capacity {
            return;
        }
        idle.count += 1;
        idle.by_key
            .entry(key)
            .or_default()
            .push((stream, Instant::now()));
    }

    /// Closes connections idle for `max_idle` or longer and those the
    /// upstream closed (a destroyed sandbox's: its pooled sockets must not
    /// keep its network namespace alive).
    pub(crate) fn sweep(&self, max_idle: Duration) {
        let mut idle = self.lock();
        let Idle { by_key, count } = &mut *idle;
        by_key.retain(|_, list| {
            let before = list.len();
            list.retain(|(stream, since)| since.elapsed() < max_idle && still_idle(stream));
            *count -= before - list.len();
            !list.is_empty()
        });
    }

    /// Idle connections held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().count
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        // Nothing in here can be left half-updated by a panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether an idle connection is still open and silent: a read that would
/// block. EOF, an error or unexpected bytes mean it cannot carry a request.
fn still_idle(stream: &TcpStream) -> bool {
    // Without readiness, tokio answers WouldBlock without a system call.
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair(l: &TcpListener) -> (TcpStream, TcpStream) {
        let addr = l.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn reuses_live_connections_per_key_and_drops_dead_or_old_ones() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::new(3);
        let long = Duration::from_secs(60);
        let (a, _a_server) = pair(&l).await;
        let a_id = a.as_raw_fd();
        pool.put(1, a);
        assert!(pool.take(2, long).is_none(), "another key never gets it");
        assert_eq!(pool.take(1, long).map(|s| s.as_raw_fd()), Some(a_id));
        assert_eq!(pool.len(), 0);

        // Closed by the upstream while idle: not handed out.
        let (b, b_server) = pair(&l).await;
        pool.put(1, b);
        drop(b_server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take(1, long).is_none());
        // Unexpected bytes while idle: not handed out either.
        let (c, mut c_server) = pair(&l).await;
        pool.put(1, c);
        c_server.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take(1, long).is_none());
        assert_eq!(pool.len(), 0);

        // The sweep drops connections the upstream closed.
        let (d, d_server) = pair(&l).await;
        pool.put(3, d);
        pool.sweep(long);
        assert_eq!(pool.len(), 1);
        drop(d_server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        pool.sweep(long);
        assert_eq!(pool.len(), 0);

        // Full: the extra connection is closed; the sweep drops old ones.
        let mut servers = Vec::new();
        for _ in 0..4 {
            let (s, server) = pair(&l).await;
            pool.put(7, s);
            servers.push(server);
        }
        assert_eq!(pool.len(), 3);
        pool.sweep(long);
        assert_eq!(pool.len(), 3);
        tokio::time::sleep(Duration::from_millis(20)).await;
        pool.sweep(Duration::from_millis(10));
        assert_eq!(pool.len(), 0);
        assert!(pool.take(7, long).is_none());
    }
}
