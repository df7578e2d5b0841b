//! The Firecracker backend: each sandbox is a microVM.
//!
//! # Design
//!
//! - Network: the slot's netns and veth pair exactly as for namespace
//!   sandboxes ([`crate::net`]), plus `tap0`, forwarding and DNAT/SNAT inside
//!   the netns ([`net`]), so every other component sees the same address.
//! - Disk: the template image copied sparsely into the sandbox directory
//!   (`rootfs.ext4`), grown to `disk_mb`, with `wrenn-guest`,
//!   `/etc/resolv.conf` and `/etc/hosts` written into it by `debugfs` — no
//!   mount ([`disk`]). The kernel starts `wrenn-guest` as init.
//! - Process: `firecracker --api-sock <dir>/firecracker.sock`, started from a
//!   thread inside the netns (so it lives there), moved into the sandbox's
//!   cgroups (memory limit = `memory_mb` + [`VMM_OVERHEAD_MB`]), configured
//!   over the API ([`api`], [`configure`]): boot source, root drive, `eth0`
//!   on `tap0` with a TX rate limiter, machine config, `InstanceStart`.
//! - Pause/resume: `PATCH /vm`. Stop: `SendCtrlAltDel`, then SIGKILL after
//!   [`STOP_GRACE`].
//!
//! # Limitations
//!
//! Environment values travel on the kernel command line, so they may not
//! contain whitespace or quotes. The disk copy costs time proportional to the
//! template's data (no reflink or device-mapper snapshot yet). Not exercised
//! by CI on machines without a usable KVM (see the integration test).

pub mod api;
pub mod config;
pub mod disk;
pub mod net;
mod recover;
mod runtime;
mod vm;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use api::{ApiClient, ApiError};
use config::{ActionType, BootSource, Drive, MachineConfig, NetworkInterface, TX_LIMIT};
pub use runtime::FirecrackerRuntime;

use crate::slot::Slot;

/// Memory the VMM itself may use on top of the guest's.
pub const VMM_OVERHEAD_MB: u32 = 64;
/// How long a guest gets to shut down after Ctrl-Alt-Del.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// Where the guest binary is written inside the image.
pub const GUEST_IN_IMAGE: &str = "/usr/local/bin/wrenn-guest";
/// The guest agent's credential inside the image (root-only).
pub const TOKEN_IN_IMAGE: &str = "/etc/wrenn/token";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed on {path}: {output}")]
    Command {
        program: &'static str,
        path: PathBuf,
        output: String,
    },
}

/// Into the runtime's error as the backend's own failure: the shared error
/// type names no backend's type.
impl From<Error> for crate::runtime::Error {
    fn from(e: Error) -> Self {
        crate::runtime::Error::Backend {
            backend: crate::runtime::Backend::Firecracker,
            source: Box::new(e),
        }
    }
}

/// What [`configure`] sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPlan {
    pub kernel: String,
    pub boot_args: String,
    pub rootfs: String,
    pub mac: String,
    pub vcpus: u32,
    pub memory_mb: u32,
}

/// Configures a fresh Firecracker process and starts the VM.
pub async fn configure(api: &ApiClient, p: &VmPlan) -> Result<(), ApiError> {
    api.boot_source(&BootSource {
        kernel_image_path: p.kernel.clone(),
        boot_args: p.boot_args.clone(),
    })
    .await?;
    api.drive(&Drive {
        drive_id: "rootfs".into(),
        path_on_host: p.rootfs.clone(),
        is_root_device: true,
        is_read_only: false,
    })
    .await?;
    api.network_interface(&NetworkInterface {
        iface_id: "eth0".into(),
        host_dev_name: crate::net::tap::TAP_NAME.into(),
        guest_mac: p.mac.clone(),
        tx_rate_limiter: TX_LIMIT,
    })
    .await?;
    api.machine_config(&MachineConfig {
        vcpu_count: p.vcpus,
        mem_size_mib: p.memory_mb,
        smt: false,
    })
    .await?;
    api.action(ActionType::InstanceStart).await
}

/// A locally administered MAC derived from the slot's address.
pub fn guest_mac(slot: Slot) -> String {
    let o = slot.sandbox_addr().octets();
    format!("06:00:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// Kernel command line of a sandbox. The guest agent's localhost forwarder is
/// on: apps bound to the VM's loopback are reachable only through it (the spec's
/// env, appended after, may turn it off).
/// The guest agent's credential is a root-only file of the image
/// ([`TOKEN_IN_IMAGE`]), not an argument (the command line is readable by
/// every process of the VM); it accepts calls only from the host's end of
/// the slot's link. `env` is the guest's whole environment
/// ([`crate::SandboxSpec::guest_env`]), the envd access token with it: that
/// token is no secret from the VM's own processes (it opens the guest's
/// envd interface to what they can do anyway), only from the outside.
pub fn boot_args(
    hostname: &str,
    slot: Slot,
    env: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut args = format!(
        "console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw {} init={GUEST_IN_IMAGE} WRENN_SANDBOX_ID={hostname} WRENN_GUEST_FORWARD_LOCALHOST=1 WRENN_GUEST_TOKEN_FILE={TOKEN_IN_IMAGE} WRENN_GUEST_ALLOW_PEER={}",
        net::kernel_ip_arg(hostname),
        slot.host_addr()
    );
    for (k, v) in env {
        args.push_str(&format!(" {k}={v}"));
    }
    args
}

/// Why Firecracker cannot run here (`None`: it can): the binary, a usable
/// `/dev/kvm` and a kernel image are all needed.
pub fn unavailable_reason(bin: &Path, kernel: Option<&Path>) -> Option<String> {
    let mut missing = Vec::new();
    match std::fs::metadata(bin) {
        Ok(m) if m.is_file() => {}
        _ => missing.push(format!("no firecracker binary at {}", bin.display())),
    }
    if let Err(why) = kvm_usable() {
        missing.push(why);
    }
    match kernel {
        None => missing.push("no kernel image configured".into()),
        Some(k) if !k.is_file() => missing.push(format!("kernel image {} not found", k.display())),
        Some(_) => {}
    }
    (!missing.is_empty()).then(|| {
        format!(
            "{} (use the namespace backend on this host)",
            missing.join("; ")
        )
    })
}

/// `/dev/kvm` opens and answers `KVM_GET_API_VERSION` with 12.
pub fn kvm_usable() -> Result<(), String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm: {e}"))?;
    let v = crate::sys::kvm_api_version(&f);
    if v != 12 {
        return Err(format!("/dev/kvm answers API version {v}, not 12"));
    }
    Ok(())
}
