//! `--json` renderings and human formatting of the control plane's records.

use serde_json::{Value, json};
use wrenn_proto::filesystem::{EntryInfo, FileType};
use wrenn_proto::process::ProcessInfo;
use wrenn_proto::wrenn::v1::{Sandbox, SandboxMetrics, SandboxState};

pub fn time(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    let ts = ts?;
    let t = chrono::DateTime::from_timestamp(ts.seconds, ts.nanos.max(0) as u32)?;
    Some(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

pub fn state(s: i32) -> &'static str {
    match SandboxState::try_from(s).unwrap_or(SandboxState::Unspecified) {
        SandboxState::Unspecified => "unknown",
        SandboxState::Starting => "starting",
        SandboxState::Running => "running",
        SandboxState::Paused => "paused",
        SandboxState::Stopped => "stopped",
    }
}

pub fn sandbox(s: &Sandbox) -> Value {
    let spec = s.spec.clone().unwrap_or_default();
    json!({
        "id": s.id,
        "state": state(s.state),
        "template": spec.template,
        "vcpus": spec.vcpus,
        "memory_mb": spec.memory_mb,
        "disk_mb": spec.disk_mb,
        "internet": spec.internet.unwrap_or(true),
        "timeout_secs": spec.timeout_secs,
        "env": spec.env,
        "metadata": spec.metadata,
        "address": s.address,
        "generation": s.generation,
        "backend": s.backend,
        "host_id": s.host_id,
        "created_at": time(s.created_at.as_ref()),
        "expires_at": time(s.expires_at.as_ref()),
        "stop_reason": if s.stop_reason.is_empty() { Value::Null } else { Value::from(s.stop_reason.clone()) },
        "allow_out": spec.allow_out,
        "deny_out": spec.deny_out,
        "unhealthy": if s.unhealthy.is_empty() { Value::Null } else { Value::from(s.unhealthy.clone()) },
    })
}

pub fn metrics(m: &SandboxMetrics) -> Value {
    json!({
        "sandbox_id": m.sandbox_id,
        "cpu_usage_usec": m.cpu_usage_usec,
        "memory_bytes": m.memory_bytes,
        "memory_limit_bytes": m.memory_limit_bytes,
        "disk_used_bytes": m.disk_used_bytes,
        "disk_limit_bytes": m.disk_limit_bytes,
        "pids": m.pids,
    })
}

pub fn file_type(t: i32) -> &'static str {
    match FileType::try_from(t).unwrap_or(FileType::Unspecified) {
        FileType::File => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "symlink",
        FileType::Unspecified => "other",
    }
}

pub fn entry(e: &EntryInfo) -> Value {
    json!({
        "name": e.name,
        "path": e.path,
        "type": file_type(e.r#type),
        "size": e.size,
        "mode": e.mode,
        "permissions": e.permissions,
        "owner": e.owner,
        "group": e.group,
        "modified_time": time(e.modified_time.as_ref()),
        "symlink_target": e.symlink_target,
    })
}

pub fn process(p: &ProcessInfo) -> Value {
    let c = p.config.clone().unwrap_or_default();
    json!({
        "pid": p.pid,
        "tag": p.tag,
        "cmd": c.cmd,
        "args": c.args,
        "envs": c.envs,
        "cwd": c.cwd,
    })
}

pub fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}
