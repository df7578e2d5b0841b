//! `wrenn pty` driven through a real pseudo-terminal the test opens, as a
//! person at a terminal would: raw mode on, a resize the remote `stty size`
//! sees, Ctrl-C interrupting `sleep 100`, the remote exit code, Ctrl-D, and
//! the local terminal restored afterwards.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::pty::{Winsize, openpty};
use nix::sys::termios::{LocalFlags, tcgetattr};

use crate::common::Platform;

const T: Duration = Duration::from_secs(30);

/// `wrenn pty …` on the slave side of a pseudo-terminal that is its
/// controlling terminal; the test holds the master.
struct Terminal {
    master: OwnedFd,
    slave: OwnedFd,
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
}

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl Terminal {
    fn open(p: &Platform, args: &[&str]) -> Terminal {
        let pty = openpty(Some(&winsize(24, 80)), None).expect("openpty");
        for fd in [&pty.master, &pty.slave] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).expect("FD_CLOEXEC");
        }
        let mut cmd = p.command();
        cmd.arg("pty").args(args).env("TERM", "xterm");
        cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
        // SAFETY: setsid and ioctl(TIOCSCTTY) are async-signal-safe and only
        // touch the child: a new session whose controlling terminal is the
        // pty on its stdin, so resizes send it SIGWINCH as a terminal would.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start wrenn pty");
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        let reader = pty.master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once the test closes the slave.
            while let Ok(n) = nix::unistd::read(&reader, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            master: pty.master,
            slave: pty.slave,
            child,
            output,
        }
    }

    fn send(&self, s: &str) {
        let mut b = s.as_bytes();
        while !b.is_empty() {
            let n = nix::unistd::write(&self.master, b).expect("write to the pty");
            b = &b[n..];
        }
    }

    /// Bytes received so far.
    fn mark(&self) -> usize {
        self.output.lock().unwrap().len()
    }

    /// Output since `mark`, without escape sequences and carriage returns.
    fn text_since(&self, mark: usize) -> String {
        let raw = String::from_utf8_lossy(&self.output.lock().unwrap()[mark..]).into_owned();
        strip_escapes(&raw)
    }

    /// Waits until `f` finds what it wants in the output since `mark`.
    fn expect<T>(&self, mark: usize, what: &str, f: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + T;
        loop {
            let text = self.text_since(mark);
            if let Some(v) = f(&text) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {T:?}; the terminal showed:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn expect_line(&self, mark: usize, line: &str) {
        self.expect(mark, &format!("line {line:?}"), |t| {
            t.lines().any(|l| l.trim_end() == line).then_some(())
        });
    }

    fn resize(&self, rows: u16, cols: u16) {
        let ws = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ reads one `winsize` from a live local.
        let r = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(r, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    fn local_flags(&self) -> LocalFlags {
        tcgetattr(self.slave.as_fd())
            .expect("tcgetattr")
            .local_flags
    }

    /// Waits for `wrenn pty` to exit; its exit code.
    fn wait(&mut self) -> i32 {
        let deadline = Instant::now() + T;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return crate::common::proc::exit_code(s);
            }
            assert!(
                Instant::now() < deadline,
                "wrenn pty did not exit; the terminal showed:\n{}",
                self.text_since(0)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ params final-byte; OSC: ESC ] … BEL; other: ESC x.
                match chars.next() {
                    Some('[') => {
                        for c in chars.by_ref() {
                            if ('@'..='~').contains(&c) {
                                break;
                            }
                        }
                    }
                    Some(']') => {
                        for c in chars.by_ref() {
                            if c == '\x07' {
                                break;
                            }
                        }
                    }
                    _ => {}
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

fn raw(flags: LocalFlags) -> bool {
    !flags.intersects(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG)
}

pub fn pty(p: &Platform) {
    let sb = p.sandbox(&["--timeout", "600"]);
    let mut term = Terminal::open(p, &[&sb.id]);
    let cooked = term.local_flags();
    assert!(!raw(cooked), "a fresh pty is cooked");
    crate::common::eventually(T, "wrenn pty to put the terminal in raw mode", || {
        raw(term.local_flags()).then_some(())
    });

    // The remote terminal has the local size…
    let m = term.mark();
    term.send("stty size\r");
    term.expect_line(m, "24 80");

    // …and follows a resize (SIGWINCH to wrenn pty, a resize to the guest).
    term.resize(33, 101);
    crate::common::eventually(T, "the remote side to see 33 rows, 101 columns", || {
        let m = term.mark();
        // Tagged, because readline redrawing its line for the SIGWINCH can
        // put the answer on the line of the echoed command.
        term.send("echo size=$(stty size)\r");
        let seen = term.expect(m, "a size", |t| {
            t.match_indices("size=").find_map(|(i, _)| {
                let rest = t[i + 5..].lines().next()?.trim_end();
                let v: Vec<&str> = rest.split(' ').collect();
                (v.len() == 2 && v.iter().all(|n| n.parse::<u16>().is_ok()))
                    .then(|| rest.to_owned())
            })
        });
        (seen == "33 101").then_some(())
    });

    // Ctrl-C goes to the remote foreground process, not to wrenn pty.
    let m = term.mark();
    term.send("echo \"S$((3+4))\"; sleep 100\r");
    term.expect_line(m, "S7");
    let started = Instant::now();
    term.send("\x03");
    term.send("echo \"rc=$?\"\r");
    term.expect_line(m, "rc=130");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "sleep was not interrupted"
    );
    assert!(
        term.child.try_wait().unwrap().is_none(),
        "Ctrl-C ended wrenn pty"
    );

    // The shell's exit code is wrenn pty's, and the terminal is restored.
    term.send("exit 7\r");
    assert_eq!(term.wait(), 7, "{}", term.text_since(0));
    assert_eq!(
        term.local_flags(),
        cooked,
        "the local terminal was not restored"
    );
    drop(term);

    // Ctrl-D at the prompt ends the session; --user picks the user.
    let term = Terminal::open(p, &["--user", "wrenn-user", &sb.id]);
    let mut term = term;
    let m = term.mark();
    term.send("echo \"I am $(id -un)\"\r");
    term.expect_line(m, "I am wrenn-user");
    term.send("\x04");
    assert_eq!(term.wait(), 0, "{}", term.text_since(0));
    assert_eq!(term.local_flags(), cooked);
}
