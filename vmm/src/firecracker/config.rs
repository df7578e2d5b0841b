//! Request bodies of the Firecracker API, one type per resource (field order
//! is the wire order).

use serde::Serialize;

/// `PUT /boot-source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootSource {
    pub kernel_image_path: String,
    pub boot_args: String,
}

/// `PUT /drives/<drive_id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: String,
    pub is_root_device: bool,
    pub is_read_only: bool,
}

/// A token bucket of a rate limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TokenBucket {
    pub size: u64,
    pub one_time_burst: u64,
    pub refill_time: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateLimiter {
    pub bandwidth: TokenBucket,
}

/// `PUT /network-interfaces/<iface_id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkInterface {
    pub iface_id: String,
    pub host_dev_name: String,
    pub guest_mac: String,
    pub tx_rate_limiter: RateLimiter,
}

/// `PUT /machine-config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MachineConfig {
    pub vcpu_count: u32,
    pub mem_size_mib: u32,
    pub smt: bool,
}

/// `PUT /actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InstanceAction {
    pub action_type: ActionType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ActionType {
    InstanceStart,
    SendCtrlAltDel,
}

/// `PATCH /vm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VmState {
    pub state: VmStateValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum VmStateValue {
    Paused,
    Resumed,
}

/// The egress limit every sandbox gets: 200 MiB buckets refilled every
/// second (≈ 1.6 Gbit/s sustained) with a one-time 100 MiB burst.
pub const TX_LIMIT: RateLimiter = RateLimiter {
    bandwidth: TokenBucket {
        size: 209_715_200,
        one_time_burst: 104_857_600,
        refill_time: 1000,
    },
};
