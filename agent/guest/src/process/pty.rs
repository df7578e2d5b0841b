//! Pseudo-terminals: the master end (async, non-blocking) kept by the agent, the
//! slave end handed to the child as stdin/stdout/stderr and controlling terminal.

use std::io;
use std::os::fd::{AsFd as _, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl, open};
use nix::pty::{PtyMaster, grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;
use nix::sys::termios::{InputFlags, SetArg, tcgetattr, tcsetattr};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tonic::Status;

/// Largest accepted terminal dimension (columns or rows).
pub const MAX_DIMENSION: u32 = 4096;

/// A validated terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    pub cols: u16,
    pub rows: u16,
}

impl WindowSize {
    /// Checks a size from a request: both dimensions in `1..=MAX_DIMENSION`.
    pub fn new(cols: u32, rows: u32) -> Result<Self, PtyError> {
        let ok = |n: u32| (1..=MAX_DIMENSION).contains(&n);
        if !ok(cols) || !ok(rows) {
            return Err(PtyError::BadSize { cols, rows });
        }
        Ok(Self {
            cols: cols as u16,
            rows: rows as u16,
        })
    }

    fn winsize(self) -> libc::winsize {
        libc::winsize {
            ws_row: self.rows,
            ws_col: self.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }
    }
}

/// What went wrong with a terminal.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error(
        "pty size {cols}x{rows} (cols x rows) is out of range: each must be 1..={MAX_DIMENSION}"
    )]
    BadSize { cols: u32, rows: u32 },
    #[error("pty: {step}")]
    Setup {
        step: &'static str,
        #[source]
        source: Errno,
    },
    #[error("pty: opening the slave {path}")]
    OpenSlave {
        path: String,
        #[source]
        source: Errno,
    },
}

impl From<PtyError> for Status {
    fn from(err: PtyError) -> Self {
        match err {
            PtyError::BadSize { .. } => Status::invalid_argument(err.to_string()),
            _ => Status::internal(crate::wire::chain(&err)),
        }
    }
}

/// The agent's end of a pseudo-terminal.
#[derive(Debug)]
pub struct Pty {
    master: AsyncFd<PtyMaster>,
    /// Serializes writers so concurrent inputs are not interleaved mid-buffer.
    write_lock: tokio::sync::Mutex<()>,
}

impl Pty {
    /// Opens a new terminal of `size`. Returns the master and the slave for the
    /// child; both are close-on-exec in the agent.
    pub fn open(size: WindowSize) -> Result<(Self, OwnedFd), PtyError> {
        let setup = |step| move |source| PtyError::Setup { step, source };
        let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let master = posix_openpt(flags).map_err(setup("posix_openpt /dev/ptmx"))?;
        grantpt(&master).map_err(setup("grantpt"))?;
        unlockpt(&master).map_err(setup("unlockpt"))?;
        let path = ptsname_r(&master).map_err(setup("ptsname"))?;
        let slave =
            open(path.as_str(), flags, Mode::empty()).map_err(|source| PtyError::OpenSlave {
                path: path.clone(),
                source,
            })?;
        // UTF-8 aware line editing (backspace removes a whole character).
        let mut termios = tcgetattr(&slave).map_err(setup("tcgetattr"))?;
        termios.input_flags |= InputFlags::IUTF8;
        tcsetattr(&slave, SetArg::TCSANOW, &termios).map_err(setup("tcsetattr"))?;
        set_winsize(&master, size).map_err(setup("TIOCSWINSZ"))?;
        let status = fcntl(&master, FcntlArg::F_GETFL).map_err(setup("F_GETFL"))?;
        let status = OFlag::from_bits_truncate(status) | OFlag::O_NONBLOCK;
        fcntl(&master, FcntlArg::F_SETFL(status)).map_err(setup("F_SETFL O_NONBLOCK"))?;
        let master = crate::sys::register(master).map_err(|e| PtyError::Setup {
            step: "registering with the reactor",
            source: io_errno(&e.into_parts().1),
        })?;
        Ok((
            Self {
                master,
                write_lock: tokio::sync::Mutex::new(()),
            },
            slave,
        ))
    }

    /// Sets the terminal size; the kernel signals `SIGWINCH` to the foreground.
    pub fn resize(&self, size: WindowSize) -> Result<(), PtyError> {
        set_winsize(self.master.get_ref(), size).map_err(|source| PtyError::Setup {
            step: "TIOCSWINSZ",
            source,
        })
    }

    /// Writes all of `data` as terminal input.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        let _order = self.write_lock.lock().await;
        while !data.is_empty() {
            let written = self
                .master
                .async_io(Interest::WRITABLE, |m| {
                    nix::unistd::write(m.as_fd(), data).map_err(io::Error::from)
                })
                .await?;
            data = &data[written..];
        }
        Ok(())
    }
}

impl super::output::Source for Pty {
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.master.try_io(Interest::READABLE, |m| {
            nix::unistd::read(m.as_fd(), buf).map_err(io::Error::from)
        })
    }

    async fn readable(&self) -> io::Result<()> {
        // Readiness stays set; `try_read` clears it when the read would block.
        self.master.readable().await.map(drop)
    }

    fn is_eof_error(err: &io::Error) -> bool {
        // Reading the master once every slave fd is closed fails with EIO.
        err.raw_os_error() == Some(libc::EIO)
    }
}

fn io_errno(err: &io::Error) -> Errno {
    Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO))
}

fn set_winsize(master: &PtyMaster, size: WindowSize) -> Result<(), Errno> {
    crate::sys::set_winsize(master.as_fd(), &size.winsize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_validated() {
        assert_eq!(
            WindowSize::new(80, 24).unwrap(),
            WindowSize { cols: 80, rows: 24 }
        );
        for (cols, rows) in [(0, 24), (80, 0), (100_000, 24), (80, MAX_DIMENSION + 1)] {
            let err = WindowSize::new(cols, rows).unwrap_err();
            assert!(err.to_string().contains(&format!("{cols}x{rows}")), "{err}");
            assert_eq!(Status::from(err).code(), tonic::Code::InvalidArgument);
        }
    }

    #[tokio::test]
    async fn a_new_pty_has_the_requested_size_and_echoes() {
        use super::super::output::Source as _;
        let (pty, slave) = Pty::open(WindowSize::new(100, 30).unwrap()).unwrap();
        let ws = crate::sys::winsize(slave.as_fd()).unwrap();
        assert_eq!((ws.ws_col, ws.ws_row), (100, 30));
        pty.resize(WindowSize::new(132, 50).unwrap()).unwrap();
        let ws = crate::sys::winsize(slave.as_fd()).unwrap();
        assert_eq!((ws.ws_col, ws.ws_row), (132, 50));
        // The line discipline echoes input back to the master.
        pty.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 16];
        let mut got = Vec::new();
        while got.len() < 2 {
            pty.readable().await.unwrap();
            match pty.try_read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, b"hi");
    }
}
