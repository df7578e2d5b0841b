//! Logging for the long-running components (`up`, `agent`, `control`, `proxy`).
//!
//! `tracing` with structured fields, human-readable on stderr and JSON lines in
//! `$WRENN_DIR/logs/<component>.log`. The level comes from `LOG_LEVEL`
//! (default `info`), which also accepts `RUST_LOG`-style filters such as
//! `info,wrenn_proxy=debug`; `RUST_LOG` is read when `LOG_LEVEL` is unset.
//! SIGHUP reopens the log file, so logrotate can rotate without copytruncate
//! (`conf/logrotate/wrenn`). Records of the `log` crate (Pingora's) are bridged.
//! The proxy's access lines are formatted by a layer of their own
//! (`access.rs`) and reach the file in batches, at most 100 ms after their
//! request (one `write` per request cost the proxy a tenth of its CPU);
//! everything else is written as it happens.

mod access;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use tracing::level_filters::LevelFilter;
use tracing_log::AsLog;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// The log file. Access lines are buffered and written in batches (at most
/// [`FLUSH_EVERY`] late); every other line is written at once, after the
/// buffered ones. A request appending its access line takes only the `buf`
/// lock, for a copy, and never waits for the disk; whoever writes takes
/// `out` first and swaps `buf` with its spare buffer, so the file stays in
/// order and neither buffer is grown again from empty after each batch.
struct LogFile {
    path: PathBuf,
    out: Mutex<Out>,
    buf: Mutex<Vec<u8>>,
}

struct Out {
    file: File,
    /// The batch being written; empty, with its capacity, in between.
    spare: Vec<u8>,
}

/// How long an access line may wait in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A fuller buffer is written by the request that fills it.
const BUF_CAP: usize = 64 * 1024;

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogFile {
    fn new(path: PathBuf, file: File) -> Self {
        LogFile {
            path,
            out: Mutex::new(Out {
                file,
                spare: Vec::with_capacity(BUF_CAP),
            }),
            buf: Mutex::new(Vec::with_capacity(BUF_CAP)),
        }
    }

    /// Writes the buffered lines, then `line`, holding the `out` lock.
    fn write_out(&self, out: &mut Out, line: &[u8]) -> std::io::Result<()> {
        std::mem::swap(&mut *lock(&self.buf), &mut out.spare);
        // A batch that cannot be written now is not retried forever.
        let r = if out.spare.is_empty() {
            Ok(())
        } else {
            out.file.write_all(&out.spare)
        };
        out.spare.clear();
        if line.is_empty() {
            r
        } else {
            out.file.write_all(line).and(r)
        }
    }

    fn reopen(&self) -> std::io::Result<()> {
        let f = open(&self.path)?;
        let mut out = lock(&self.out);
        let _ = self.write_out(&mut out, b"");
        out.file = f;
        Ok(())
    }

    fn flush(&self) {
        let _ = self.write_out(&mut lock(&self.out), b"");
    }

    /// Adds `line` to the batch; the line that fills it writes it.
    fn append(&self, line: &[u8]) {
        let full = {
            let mut buf = lock(&self.buf);
            buf.extend_from_slice(line);
            buf.len() >= BUF_CAP
        };
        if full {
            self.flush();
        }
    }
}

/// The installed log file, for [`flush`] at exit.
static LOG_FILE: OnceLock<Arc<LogFile>> = OnceLock::new();

/// Writes out buffered access lines. `main` calls it before the process
/// exits (`std::process::exit` runs no destructors).
pub fn flush() {
    if let Some(log) = LOG_FILE.get() {
        log.flush();
    }
}

/// The JSON layer's writer: every line written at once (after the batch).
#[derive(Clone)]
struct FileWriter {
    log: Arc<LogFile>,
}

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }
    fn write_all(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.log.write_out(&mut lock(&self.log.out), line)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for FileWriter {
    type Writer = FileWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Writes buffered access lines every [`FLUSH_EVERY`], on a thread of its
/// own (the proxy's runtime is not ours to use).
fn start_flusher(log: Arc<LogFile>) -> Result<()> {
    std::thread::Builder::new()
        .name("log-flush".into())
        .spawn(move || {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                log.flush();
            }
        })
        .context("start the log flusher")?;
    Ok(())
}

/// `info`, minus netlink-packet-route's warnings about kernel attributes
/// newer than the crate (one per link dump on recent kernels).
const DEFAULT_FILTER: &str = "info,netlink_packet_route=error";

/// The filter from `LOG_LEVEL` (or `RUST_LOG`), default [`DEFAULT_FILTER`].
pub fn filter() -> Result<EnvFilter> {
    let (var, spec) = match (std::env::var("LOG_LEVEL"), std::env::var("RUST_LOG")) {
        (Ok(v), _) => ("LOG_LEVEL", v),
        (Err(_), Ok(v)) => ("RUST_LOG", v),
        _ => ("LOG_LEVEL", DEFAULT_FILTER.to_owned()),
    };
    EnvFilter::try_new(&spec).with_context(|| {
        format!("{var}={spec:?} is not a level (error, warn, info, debug, trace) or a filter like info,wrenn_proxy=debug")
    })
}

/// The proxy's per-request access lines.
const ACCESS_TARGET: &str = "wrenn_proxy::access";

/// Installs the subscriber for `component`, logging to stderr and, when
/// `dir` is given, to `<dir>/logs/<component>.log`. With a log file the
/// proxy's access lines go to the file only: on a terminal (`wrenn up`) they
/// would bury everything else, and writing each twice cost the proxy a
/// fifth of its CPU per request (`wrenn-bench proxy`).
pub fn init(component: &str, dir: Option<&Path>) -> Result<()> {
    let filter = filter()?;
    let max_level = filter.max_level_hint();
    let has_file = dir.is_some();
    // Colours only for a person at a terminal, not in journald or a file.
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_filter(tracing_subscriber::filter::filter_fn(move |m| {
            !(has_file && m.target() == ACCESS_TARGET)
        }));
    let file_layer = match dir {
        Some(dir) => {
            let logs = dir.join("logs");
            std::fs::create_dir_all(&logs)
                .with_context(|| format!("create log directory {}", logs.display()))?;
            let path = logs.join(format!("{component}.log"));
            let file = open(&path).with_context(|| format!("open log file {}", path.display()))?;
            let log = Arc::new(LogFile::new(path, file));
            watch_sighup(log.clone())?;
            start_flusher(log.clone())?;
            let _ = LOG_FILE.set(log.clone());
            let access = access::AccessLayer { log: log.clone() }.with_filter(
                tracing_subscriber::filter::filter_fn(|m| m.target() == ACCESS_TARGET),
            );
            let rest = tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_writer(FileWriter { log })
                .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                    m.target() != ACCESS_TARGET
                }));
            Some(access.and_then(rest))
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file_layer)
        .try_init()
        .context("install the log subscriber")?;
    // With a per-layer filter next to unfiltered layers the subscriber cannot
    // tell its maximum level, so the `log` bridge is installed at TRACE and
    // every one of Pingora's per-request `debug!` calls becomes an event
    // that is filtered out only after a dispatch. Stop them at the `log` crate.
    log::set_max_level(log_level(max_level));
    Ok(())
}

/// The `log` crate's equivalent of a `tracing` maximum (unknown: TRACE).
fn log_level(max: Option<LevelFilter>) -> log::LevelFilter {
    max.unwrap_or(LevelFilter::TRACE).as_log()
}

/// Reopens the log file on SIGHUP, on a thread of its own so it works in
/// every component (the proxy runs Pingora's runtimes, not ours). Returns once
/// the handler is installed, so a SIGHUP right after start-up cannot kill us.
fn watch_sighup(log: Arc<LogFile>) -> Result<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("log-reopen".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let mut hup = match tokio::signal::unix::signal(
                    tokio::signal::unix::SignalKind::hangup(),
                ) {
                    Ok(h) => {
                        let _ = ready_tx.send(Ok(()));
                        h
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while hup.recv().await.is_some() {
                    match log.reopen() {
                        Ok(()) => tracing::info!(path = %log.path.display(), "log file reopened"),
                        Err(e) => {
                            tracing::error!(path = %log.path.display(), error = %e, "cannot reopen log file")
                        }
                    }
                }
            })
        })
        .context("start the SIGHUP watcher")?;
    ready_rx
        .recv()
        .context("the SIGHUP watcher stopped")?
        .context("listen for SIGHUP")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn log_in(dir: &Path) -> Arc<LogFile> {
        let path = dir.join("t.log");
        let file = open(&path).unwrap();
        Arc::new(LogFile::new(path, file))
    }

    /// The only test in this binary that installs the global subscriber.
    #[test]
    fn pingora_debug_records_stop_at_the_log_crate() {
        let expected = filter().unwrap().max_level_hint().unwrap();
        let dir = tempfile::tempdir().unwrap();
        init("test", Some(dir.path())).unwrap();
        assert_eq!(log::max_level(), log_level(Some(expected)));
    }

    #[test]
    fn access_lines_wait_for_a_flush_and_other_lines_keep_the_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_in(dir.path());
        let read = || std::fs::read_to_string(dir.path().join("t.log")).unwrap();
        let mut other = FileWriter { log: log.clone() };
        log.append(b"a1\n");
        log.append(b"a2\n");
        assert_eq!(read(), "", "access lines are written in batches");
        other.write_all(b"o1\n").unwrap();
        assert_eq!(
            read(),
            "a1\na2\no1\n",
            "a direct line goes after the buffered ones"
        );
        log.append(b"a3\n");
        log.flush();
        assert_eq!(read(), "a1\na2\no1\na3\n");
    }

    #[test]
    fn a_full_buffer_is_written_by_the_line_that_fills_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_in(dir.path());
        let mut line = vec![b'x'; 1023];
        line.push(b'\n');
        let lines = BUF_CAP / 1024;
        for _ in 0..lines - 1 {
            log.append(&line);
        }
        let len = || std::fs::metadata(dir.path().join("t.log")).unwrap().len();
        assert_eq!(len(), 0);
        log.append(&line);
        assert_eq!(len(), BUF_CAP as u64);
    }

    #[test]
    fn reopening_writes_the_buffer_to_the_old_file_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_in(dir.path());
        log.append(b"before\n");
        std::fs::rename(dir.path().join("t.log"), dir.path().join("t.log.1")).unwrap();
        log.reopen().unwrap();
        log.append(b"after\n");
        log.flush();
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
        assert_eq!(read("t.log.1"), "before\n");
        assert_eq!(read("t.log"), "after\n");
    }
}
