//! Checks of runtime configs and sandbox specs, in one place.

use std::os::unix::fs::PermissionsExt;

use crate::runtime::{Error, Result, RuntimeConfig, SandboxSpec};
use crate::slot::{MAX_SLOT, MIN_SLOT};

/// Longest prefix: netns names and cgroup paths stay short, nft names valid.
pub const MAX_PREFIX_LEN: usize = 32;

/// Prefix, slots, directory and guest binary.
pub fn config(c: &RuntimeConfig) -> Result<()> {
    let p = &c.prefix;
    let prefix_ok = !p.is_empty()
        && p.len() <= MAX_PREFIX_LEN
        && p.as_bytes()[0].is_ascii_lowercase()
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !prefix_ok {
        return Err(Error::InvalidConfig(format!(
            "prefix {p:?}: expected 1-{MAX_PREFIX_LEN} lowercase letters, digits or '-', starting with a letter"
        )));
    }
    let (first, last) = (*c.slots.start(), *c.slots.end());
    if first < MIN_SLOT || last > MAX_SLOT || first > last {
        return Err(Error::InvalidConfig(format!(
            "slots {first}..={last}: expected a non-empty range within {MIN_SLOT}..={MAX_SLOT}"
        )));
    }
    if !c.dir.is_absolute() {
        return Err(Error::InvalidConfig(format!(
            "dir {}: must be an absolute path",
            c.dir.display()
        )));
    }
    let bytes = c.dir.as_os_str().as_encoded_bytes();
    if bytes.iter().any(|b| b",:\\ ".contains(b)) {
        return Err(Error::InvalidConfig(format!(
            "dir {}: must not contain ',', ':', '\\' or spaces (it appears in overlayfs mount options)",
            c.dir.display()
        )));
    }
    Ok(())
}

/// The guest binary exists and is executable.
pub fn guest_bin(c: &RuntimeConfig) -> Result<()> {
    let meta = std::fs::metadata(&c.guest_bin).map_err(|e| {
        Error::InvalidConfig(format!(
            "guest binary {}: {e} (build it with `cargo build -p wrenn-guest --target x86_64-unknown-linux-musl`)",
            c.guest_bin.display()
        ))
    })?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(Error::InvalidConfig(format!(
            "guest binary {}: not an executable file",
            c.guest_bin.display()
        )));
    }
    if has_interpreter(&c.guest_bin) {
        return Err(Error::InvalidConfig(format!(
            "guest binary {}: dynamically linked, but it runs inside every sandbox's own root filesystem; \
             build the static one with `cargo build -p wrenn-guest --target x86_64-unknown-linux-musl`",
            c.guest_bin.display()
        )));
    }
    Ok(())
}

/// True for an ELF64 file with a `PT_INTERP` program header (it needs a
/// dynamic loader). Unreadable or non-ELF files are left to `exec` to judge.
pub fn has_interpreter(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let mut h = [0u8; 64];
    if f.read_exact_at(&mut h, 0).is_err() || &h[..4] != b"\x7fELF" || h[4] != 2 {
        return false;
    }
    let phoff = u64::from_le_bytes(h[0x20..0x28].try_into().expect("8 bytes"));
    let phentsize = u64::from(u16::from_le_bytes([h[0x36], h[0x37]]));
    let phnum = u64::from(u16::from_le_bytes([h[0x38], h[0x39]]));
    (0..phnum.min(256)).any(|i| {
        let mut t = [0u8; 4];
        f.read_exact_at(&mut t, phoff + i * phentsize).is_ok() && u32::from_le_bytes(t) == 3
    })
}

/// The spec's checks from [`wrenn_types::spec`] (ranges, template name,
/// environment, metadata, total size, envd access token when there is
/// one) and the egress lists.
pub fn spec(s: &SandboxSpec) -> Result<()> {
    use wrenn_types::spec as check;
    let invalid = |e: check::InvalidField| Error::InvalidSpec(e.to_string());
    check::check_resources(s.vcpus, s.memory_mb, s.disk_mb).map_err(invalid)?;
    if !crate::image::is_step_template(&s.template) {
        check::check_template(&s.template).map_err(invalid)?;
    }
    check::check_env(&s.env).map_err(invalid)?;
    check::check_metadata("spec.metadata", &s.metadata).map_err(invalid)?;
    wrenn_types::check_spec_bytes(s.env.iter().chain(&s.metadata)).map_err(Error::InvalidSpec)?;
    egress("allow_out", &s.allow_out)?;
    egress("deny_out", &s.deny_out)?;
    if !s.envd_access_token.is_empty() {
        check::check_envd_access_token(&s.envd_access_token).map_err(invalid)?;
    }
    Ok(())
}

/// An egress list: bounded, and never opening the sandbox network itself.
fn egress(field: &str, list: &[wrenn_types::Cidr]) -> Result<()> {
    if list.len() > wrenn_types::MAX_EGRESS_RULES {
        return Err(Error::InvalidSpec(format!(
            "{field}: {} networks, above the maximum {}",
            list.len(),
            wrenn_types::MAX_EGRESS_RULES
        )));
    }
    let sandboxes = crate::slot::network();
    if field == "allow_out"
        && let Some(c) = list.iter().find(|c| c.overlaps(sandboxes))
    {
        return Err(Error::InvalidSpec(format!(
            "{field}: {c} overlaps the sandbox network {sandboxes}, which no sandbox may reach"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Backend;
    use std::path::PathBuf;

    fn cfg() -> RuntimeConfig {
        RuntimeConfig {
            backend: Backend::Namespace,
            dir: PathBuf::from("/var/lib/wrenn"),
            prefix: "wrenn".into(),
            slots: 1..=10,
            guest_bin: PathBuf::from("/nonexistent/wrenn-guest"),
            firecracker_bin: PathBuf::from(RuntimeConfig::DEFAULT_FIRECRACKER_BIN),
            kernel: None,
            unhardened: false,
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        config(&cfg()).unwrap();
        for (f, want) in [
            (
                Box::new(|c: &mut RuntimeConfig| c.prefix = "Bad_".into())
                    as Box<dyn Fn(&mut RuntimeConfig)>,
                "prefix",
            ),
            (Box::new(|c| c.slots = 0..=3), "slots 0..=3"),
            (Box::new(|c| c.slots = 5..=65535), "slots"),
            (Box::new(|c| c.dir = "rel".into()), "absolute"),
            (Box::new(|c| c.dir = "/a,b".into()), "overlayfs"),
        ] {
            let mut c = cfg();
            f(&mut c);
            let e = config(&c).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let e = guest_bin(&cfg()).unwrap_err().to_string();
        assert!(e.contains("cargo build -p wrenn-guest"), "{e}");
        // A dynamically linked binary (this host's ls) is refused with the fix.
        let mut dynamic = cfg();
        dynamic.guest_bin = PathBuf::from("/bin/ls");
        assert!(has_interpreter(&dynamic.guest_bin));
        let e = guest_bin(&dynamic).unwrap_err().to_string();
        assert!(
            e.contains("dynamically linked") && e.contains("x86_64-unknown-linux-musl"),
            "{e}"
        );
        // The static busybox passes.
        assert!(!has_interpreter(std::path::Path::new("/bin/busybox")));
    }

    #[test]
    fn spec_ranges_are_checked_with_clear_messages() {
        let id = "a1".parse().unwrap();
        let mut ok = SandboxSpec::new(id);
        spec(&ok).unwrap();
        ok.envd_access_token = "Ab0_-.".repeat(3);
        spec(&ok).unwrap();
        type Edit = Box<dyn Fn(&mut SandboxSpec)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|s| s.vcpus = 0), "vcpus: 0 is below the minimum 1"),
            (
                Box::new(|s| s.vcpus = 65),
                "vcpus: 65 is above the maximum 64",
            ),
            (Box::new(|s| s.memory_mb = 1), "memory_mb: 1 MiB is below"),
            (Box::new(|s| s.disk_mb = 2 << 20), "disk_mb"),
            (Box::new(|s| s.template = "../etc".into()), "template"),
            (
                Box::new(|s| {
                    s.env.insert("A=B".into(), "x".into());
                }),
                "env",
            ),
            (
                Box::new(|s| s.envd_access_token = "short".into()),
                "spec.envd_access_token: 5 characters; a token has 16-256",
            ),
            (
                Box::new(|s| s.envd_access_token = format!("{} x", "a".repeat(20))),
                "spec.envd_access_token: ' ' is not allowed",
            ),
        ];
        for (f, want) in cases {
            let mut s = SandboxSpec::new("a1".parse().unwrap());
            f(&mut s);
            let e = spec(&s).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
