//! The environment of the end-to-end tests: a real host agent over the
//! namespace runtime (base template: Debian with python3, built once and
//! cached by `wrenn-vmm`), and two real proxies watching it — one with the
//! namespace fast path, one dialling only from the host (what a Firecracker
//! sandbox gets, where the guest's forwarder does the work).
//!
//! Prefix `wrenn-tf`, each test its own slot range within 8000–8099 and its
//! own `$WRENN_DIR` (`/var/tmp/wrenn-tf/<first>-<last>`). [`Env::finish`]
//! shuts everything down and asserts nothing is left (netns, veth links,
//! mounts, the directory); dropping an unfinished `Env` (a failed test)
//! removes every sandbox of its range through a fresh runtime's
//! adopt-or-clean, then the directory.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use wrenn_agent::{Agent, AgentConfig};
use wrenn_proto::wrenn::v1::host_agent_client::HostAgentClient;
use wrenn_proxy::{Proxy, ProxyConfig, ProxyHandle, UpstreamConnect};
use wrenn_vmm::{Backend, RuntimeConfig};

pub const PREFIX: &str = "wrenn-tf";

pub type Client = HostAgentClient<wrenn_proto::auth::AuthChannel>;

pub struct Env {
    dir: PathBuf,
    slots: RangeInclusive<u16>,
    agent: Option<Agent>,
    pub client: Client,
    /// `upstream_connect = netns`.
    pub fast: Option<ProxyHandle>,
    /// `upstream_connect = direct`.
    pub direct: Option<ProxyHandle>,
}

fn guest_bin() -> PathBuf {
    wrenn_agent::guest_bin::resolve(None).unwrap_or_else(|e| panic!("{e}"))
}

fn runtime_config(dir: &std::path::Path, slots: &RangeInclusive<u16>) -> RuntimeConfig {
    RuntimeConfig {
        backend: Backend::Namespace,
        dir: dir.to_owned(),
        prefix: PREFIX.into(),
        slots: slots.clone(),
        guest_bin: guest_bin(),
        firecracker_bin: PathBuf::from(RuntimeConfig::DEFAULT_FIRECRACKER_BIN),
        kernel: None,
        unhardened: false,
    }
}

fn proxy(agent: std::net::SocketAddr, key: &str, connect: UpstreamConnect) -> ProxyHandle {
    let config = ProxyConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: None,
        agent: format!("http://{agent}"),
        agent_key: wrenn_proto::auth::Secret::new(key),
        threads: 2,
        grace_period_secs: 2,
        access_log: false,
        upstream_connect: connect,
        ..ProxyConfig::default()
    };
    Proxy::new(config).start().expect("proxy starts")
}

impl Env {
    pub async fn start(slots: RangeInclusive<u16>) -> Env {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests need root (namespace sandboxes; CI runs them as root)"
        );
        assert!(
            slots.start() >= &8000 && slots.end() <= &8099,
            "not our slots"
        );
        let dir = PathBuf::from(format!(
            "/var/tmp/{PREFIX}/{}-{}",
            slots.start(),
            slots.end()
        ));
        if dir.exists() {
            clean(runtime_config(&dir, &slots)).await;
            std::fs::remove_dir_all(&dir).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = AgentConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            dir: dir.clone(),
            host_id: "wrenn-tf".into(),
            reserve_memory_mb: 0,
            reserve_disk_mb: 0,
            build_base_image: true,
            shutdown_timeout_secs: 60,
            ..Default::default()
        };
        config.runtime.prefix = PREFIX.into();
        config.runtime.slot_first = *slots.start();
        config.runtime.slot_last = *slots.end();
        config.runtime.guest_bin = Some(guest_bin());
        // From here on a failure drops `env`, which cleans up.
        let mut env = Env {
            dir,
            slots,
            agent: None,
            client: HostAgentClient::new(wrenn_proto::auth::with_bearer(
                Channel::from_static("http://127.0.0.1:1").connect_lazy(),
                wrenn_proto::auth::Bearer::none(),
            )),
            fast: None,
            direct: None,
        };
        let key_path = config.key_path();
        let agent = wrenn_agent::start(config, |_| {})
            .await
            .unwrap_or_else(|e| panic!("agent start: {e:?}"));
        let addr = agent.local_addr();
        env.agent = Some(agent);
        let key = wrenn_proto::auth::load_key(&key_path).expect("the agent's key");
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        env.client = HostAgentClient::new(wrenn_proto::auth::with_bearer(
            channel,
            wrenn_proto::auth::Bearer::new(&key).unwrap(),
        ));
        env.fast = Some(proxy(addr, &key, UpstreamConnect::Netns));
        env.direct = Some(proxy(addr, &key, UpstreamConnect::Direct));
        env
    }

    pub fn fast(&self) -> &ProxyHandle {
        self.fast.as_ref().unwrap()
    }

    pub fn direct(&self) -> &ProxyHandle {
        self.direct.as_ref().unwrap()
    }

    /// Shuts the proxies and the agent down (destroying the sandboxes) and
    /// asserts that nothing of this environment is left on the host.
    pub async fn finish(mut self) {
        for p in [self.fast.take(), self.direct.take()].into_iter().flatten() {
            p.shutdown_async().await;
        }
        if let Some(agent) = self.agent.take() {
            agent.shutdown().await.expect("agent shutdown");
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = self.leftovers();
            if left.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "left behind: {left:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Network namespaces and veth links of the slot range, mounts under the
    /// directory, sandbox directories.
    fn leftovers(&self) -> BTreeSet<String> {
        let in_range = |s: &str| s.parse::<u16>().is_ok_and(|n| self.slots.contains(&n));
        let mut left = BTreeSet::new();
        for entry in std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.strip_prefix("wrenn-tf-").is_some_and(in_range) {
                left.insert(format!("netns {name}"));
            }
        }
        for entry in std::fs::read_dir("/sys/class/net")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.strip_prefix("wv").is_some_and(in_range) {
                left.insert(format!("link {name}"));
            }
        }
        let dir = self.dir.display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mounts.lines() {
            if let Some(point) = line.split(' ').nth(4)
                && point.starts_with(&dir)
            {
                left.insert(format!("mount {point}"));
            }
        }
        let sandboxes = self.dir.join("sandboxes");
        for entry in std::fs::read_dir(&sandboxes)
            .into_iter()
            .flatten()
            .flatten()
        {
            left.insert(format!("dir {}", entry.path().display()));
        }
        left
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        drop(self.fast.take());
        drop(self.direct.take());
        let agent = self.agent.take();
        let cfg = runtime_config(&self.dir, &self.slots);
        let dir = self.dir.clone();
        // A fresh runtime on its own thread: the test's runtime may be unwinding.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            // The agent's tasks die with the test's runtime; its sandboxes are
            // adopted by the cleanup runtime below and destroyed.
            drop(agent);
            rt.block_on(clean(cfg));
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::remove_dir(dir.parent().unwrap());
        });
        if cleanup.join().is_err() && !std::thread::panicking() {
            panic!("cleaning up the test environment failed");
        }
    }
}

/// Adopt-or-clean with a fresh runtime, destroy what was adopted, shut down.
async fn clean(cfg: RuntimeConfig) {
    let runtime = wrenn_vmm::build(cfg).expect("cleanup runtime");
    let recovered = runtime.recover().await.expect("cleanup recover");
    for h in recovered.adopted {
        runtime.destroy(&h.id).await.expect("cleanup destroy");
    }
    runtime
        .shutdown(Duration::from_secs(30))
        .await
        .expect("cleanup shutdown");
}
