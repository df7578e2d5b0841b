//! The baseline proxy: a second `wrenn proxy`, from another `wrenn` binary
//! named by [`VAR`], next to `wrenn up`'s own, so that one run of the
//! `proxy` scenario measures a proxy change before and after, interleaved on
//! the same machine.
//!
//! It is started as `wrenn up` starts its proxy child (`cli/src/cmd/up.rs`):
//! `<baseline> proxy --listen … --admin-listen … --domain localhost --agent
//! http://<agent> --dir …`, with the environment `wrenn up` got (the same
//! `WRENN_PROXY_CONFIG`, `LOG_LEVEL` and, through the bench's own
//! environment, anything else such as `RUST_LOG` or `WRENN_PROXY_THREADS`),
//! and no `--threads` (one per core, as the child). It follows the same host
//! agent, so it routes to the same sandbox. Two things differ, both so that
//! the two proxies share nothing but the agent: its listen and admin ports,
//! and its state directory (`<platform dir>/baseline`, for its log file and
//! access log), which is why the agent key is passed as `--agent-key-file`
//! (the child finds the same file as `<dir>/agent.key`).
//!
//! Like the other reference processes it is a child of `wrenn-bench` in the
//! bench's process group (Ctrl-C reaches it too), stopped with SIGTERM and
//! waited for when the bed stops or is dropped.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::Signal;

use crate::platform::Platform;
use crate::pty_load::load::{connect, get};
use crate::sandbox::UPSTREAM_PORT;

/// The variable naming the baseline `wrenn` binary.
pub const VAR: &str = "WRENN_BENCH_BASELINE";
/// Start-up: listening, then routing to the sandbox.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Its grace period for in-flight requests is 10 s by default; after a run
/// there are none.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The baseline binary from [`VAR`], if set; an error naming the variable
/// and the path when it is not an executable file.
pub fn bin() -> anyhow::Result<Option<PathBuf>> {
    std::env::var_os(VAR)
        .map(|p| executable(PathBuf::from(p)))
        .transpose()
}

/// `path` if it is an executable file whose `proxy` subcommand takes the
/// flags [`Baseline::start`] passes (`--agent-key-file` is the newest).
fn executable(path: PathBuf) -> anyhow::Result<PathBuf> {
    let meta = std::fs::metadata(&path)
        .with_context(|| format!("{VAR}={}: no such file", path.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        bail!(
            "{VAR}={}: not an executable file (expected a `wrenn` binary)",
            path.display()
        );
    }
    // runs: -; the baseline wrenn binary ($WRENN_BENCH_BASELINE)
    let help = Command::new(&path)
        .args(["proxy", "--help"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{VAR}={}: cannot run it", path.display()))?;
    if !help.status.success() || !String::from_utf8_lossy(&help.stdout).contains("--agent-key-file")
    {
        bail!(
            "{VAR}={}: `proxy --help` does not list --agent-key-file ({}): not a wrenn binary, or one too old",
            path.display(),
            help.status
        );
    }
    Ok(path)
}

/// The baseline proxy, running; stopped on drop.
pub struct Baseline {
    child: Option<Child>,
    pub bin: PathBuf,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    dir: PathBuf,
}

impl Baseline {
    /// Starts `<bin> proxy` beside `platform`'s and waits until it serves
    /// `/proxy/<id>/<UPSTREAM_PORT>/1k` (its routes are synced).
    pub async fn start(bin: &Path, platform: &Platform, id: &str) -> anyhow::Result<Self> {
        let dir = platform.dir.join("baseline");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let [listen, admin] = crate::platform::free_ports::<2>()?;
        let out = std::fs::File::create(dir.join("proxy.out"))?;
        // runs: -; the baseline wrenn binary ($WRENN_BENCH_BASELINE), as wrenn up runs its proxy
        let child = Command::new(bin)
            .arg("proxy")
            .args(["--listen", &listen.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            // `wrenn up`'s default, which the bench keeps.
            .args(["--domain", "localhost"])
            .args(["--agent", &format!("http://{}", platform.agent)])
            .arg("--dir")
            .arg(&dir)
            .arg("--agent-key-file")
            .arg(platform.agent_key_file())
            .envs(platform.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {} proxy ({VAR})", bin.display()))?;
        let mut b = Baseline {
            child: Some(child),
            bin: bin.to_owned(),
            listen,
            admin,
            dir,
        };
        if let Err(e) = b.wait_ready(id).await {
            return Err(e.context(format!(
                "the baseline proxy {} did not start; its output ends with:\n{}",
                bin.display(),
                b.output_tail()
            )));
        }
        Ok(b)
    }

    /// Waits until a path-form GET through it answers 200.
    async fn wait_ready(&mut self, id: &str) -> anyhow::Result<()> {
        let request = format!(
            "GET /proxy/{id}/{UPSTREAM_PORT}/1k HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.listen
        );
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut buf = Vec::new();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("it exited ({status})");
            }
            let answer = match connect(self.listen).await {
                Ok(mut tcp) => get(&mut tcp, &mut buf, request.as_bytes()).await.map(drop),
                Err(e) => Err(e),
            };
            match answer {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!(
                        "not serving the sandbox within {} s",
                        READY_TIMEOUT.as_secs()
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// The last 2000 bytes of its stdout and stderr.
    fn output_tail(&self) -> String {
        let text = std::fs::read(self.dir.join("proxy.out")).unwrap_or_default();
        String::from_utf8_lossy(&text[text.len().saturating_sub(2000)..]).into_owned()
    }

    /// Stops it (SIGTERM, as `wrenn up` stops its proxy) and waits for it;
    /// an error if it had to be killed or exited with a failure.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let stopping = Instant::now();
        let status = crate::procstat::stop(&mut child, Signal::SIGTERM, STOP_TIMEOUT);
        println!(
            "baseline proxy stopped in {:.1} s",
            stopping.elapsed().as_secs_f64()
        );
        crate::procstat::stopped("the baseline proxy", status, STOP_TIMEOUT, || {
            self.output_tail()
        })
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("wrenn-bench: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_executable_file_will_do_and_the_error_names_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let script = |name: &str, text: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let wrenn = "#!/bin/sh\necho '      --agent-key-file <AGENT_KEY_FILE>'\n";
        let bad = [
            dir.path().join("nothing"),
            dir.path().to_owned(),
            script("plain", wrenn, 0o644),
            script("other", "#!/bin/sh\necho usage\n", 0o755),
            script("failing", "#!/bin/sh\nexit 2\n", 0o755),
        ];
        for bad in bad {
            let e = format!("{:#}", executable(bad.clone()).unwrap_err());
            assert!(
                e.contains(VAR) && e.contains(&*bad.to_string_lossy()),
                "{e}"
            );
        }
        let good = script("wrenn", wrenn, 0o755);
        assert_eq!(executable(good.clone()).unwrap(), good);
    }
}
