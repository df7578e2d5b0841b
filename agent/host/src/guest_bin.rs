//! Where the static `wrenn-guest` binary is: `WRENN_GUEST_BIN`, else next to
//! the running executable, else the newer of the workspace's musl release and
//! debug builds (so a stale release build does not shadow a fresh debug one).
//! Dynamically linked candidates are skipped by the search.

use std::path::{Path, PathBuf};

use crate::error::Error;

pub const ENV: &str = "WRENN_GUEST_BIN";
const NAME: &str = "wrenn-guest";

/// The configured path if any (it must exist), else the usual search.
pub fn resolve(configured: Option<&Path>) -> Result<PathBuf, Error> {
    let from_env = std::env::var_os(ENV).map(PathBuf::from);
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_owned));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let explicit = configured.is_some() || from_env.is_some();
    let candidates = candidates(configured, from_env, exe_dir.as_deref(), &workspace);
    // The search skips dynamically linked builds (e.g. a host-target
    // `target/release/wrenn-guest` next to `wrenn`): they cannot run in a
    // sandbox's rootfs. An explicit choice is taken as given; the runtime
    // refuses it with the build command if it is not static.
    let usable = |p: &PathBuf| explicit || !wrenn_vmm::validate::has_interpreter(p);
    let newest_build = candidates
        .iter()
        .filter(|p| usable(p))
        .filter(|p| p.starts_with(&workspace))
        .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p.clone());
    candidates
        .iter()
        .find(|p| !p.starts_with(&workspace) && p.is_file() && usable(p))
        .cloned()
        .or(newest_build)
        .ok_or_else(|| Error::GuestBinNotFound {
            searched: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn candidates(
    configured: Option<&Path>,
    from_env: Option<PathBuf>,
    exe_dir: Option<&Path>,
    workspace: &Path,
) -> Vec<PathBuf> {
    // An explicit choice is the only candidate: falling back would hide a typo.
    if let Some(p) = configured {
        return vec![p.to_owned()];
    }
    if let Some(p) = from_env {
        return vec![p];
    }
    let mut v = Vec::new();
    if let Some(d) = exe_dir {
        v.push(d.join(NAME));
    }
    for profile in ["release", "debug"] {
        v.push(
            workspace
                .join("target/x86_64-unknown-linux-musl")
                .join(profile)
                .join(NAME),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_choices_win_and_stand_alone() {
        let ws = Path::new("/ws");
        assert_eq!(
            candidates(
                Some(Path::new("/a")),
                Some("/b".into()),
                Some(Path::new("/c")),
                ws
            ),
            vec![PathBuf::from("/a")]
        );
        assert_eq!(
            candidates(None, Some("/b".into()), None, ws),
            vec![PathBuf::from("/b")]
        );
        assert_eq!(
            candidates(None, None, Some(Path::new("/c")), ws),
            vec![
                PathBuf::from("/c/wrenn-guest"),
                PathBuf::from("/ws/target/x86_64-unknown-linux-musl/release/wrenn-guest"),
                PathBuf::from("/ws/target/x86_64-unknown-linux-musl/debug/wrenn-guest"),
            ]
        );
    }

    #[test]
    fn a_missing_binary_names_the_build_command() {
        let e = resolve(Some(Path::new("/nonexistent/wrenn-guest")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/wrenn-guest"), "{e}");
        assert!(
            e.contains("cargo build -p wrenn-guest --target x86_64-unknown-linux-musl"),
            "{e}"
        );
    }
}
