//! Host memory readings for density measurements (`runtime`, `lifecycle`).

/// Host-wide memory readings (bytes).
pub struct MemInfo {
    pub available: u64,
    /// Kernel memory that is not cache: unreclaimable slab, kernel stacks,
    /// page tables, per-cpu allocations.
    pub kernel: u64,
}

impl MemInfo {
    pub fn read() -> anyhow::Result<MemInfo> {
        let text = std::fs::read_to_string("/proc/meminfo")?;
        let field = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        Ok(MemInfo {
            available: field("MemAvailable"),
            kernel: field("SUnreclaim")
                + field("KernelStack")
                + field("PageTables")
                + field("Percpu"),
        })
    }
}

/// Anonymous and file memory charged to a sandbox's memory cgroup (kernel
/// objects are counted host-wide in [`MemInfo::kernel`] instead), under the
/// runtime `prefix`'s cgroup.
pub fn sandbox_memory(prefix: &str, id: &str) -> anyhow::Result<u64> {
    use wrenn_vmm::cgroup::{Controller, Layout};
    let layout = Layout::detect()?;
    let stat = std::fs::read_to_string(
        layout
            .root(Controller::Memory)
            .join(prefix)
            .join(id)
            .join("memory.stat"),
    )?;
    let get = |k: &str| -> u64 {
        stat.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(match layout {
        Layout::V1 { .. } => get("total_rss") + get("total_cache"),
        Layout::V2 { .. } => get("anon") + get("file"),
    })
}
