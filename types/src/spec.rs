//! The sandbox spec's defaults, ranges and checks, in one place: the control
//! plane, the host agent and the runtime all call these, so a spec one of
//! them accepts is never refused by the next for another reason, and every
//! refusal names the field the way the API spells it.

use std::collections::HashMap;

use crate::{Cidr, MAX_EGRESS_RULES, check_spec_bytes};

pub const DEFAULT_TEMPLATE: &str = "base";
/// Metadata key of the sandboxes a template build runs its steps in (value:
/// the template being built). They belong to the build: the control plane
/// neither lists nor adopts them.
pub const BUILD_METADATA_KEY: &str = "wrenn.build";
pub const DEFAULT_VCPUS: u32 = 1;
pub const DEFAULT_MEMORY_MB: u32 = 512;
pub const DEFAULT_DISK_MB: u32 = 2048;
/// Seconds a sandbox lives when its create names no timeout.
pub const DEFAULT_TIMEOUT_SECS: u32 = 300;

pub const MAX_VCPUS: u32 = 64;
pub const MIN_MEMORY_MB: u32 = 32;
pub const MAX_MEMORY_MB: u32 = 256 * 1024;
pub const MIN_DISK_MB: u32 = 64;
pub const MAX_DISK_MB: u32 = 1024 * 1024;

/// Longest template name.
pub const MAX_TEMPLATE_LEN: usize = 64;
/// Most environment variables, longest name and value (all of them together
/// stay within [`crate::MAX_SPEC_BYTES`] with the metadata).
pub const MAX_ENV_ENTRIES: usize = 512;
pub const MAX_ENV_KEY: usize = 256;
pub const MAX_ENV_VALUE: usize = 32 * 1024;
/// Most metadata entries, longest key and value (metadata is stored with
/// the sandbox's record and filtered on).
pub const MAX_METADATA_ENTRIES: usize = 64;
pub const MAX_METADATA_KEY: usize = 128;
pub const MAX_METADATA_VALUE: usize = 1024;

/// A spec field that failed its check: which (as the API spells it, e.g.
/// `spec.env["A"]`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    pub field: String,
    pub reason: String,
}

impl InvalidField {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

type Check<T = ()> = Result<T, InvalidField>;

/// `v` within `min..=max`; `unit` follows the numbers in the message.
pub fn check_range(field: &str, v: u32, min: u32, max: u32, unit: &str) -> Check {
    if v < min {
        return Err(InvalidField::new(
            field,
            format!("{v}{unit} is below the minimum {min}{unit}"),
        ));
    }
    if v > max {
        return Err(InvalidField::new(
            field,
            format!("{v}{unit} is above the maximum {max}{unit}"),
        ));
    }
    Ok(())
}

/// vCPUs, memory and disk of a spec (after defaults: 0 is refused).
pub fn check_resources(vcpus: u32, memory_mb: u32, disk_mb: u32) -> Check {
    check_range("spec.vcpus", vcpus, 1, MAX_VCPUS, "")?;
    check_range(
        "spec.memory_mb",
        memory_mb,
        MIN_MEMORY_MB,
        MAX_MEMORY_MB,
        " MiB",
    )?;
    check_range("spec.disk_mb", disk_mb, MIN_DISK_MB, MAX_DISK_MB, " MiB")
}

/// True for a template name: 1–[`MAX_TEMPLATE_LEN`] lowercase letters,
/// digits, `-`, `_` or `.`, starting with a letter or digit, without `..`
/// (it names a directory under the images directory).
pub fn is_template_name(name: &str) -> bool {
    name.len() <= MAX_TEMPLATE_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && !name.contains("..")
}

pub fn check_template(name: &str) -> Check {
    if is_template_name(name) {
        return Ok(());
    }
    Err(InvalidField::new(
        "spec.template",
        format!(
            "{name:?} is not a template name (1-{MAX_TEMPLATE_LEN} lowercase letters, digits, \
             '-', '_' or '.', starting with a letter or digit)"
        ),
    ))
}

/// Shortest and longest `spec.envd_access_token`.
pub const MIN_ENVD_TOKEN_LEN: usize = 16;
pub const MAX_ENVD_TOKEN_LEN: usize = 256;

/// A given `spec.envd_access_token` (empty means "choose one" and is not
/// checked here): [`MIN_ENVD_TOKEN_LEN`]–[`MAX_ENVD_TOKEN_LEN`] letters,
/// digits, `_`, `-` or `.`, which any header, environment variable or
/// kernel command line carries as they are.
pub fn check_envd_access_token(token: &str) -> Check {
    let bad = |reason: String| Err(InvalidField::new("spec.envd_access_token", reason));
    if !(MIN_ENVD_TOKEN_LEN..=MAX_ENVD_TOKEN_LEN).contains(&token.len()) {
        return bad(format!(
            "{} characters; a token has {MIN_ENVD_TOKEN_LEN}-{MAX_ENVD_TOKEN_LEN}",
            token.len()
        ));
    }
    match token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        Some(c) => bad(format!(
            "{c:?} is not allowed (only letters, digits, '_', '-' and '.')"
        )),
        None => Ok(()),
    }
}

/// Environment variables: names without `=` or NUL, values without NUL,
/// within the entry and size limits.
pub fn check_env<'a, I>(env: I) -> Check
where
    I: IntoIterator<Item = (&'a String, &'a String)>,
    I::IntoIter: ExactSizeIterator,
{
    let env = env.into_iter();
    if env.len() > MAX_ENV_ENTRIES {
        return Err(InvalidField::new(
            "spec.env",
            format!(
                "{} variables is above the maximum {MAX_ENV_ENTRIES}",
                env.len()
            ),
        ));
    }
    for (k, v) in env {
        let bad = |reason: String| InvalidField::new(format!("spec.env[{k:?}]"), reason);
        if k.is_empty() || k.len() > MAX_ENV_KEY || k.contains(['=', '\0']) {
            return Err(bad(format!(
                "not a variable name (1-{MAX_ENV_KEY} bytes, no '=' or NUL)"
            )));
        }
        if v.len() > MAX_ENV_VALUE {
            return Err(bad(format!(
                "value is {} bytes, above the maximum {MAX_ENV_VALUE}",
                v.len()
            )));
        }
        if v.contains('\0') {
            return Err(bad("value contains a NUL byte".into()));
        }
    }
    Ok(())
}

/// Metadata given at create (`field` = `spec.metadata`) or as a list filter.
pub fn check_metadata<'a, I>(field: &str, metadata: I) -> Check
where
    I: IntoIterator<Item = (&'a String, &'a String)>,
    I::IntoIter: ExactSizeIterator,
{
    let metadata = metadata.into_iter();
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(InvalidField::new(
            field,
            format!(
                "{} entries is above the maximum {MAX_METADATA_ENTRIES}",
                metadata.len()
            ),
        ));
    }
    for (k, v) in metadata {
        let bad = |reason: String| InvalidField::new(format!("{field}[{k:?}]"), reason);
        if k.is_empty() || k.len() > MAX_METADATA_KEY {
            return Err(bad(format!("key must be 1-{MAX_METADATA_KEY} bytes")));
        }
        if v.len() > MAX_METADATA_VALUE {
            return Err(bad(format!(
                "value is {} bytes, above the maximum {MAX_METADATA_VALUE}",
                v.len()
            )));
        }
        if k.contains('\0') || v.contains('\0') {
            return Err(bad("contains a NUL byte".into()));
        }
    }
    Ok(())
}

/// Environment and metadata together within [`crate::MAX_SPEC_BYTES`].
pub fn check_total(env: &HashMap<String, String>, metadata: &HashMap<String, String>) -> Check {
    check_spec_bytes(env.iter().chain(metadata))
        .map_err(|why| InvalidField::new("spec.env/spec.metadata", why))
}

/// An egress list as given (`field` = `spec.allow_out` or `spec.deny_out`):
/// at most [`MAX_EGRESS_RULES`] CIDRs.
pub fn check_egress(field: &str, raw: &[String]) -> Check<Vec<Cidr>> {
    if raw.len() > MAX_EGRESS_RULES {
        return Err(InvalidField::new(
            field,
            format!(
                "{} networks, above the maximum {MAX_EGRESS_RULES}",
                raw.len()
            ),
        ));
    }
    raw.iter()
        .enumerate()
        .map(|(i, c)| {
            c.trim()
                .parse::<Cidr>()
                .map_err(|e| InvalidField::new(format!("{field}[{i}]"), e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ranges_name_the_field_and_the_bound() {
        assert!(check_resources(DEFAULT_VCPUS, DEFAULT_MEMORY_MB, DEFAULT_DISK_MB).is_ok());
        let e = check_resources(65, 512, 2048).unwrap_err();
        assert_eq!(e.to_string(), "spec.vcpus: 65 is above the maximum 64");
        let e = check_resources(1, 16, 2048).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.memory_mb: 16 MiB is below the minimum 32 MiB"
        );
        let e = check_resources(1, 512, 0).unwrap_err();
        assert_eq!(e.field, "spec.disk_mb");
    }

    #[test]
    fn envd_access_tokens_are_header_and_cmdline_safe() {
        check_envd_access_token(&"Ab0_-.".repeat(3)).unwrap();
        check_envd_access_token(&"f".repeat(256)).unwrap();
        let e = check_envd_access_token("short").unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.envd_access_token: 5 characters; a token has 16-256"
        );
        assert!(check_envd_access_token(&"f".repeat(257)).is_err());
        let e = check_envd_access_token("0123456789abcdef ").unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.envd_access_token: ' ' is not allowed (only letters, digits, '_', '-' and '.')"
        );
        assert!(check_envd_access_token("0123456789abcdef\u{e9}").is_err());
    }

    #[test]
    fn template_names_are_directory_safe() {
        for ok in ["base", "py-3.12", "a", "x_y"] {
            assert!(check_template(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a..b", "Base", "a/b", &"x".repeat(65)] {
            let e = check_template(bad).unwrap_err();
            assert_eq!(e.field, "spec.template", "{bad}");
        }
    }

    #[test]
    fn env_and_metadata_name_the_entry() {
        assert!(check_env(&map(&[("A", "1")])).is_ok());
        assert_eq!(
            check_env(&map(&[("A=B", "1")])).unwrap_err().field,
            "spec.env[\"A=B\"]"
        );
        let big = "x".repeat(MAX_ENV_VALUE + 1);
        assert!(
            check_env(&map(&[("A", &big)]))
                .unwrap_err()
                .reason
                .contains("above the maximum")
        );
        let many: HashMap<String, String> = (0..=MAX_METADATA_ENTRIES)
            .map(|i| (i.to_string(), String::new()))
            .collect();
        assert_eq!(
            check_metadata("spec.metadata", &many).unwrap_err().field,
            "spec.metadata"
        );
        assert_eq!(
            check_metadata("spec.metadata", &map(&[("", "v")]))
                .unwrap_err()
                .field,
            "spec.metadata[\"\"]"
        );
    }

    #[test]
    fn egress_lists_parse_or_name_the_entry() {
        let ok = check_egress("spec.allow_out", &["10.1.2.0/24".into()]).unwrap();
        assert_eq!(ok.len(), 1);
        let e = check_egress("spec.deny_out", &["10.0.0.0/8".into(), "nope".into()]).unwrap_err();
        assert_eq!(e.field, "spec.deny_out[1]");
        let many = vec!["10.0.0.0/8".to_string(); MAX_EGRESS_RULES + 1];
        assert_eq!(
            check_egress("spec.allow_out", &many).unwrap_err().field,
            "spec.allow_out"
        );
    }
}
