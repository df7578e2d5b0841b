//! `wrenn files put | get | ls | rm | mkdir <id> …`
//!
//! Transfers stream in 64 KiB chunks and show a progress bar on a terminal for
//! files over 1 MiB. `get` writes to a temporary file next to the destination
//! and renames it at the end, so an interrupted download leaves nothing behind
//! (the guest does the same for `put`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use wrenn_proto::filesystem::write_request::StartEvent;
use wrenn_proto::wrenn::v1::{
    ListDirRequest, PathRequest, ReadFileRequest, WriteFileRequest, WriteFileStart,
    write_file_request,
};

use crate::client::GlobalArgs;
use crate::json;

const CHUNK: usize = 64 * 1024;
const PROGRESS_MIN: u64 = 1024 * 1024;

#[derive(Subcommand)]
pub enum FilesCmd {
    /// Upload a local file (`-` for stdin) to an absolute path in the sandbox.
    Put(PutArgs),
    /// Download a file from the sandbox to a local path (`-` for stdout).
    Get(GetArgs),
    /// List a directory.
    Ls(LsArgs),
    /// Remove a file or directory (recursively).
    Rm(PathArgs),
    /// Make a directory and its parents.
    Mkdir(PathArgs),
}

#[derive(Args)]
pub struct PutArgs {
    id: String,
    local: PathBuf,
    remote: String,
    /// Permission bits, octal (default 644).
    #[arg(long, value_parser = parse_mode)]
    mode: Option<u32>,
    /// Owner of the new file (default root).
    #[arg(long)]
    owner: Option<String>,
}

#[derive(Args)]
pub struct GetArgs {
    id: String,
    remote: String,
    local: PathBuf,
}

#[derive(Args)]
pub struct LsArgs {
    id: String,
    #[arg(default_value = "/")]
    path: String,
    /// 1 lists the directory, 2 adds its subdirectories' entries, …
    #[arg(long, default_value_t = 1)]
    depth: u32,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct PathArgs {
    id: String,
    path: String,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("expected octal permission bits such as 644, got {s:?}"))
}

fn bar(len: u64) -> ProgressBar {
    if len < PROGRESS_MIN || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

pub async fn run(g: &GlobalArgs, cmd: FilesCmd) -> Result<()> {
    let mut c = g.connect().await?;
    match cmd {
        FilesCmd::Put(a) => put(&mut c, a).await,
        FilesCmd::Get(a) => get(&mut c, a).await,
        FilesCmd::Ls(a) => {
            let entries = c
                .list_dir(ListDirRequest {
                    sandbox_id: a.id.clone(),
                    path: a.path.clone(),
                    depth: a.depth,
                })
                .await
                .with_context(|| format!("list {} in sandbox {}", a.path, a.id))?
                .into_inner()
                .entries;
            if a.json {
                json::print(&serde_json::Value::Array(
                    entries.iter().map(json::entry).collect(),
                ));
            } else {
                for e in entries {
                    println!(
                        "{} {:>8} {:<8} {:>12} {}",
                        e.permissions,
                        e.owner,
                        json::file_type(e.r#type),
                        e.size,
                        e.path
                    );
                }
            }
            Ok(())
        }
        FilesCmd::Rm(a) => {
            c.remove(PathRequest {
                sandbox_id: a.id.clone(),
                path: a.path.clone(),
            })
            .await
            .with_context(|| format!("remove {} in sandbox {}", a.path, a.id))?;
            Ok(())
        }
        FilesCmd::Mkdir(a) => {
            c.make_dir(PathRequest {
                sandbox_id: a.id.clone(),
                path: a.path.clone(),
            })
            .await
            .with_context(|| format!("make directory {} in sandbox {}", a.path, a.id))?;
            Ok(())
        }
    }
}

async fn put(c: &mut crate::client::Client, a: PutArgs) -> Result<()> {
    let what = || {
        format!(
            "upload {} to {} in sandbox {}",
            a.local.display(),
            a.remote,
            a.id
        )
    };
    let (mut reader, known_size): (Box<dyn tokio::io::AsyncRead + Unpin + Send>, Option<u64>) =
        if a.local.as_os_str() == "-" {
            (Box::new(tokio::io::stdin()), None)
        } else {
            let f = tokio::fs::File::open(&a.local)
                .await
                .with_context(|| format!("open {}", a.local.display()))?;
            let meta = f
                .metadata()
                .await
                .with_context(|| format!("stat {}", a.local.display()))?;
            if !meta.is_file() {
                anyhow::bail!("{} is not a regular file", a.local.display());
            }
            (Box::new(f), Some(meta.len()))
        };
    let len = known_size.unwrap_or(0);
    let (tx, rx) = mpsc::channel(16);
    tx.send(WriteFileRequest {
        event: Some(write_file_request::Event::Start(WriteFileStart {
            sandbox_id: a.id.clone(),
            file: Some(StartEvent {
                path: a.remote.clone(),
                mode: a.mode,
                owner: a.owner.clone(),
                // Lets the guest refuse an upload cut short (stdin: unknown).
                size: known_size,
            }),
        })),
    })
    .await?;
    let pb = bar(len);
    let pump_pb = pb.clone();
    // Reading runs beside the RPC so a local read error cancels the upload
    // (the stream is dropped without finishing, and the guest discards it).
    let pump = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            pump_pb.inc(n as u64);
            let ev = WriteFileRequest {
                event: Some(write_file_request::Event::Data(buf[..n].to_vec())),
            };
            if tx.send(ev).await.is_err() {
                return Ok(());
            }
        }
    });
    let (rpc, pumped) = tokio::join!(c.write_file(ReceiverStream::new(rx)), pump);
    pb.finish_and_clear();
    pumped
        .context("reader task")?
        .with_context(|| format!("read {}", a.local.display()))?;
    rpc.with_context(what)?;
    Ok(())
}

async fn get(c: &mut crate::client::Client, a: GetArgs) -> Result<()> {
    let what = || format!("download {} from sandbox {}", a.remote, a.id);
    let len = c
        .stat(PathRequest {
            sandbox_id: a.id.clone(),
            path: a.remote.clone(),
        })
        .await
        .with_context(what)?
        .into_inner()
        .entry
        .map(|e| e.size.max(0) as u64)
        .unwrap_or(0);
    let mut stream = c
        .read_file(ReadFileRequest {
            sandbox_id: a.id.clone(),
            path: a.remote.clone(),
        })
        .await
        .with_context(what)?
        .into_inner();
    if a.local.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = stream.message().await.with_context(what)? {
            out.write_all(&chunk.data)?;
        }
        out.flush()?;
        return Ok(());
    }
    let dest = if a.local.is_dir() {
        let name = Path::new(&a.remote)
            .file_name()
            .context("the remote path has no file name")?;
        a.local.join(name)
    } else {
        a.local.clone()
    };
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("create a temporary file in {}", dir.display()))?;
    let pb = bar(len);
    while let Some(chunk) = stream.message().await.with_context(what)? {
        tmp.write_all(&chunk.data)
            .with_context(|| format!("write {}", tmp.path().display()))?;
        pb.inc(chunk.data.len() as u64);
    }
    pb.finish_and_clear();
    tmp.persist(&dest)
        .with_context(|| format!("rename into {}", dest.display()))?;
    Ok(())
}
