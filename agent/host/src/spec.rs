//! Validation of `CreateSandboxRequest`: defaults filled in, every value
//! checked, and the error naming the field that was wrong.

use wrenn_proto::wrenn::v1 as pb;
use wrenn_types::SandboxId;
use wrenn_types::spec::{self, InvalidField};
use wrenn_vmm::SandboxSpec;

use crate::error::SandboxError;

impl From<InvalidField> for SandboxError {
    fn from(e: InvalidField) -> Self {
        SandboxError::invalid(e.field, e.reason)
    }
}

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
        spec::check_template(&spec.template)?;
        out.template = spec.template.clone();
    }
    let or = |v: u32, default: u32| if v == 0 { default } else { v };
    out.vcpus = or(spec.vcpus, out.vcpus);
    out.memory_mb = or(spec.memory_mb, out.memory_mb);
    out.disk_mb = or(spec.disk_mb, out.disk_mb);
    spec::check_resources(out.vcpus, out.memory_mb, out.disk_mb)?;
    spec::check_env(&spec.env)?;
    spec::check_metadata("spec.metadata", &spec.metadata)?;
    spec::check_total(&spec.env, &spec.metadata)?;
    out.env = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.metadata = spec
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.internet = spec.internet.unwrap_or(true);
    out.allow_out = spec::check_egress("spec.allow_out", &spec.allow_out)?;
    out.deny_out = spec::check_egress("spec.deny_out", &spec.deny_out)?;
    let timeout_secs = timeout("spec.timeout_secs", spec.timeout_secs, limits)?;
    out.envd_access_token = envd_access_token(&spec.envd_access_token)?;

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
        envd_access_token: out.envd_access_token.clone(),
    };
    Ok(ValidSpec {
        runtime: out,
        proto,
        timeout_secs,
    })
}

/// The envd access token a request names (16–256 characters of
/// `[A-Za-z0-9_.-]`), or a fresh one (32 random bytes, lowercase hex) when
/// it leaves it empty.
pub fn envd_access_token(raw: &str) -> Result<String, SandboxError> {
    if raw.is_empty() {
        return Ok(wrenn_vmm::sandbox::record::new_token());
    }
    spec::check_envd_access_token(raw)?;
    Ok(raw.to_owned())
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
        envd_access_token: spec.envd_access_token.clone(),
    }
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
        let token = v.runtime.envd_access_token.clone();
        assert_eq!(
            v.runtime,
            SandboxSpec {
                envd_access_token: token.clone(),
                ..SandboxSpec::new(id())
            }
        );
        assert_eq!(token.len(), 64, "32 random bytes, hex: {token}");
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(v.proto.envd_access_token, token, "reported in Sandbox.spec");
        let again = validate(id(), &pb::SandboxSpec::default(), LIMITS).unwrap();
        assert_ne!(
            again.runtime.envd_access_token, token,
            "a token per sandbox"
        );
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
            envd_access_token: "caller_chosen-token.v1".into(),
        };
        let v = validate(id(), &spec, LIMITS).unwrap();
        assert_eq!(v.runtime.envd_access_token, "caller_chosen-token.v1");
        assert_eq!(to_proto(&v.runtime, 60), spec);
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
        assert_eq!(
            e,
            "spec.env[\"A=B\"]: not a variable name (1-256 bytes, no '=' or NUL)"
        );
        let e = err(pb::SandboxSpec {
            metadata: [("".to_string(), "x".to_string())].into(),
            ..Default::default()
        });
        assert_eq!(e, "spec.metadata[\"\"]: key must be 1-128 bytes");
        let e = err(pb::SandboxSpec {
            envd_access_token: "too-short".into(),
            ..Default::default()
        });
        assert_eq!(
            e,
            "spec.envd_access_token: 9 characters; a token has 16-256"
        );
        let e = err(pb::SandboxSpec {
            envd_access_token: "a".repeat(257),
            ..Default::default()
        });
        assert!(
            e.starts_with("spec.envd_access_token: 257 characters"),
            "{e}"
        );
        let e = err(pb::SandboxSpec {
            envd_access_token: "has a space in it, sadly".into(),
            ..Default::default()
        });
        assert_eq!(
            e,
            "spec.envd_access_token: ' ' is not allowed (only letters, digits, '_', '-' and '.')"
        );
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
