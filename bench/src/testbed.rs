//! The test bed most platform scenarios share: `wrenn up`, one sandbox with
//! the bench upstream running, optionally nginx, bare Pingora, the lean
//! tokio forwarder and a baseline wrenn proxy in front of it.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::Opts;
use crate::platform::{Client, Platform};
use crate::reference::RefProxy;
use crate::reference::baseline::Baseline;
use crate::reference::nginx::Nginx;
use crate::report::Report;
use crate::sandbox::{self, UPSTREAM_PORT};

/// `wrenn up` with one sandbox serving the bench upstream on port 8080.
pub struct Bed {
    pub platform: Platform,
    pub client: Client,
    pub id: String,
    /// The upstream at the sandbox's own address (the direct door).
    pub upstream: SocketAddr,
    pub nginx: Option<Nginx>,
    pub pingora: Option<RefProxy>,
    pub lean: Option<RefProxy>,
    pub baseline: Option<Baseline>,
}

/// The other proxies a scenario compares wrenn's with.
#[derive(Debug, Clone)]
pub struct Refs {
    pub nginx: bool,
    pub pingora: bool,
    pub lean: bool,
    /// A `wrenn` binary whose proxy runs beside `wrenn up`'s ([`Baseline`]).
    pub baseline: Option<PathBuf>,
}

impl Refs {
    pub const NONE: Refs = Refs {
        nginx: false,
        pingora: false,
        lean: false,
        baseline: None,
    };
    pub const NGINX: Refs = Refs {
        nginx: true,
        pingora: false,
        lean: false,
        baseline: None,
    };
    pub const ALL: Refs = Refs {
        nginx: true,
        pingora: true,
        lean: true,
        baseline: None,
    };
}

/// How a client reaches the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Door {
    /// The sandbox address itself.
    Direct,
    /// wrenn's proxy, `/proxy/<id>/8080/…`.
    Path,
    /// A second wrenn proxy from the `WRENN_BENCH_BASELINE` binary, path
    /// form ([`Baseline`]): the same proxy before a change.
    Baseline,
    /// wrenn's proxy, `Host: 8080-<id>.localhost`.
    Subdomain,
    /// nginx configured like the proxy (path form).
    Nginx,
    /// Bare Pingora (path form): what Pingora costs without wrenn ([`crate::reference::bare_pingora`]).
    Pingora,
    /// The lean tokio forwarder (path form): what the same work costs
    /// without Pingora ([`crate::reference::lean_tokio`]).
    Lean,
}

impl Door {
    pub fn name(self) -> &'static str {
        match self {
            Door::Direct => "direct",
            Door::Path => "wrenn path",
            Door::Baseline => "wrenn path (baseline)",
            Door::Subdomain => "wrenn subdomain",
            Door::Nginx => "nginx",
            Door::Pingora => "bare pingora",
            Door::Lean => "lean tokio",
        }
    }
}

/// Runs a scenario on a bed of its own: starts it (`vcpus` = the host's
/// cores), measures, stops it — also when the measurement failed — and
/// writes the report.
pub async fn run_scenario(
    scenario: &'static str,
    refs: Refs,
    opts: &Opts,
    measure: impl AsyncFnOnce(&Bed, &Opts) -> anyhow::Result<Report>,
) -> anyhow::Result<()> {
    crate::raise_fd_limit();
    let bed = Bed::start(scenario, crate::cores() as u32, &refs).await?;
    let result = measure(&bed, opts).await;
    let stopped = bed.stop();
    let report = result?;
    stopped?;
    report.finish(&opts.out)?;
    Ok(())
}

impl Bed {
    /// Starts the platform, a sandbox with `vcpus` cores and the upstream
    /// (as many threads), and the reference proxies asked for. On failure
    /// everything started so far is stopped.
    pub async fn start(scenario: &str, vcpus: u32, refs: &Refs) -> anyhow::Result<Bed> {
        let t = std::time::Instant::now();
        let bin = crate::paths::upstream_bin()?;
        let platform = Platform::start(scenario).await?;
        let up = t.elapsed();
        let mut client = platform.client().await?;
        let sb = sandbox::create(&mut client, sandbox::spec(vcpus)).await?;
        let created = t.elapsed();
        let upstream = sandbox::deploy_upstream(&mut client, &sb, &bin, vcpus).await?;
        let nginx = if refs.nginx {
            Some(Nginx::start(&platform.dir, crate::cores(), upstream).await?)
        } else {
            None
        };
        let pingora = if refs.pingora {
            Some(crate::reference::bare_pingora::start(crate::cores(), upstream).await?)
        } else {
            None
        };
        let lean = if refs.lean {
            Some(crate::reference::lean_tokio::start(crate::cores(), upstream).await?)
        } else {
            None
        };
        let baseline = match &refs.baseline {
            Some(bin) => Some(Baseline::start(bin, &platform, &sb.id).await?),
            None => None,
        };
        println!(
            "{scenario}: wrenn up ready in {:.1} s, sandbox {} in {:.0} ms, upstream (and nginx) in {:.0} ms",
            up.as_secs_f64(),
            sb.id,
            (created - up).as_secs_f64() * 1e3,
            (t.elapsed() - created).as_secs_f64() * 1e3
        );
        Ok(Bed {
            platform,
            client,
            id: sb.id,
            upstream,
            nginx,
            pingora,
            lean,
            baseline,
        })
    }

    /// Where to connect for `door` and the request target and Host header to send.
    pub fn target(&self, door: Door, path: &str) -> (SocketAddr, String, String) {
        let proxy = self.platform.proxy;
        match door {
            Door::Direct => (self.upstream, path.to_owned(), self.upstream.to_string()),
            Door::Path => (
                proxy,
                format!("/proxy/{}/{UPSTREAM_PORT}{path}", self.id),
                proxy.to_string(),
            ),
            Door::Subdomain => (
                proxy,
                path.to_owned(),
                format!("{UPSTREAM_PORT}-{}.localhost:{}", self.id, proxy.port()),
            ),
            Door::Nginx | Door::Pingora | Door::Lean | Door::Baseline => {
                let n = match door {
                    Door::Nginx => self.nginx.as_ref().map(|n| n.listen),
                    Door::Pingora => self.pingora.as_ref().map(|p| p.listen),
                    Door::Baseline => self.baseline.as_ref().map(|b| b.listen),
                    _ => self.lean.as_ref().map(|p| p.listen),
                }
                .unwrap_or(proxy);
                (
                    n,
                    format!("/proxy/{}/{UPSTREAM_PORT}{path}", self.id),
                    n.to_string(),
                )
            }
        }
    }

    /// Stops the reference proxies and the platform (every sandbox is
    /// destroyed); the baseline proxy first, while its agent is up.
    pub fn stop(self) -> anyhow::Result<()> {
        let baseline = self.baseline.map_or(Ok(()), Baseline::stop);
        drop(self.nginx);
        drop(self.pingora);
        drop(self.lean);
        drop(self.client);
        let platform = self.platform.stop();
        if let (Err(e), Err(_)) = (&baseline, &platform) {
            eprintln!("wrenn-bench: {e:#}");
        }
        platform.and(baseline)
    }
}
