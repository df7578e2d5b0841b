//! CPU time and memory of processes, from `/proc`, and stopping the ones
//! the bench started.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Sends `signal` to `child` and waits up to `grace` for it to exit; kills
/// it after that. The exit status, when it exited by itself.
pub fn stop(child: &mut Child, signal: Signal, grace: Duration) -> Option<ExitStatus> {
    let _ = kill(Pid::from_raw(child.id() as i32), signal);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// How a stop of `what` ([`stop`] with `grace`) went: an error when it was
/// killed or exited with a failure, quoting `tail` (the end of its output).
pub fn stopped(
    what: &str,
    status: Option<ExitStatus>,
    grace: Duration,
    tail: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => anyhow::bail!("{what} stopped with {s}; its output ends with:\n{}", tail()),
        None => anyhow::bail!("{what} did not stop within {} s (killed)", grace.as_secs()),
    }
}

/// User + system CPU time of one process (all its threads).
pub fn cpu_time(pid: i32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may contain spaces) start after ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks()))
}

/// CPU time of a process and its direct children (nginx: master + workers).
pub fn tree_cpu_time(pid: i32) -> Option<Duration> {
    let mut total = cpu_time(pid)?;
    for child in children(pid) {
        total += cpu_time(child).unwrap_or_default();
    }
    Some(total)
}

/// Resident memory of one process, in bytes.
pub fn rss(pid: i32) -> Option<u64> {
    status_kib(pid, "VmRSS:").map(|k| k * 1024)
}

/// Resident memory of a process and its direct children, in bytes.
pub fn tree_rss(pid: i32) -> Option<u64> {
    let mut total = rss(pid)?;
    for child in children(pid) {
        total += rss(child).unwrap_or_default();
    }
    Some(total)
}

fn status_kib(pid: i32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

fn clock_ticks() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Direct children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| parent(p) == Some(pid))
        .collect()
}

/// The child of `pid` whose first argument is `arg` (`wrenn proxy`).
pub fn child_with_arg(pid: i32, arg: &str) -> Option<i32> {
    children(pid).into_iter().find(|&c| {
        std::fs::read(format!("/proc/{c}/cmdline"))
            .map(|cmd| cmd.split(|&b| b == 0).nth(1) == Some(arg.as_bytes()))
            .unwrap_or(false)
    })
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_cpu_time_and_memory() {
        let me = std::process::id() as i32;
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        assert!(cpu_time(me).unwrap() > Duration::ZERO);
        assert!(rss(me).unwrap() > 1 << 20);
        assert_eq!(parent(me), Some(nix::unistd::getppid().as_raw()));
    }
}
