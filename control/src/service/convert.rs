//! Between store records and protocol messages, and the checks on what
//! callers send. Every error names the field that was wrong.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tonic::Status;
use wrenn_proto::wrenn::v1::{Sandbox, SandboxSpec, SandboxState};
use wrenn_types::SandboxId;

use crate::store::{LiveUpdate, RecordState, SandboxRecord, SpecRecord};

use wrenn_types::spec::{self as check, InvalidField};
use wrenn_types::spec::{
    DEFAULT_DISK_MB, DEFAULT_MEMORY_MB, DEFAULT_TEMPLATE, DEFAULT_TIMEOUT_SECS, DEFAULT_VCPUS,
    MAX_METADATA_ENTRIES,
};

fn invalid(e: InvalidField) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Parses a sandbox id from request field `field`.
pub(crate) fn parse_id(field: &str, s: &str) -> Result<SandboxId, Status> {
    if s.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{field}: missing sandbox id"
        )));
    }
    s.parse()
        .map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

/// Checks a create request's spec with the checks the host agent and the
/// runtime make too ([`wrenn_types::spec`]), defaults filled in first.
pub(crate) fn validate_spec(spec: &SandboxSpec) -> Result<(), Status> {
    if !spec.template.is_empty() {
        check::check_template(&spec.template).map_err(invalid)?;
    }
    let d = with_defaults(spec);
    check::check_resources(d.vcpus, d.memory_mb, d.disk_mb).map_err(invalid)?;
    check::check_metadata("spec.metadata", &spec.metadata).map_err(invalid)?;
    check::check_env(&spec.env).map_err(invalid)?;
    check::check_total(&spec.env, &spec.metadata).map_err(invalid)?;
    check::check_egress("spec.allow_out", &spec.allow_out).map_err(invalid)?;
    check::check_egress("spec.deny_out", &spec.deny_out).map_err(invalid)?;
    if !spec.envd_access_token.is_empty() {
        check::check_envd_access_token(&spec.envd_access_token).map_err(invalid)?;
    }
    Ok(())
}

/// `out` (made from a record, which keeps no envd access token) with the
/// token the sandbox's host reported in `agent`'s spec.
pub(crate) fn with_envd_access_token(mut out: Sandbox, agent: &Sandbox) -> Sandbox {
    if let (Some(spec), Some(reported)) = (out.spec.as_mut(), agent.spec.as_ref()) {
        spec.envd_access_token = reported.envd_access_token.clone();
    }
    out
}

/// Checks metadata given at create or as a list filter.
pub(crate) fn validate_metadata<'a, I>(field: &str, metadata: I) -> Result<(), Status>
where
    I: IntoIterator<Item = (&'a String, &'a String)>,
    I::IntoIter: ExactSizeIterator,
{
    check::check_metadata(field, metadata).map_err(invalid)
}

/// The spec with the documented defaults filled in.
pub(crate) fn with_defaults(spec: &SandboxSpec) -> SpecRecord {
    let or = |v: u32, d: u32| if v == 0 { d } else { v };
    SpecRecord {
        template: if spec.template.is_empty() {
            DEFAULT_TEMPLATE.to_owned()
        } else {
            spec.template.clone()
        },
        vcpus: or(spec.vcpus, DEFAULT_VCPUS),
        memory_mb: or(spec.memory_mb, DEFAULT_MEMORY_MB),
        disk_mb: or(spec.disk_mb, DEFAULT_DISK_MB),
        internet: spec.internet.unwrap_or(true),
        timeout_secs: or(spec.timeout_secs, DEFAULT_TIMEOUT_SECS),
    }
}

pub(crate) fn state_to_proto(s: RecordState) -> SandboxState {
    match s {
        RecordState::Starting => SandboxState::Starting,
        RecordState::Running => SandboxState::Running,
        RecordState::Paused => SandboxState::Paused,
        RecordState::Stopped => SandboxState::Stopped,
    }
}

/// An agent's state as a record state; unspecified counts as starting.
pub(crate) fn state_from_proto(s: SandboxState) -> RecordState {
    match s {
        SandboxState::Unspecified | SandboxState::Starting => RecordState::Starting,
        SandboxState::Running => RecordState::Running,
        SandboxState::Paused => RecordState::Paused,
        SandboxState::Stopped => RecordState::Stopped,
    }
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn from_timestamp(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let ms = t
        .seconds
        .checked_mul(1000)?
        .checked_add(i64::from(t.nanos) / 1_000_000)?;
    DateTime::from_timestamp_millis(ms)
}

/// A record as the API returns it.
pub(crate) fn to_proto(rec: &SandboxRecord) -> Sandbox {
    Sandbox {
        id: rec.id.to_string(),
        state: state_to_proto(rec.state) as i32,
        spec: Some(SandboxSpec {
            template: rec.spec.template.clone(),
            vcpus: rec.spec.vcpus,
            memory_mb: rec.spec.memory_mb,
            disk_mb: rec.spec.disk_mb,
            env: Default::default(),
            metadata: rec.metadata.clone().into_iter().collect(),
            internet: Some(rec.spec.internet),
            timeout_secs: rec.spec.timeout_secs,
            ..Default::default()
        }),
        address: rec.address.clone(),
        generation: rec.generation,
        backend: rec.backend.clone(),
        host_id: rec.host_id.clone(),
        created_at: Some(timestamp(rec.created_at)),
        expires_at: rec.expires_at.map(timestamp),
        stop_reason: rec.stop_reason.clone(),
        netns: String::new(),
        unhealthy: String::new(),
    }
}

/// What an agent's answer says about a live sandbox.
pub(crate) fn live_from_agent(sb: &Sandbox) -> LiveUpdate {
    LiveUpdate {
        state: state_from_proto(sb.state()),
        address: sb.address.clone(),
        generation: sb.generation,
        backend: sb.backend.clone(),
        expires_at: sb.expires_at.as_ref().and_then(from_timestamp),
    }
}

/// A new record for a sandbox the store did not know (adoption).
pub(crate) fn record_from_agent(
    id: SandboxId,
    sb: &Sandbox,
    host_id: &str,
    now: DateTime<Utc>,
) -> SandboxRecord {
    let spec = sb.spec.clone().unwrap_or_default();
    let live = live_from_agent(sb);
    let metadata: BTreeMap<String, String> = spec
        .metadata
        .iter()
        .take(MAX_METADATA_ENTRIES)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    SandboxRecord {
        id,
        host_id: host_id.to_owned(),
        state: live.state,
        spec: with_defaults(&spec),
        metadata,
        address: live.address,
        generation: live.generation,
        backend: live.backend,
        created_at: sb
            .created_at
            .as_ref()
            .and_then(from_timestamp)
            .unwrap_or(now),
        expires_at: live.expires_at,
        updated_at: now,
        stopped_at: None,
        stop_reason: String::new(),
    }
}

/// Applies `live` to a copy of `rec` (what the store now holds after
/// [`Store::update_live`](crate::store::Store::update_live)).
pub(crate) fn apply_live(
    mut rec: SandboxRecord,
    live: LiveUpdate,
    at: DateTime<Utc>,
) -> SandboxRecord {
    rec.state = live.state;
    rec.address = live.address;
    rec.generation = live.generation;
    rec.backend = live.backend;
    rec.expires_at = live.expires_at;
    rec.updated_at = at;
    rec
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn bad_ids_name_the_field() {
        let e = parse_id("sandbox_id", "Nope!").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().starts_with("sandbox_id: invalid sandbox id"),
            "{}",
            e.message()
        );
        let e = parse_id("start.sandbox_id", "").unwrap_err();
        assert_eq!(e.message(), "start.sandbox_id: missing sandbox id");
    }

    #[test]
    fn spec_checks_name_what_was_wrong() {
        let ok = SandboxSpec::default();
        validate_spec(&ok).unwrap();
        let cases: Vec<(SandboxSpec, &str)> = vec![
            (
                SandboxSpec {
                    template: "../etc".into(),
                    ..ok.clone()
                },
                "spec.template",
            ),
            (
                SandboxSpec {
                    vcpus: 65,
                    ..ok.clone()
                },
                "spec.vcpus: 65 is above the maximum 64",
            ),
            (
                SandboxSpec {
                    metadata: HashMap::from([(String::new(), "v".into())]),
                    ..ok.clone()
                },
                "spec.metadata[\"\"]: key must be 1-128 bytes",
            ),
            (
                SandboxSpec {
                    metadata: HashMap::from([("k".into(), "v".repeat(2000))]),
                    ..ok.clone()
                },
                "spec.metadata[\"k\"]: value is 2000 bytes",
            ),
            (
                SandboxSpec {
                    env: HashMap::from([("A=B".into(), "v".into())]),
                    ..ok.clone()
                },
                "spec.env[\"A=B\"]: not a variable name",
            ),
            (
                SandboxSpec {
                    envd_access_token: "tiny".into(),
                    ..ok.clone()
                },
                "spec.envd_access_token: 4 characters",
            ),
        ];
        for (spec, want) in cases {
            let e = validate_spec(&spec).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().starts_with(want), "{} vs {want}", e.message());
        }
    }

    #[test]
    fn defaults_follow_the_proto_comments() {
        let s = with_defaults(&SandboxSpec::default());
        assert_eq!(
            (
                s.template.as_str(),
                s.vcpus,
                s.memory_mb,
                s.disk_mb,
                s.internet,
                s.timeout_secs
            ),
            ("base", 1, 512, 2048, true, 300)
        );
    }

    #[test]
    fn timestamps_round_trip_at_millisecond_precision() {
        let t = crate::store::now_ms();
        assert_eq!(from_timestamp(&timestamp(t)), Some(t));
    }
}
