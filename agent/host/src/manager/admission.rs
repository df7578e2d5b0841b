//! Admission: a create is refused when the host lacks the memory or disk the
//! sandbox asks for.
//!
//! Design: each create compares its request with what the host has *now*
//! (`MemAvailable` from `/proc/meminfo`, free blocks of the filesystem under
//! `$WRENN_DIR`) minus a reserve for the host and minus what creates still in
//! flight were admitted for (their memory and disk are not in use yet, so the
//! kernel's numbers do not show them).
//!
//! Limitations: memory limits and sparse disk images are not reservations, so
//! running sandboxes that grow later can still overcommit the host; admission
//! only stops requests that cannot fit at the moment they arrive.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use wrenn_types::SandboxId;

use crate::error::SandboxError;

const MIB: u64 = 1024 * 1024;
const MEMINFO: &str = "/proc/meminfo";

/// What the host has free, in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Free {
    pub memory_mb: u64,
    pub disk_mb: u64,
}

/// Reads free memory and disk and keeps the in-flight reservations.
#[derive(Debug)]
pub struct Admission {
    dir: PathBuf,
    reserve: Free,
    in_flight: Mutex<Free>,
}

/// Releases an admitted request's reservation when dropped.
#[derive(Debug)]
pub struct Ticket<'a> {
    admission: &'a Admission,
    taken: Free,
}

impl Admission {
    pub fn new(dir: PathBuf, reserve_memory_mb: u64, reserve_disk_mb: u64) -> Self {
        Admission {
            dir,
            reserve: Free {
                memory_mb: reserve_memory_mb,
                disk_mb: reserve_disk_mb,
            },
            in_flight: Mutex::new(Free {
                memory_mb: 0,
                disk_mb: 0,
            }),
        }
    }

    /// Admits a sandbox of `memory_mb` and `disk_mb` or says which resource
    /// is short.
    pub fn admit(
        &self,
        id: &SandboxId,
        memory_mb: u64,
        disk_mb: u64,
    ) -> Result<Ticket<'_>, SandboxError> {
        let free = Free {
            memory_mb: mem_available_mb()?,
            disk_mb: disk_free_mb(&self.dir)?,
        };
        let mut in_flight = self.in_flight.lock();
        check(
            id,
            "memory",
            memory_mb,
            free.memory_mb,
            in_flight.memory_mb,
            self.reserve.memory_mb,
        )?;
        check(
            id,
            "disk",
            disk_mb,
            free.disk_mb,
            in_flight.disk_mb,
            self.reserve.disk_mb,
        )?;
        in_flight.memory_mb += memory_mb;
        in_flight.disk_mb += disk_mb;
        Ok(Ticket {
            admission: self,
            taken: Free { memory_mb, disk_mb },
        })
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.admission.in_flight.lock();
        in_flight.memory_mb -= self.taken.memory_mb;
        in_flight.disk_mb -= self.taken.disk_mb;
    }
}

/// The admission decision for one resource.
fn check(
    id: &SandboxId,
    resource: &'static str,
    requested_mb: u64,
    free_mb: u64,
    in_flight_mb: u64,
    reserve_mb: u64,
) -> Result<(), SandboxError> {
    let available_mb = free_mb.saturating_sub(in_flight_mb);
    if requested_mb.saturating_add(reserve_mb) > available_mb {
        return Err(SandboxError::Insufficient {
            id: id.clone(),
            resource,
            requested_mb,
            available_mb,
            reserve_mb,
        });
    }
    Ok(())
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

    fn id() -> SandboxId {
        "a".parse().unwrap()
    }

    #[test]
    fn parses_meminfo() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048000 kB\n";
        assert_eq!(parse_mem_available(text), Some(2_048_000));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn decision_counts_reserve_and_in_flight() {
        assert!(check(&id(), "memory", 512, 1024, 0, 256).is_ok());
        assert!(check(&id(), "memory", 768, 1024, 0, 256).is_ok());
        let e = check(&id(), "memory", 769, 1024, 0, 256)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "not enough memory on this host for sandbox a: requested 769 MiB, available 1024 MiB \
             (256 MiB kept for the host)"
        );
        let e = check(&id(), "disk", 512, 1024, 600, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("available 424 MiB"), "{e}");
    }

    #[test]
    fn tickets_hold_and_release_in_flight_amounts() {
        let dir = tempfile::tempdir().unwrap();
        let a = Admission::new(dir.path().to_owned(), 0, 0);
        let host = mem_available_mb().unwrap();
        assert!(host > 64, "host reports {host} MiB available");
        let t = a.admit(&id(), host * 3 / 4, 1).unwrap();
        // The first ticket holds three quarters: another half cannot fit
        // (unless a quarter of the host's memory was freed in between).
        let e = a.admit(&id(), host / 2, 1).unwrap_err();
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
        drop(t);
        assert_eq!(
            *a.in_flight.lock(),
            Free {
                memory_mb: 0,
                disk_mb: 0
            }
        );
        assert!(a.admit(&id(), 1, 1).is_ok());
    }
}
