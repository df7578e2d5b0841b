//! Logging for the long-running components (`up`, `agent`, `control`, `proxy`).
//!
//! `tracing` with structured fields, human-readable on stderr and JSON lines in
//! `$WRENN_DIR/logs/<component>.log`. The level comes from `LOG_LEVEL`
//! (default `info`), which also accepts `RUST_LOG`-style filters such as
//! `info,wrenn_proxy=debug`; `RUST_LOG` is read when `LOG_LEVEL` is unset.
//! SIGHUP reopens the log file, so logrotate can rotate without copytruncate
//! (`conf/logrotate/wrenn`). Records of the `log` crate (Pingora's) are bridged.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl LogFile {
    fn reopen(&self) -> std::io::Result<()> {
        let f = open(&self.path)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = f;
        Ok(())
    }
}

#[derive(Clone)]
struct FileWriter(Arc<LogFile>);

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(buf)
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
            let log = Arc::new(LogFile {
                path,
                file: Mutex::new(file),
            });
            watch_sighup(log.clone())?;
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(FileWriter(log)),
            )
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file_layer)
        .try_init()
        .context("install the log subscriber")?;
    Ok(())
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
