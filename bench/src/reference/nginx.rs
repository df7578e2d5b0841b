//! nginx from Debian (`nginx-light`), configured like wrenn's proxy by
//! `conf/bench/nginx.conf`, in a throwaway prefix on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;

const TEMPLATE: &str = include_str!("../../../conf/bench/nginx.conf");

/// A running nginx master (and its workers); stopped on drop.
pub struct Nginx {
    child: Child,
    pub listen: SocketAddr,
    prefix: PathBuf,
}

impl Nginx {
    /// Starts nginx with `workers` worker processes in front of `upstream`.
    pub async fn start(dir: &Path, workers: usize, upstream: SocketAddr) -> anyhow::Result<Self> {
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(&prefix)?;
        let [listen] = crate::platform::free_ports::<1>()?;
        let conf = render(&prefix, workers, upstream, listen);
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        // runs: nginx
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting nginx (Debian package nginx-light)")?;
        let mut n = Nginx {
            child,
            listen,
            prefix,
        };
        let (pid, error_log) = (n.pid(), n.prefix.join("error.log"));
        super::wait_listening(
            &mut n.child,
            "nginx",
            listen,
            || crate::procstat::children(pid).len() >= workers,
            || {
                format!(
                    ": {}",
                    std::fs::read_to_string(&error_log).unwrap_or_default()
                )
            },
        )
        .await?;
        Ok(n)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: fast shutdown of the master and its workers.
        crate::procstat::stop(&mut self.child, Signal::SIGTERM, Duration::from_secs(10));
    }
}

fn nginx_bin() -> PathBuf {
    std::env::var_os("WRENN_BENCH_NGINX")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/sbin/nginx".into())
}

/// The config for this run: `@WORKERS@`, `@PREFIX@`, `@UPSTREAM@`, `@LISTEN@`.
pub fn render(prefix: &Path, workers: usize, upstream: SocketAddr, listen: SocketAddr) -> String {
    TEMPLATE
        .replace("@WORKERS@", &workers.to_string())
        .replace("@PREFIX@", &prefix.display().to_string())
        .replace("@UPSTREAM@", &upstream.to_string())
        .replace("@LISTEN@", &listen.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled() {
        let c = render(
            Path::new("/tmp/x"),
            2,
            "10.210.0.3:8080".parse().unwrap(),
            "127.0.0.1:9999".parse().unwrap(),
        );
        assert!(!c.contains('@'), "unfilled placeholder in:\n{c}");
        assert!(c.contains("worker_processes 2;"));
        assert!(c.contains("server 10.210.0.3:8080;"));
        assert!(c.contains("listen 127.0.0.1:9999 "));
    }
}
