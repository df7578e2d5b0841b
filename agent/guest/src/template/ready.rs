//! The READY loop: run the template's check until it passes or its timeout,
//! counted from the agent's start-up, has passed.
//!
//! # Design
//! - A run that fails is followed by a pause of `interval`, then the next run.
//! - Each run is bounded ([`run_limit`]): by [`RUN_LIMIT`] or the interval,
//!   whichever is longer, and by the time left; an overrunning run is killed
//!   and counts as failed. Once the deadline is near, one last run gets at
//!   least [`MIN_RUN_LIMIT`], so the loop ends at most that long after it.
//! - The outcome is [`NotReady`] on timeout: one line, `READY did not pass
//!   within <N> s: exit <code>: <last lines of output>`, for the host to show.
//!
//! # Limitations
//! The loop does not know how the runs are made ([`poll`] takes a function);
//! the agent's runs are [`super::Launcher`]'s.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::Ready;

/// Longest a run may take when the interval is shorter.
pub const RUN_LIMIT: Duration = Duration::from_secs(5);
/// Shortest limit of a run, even past the deadline (the last run).
pub const MIN_RUN_LIMIT: Duration = Duration::from_millis(250);
/// Lines of output the failure line keeps...
const LAST_LINES: usize = 5;
/// ...and at most this many characters of them (the end is kept).
const LAST_CHARS: usize = 1000;

/// Why one run did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// It ended with `code` (128 + n for a signal), or was killed after
    /// `killed_after`; `output` is the tail of stdout and stderr together.
    Exit {
        code: i32,
        killed_after: Option<Duration>,
        output: Vec<u8>,
    },
    /// It could not be started (the message says why).
    NotStarted(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Exit {
                code,
                killed_after,
                output,
            } => {
                write!(f, "exit {code}")?;
                if let Some(limit) = killed_after {
                    write!(f, " (killed: still running after {} s)", secs(*limit))?;
                }
                match last_lines(output) {
                    lines if lines.is_empty() => write!(f, ": (no output)"),
                    lines => write!(f, ": {lines}"),
                }
            }
            Failure::NotStarted(why) => write!(f, "could not start: {why}"),
        }
    }
}

/// READY's timeout passed; displays as the line the agent logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    pub timeout: Duration,
    pub attempts: u32,
    /// The last run's failure.
    pub last: Failure,
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "READY did not pass within {} s: {}",
            secs(self.timeout),
            self.last
        )
    }
}

impl std::error::Error for NotReady {}

/// `120`, `1.5`, `0.25`: seconds to the millisecond, without trailing zeros.
fn secs(d: Duration) -> String {
    (d.as_millis() as f64 / 1000.0).to_string()
}

/// The limit of a run with `left` until the deadline; see the module docs.
pub fn run_limit(interval: Duration, left: Duration) -> Duration {
    RUN_LIMIT.max(interval).min(left).max(MIN_RUN_LIMIT)
}

/// Calls `attempt(limit)` until it passes (returns the number of runs) or
/// `ready.timeout` after `started` has passed.
pub async fn poll<F, Fut>(ready: &Ready, started: Instant, mut attempt: F) -> Result<u32, NotReady>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    let deadline = started + ready.timeout;
    let mut attempts = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        attempts += 1;
        match attempt(run_limit(ready.interval, left)).await {
            Ok(()) => return Ok(attempts),
            Err(last) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(NotReady {
                        timeout: ready.timeout,
                        attempts,
                        last,
                    });
                }
                tracing::debug!(attempts, failure = %last, "READY has not passed yet");
                tokio::time::sleep_until((now + ready.interval).min(deadline)).await;
            }
        }
    }
}

/// The last non-blank lines of `output` on one line, joined by ` | `, control
/// characters blanked, at most [`LAST_CHARS`] (the end kept).
pub fn last_lines(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let joined = lines[lines.len().saturating_sub(LAST_LINES)..].join(" | ");
    let chars: Vec<char> = joined
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match chars.len().checked_sub(LAST_CHARS) {
        Some(cut) if cut > 0 => std::iter::once('…')
            .chain(chars[cut..].iter().copied())
            .collect(),
        _ => chars.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    fn ready(timeout_ms: u64, interval_ms: u64) -> Ready {
        Ready {
            command: "check".into(),
            timeout: Duration::from_millis(timeout_ms),
            interval: Duration::from_millis(interval_ms),
        }
    }

    fn exit(code: i32, output: &str) -> Failure {
        Failure::Exit {
            code,
            killed_after: None,
            output: output.as_bytes().to_vec(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn polls_every_interval_until_a_run_passes() {
        let started = Instant::now();
        let runs = RefCell::new(Vec::new());
        let passed = poll(&ready(10_000, 200), started, |limit| {
            runs.borrow_mut().push((started.elapsed(), limit));
            let n = runs.borrow().len();
            async move {
                // Each run takes 50 ms; the fourth passes.
                tokio::time::sleep(Duration::from_millis(50)).await;
                if n < 4 { Err(exit(1, "")) } else { Ok(()) }
            }
        })
        .await;
        assert_eq!(passed, Ok(4));
        let at: Vec<u128> = runs.borrow().iter().map(|(t, _)| t.as_millis()).collect();
        assert_eq!(at, [0, 250, 500, 750]);
        assert!(runs.borrow().iter().all(|(_, limit)| *limit == RUN_LIMIT));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_timeout_with_the_last_failure() {
        let started = Instant::now();
        let mut n = 0;
        let err = poll(&ready(1000, 300), started, |_| {
            n += 1;
            let failure = exit(7, &format!("line one\nattempt {n}\n"));
            async move { Err(failure) }
        })
        .await
        .unwrap_err();
        // At 0, 300, 600, 900 ms, and once more at the deadline.
        assert_eq!(err.attempts, 5);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(
            err.to_string(),
            "READY did not pass within 1 s: exit 7: line one | attempt 5"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn runs_are_bounded_by_the_time_left() {
        let started = Instant::now();
        let limits = RefCell::new(Vec::new());
        let err = poll(&ready(7000, 200), started, |limit| {
            limits.borrow_mut().push(limit);
            async move {
                // Runs until killed at its limit.
                tokio::time::sleep(limit).await;
                Err(Failure::Exit {
                    code: 137,
                    killed_after: Some(limit),
                    output: Vec::new(),
                })
            }
        })
        .await
        .unwrap_err();
        // 5 s, a pause, then the 1.8 s left.
        assert_eq!(*limits.borrow(), [RUN_LIMIT, Duration::from_millis(1800)]);
        assert_eq!(started.elapsed(), Duration::from_secs(7));
        assert_eq!(
            err.to_string(),
            "READY did not pass within 7 s: exit 137 (killed: still running after 1.8 s): (no output)"
        );
        // A zero timeout still runs the check once.
        let once = poll(&ready(0, 200), Instant::now(), |_| async { Ok(()) }).await;
        assert_eq!(once, Ok(1));
    }

    #[test]
    fn seconds_are_shown_to_the_millisecond() {
        assert_eq!(secs(Duration::from_secs(120)), "120");
        assert_eq!(secs(Duration::from_millis(800)), "0.8");
        assert_eq!(secs(Duration::from_nanos(1_498_649_356)), "1.498");
    }

    #[test]
    fn limits_follow_a_long_interval() {
        let minute = Duration::from_secs(60);
        assert_eq!(
            run_limit(Duration::from_secs(9), minute),
            Duration::from_secs(9)
        );
        assert_eq!(run_limit(Duration::from_millis(1), minute), RUN_LIMIT);
        assert_eq!(run_limit(minute, Duration::ZERO), MIN_RUN_LIMIT);
    }

    #[test]
    fn failure_lines_keep_the_end_of_the_output_on_one_line() {
        let out = "a\n\nb\r\nc\n  \nd\ne\nf\tg\x1b[31m\n";
        assert_eq!(last_lines(out.as_bytes()), "b | c | d | e | f g [31m");
        let long = "x".repeat(3000) + "END";
        let kept = last_lines(long.as_bytes());
        assert_eq!(kept.chars().count(), LAST_CHARS + 1);
        assert!(kept.starts_with('…') && kept.ends_with("END"), "{kept}");
        assert_eq!(last_lines(b"\xff\xfeok"), "\u{fffd}\u{fffd}ok");
        assert_eq!(
            Failure::NotStarted("user \"app\" does not exist".into()).to_string(),
            "could not start: user \"app\" does not exist"
        );
    }
}
