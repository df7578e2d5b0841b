//! Starting a validated [`SpawnSpec`]: stdio (pipes or a PTY), a new session,
//! the user's ids, and registering with the reaper.

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};

use nix::unistd::{Gid, Uid};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::pty::Pty;
use super::request::{SpawnError, SpawnSpec};
use crate::reaper::{ExitStatus, Reaper};
use crate::sys::make_controlling_terminal;

/// The agent's ends of a new process's stdio.
#[derive(Debug)]
pub enum Io {
    Pipes {
        stdin: Option<pipe::Sender>,
        stdout: pipe::Receiver,
        stderr: pipe::Receiver,
    },
    Pty(Pty),
}

/// A started process.
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    pub io: Io,
    pub exit: oneshot::Receiver<ExitStatus>,
}

/// Ids to switch to in the child; `None` when the agent is not root (it can only
/// start processes as itself, checked in [`SpawnSpec::from_request`]).
#[derive(Debug, Clone)]
struct ChildIds {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
}

/// Starts `spec` in a new session; its exit status arrives through `reaper`.
pub fn spawn(spec: &SpawnSpec, reaper: &Reaper) -> Result<Spawned, SpawnError> {
    // runs: -; the program a client asked for, inside the sandbox
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(&spec.env)
        .current_dir(&spec.cwd);
    let pty = match spec.pty {
        Some(size) => {
            let (pty, slave) = Pty::open(size)?;
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(|source| exec_err(spec, source));
            cmd.stdin(Stdio::from(dup(&slave)?))
                .stdout(Stdio::from(dup(&slave)?))
                .stderr(Stdio::from(slave));
            Some(pty)
        }
        None => {
            let stdin = if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            };
            cmd.stdin(stdin)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            None
        }
    };
    let ids = nix::unistd::geteuid().is_root().then(|| ChildIds {
        uid: Uid::from_raw(spec.user.uid),
        gid: Gid::from_raw(spec.user.gid),
        groups: spec
            .user
            .groups
            .iter()
            .copied()
            .map(Gid::from_raw)
            .collect(),
    });
    let controlling_tty = pty.is_some();
    // SAFETY: the hook runs in the child between fork and exec. It only makes
    // async-signal-safe system calls (setsid, ioctl, setgroups, setgid, setuid)
    // on data allocated before the fork, and allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || child_setup(controlling_tty, ids.as_ref()));
    }
    let (pid, child, exit) = reaper
        .spawn(|| cmd.spawn().map(|child| (child.id(), child)))
        .map_err(|e| spawn_error(spec, e))?;
    // Drop the agent's copies of the PTY slave so the master sees EOF at exit.
    drop(cmd);
    let io = match pty {
        Some(pty) => Io::Pty(pty),
        None => pipes(child).map_err(|source| {
            // Cannot happen short of fd exhaustion; do not leave an unwatched child.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::SIGKILL,
            );
            SpawnError::Pipes { pid, source }
        })?,
    };
    Ok(Spawned { pid, io, exit })
}

fn pipes(mut child: std::process::Child) -> io::Result<Io> {
    let missing = || io::Error::other("stdio pipe missing");
    let stdin = child
        .stdin
        .take()
        .map(|s| pipe::Sender::from_owned_fd(OwnedFd::from(s)))
        .transpose()?;
    let stdout =
        pipe::Receiver::from_owned_fd(OwnedFd::from(child.stdout.take().ok_or_else(missing)?))?;
    let stderr =
        pipe::Receiver::from_owned_fd(OwnedFd::from(child.stderr.take().ok_or_else(missing)?))?;
    Ok(Io::Pipes {
        stdin,
        stdout,
        stderr,
    })
}

/// In the child: new session, controlling terminal, then the user's ids.
fn child_setup(controlling_tty: bool, ids: Option<&ChildIds>) -> io::Result<()> {
    nix::unistd::setsid()?;
    if controlling_tty {
        make_controlling_terminal()?;
    }
    if let Some(ids) = ids {
        nix::unistd::setgroups(&ids.groups)?;
        nix::unistd::setgid(ids.gid)?;
        nix::unistd::setuid(ids.uid)?;
    }
    Ok(())
}

fn exec_err(spec: &SpawnSpec, source: io::Error) -> SpawnError {
    SpawnError::Exec {
        program: spec.program.clone(),
        source,
    }
}

fn spawn_error(spec: &SpawnSpec, err: io::Error) -> SpawnError {
    let program = spec.program.clone();
    match err.kind() {
        io::ErrorKind::NotFound => {
            let path = spec
                .env
                .get(&OsString::from("PATH"))
                .map(|p| p.to_string_lossy().into_owned());
            SpawnError::NotFound {
                program,
                path: path.unwrap_or_default(),
            }
        }
        io::ErrorKind::PermissionDenied => SpawnError::PermissionDenied { program },
        _ => SpawnError::Exec {
            program,
            source: err,
        },
    }
}
