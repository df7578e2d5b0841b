//! A sandbox's console — the guest agent's stdout and stderr, or a
//! Firecracker VM's serial console — kept in a capped log.
//!
//! # Design
//!
//! The console is the write end of a pipe; the runtime drains the read end
//! into `guest.log` in the sandbox directory. When `guest.log` would pass
//! half the cap it becomes `guest.log.1` (replacing the previous one) and a
//! new `guest.log` starts, so the two together never hold more than
//! [`LOG_CAP`] however much a sandbox writes (its root can write to
//! `/proc/1/fd/1`). The drain is one task per sandbox that sleeps in
//! `epoll` until there is something to read, and ends at end-of-file, when
//! every writer is gone.
//!
//! The pipe outlives the runtime: after an agent restart, [`reopen`] opens
//! a new read end through `/proc/<pid>/fd/1` of the sandbox's first
//! process, checked to be the same pipe as recorded at start ([`PipeId`]).
//! While no agent reads, the guest's writes fail with `EPIPE` (it ignores
//! `SIGPIPE`) and its log lines of that time are lost; nothing blocks.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Most bytes of console output kept per sandbox (`guest.log` and
/// `guest.log.1` together).
pub const LOG_CAP: u64 = 10 << 20;

/// Identifies a pipe across processes (`st_dev`, `st_ino` of its inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeId {
    pub dev: u64,
    pub ino: u64,
}

impl PipeId {
    pub fn of(fd: &OwnedFd) -> io::Result<PipeId> {
        let st = nix::sys::stat::fstat(fd).map_err(io::Error::from)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a pipe"));
        }
        Ok(PipeId {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }
}

/// A new console pipe: `(read end, write end)`, both close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// A read end of the console pipe of a running sandbox whose first process
/// is `pid`, if its stdout still is the pipe `id`.
pub fn reopen(pid: i32, id: PipeId) -> io::Result<OwnedFd> {
    let path = format!("/proc/{pid}/fd/1");
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)?;
    let fd = OwnedFd::from(f);
    let found = PipeId::of(&fd)?;
    if found != id {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path} is no longer the console pipe"),
        ));
    }
    Ok(fd)
}

/// Drains `read` into `log` (and its rotation) until end-of-file, in a task
/// of the current tokio runtime.
pub fn drain(read: OwnedFd, log: PathBuf) -> io::Result<()> {
    nix::fcntl::fcntl(
        &read,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(io::Error::from)?;
    let afd = crate::sys::readable(read)?;
    let mut out = Capped::open(log, LOG_CAP)?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let Ok(mut ready) = afd.readable().await else {
                return;
            };
            match ready.try_io(|fd| read_fd(fd.get_ref(), &mut buf)) {
                Ok(Ok(0)) => return,
                Ok(Ok(n)) => {
                    if let Err(e) = out.write(&buf[..n]) {
                        tracing::warn!(path = %out.path.display(), error = %e, "writing the console log");
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "reading the console pipe");
                    return;
                }
                Err(_would_block) => {}
            }
        }
    });
    Ok(())
}

fn read_fd(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    Ok(nix::unistd::read(fd, buf)?)
}

/// An append-only log that rotates at half of its cap.
#[derive(Debug)]
struct Capped {
    path: PathBuf,
    file: File,
    size: u64,
    half: u64,
}

impl Capped {
    fn open(path: PathBuf, cap: u64) -> io::Result<Capped> {
        let file = open_log(&path)?;
        let size = file.metadata()?.size();
        Ok(Capped {
            path,
            file,
            size,
            half: cap / 2,
        })
    }

    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.size >= self.half {
                fs::rename(&self.path, rotated(&self.path))?;
                self.file = open_log(&self.path)?;
                self.size = 0;
            }
            let room = (self.half - self.size) as usize;
            let n = room.min(data.len());
            self.file.write_all(&data[..n])?;
            self.size += n as u64;
            data = &data[n..];
        }
        Ok(())
    }
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// The previous part of a rotated log.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// The last `max` bytes of the log at `path`, its rotated part included.
pub fn tail(path: &Path, max: usize) -> Option<String> {
    let current = read_tail(path, max)?;
    let missing = max.saturating_sub(current.len());
    if missing == 0 {
        return Some(current);
    }
    match read_tail(&rotated(path), missing) {
        Some(older) => Some(older + &current),
        None => Some(current),
    }
}

/// The last `max` bytes of a log file, lossily decoded; `None` if unreadable.
pub(crate) fn read_tail(path: &std::path::Path, max: usize) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(max as u64);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_and_never_passes_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guest.log");
        let mut log = Capped::open(path.clone(), 1000).unwrap();
        for i in 0..100u8 {
            log.write(&[b'a' + i % 26; 37]).unwrap();
        }
        let cur = fs::metadata(&path).unwrap().len();
        let old = fs::metadata(rotated(&path)).unwrap().len();
        // 3700 bytes written through a cap of 1000: rotated at every 500.
        assert_eq!(old, 500, "the rotated part is exactly half the cap");
        assert_eq!(cur, 3700 % 500);
        let t = tail(&path, 600).unwrap();
        assert_eq!(t.len(), 600);
        assert!(t.ends_with(&String::from_utf8(vec![b'a' + 99 % 26; 37]).unwrap()));
    }

    #[tokio::test]
    async fn drains_a_pipe_until_its_writers_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guest.log");
        let (r, w) = pipe().unwrap();
        let id = PipeId::of(&r).unwrap();
        assert_eq!(PipeId::of(&w).unwrap(), id, "both ends are one pipe");
        drain(r, path.clone()).unwrap();
        let mut w = File::from(w);
        w.write_all(b"hello\n").unwrap();
        drop(w);
        for _ in 0..200 {
            if fs::read_to_string(&path).unwrap_or_default() == "hello\n" {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("not drained: {:?}", fs::read_to_string(&path));
    }
}
