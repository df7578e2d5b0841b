//! Reference proxies the `proxy` scenario measures next to wrenn's: bare
//! Pingora ([`crate::reference::bare_pingora`]) and a lean tokio forwarder ([`crate::reference::lean_tokio`]).
//! Each runs as a child process of `wrenn-bench` (a hidden subcommand), so
//! its CPU time is its own, like nginx's. With `WRENN_BENCH_BASELINE` set,
//! a wrenn proxy from another build runs beside them ([`baseline`]).

pub mod bare_pingora;
pub mod baseline;
pub mod lean_tokio;
pub mod nginx;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::Signal;

/// A reference proxy, running; stopped on drop.
pub struct RefProxy {
    child: Child,
    pub listen: SocketAddr,
}

impl RefProxy {
    /// Starts `wrenn-bench <subcommand> <upstream> <listen> <threads>` and
    /// waits until it accepts connections; `what` names it in errors.
    pub async fn start(
        what: &str,
        subcommand: &str,
        threads: usize,
        upstream: SocketAddr,
    ) -> anyhow::Result<Self> {
        let [listen] = crate::platform::free_ports::<1>()?;
        // runs: -; this wrenn-bench binary, as a reference proxy
        let child = Command::new(std::env::current_exe()?)
            .args([
                subcommand,
                &upstream.to_string(),
                &listen.to_string(),
                &threads.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let mut proxy = RefProxy { child, listen };
        wait_listening(&mut proxy.child, what, listen, || true, String::new).await?;
        Ok(proxy)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for RefProxy {
    fn drop(&mut self) {
        // SIGINT: Pingora's fast shutdown; it ends the lean forwarder too.
        crate::procstat::stop(&mut self.child, Signal::SIGINT, Duration::from_secs(5));
    }
}

/// Waits up to 10 s until `listen` accepts connections and `ready()` holds;
/// fails, naming `what`, if `child` exits first (with `exit_detail()`) or
/// the time runs out.
pub async fn wait_listening(
    child: &mut Child,
    what: &str,
    listen: SocketAddr,
    ready: impl Fn() -> bool,
    exit_detail: impl Fn() -> String,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited at start ({status}){}", exit_detail());
        }
        if tokio::net::TcpStream::connect(listen).await.is_ok() && ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} did not listen on {listen} within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/proxy/<id>/<port>/rest` → `/rest` (with the query), as nginx's location does.
pub fn strip_prefix(target: &str) -> Option<&str> {
    let after = target.strip_prefix("/proxy/")?;
    let (_id, after) = after.split_once('/')?;
    let slash = after.find('/')?;
    Some(&after[slash..])
}

#[cfg(test)]
mod tests {
    use super::strip_prefix;

    #[test]
    fn the_path_form_prefix_is_stripped_like_nginx_does() {
        assert_eq!(strip_prefix("/proxy/abc/8080/1k"), Some("/1k"));
        assert_eq!(strip_prefix("/proxy/abc/8080/a/b?q=1"), Some("/a/b?q=1"));
        assert_eq!(strip_prefix("/proxy/abc/8080"), None);
        assert_eq!(strip_prefix("/1k"), None);
    }
}
