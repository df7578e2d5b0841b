//! Validation of `CreateSandboxRequest`: defaults filled in, every value
//! checked, and the error naming the field that was wrong.

use std::collections::BTreeMap;

use wrenn_proto::wrenn::v1 as pb;
use wrenn_types::SandboxId;
use wrenn_vmm::SandboxSpec;

use crate::error::SandboxError;

/// Longest template name accepted.
pub const MAX_TEMPLATE_LEN: usize = 64;
/// Most environment variables / metadata entries in one spec.
pub const MAX_MAP_ENTRIES: usize = 256;
/// Longest key or value of an env or metadata entry.
pub const MAX_KEY_LEN: usize = 256;
pub const MAX_VALUE_LEN: usize = 16 * 1024;

/// A create request, validated.
#[derive(Debug, Clone)]
pub struct ValidSpec {
    /// What the runtime gets.
    pub runtime: SandboxSpec,
    /// What `Sandbox.spec` reports: the request with every default filled in.
    pub proto: pb::SandboxSpec,
    pub timeout_secs: u32,
}

/// Limits that come from the agent's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub default_timeout_secs: u32,
    pub max_timeout_secs: u32,
}

/// The id the request names, or a fresh one when it leaves it empty.
pub fn sandbox_id(raw: &str) -> Result<SandboxId, SandboxError> {
    if raw.is_empty() {
        return Ok(SandboxId::generate());
    }
    parse_id(raw)
}

/// An id that must be given.
pub fn parse_id(raw: &str) -> Result<SandboxId, SandboxError> {
    raw.parse::<SandboxId>()
        .map_err(|e| SandboxError::invalid("sandbox_id", e.to_string()))
}

/// Checks `spec` and fills in its defaults.
pub fn validate(
    id: SandboxId,
    spec: &pb::SandboxSpec,
    limits: Limits,
) -> Result<ValidSpec, SandboxError> {
    let mut out = SandboxSpec::new(id);

    if !spec.template.is_empty() {
        check_template(&spec.template)?;
        out.template = spec.template.clone();
    }
    if spec.vcpus != 0 {
        in_range("spec.vcpus", spec.vcpus, 1, SandboxSpec::MAX_VCPUS, "")?;
        out.vcpus = spec.vcpus;
    }
    if spec.memory_mb != 0 {
        in_range(
            "spec.memory_mb",
            spec.memory_mb,
            SandboxSpec::MIN_MEMORY_MB,
            SandboxSpec::MAX_MEMORY_MB,
            " MiB",
        )?;
        out.memory_mb = spec.memory_mb;
    }
    if spec.disk_mb != 0 {
        in_range(
            "spec.disk_mb",
            spec.disk_mb,
            SandboxSpec::MIN_DISK_MB,
            SandboxSpec::MAX_DISK_MB,
            " MiB",
        )?;
        out.disk_mb = spec.disk_mb;
    }
    out.env = check_map("spec.env", &spec.env, check_env_key)?;
    out.metadata = check_map("spec.metadata", &spec.metadata, |_| Ok(()))?;
    wrenn_types::check_spec_bytes(spec.env.iter().chain(&spec.metadata))
        .map_err(|why| SandboxError::invalid("spec.env/spec.metadata", why))?;
    out.internet = spec.internet.unwrap_or(true);
    out.allow_out = check_networks("spec.allow_out", &spec.allow_out)?;
    out.deny_out = check_networks("spec.deny_out", &spec.deny_out)?;
    let timeout_secs = timeout("spec.timeout_secs", spec.timeout_secs, limits)?;

    let proto = pb::SandboxSpec {
        template: out.template.clone(),
        vcpus: out.vcpus,
        memory_mb: out.memory_mb,
        disk_mb: out.disk_mb,
        env: spec.env.clone(),
        metadata: spec.metadata.clone(),
        internet: Some(out.internet),
        timeout_secs,
        allow_out: out.allow_out.iter().map(ToString::to_string).collect(),
        deny_out: out.deny_out.iter().map(ToString::to_string).collect(),
    };
    Ok(ValidSpec {
        runtime: out,
        proto,
        timeout_secs,
    })
}

/// An egress list: CIDRs, at most [`wrenn_types::MAX_EGRESS_RULES`].
pub fn check_networks(field: &str, raw: &[String]) -> Result<Vec<wrenn_types::Cidr>, SandboxError> {
    if raw.len() > wrenn_types::MAX_EGRESS_RULES {
        return Err(SandboxError::invalid(
            field,
            format!(
                "{} networks, above the maximum {}",
                raw.len(),
                wrenn_types::MAX_EGRESS_RULES
            ),
        ));
    }
    raw.iter()
        .enumerate()
        .map(|(i, c)| {
            c.trim()
                .parse::<wrenn_types::Cidr>()
                .map_err(|e| SandboxError::invalid(format!("{field}[{i}]"), e.to_string()))
        })
        .collect()
}

/// A timeout in seconds: 0 means the default; at most the configured maximum.
pub fn timeout(field: &str, secs: u32, limits: Limits) -> Result<u32, SandboxError> {
    if secs == 0 {
        return Ok(limits.default_timeout_secs);
    }
    if secs > limits.max_timeout_secs {
        return Err(SandboxError::invalid(
            field,
            format!(
                "{secs} s is above the maximum {} s",
                limits.max_timeout_secs
            ),
        ));
    }
    Ok(secs)
}

/// The spec the runtime reports for an adopted sandbox, as `Sandbox.spec`.
pub fn to_proto(spec: &SandboxSpec, timeout_secs: u32) -> pb::SandboxSpec {
    pb::SandboxSpec {
        template: spec.template.clone(),
        vcpus: spec.vcpus,
        memory_mb: spec.memory_mb,
        disk_mb: spec.disk_mb,
        env: spec.env.clone().into_iter().collect(),
        metadata: spec.metadata.clone().into_iter().collect(),
        internet: Some(spec.internet),
        timeout_secs,
        allow_out: spec.allow_out.iter().map(ToString::to_string).collect(),
        deny_out: spec.deny_out.iter().map(ToString::to_string).collect(),
    }
}

fn in_range(field: &str, v: u32, min: u32, max: u32, unit: &str) -> Result<(), SandboxError> {
    if v < min {
        return Err(SandboxError::invalid(
            field,
            format!("{v}{unit} is below the minimum {min}{unit}"),
        ));
    }
    if v > max {
        return Err(SandboxError::invalid(
            field,
            format!("{v}{unit} is above the maximum {max}{unit}"),
        ));
    }
    Ok(())
}

fn check_template(t: &str) -> Result<(), SandboxError> {
    let ok = t.len() <= MAX_TEMPLATE_LEN
        && t.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && t.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
        && !t.contains("..");
    if ok {
        Ok(())
    } else {
        Err(SandboxError::invalid(
            "spec.template",
            format!(
                "{t:?} is not a template name (1-{MAX_TEMPLATE_LEN} lowercase letters, digits, \
                 '-', '_' or '.', starting with a letter or digit)"
            ),
        ))
    }
}

fn check_env_key(k: &str) -> Result<(), String> {
    if k.contains('=') {
        return Err("contains '='".into());
    }
    Ok(())
}

fn check_map(
    field: &str,
    map: &std::collections::HashMap<String, String>,
    check_key: impl Fn(&str) -> Result<(), String>,
) -> Result<BTreeMap<String, String>, SandboxError> {
    if map.len() > MAX_MAP_ENTRIES {
        return Err(SandboxError::invalid(
            field,
            format!(
                "{} entries is above the maximum {MAX_MAP_ENTRIES}",
                map.len()
            ),
        ));
    }
    for (k, v) in map {
        let bad = |reason: String| SandboxError::invalid(format!("{field}[{k:?}]"), reason);
        if k.is_empty() {
            return Err(bad("empty key".into()));
        }
        if k.len() > MAX_KEY_LEN {
            return Err(bad(format!("key longer than {MAX_KEY_LEN} bytes")));
        }
        if v.len() > MAX_VALUE_LEN {
            return Err(bad(format!("value longer than {MAX_VALUE_LEN} bytes")));
        }
        if k.contains('\0') || v.contains('\0') {
            return Err(bad("contains a NUL byte".into()));
        }
        check_key(k).map_err(|r| bad(format!("key {r}")))?;
    }
    Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        default_timeout_secs: 300,
        max_timeout_secs: 3600,
    };

    fn id() -> SandboxId {
        "sb1".parse().unwrap()
    }

    fn err(spec: pb::SandboxSpec) -> String {
        validate(id(), &spec, LIMITS).unwrap_err().to_string()
    }

    #[test]
    fn empty_spec_gets_every_default() {
        let v = validate(id(), &pb::SandboxSpec::default(), LIMITS).unwrap();
        assert_eq!(v.runtime, SandboxSpec::new(id()));
        assert_eq!(v.timeout_secs, 300);
        assert_eq!(v.proto.template, "base");
        assert_eq!(v.proto.memory_mb, 512);
        assert_eq!(v.proto.internet, Some(true));
        assert_eq!(v.proto.timeout_secs, 300);
    }

    #[test]
    fn given_values_are_kept() {
        let spec = pb::SandboxSpec {
            template: "py-3.12".into(),
            vcpus: 2,
            memory_mb: 1024,
            disk_mb: 4096,
            env: [("A".to_string(), "b=c".to_string())].into(),
            metadata: [("owner".to_string(), "x".to_string())].into(),
            internet: Some(false),
            timeout_secs: 60,
            allow_out: Vec::new(),
            deny_out: Vec::new(),
        };
        let v = validate(id(), &spec, LIMITS).unwrap();
        assert_eq!(v.runtime.template, "py-3.12");
        assert_eq!(
            (v.runtime.vcpus, v.runtime.memory_mb, v.runtime.disk_mb),
            (2, 1024, 4096)
        );
        assert_eq!(v.runtime.env.get("A").unwrap(), "b=c");
        assert!(!v.runtime.internet);
        assert_eq!(v.timeout_secs, 60);
        assert_eq!(v.proto, spec);
    }

    #[test]
    fn bad_values_name_the_field() {
        let e = err(pb::SandboxSpec {
            vcpus: 65,
            ..Default::default()
        });
        assert_eq!(e, "spec.vcpus: 65 is above the maximum 64");
        let e = err(pb::SandboxSpec {
            memory_mb: 8,
            ..Default::default()
        });
        assert_eq!(e, "spec.memory_mb: 8 MiB is below the minimum 32 MiB");
        let e = err(pb::SandboxSpec {
            disk_mb: u32::MAX,
            ..Default::default()
        });
        assert!(e.starts_with("spec.disk_mb: "), "{e}");
        let e = err(pb::SandboxSpec {
            template: "../etc".into(),
            ..Default::default()
        });
        assert!(
            e.starts_with("spec.template: \"../etc\" is not a template name"),
            "{e}"
        );
        let e = err(pb::SandboxSpec {
            timeout_secs: 3601,
            ..Default::default()
        });
        assert_eq!(e, "spec.timeout_secs: 3601 s is above the maximum 3600 s");
        let e = err(pb::SandboxSpec {
            env: [("A=B".to_string(), "x".to_string())].into(),
            ..Default::default()
        });
        assert_eq!(e, "spec.env[\"A=B\"]: key contains '='");
        let e = err(pb::SandboxSpec {
            metadata: [("".to_string(), "x".to_string())].into(),
            ..Default::default()
        });
        assert_eq!(e, "spec.metadata[\"\"]: empty key");
    }

    #[test]
    fn ids_are_validated_or_generated() {
        assert_eq!(sandbox_id("abc").unwrap().as_str(), "abc");
        assert_eq!(sandbox_id("").unwrap().as_str().len(), 20);
        let e = sandbox_id("Bad-Id").unwrap_err().to_string();
        assert!(
            e.starts_with("sandbox_id: invalid sandbox id \"Bad-Id\""),
            "{e}"
        );
        assert!(parse_id("").is_err());
    }
}
