//! [`FirecrackerRuntime`]: the `Runtime` trait over Firecracker processes.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use wrenn_types::SandboxId;

use super::config::{ActionType, VmStateValue};
use super::vm::{Inner, Vm, VmState};
use super::{ApiClient, Error as FcError, STOP_GRACE, VMM_OVERHEAD_MB, VmPlan, configure, disk};
use crate::cgroup::{Cgroup, Layout, Limits, PIDS_MAX};
use crate::net::{Network, netns, resolv};
use crate::runtime::{
    Backend, Error, Recovered, Result, Runtime, RuntimeConfig, SandboxHandle, SandboxMetrics,
    SandboxSpec,
};
use crate::sandbox::proc::Proc;
use crate::sandbox::record::{Record, SandboxDir, process_start_time};
use crate::sandbox::table::{self, Table};
use crate::slot::SlotAllocator;
use crate::{image, validate};

const CGROUP_TIMEOUT: Duration = Duration::from_secs(10);
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// Firecracker microVM sandboxes (see the module docs).
#[derive(Debug, Clone)]
pub struct FirecrackerRuntime {
    inner: Arc<Inner>,
}

impl FirecrackerRuntime {
    /// Fails with [`Error::Unavailable`] naming what is missing.
    pub fn new(cfg: RuntimeConfig) -> Result<Self> {
        validate::config(&cfg)?;
        if let Some(reason) = super::unavailable_reason(&cfg.firecracker_bin, cfg.kernel.as_deref())
        {
            return Err(Error::Unavailable {
                backend: Backend::Firecracker,
                reason,
            });
        }
        validate::guest_bin(&cfg)?;
        let layout = Layout::detect()?;
        let net = Network::new(&cfg.prefix, cfg.slots.clone());
        net.firewall().ensure()?;
        Ok(FirecrackerRuntime {
            inner: Arc::new(Inner {
                kernel: cfg.kernel.clone().unwrap_or_default(),
                table: Table::new(SlotAllocator::new(cfg.slots.clone())),
                net,
                layout,
                cfg,
            }),
        })
    }

    fn vm(&self, id: &SandboxId) -> Result<Arc<Vm>> {
        self.inner.table.get(id)
    }
}

impl Inner {
    pub(super) fn handle(&self, st: &VmState) -> SandboxHandle {
        table::handle(
            Backend::Firecracker,
            &st.record,
            st.slot,
            &st.dir,
            st.paused,
            None,
        )
    }

    pub(super) async fn teardown(&self, st: &mut VmState) -> Result<()> {
        if let Some(p) = st.proc.take()
            && !p.has_exited()
        {
            let api = ApiClient::new(st.dir.api_socket());
            let _ = tokio::time::timeout(API_TIMEOUT, api.action(ActionType::SendCtrlAltDel)).await;
            if !p.wait(STOP_GRACE).await {
                p.kill();
                p.wait(CGROUP_TIMEOUT).await;
            }
        }
        let cgroup = st.cgroup.clone();
        let cg = tokio::task::spawn_blocking(move || cgroup.destroy(CGROUP_TIMEOUT)).await;
        let egress = crate::net::firewall::Egress {
            addr: st.slot.sandbox_addr(),
            allow: st.record.allow_out.clone(),
            deny: st.record.deny_out.clone(),
        };
        let net = self.net.teardown(st.slot, &egress).await;
        let dir = st.dir.dir.clone();
        let rm = std::fs::remove_dir_all(&dir);
        if let Ok(Err(e)) = cg {
            return Err(e.into());
        }
        net?;
        match rm {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
                step: "remove sandbox directory",
                path: dir,
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

fn fc(e: FcError) -> Error {
    e.into()
}

#[async_trait::async_trait]
impl Runtime for FirecrackerRuntime {
    fn backend(&self) -> Backend {
        Backend::Firecracker
    }

    async fn create(&self, spec: SandboxSpec) -> Result<SandboxHandle> {
        validate::spec(&spec)?;
        if let Some((k, v)) = spec.env.iter().find(|(k, v)| {
            k.contains(char::is_whitespace) || v.contains(|c: char| c.is_whitespace() || c == '"')
        }) {
            return Err(Error::InvalidSpec(format!(
                "env[{k:?}]: {v:?} holds whitespace or quotes, which the kernel command line cannot carry"
            )));
        }
        let template = image::template_path(&self.inner.cfg.dir, &spec.template);
        if !template.is_file() {
            return Err(Error::UnknownTemplate {
                template: spec.template.clone(),
                path: template,
            });
        }
        let inner = &self.inner;
        let (vm, slot) = inner.table.reserve(&spec.id, |slot| VmState {
            dir: SandboxDir::new(&inner.cfg.dir, &spec.id),
            cgroup: Cgroup::new(inner.layout.clone(), &inner.cfg.prefix, spec.id.as_str()),
            record: Record::new(&spec, &inner.cfg.prefix, slot, Backend::Firecracker),
            slot,
            proc: None,
            paused: false,
        })?;
        // Unlisted (no handle) until built: nothing else uses the state.
        let mut st = vm.state.lock().await;
        let built = async {
            st.dir
                .create(&inner.cfg.dir, &st.record)
                .map_err(|source| Error::Io {
                    step: "create sandbox directory",
                    path: st.dir.dir.clone(),
                    source,
                })?;
            let opts = crate::net::SlotOptions {
                internet: spec.internet,
                allow_out: spec.allow_out.clone(),
                deny_out: spec.deny_out.clone(),
                gids: None,
            };
            let sn = inner.net.setup(slot, &opts).await?;
            super::net::setup_guest_link(&sn).await?;
            let cgroup = st.cgroup.clone();
            let limits = Limits {
                memory_bytes: u64::from(spec.memory_mb + VMM_OVERHEAD_MB) << 20,
                vcpus: spec.vcpus,
                pids: PIDS_MAX,
            };
            let (dest, guest_bin, disk_mb) = (
                st.dir.rootfs_copy(),
                inner.cfg.guest_bin.clone(),
                spec.disk_mb,
            );
            let files = vec![
                (
                    "/etc/resolv.conf",
                    resolv::sandbox_resolv_conf(spec.internet),
                    0o644,
                ),
                (
                    "/etc/hosts",
                    format!(
                        "127.0.0.1\tlocalhost\n{}\t{}\n",
                        slot.sandbox_addr(),
                        spec.id
                    ),
                    0o644,
                ),
                (super::TOKEN_IN_IMAGE, st.record.guest_token.clone(), 0o400),
            ];
            tokio::task::spawn_blocking(move || -> Result<()> {
                cgroup.create(&limits)?;
                disk::prepare(&template, &dest, disk_mb, &guest_bin, &files).map_err(fc)
            })
            .await
            .map_err(|e| Error::Io {
                step: "blocking task",
                path: "".into(),
                source: std::io::Error::other(e),
            })?
        }
        .await;
        if let Err(e) = built {
            let _ = inner.teardown(&mut st).await;
            inner.table.unreserve(&spec.id, slot);
            return Err(e);
        }
        let handle = inner.handle(&st);
        *vm.handle.lock() = Some(handle.clone());
        Ok(handle)
    }

    async fn start(&self, id: &SandboxId) -> Result<()> {
        let vm = self.vm(id)?;
        let mut st = vm.state.lock().await;
        if vm.handle.lock().is_none() {
            return Err(Error::NotFound(id.clone()));
        }
        if st.proc.is_some() {
            return Err(Error::WrongState {
                id: id.clone(),
                state: "running",
            });
        }
        let inner = &self.inner;
        let sock = st.dir.api_socket();
        let _ = std::fs::remove_file(&sock);
        let (console, log) = crate::guestlog::pipe().map_err(|source| Error::Io {
            step: "create the console pipe",
            path: st.dir.log(),
            source,
        })?;
        let err_log = log.try_clone().map_err(|source| Error::Io {
            step: "dup",
            path: st.dir.log(),
            source,
        })?;
        st.record.console = crate::guestlog::PipeId::of(&console).ok();
        crate::guestlog::drain(console, st.dir.log()).map_err(|source| Error::Io {
            step: "drain the VM's console",
            path: st.dir.log(),
            source,
        })?;
        // runs: -; Firecracker, which no Debian package gives (configured path)
        let mut cmd = Command::new(&inner.cfg.firecracker_bin);
        cmd.arg("--api-sock")
            .arg(&sock)
            .arg("--id")
            .arg(id.as_str());
        cmd.stdin(Stdio::null()).stdout(log).stderr(err_log);
        let ns = netns::open(&inner.net.netns_name(st.slot))?;
        let bin = inner.cfg.firecracker_bin.clone();
        // Started from a thread inside the netns, the VMM lives there.
        let child = netns::run_in(&ns, move || cmd.spawn())
            .await?
            .map_err(|source| Error::Io {
                step: "start firecracker",
                path: bin,
                source,
            })?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        drop(child); // reaped by the watcher below
        let start_time = process_start_time(pid.as_raw()).unwrap_or(0);
        let proc = Proc::watch(pid, true, id.as_str()).map_err(|source| Error::Io {
            step: "pidfd_open",
            path: format!("/proc/{pid}").into(),
            source,
        })?;
        st.proc = Some(proc);
        for dir in st.cgroup.dirs() {
            crate::cgroup::write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        st.record.pid = Some(pid.as_raw());
        st.record.pid_start = Some(start_time);
        st.dir
            .write_record(&st.record)
            .map_err(|source| Error::Io {
                step: "write sandbox record",
                path: st.dir.record(),
                source,
            })?;
        let api = ApiClient::new(&sock);
        let plan = VmPlan {
            kernel: inner.kernel.display().to_string(),
            boot_args: super::boot_args(id.as_str(), st.slot, &st.record.spec().guest_env()),
            rootfs: st.dir.rootfs_copy().display().to_string(),
            mac: super::guest_mac(st.slot),
            vcpus: st.record.vcpus,
            memory_mb: st.record.memory_mb,
        };
        let configured = async {
            api.wait_ready(API_TIMEOUT).await?;
            configure(&api, &plan).await
        }
        .await;
        if let Err(e) = configured {
            if let Some(p) = st.proc.take() {
                p.kill();
                p.wait(CGROUP_TIMEOUT).await;
            }
            return Err(fc(e.into()));
        }
        *vm.init.lock() = st.proc.clone();
        Ok(())
    }

    fn alive(&self, id: &SandboxId) -> Option<bool> {
        self.inner.table.alive(id)
    }

    async fn pause(&self, id: &SandboxId) -> Result<()> {
        self.set_paused(id, true).await
    }

    async fn resume(&self, id: &SandboxId) -> Result<()> {
        self.set_paused(id, false).await
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        let vm = self.inner.table.remove(id);
        let Some(vm) = vm else {
            return Ok(());
        };
        let mut st = vm.state.lock().await;
        *vm.handle.lock() = None;
        let result = self.inner.teardown(&mut st).await;
        self.inner.table.release(st.slot);
        result
    }

    async fn metrics(&self, id: &SandboxId) -> Result<SandboxMetrics> {
        let vm = self.vm(id)?;
        let st = vm.state.lock().await;
        let usage = st.cgroup.usage()?;
        use std::os::unix::fs::MetadataExt;
        let disk_used = std::fs::metadata(st.dir.rootfs_copy())
            .map(|m| m.blocks() * 512)
            .unwrap_or(0);
        Ok(SandboxMetrics {
            cpu_usage_usec: usage.cpu_usec,
            memory_bytes: usage.memory_bytes,
            memory_limit_bytes: usage.memory_limit_bytes,
            disk_used_bytes: disk_used,
            disk_limit_bytes: u64::from(st.record.disk_mb) << 20,
            pids: usage.pids,
        })
    }

    fn list(&self) -> Vec<SandboxHandle> {
        self.inner.table.handles()
    }

    fn guest_output(&self, id: &SandboxId, max: usize) -> Option<String> {
        crate::guestlog::tail(&SandboxDir::new(&self.inner.cfg.dir, id).log(), max)
    }

    async fn recover(&self) -> Result<Recovered> {
        super::recover::recover(&self.inner).await
    }

    async fn shutdown(&self, timeout: Duration) -> Result<()> {
        if self.inner.table.is_empty() {
            self.inner.net.firewall().remove()?;
            crate::cgroup::remove_prefix(&self.inner.layout, &self.inner.cfg.prefix);
        }
        crate::image::shrink_with_deadline(self.inner.cfg.dir.clone(), timeout).await;
        Ok(())
    }
}

impl FirecrackerRuntime {
    async fn set_paused(&self, id: &SandboxId, paused: bool) -> Result<()> {
        let vm = self.vm(id)?;
        let mut st = vm.state.lock().await;
        if st.proc.is_none() {
            return Err(Error::WrongState {
                id: id.clone(),
                state: "created",
            });
        }
        let api = ApiClient::new(st.dir.api_socket());
        let value = if paused {
            VmStateValue::Paused
        } else {
            VmStateValue::Resumed
        };
        api.vm_state(value).await.map_err(|e| fc(e.into()))?;
        st.paused = paused;
        let handle = self.inner.handle(&st);
        *vm.handle.lock() = Some(handle);
        Ok(())
    }
}
