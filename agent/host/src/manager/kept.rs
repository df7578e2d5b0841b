//! What the agent keeps of a sandbox on disk, beside the runtime's record:
//! `agent.json` in the sandbox's directory (which the runtime removes with
//! the sandbox). After an agent restart an adopted sandbox gets back its own
//! creation time and deadline, not the default timeout from now.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The file's name in the sandbox directory.
pub const FILE: &str = "agent.json";

/// The agent's part of a sandbox's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub timeout_secs: u32,
}

impl Kept {
    pub fn new(created_at: SystemTime, expires_at: SystemTime, timeout_secs: u32) -> Kept {
        Kept {
            created_at_ms: ms(created_at),
            expires_at_ms: ms(expires_at),
            timeout_secs,
        }
    }

    pub fn created_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.created_at_ms)
    }

    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.expires_at_ms)
    }
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().try_into().unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes `kept` into the sandbox directory `dir` (atomically, `0600`).
pub fn save(dir: &Path, kept: &Kept) -> io::Result<()> {
    let bytes = serde_json::to_vec(kept).map_err(io::Error::other)?;
    wrenn_vmm::namespace::state::write_private(&path(dir), &bytes)
}

/// What an earlier agent kept for the sandbox in `dir`, if anything.
pub fn load(dir: &Path) -> io::Result<Kept> {
    let bytes = fs::read(path(dir))?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_to_the_millisecond() {
        let dir = tempfile::tempdir().unwrap();
        let created = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let kept = Kept::new(created, created + Duration::from_secs(3600), 3600);
        save(dir.path(), &kept).unwrap();
        let back = load(dir.path()).unwrap();
        assert_eq!(back, kept);
        assert_eq!(back.expires_at(), created + Duration::from_secs(3600));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(load(&dir.path().join("none")).is_err());
    }
}
