//! Admission: whether the host can take one more sandbox.
//!
//! # Policy
//!
//! A sandbox's memory limit is a ceiling and its disk image is sparse: an
//! idle sandbox uses a few MiB of each, so reserving its full size (as this
//! module once did) refuses bursts on hosts that have room for them. For each
//! resource (memory, disk under `$WRENN_DIR`) a create is admitted when
//!
//! ```text
//! (limits of every sandbox on the host + the new one's) / overcommit
//!     ≤ free now − reserve
//! ```
//!
//! - *free now* is what the kernel reports (`MemAvailable`; free blocks of
//!   the filesystem): what sandboxes and everything else really use is
//!   already out of it;
//! - *limits / overcommit* is what admission sets aside on top for what the
//!   sandboxes may still grow into (`memory_overcommit`, default 8: an
//!   eighth of every memory limit; `disk_overcommit`, default 16). An
//!   overcommit of 1 reserves full sizes;
//! - *reserve* is kept for the host whatever happens (`reserve_memory_mb`,
//!   `reserve_disk_mb`).
//!
//! A sandbox counts from its admission (creates in flight included: their
//! use is not visible yet) until it is removed. Every figure is O(1) to
//! keep: totals, not a walk over the sandboxes.
//!
//! # When the host runs low anyway
//!
//! Sandboxes that grow into their limits can take the host below its
//! reserve. Then every create is refused naming the resource, the agent
//! logs a warning once when a resource goes low and once when it recovers
//! (checked at every create and every [`MONITOR_INTERVAL`]), and
//! `/metrics` shows `wrenn_host_low{resource}` = 1 next to the free,
//! committed and reserved bytes and the refusals. Each sandbox stays inside
//! its own cgroup memory ceiling and disk image size.
//!
//! # Limitations
//!
//! Nothing running is stopped to make room: a host below its reserve only
//! stops growing. Memory the page cache could give back is counted as free
//! (`MemAvailable`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use wrenn_types::SandboxId;

use crate::error::SandboxError;

const MIB: u64 = 1024 * 1024;
const MEMINFO: &str = "/proc/meminfo";
/// How often the agent checks the host for low memory or disk between creates.
pub const MONITOR_INTERVAL: Duration = Duration::from_secs(5);

/// Memory and disk, in MiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Free {
    pub memory_mb: u64,
    pub disk_mb: u64,
}

/// The knobs of the policy (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub reserve: Free,
    pub memory_overcommit: u32,
    pub disk_overcommit: u32,
}

/// The host's free resources and what its sandboxes were admitted for.
#[derive(Debug)]
pub struct Admission {
    dir: PathBuf,
    policy: Policy,
    state: Mutex<Committed>,
}

#[derive(Debug, Default)]
struct Committed {
    by_id: HashMap<SandboxId, Free>,
    total: Free,
    low: [bool; 2],
}

/// An admitted create: released when dropped, unless [`Ticket::keep`] hands
/// it to the sandbox (then [`Admission::release`] ends it).
#[derive(Debug)]
#[must_use]
pub struct Ticket<'a> {
    admission: &'a Admission,
    id: Option<SandboxId>,
}

impl Ticket<'_> {
    /// The sandbox exists: it keeps counting until it is released by id.
    pub fn keep(mut self) {
        self.id = None;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.admission.release(&id);
        }
    }
}

/// One resource's side of a decision.
#[derive(Debug, Clone, Copy)]
struct Resource {
    name: &'static str,
    index: usize,
    free_mb: u64,
    reserve_mb: u64,
    committed_mb: u64,
    overcommit: u32,
}

impl Admission {
    pub fn new(dir: PathBuf, policy: Policy) -> Self {
        Admission {
            dir,
            policy,
            state: Mutex::new(Committed::default()),
        }
    }

    /// Admits a sandbox of `memory_mb` and `disk_mb` or says which resource
    /// is short and why.
    pub fn admit(
        &self,
        id: &SandboxId,
        memory_mb: u64,
        disk_mb: u64,
    ) -> Result<Ticket<'_>, SandboxError> {
        let free = self.free_now()?;
        let mut st = self.state.lock();
        let [memory, disk] = self.resources(free, &st);
        self.note_low(&mut st, &[memory, disk]);
        for (r, requested) in [(memory, memory_mb), (disk, disk_mb)] {
            if let Err(e) = check(id, r, requested, st.by_id.len()) {
                REFUSALS.with_label_values(&[r.name]).inc();
                return Err(e);
            }
        }
        let taken = Free { memory_mb, disk_mb };
        if let Some(old) = st.by_id.insert(id.clone(), taken) {
            // The caller holds the id's reservation, so this cannot happen;
            // keep the totals right if it does.
            st.total.memory_mb -= old.memory_mb;
            st.total.disk_mb -= old.disk_mb;
        }
        st.total.memory_mb += memory_mb;
        st.total.disk_mb += disk_mb;
        Ok(Ticket {
            admission: self,
            id: Some(id.clone()),
        })
    }

    /// Counts a sandbox that exists already (adopted after a restart),
    /// whatever the host has free.
    pub fn adopt(&self, id: &SandboxId, memory_mb: u64, disk_mb: u64) {
        let mut st = self.state.lock();
        let taken = Free { memory_mb, disk_mb };
        if st.by_id.insert(id.clone(), taken).is_none() {
            st.total.memory_mb += memory_mb;
            st.total.disk_mb += disk_mb;
        }
    }

    /// Stops counting a sandbox (removed). Unknown ids are ignored.
    pub fn release(&self, id: &SandboxId) {
        let mut st = self.state.lock();
        if let Some(f) = st.by_id.remove(id) {
            st.total.memory_mb -= f.memory_mb;
            st.total.disk_mb -= f.disk_mb;
        }
    }

    /// What the admitted sandboxes' limits add up to.
    pub fn committed(&self) -> Free {
        self.state.lock().total
    }

    /// Reads the host, logs a change of low state and updates the gauges
    /// of `/metrics`.
    pub fn observe(&self) {
        match self.free_now() {
            Ok(free) => {
                let mut st = self.state.lock();
                let rs = self.resources(free, &st);
                self.note_low(&mut st, &rs);
            }
            Err(e) => {
                tracing::warn!(error = %crate::error::chain(&e), "reading the host's free resources")
            }
        }
    }

    fn free_now(&self) -> Result<Free, SandboxError> {
        Ok(Free {
            memory_mb: mem_available_mb()?,
            disk_mb: disk_free_mb(&self.dir)?,
        })
    }

    fn resources(&self, free: Free, st: &Committed) -> [Resource; 2] {
        let p = &self.policy;
        [
            Resource {
                name: "memory",
                index: 0,
                free_mb: free.memory_mb,
                reserve_mb: p.reserve.memory_mb,
                committed_mb: st.total.memory_mb,
                overcommit: p.memory_overcommit.max(1),
            },
            Resource {
                name: "disk",
                index: 1,
                free_mb: free.disk_mb,
                reserve_mb: p.reserve.disk_mb,
                committed_mb: st.total.disk_mb,
                overcommit: p.disk_overcommit.max(1),
            },
        ]
    }

    fn note_low(&self, st: &mut Committed, rs: &[Resource]) {
        for r in rs {
            let labels = [r.name];
            FREE.with_label_values(&labels).set(bytes(r.free_mb));
            RESERVE.with_label_values(&labels).set(bytes(r.reserve_mb));
            COMMITTED
                .with_label_values(&labels)
                .set(bytes(r.committed_mb));
            let low = r.free_mb < r.reserve_mb;
            LOW.with_label_values(&labels).set(low.into());
            if low != st.low[r.index] {
                st.low[r.index] = low;
                if low {
                    tracing::warn!(resource = r.name, free_mb = r.free_mb, reserve_mb = r.reserve_mb,
                        sandboxes = st.by_id.len(), dir = %self.dir.display(),
                        "host is low: below the reserve kept for it; refusing creates until it recovers");
                } else {
                    tracing::info!(
                        resource = r.name,
                        free_mb = r.free_mb,
                        reserve_mb = r.reserve_mb,
                        "host recovered: above its reserve again"
                    );
                }
            }
        }
    }
}

fn bytes(mb: u64) -> i64 {
    i64::try_from(mb.saturating_mul(MIB)).unwrap_or(i64::MAX)
}

/// The admission decision for one resource (see the module docs).
fn check(
    id: &SandboxId,
    r: Resource,
    requested_mb: u64,
    sandboxes: usize,
) -> Result<(), SandboxError> {
    let limits_mb = r.committed_mb.saturating_add(requested_mb);
    let needed_mb = limits_mb.div_ceil(u64::from(r.overcommit));
    let available_mb = r.free_mb.saturating_sub(r.reserve_mb);
    if needed_mb > available_mb {
        return Err(SandboxError::Insufficient {
            id: id.clone(),
            resource: r.name,
            requested_mb,
            free_mb: r.free_mb,
            reserve_mb: r.reserve_mb,
            sandboxes,
            committed_mb: r.committed_mb,
            overcommit: r.overcommit,
            needed_mb,
        });
    }
    Ok(())
}

static FREE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "wrenn_host_free_bytes",
        "What the host has free now (MemAvailable; free disk under $WRENN_DIR)",
    )
});
static RESERVE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "wrenn_host_reserve_bytes",
        "What admission keeps for the host",
    )
});
static COMMITTED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "wrenn_host_committed_bytes",
        "Sum of the limits of the sandboxes admitted on this host",
    )
});
static LOW: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "wrenn_host_low",
        "1 while the host's free resource is below its reserve (creates are refused)",
    )
});
static REFUSALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new(
            "wrenn_admission_refusals_total",
            "Creates refused for lack of a resource",
        ),
        &["resource"],
    )
    .expect("valid counter");
    register(Box::new(c.clone()));
    c
});

fn gauge(name: &str, help: &str) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), &["resource"]).expect("valid gauge");
    register(Box::new(g.clone()));
    g
}

/// Registers a metric of the agent's `/metrics` (a failure is logged).
pub(super) fn register(c: Box<dyn prometheus::core::Collector>) {
    if let Err(e) = prometheus::register(c) {
        tracing::warn!(error = %e, "registering a metric");
    }
}

/// `MemAvailable` of `/proc/meminfo`, in MiB.
pub fn mem_available_mb() -> Result<u64, SandboxError> {
    let bad = |source| SandboxError::HostResources {
        what: "available memory",
        path: PathBuf::from(MEMINFO),
        source,
    };
    let text = std::fs::read_to_string(MEMINFO).map_err(bad)?;
    parse_mem_available(&text)
        .map(|kib| kib / 1024)
        .ok_or_else(|| {
            bad(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no MemAvailable line",
            ))
        })
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemAvailable:")?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Space available to unprivileged writers on the filesystem holding `dir`.
pub fn disk_free_mb(dir: &Path) -> Result<u64, SandboxError> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| SandboxError::HostResources {
        what: "free disk space",
        path: dir.to_owned(),
        source: e.into(),
    })?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64) / MIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SandboxId {
        s.parse().unwrap()
    }

    fn res(free_mb: u64, reserve_mb: u64, committed_mb: u64, overcommit: u32) -> Resource {
        Resource {
            name: "disk",
            index: 1,
            free_mb,
            reserve_mb,
            committed_mb,
            overcommit,
        }
    }

    #[test]
    fn parses_meminfo() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048000 kB\n";
        assert_eq!(parse_mem_available(text), Some(2_048_000));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn decision_sets_aside_a_share_of_limits_above_the_reserve() {
        // Overcommit 1 reserves full sizes: 768 + 256 fits 1024, 769 does not.
        assert!(check(&id("a"), res(1024, 256, 0, 1), 768, 0).is_ok());
        let e = check(&id("a"), res(1024, 256, 0, 1), 769, 0)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "not enough disk on this host for sandbox a: requested 769 MiB; 1024 MiB free, \
             256 MiB kept for the host, 769 MiB needed for the limits of 0 sandboxes (0 MiB) \
             and this one, divided by disk_overcommit 1"
        );
        // Fifty 2 GiB disks on 60 GiB free: refused at full size, admitted at 1/16.
        let free = 60 * 1024;
        assert!(check(&id("a"), res(free, 1024, 49 * 2048, 1), 2048, 49).is_err());
        assert!(check(&id("a"), res(free, 1024, 49 * 2048, 16), 2048, 49).is_ok());
        // Below the reserve nothing fits, however small.
        let e = check(&id("a"), res(900, 1024, 0, 16), 1, 0).unwrap_err();
        assert!(e.to_string().contains("900 MiB free, 1024 MiB kept"), "{e}");
    }

    #[test]
    fn tickets_count_until_released_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let host = mem_available_mb().unwrap();
        assert!(host > 64, "host reports {host} MiB available");
        let a = Admission::new(
            dir.path().to_owned(),
            Policy {
                reserve: Free::default(),
                memory_overcommit: 1,
                disk_overcommit: 1,
            },
        );
        let t = a.admit(&id("a"), host * 3 / 4, 1).unwrap();
        // The first holds three quarters: another half cannot fit (unless a
        // quarter of the host's memory was freed in between).
        let e = a.admit(&id("b"), host / 2, 1).unwrap_err();
        assert!(
            matches!(
                e,
                SandboxError::Insufficient {
                    resource: "memory",
                    ..
                }
            ),
            "{e}"
        );
        // Dropped without keep: released.
        drop(t);
        assert_eq!(a.committed(), Free::default());
        // Kept: counts until released by id.
        a.admit(&id("c"), 10, 20).unwrap().keep();
        a.adopt(&id("d"), 1, 2);
        assert_eq!(
            a.committed(),
            Free {
                memory_mb: 11,
                disk_mb: 22
            }
        );
        a.release(&id("c"));
        a.release(&id("c"));
        a.release(&id("d"));
        assert_eq!(a.committed(), Free::default());
    }
}
