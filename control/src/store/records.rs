//! The rows the store keeps, as plain Rust values (no SQL, no protobuf).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use wrenn_types::SandboxId;

/// Where a sandbox record stands. `Stopped` is terminal: the store never moves a
/// stopped record back to another state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordState {
    Starting,
    Running,
    Paused,
    Stopped,
}

impl RecordState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordState::Starting => "starting",
            RecordState::Running => "running",
            RecordState::Paused => "paused",
            RecordState::Stopped => "stopped",
        }
    }

    pub fn is_stopped(self) -> bool {
        self == RecordState::Stopped
    }
}

impl fmt::Display for RecordState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`RecordState`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sandbox state {0:?}: expected starting, running, paused or stopped")]
pub struct UnknownState(pub String);

impl FromStr for RecordState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "starting" => RecordState::Starting,
            "running" => RecordState::Running,
            "paused" => RecordState::Paused,
            "stopped" => RecordState::Stopped,
            other => return Err(UnknownState(other.to_owned())),
        })
    }
}

/// The resources a sandbox was created with, defaults filled in. Environment
/// variables are deliberately absent: they often hold secrets, so they go to the
/// host and are never written to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecRecord {
    pub template: String,
    pub vcpus: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub internet: bool,
    pub timeout_secs: u32,
}

/// One sandbox as the control plane remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRecord {
    pub id: SandboxId,
    pub host_id: String,
    pub state: RecordState,
    pub spec: SpecRecord,
    pub metadata: BTreeMap<String, String>,
    /// Host-reachable address (IP literal), empty until the host reports it.
    pub address: String,
    pub generation: u64,
    pub backend: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// Why the sandbox stopped; empty unless `state` is `Stopped`.
    pub stop_reason: String,
}

/// What a host reports about a live sandbox; applied to its record with
/// [`Store::update_live`](super::Store::update_live).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveUpdate {
    pub state: RecordState,
    pub address: String,
    pub generation: u64,
    pub backend: String,
    pub expires_at: Option<DateTime<Utc>>,
}

impl SandboxRecord {
    /// True when `live` would change nothing in this record.
    pub fn matches(&self, live: &LiveUpdate) -> bool {
        self.state == live.state
            && self.address == live.address
            && self.generation == live.generation
            && self.backend == live.backend
            && self.expires_at == live.expires_at
    }
}

/// Which records [`Store::list_sandboxes`](super::Store::list_sandboxes) returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxFilter {
    /// Only records whose metadata contains every one of these pairs.
    pub metadata: BTreeMap<String, String>,
    /// Include stopped records.
    pub include_stopped: bool,
    /// Only records on this host.
    pub host_id: Option<String>,
}

/// An API key as stored: its hash, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    /// SHA-256 of the whole key, lowercase hex.
    pub key_hash: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// When a request last used it, to the minute (written at most once a
    /// minute); `None` when never.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A host the control plane schedules onto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    pub id: String,
    pub agent_address: String,
    pub proxy_address: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Now, truncated to the millisecond the store keeps, so that a value written
/// and read back compares equal.
pub fn now_ms() -> DateTime<Utc> {
    from_ms(Utc::now().timestamp_millis())
}

pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

pub(crate) fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for s in [
            RecordState::Starting,
            RecordState::Running,
            RecordState::Paused,
            RecordState::Stopped,
        ] {
            assert_eq!(s.as_str().parse::<RecordState>().unwrap(), s);
        }
        let err = "gone".parse::<RecordState>().unwrap_err();
        assert!(err.to_string().contains("\"gone\""), "{err}");
    }

    #[test]
    fn now_ms_survives_the_millisecond_round_trip() {
        let t = now_ms();
        assert_eq!(from_ms(to_ms(t)), t);
    }
}
