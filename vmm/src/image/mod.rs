//! Template images: ext4 root filesystems at
//! `$WRENN_DIR/images/<template>/rootfs.ext4`.
//!
//! # Design
//!
//! - Images are built from a directory with `mkfs.ext4 -d` — nothing is
//!   mounted while building ([`build_from_dir`]). They have no journal: the
//!   namespace backend only ever mounts them read-only, and a Firecracker
//!   sandbox writes to its own throw-away copy.
//! - The built-in `base` template is Debian bookworm from debootstrap
//!   ([`build_base`]); the result is cached outside `$WRENN_DIR` (keyed by a
//!   hash of the recipe), so a second build — for another `$WRENN_DIR` too —
//!   is a sparse copy.
//! - A tiny `busybox` template for tests is built from Debian's
//!   `busybox-static` in a fraction of a second ([`build_busybox`]).
//! - [`ensure_image_sizes`] (agent start) grows every image smaller than
//!   `WRENN_DEFAULT_ROOTFS_SIZE`; [`shrink_images`] (graceful shutdown)
//!   shrinks them to their minimum. Both skip images attached to a loop device
//!   (in use by a sandbox) with a log line, and both are idempotent.
//!
//! Every function here blocks (it runs e2fsprogs or debootstrap); call it from
//! `spawn_blocking` in async code.
//!
//! # Limitations
//!
//! A template is replaced only by removing its directory; `build_base` does
//! not rebuild an existing `base` image when the recipe changes.

mod base;
mod build;
mod flatten;
mod resize;
pub mod sparse;

use std::io;
use std::path::{Path, PathBuf};

pub use base::{
    ACCOUNTS, BASE_PACKAGES, BuildProgress, BuildStep, DEBIAN_MIRROR, DEBIAN_SUITE, build_base,
    cache_dir,
};
pub use build::{BUSYBOX_TEMPLATE, build_busybox, build_from_dir, mkfs_blank};
pub use flatten::{Flattened, Shrink, flatten, flatten_disk};
pub(crate) use resize::shrink_with_deadline;
pub use resize::{
    DEFAULT_ROOTFS_SIZE, ROOTFS_SIZE_ENV, ResizeOutcome, ensure_image_size, ensure_image_sizes,
    ensure_image_sizes_to, fs_size, parse_rootfs_size, rootfs_size_from_env, shrink_image,
    shrink_images,
};

/// Name of the image file inside a template's directory.
pub const ROOTFS_FILE: &str = "rootfs.ext4";
/// Longest template name.
pub const MAX_TEMPLATE_LEN: usize = wrenn_types::spec::MAX_TEMPLATE_LEN;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid template name {0:?}: expected 1-64 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
    )]
    InvalidName(String),
    #[error(
        "{var}={value:?} is not a size: expected a positive whole number followed by G, Gi, M or Mi (e.g. 5G, 2Gi, 1000M, 512Mi)"
    )]
    BadSize {
        var: &'static str,
        value: String,
        #[source]
        source: wrenn_types::InvalidByteSize,
    },
    #[error("{step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed for {path} ({status}): {output}")]
    Command {
        program: String,
        path: PathBuf,
        status: String,
        output: String,
    },
    #[error("{path} is not an ext4 image: {reason}")]
    NotExt4 { path: PathBuf, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io {
        step,
        path: path.to_owned(),
        source,
    }
}

/// `$WRENN_DIR/images`.
pub fn images_dir(wrenn_dir: &Path) -> PathBuf {
    wrenn_dir.join("images")
}

/// `$WRENN_DIR/images/<template>/rootfs.ext4`; for a name `@<key>` (a
/// template build's cached step, never a name users can give: see
/// [`validate_name`]) `$WRENN_DIR/cache/steps/<key>/rootfs.ext4`.
pub fn template_path(wrenn_dir: &Path, template: &str) -> PathBuf {
    match template.strip_prefix(STEP_TEMPLATE_PREFIX) {
        Some(key) if is_step_template(template) => steps_dir(wrenn_dir).join(key).join(ROOTFS_FILE),
        _ => images_dir(wrenn_dir).join(template).join(ROOTFS_FILE),
    }
}

/// Marks the name of a build step's image ([`template_path`]).
pub const STEP_TEMPLATE_PREFIX: char = '@';

/// Whether `name` names a build step's image: `@` and 16 to 64 lowercase
/// hex digits (the agent makes these; requests cannot give them, their
/// template names are checked before they reach the runtime).
pub fn is_step_template(name: &str) -> bool {
    name.strip_prefix(STEP_TEMPLATE_PREFIX).is_some_and(|key| {
        (16..=64).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `$WRENN_DIR/cache/steps`: the images of template builds' cached steps.
pub fn steps_dir(wrenn_dir: &Path) -> PathBuf {
    wrenn_dir.join("cache").join("steps")
}

/// Checks a template name (it becomes a path component).
pub fn validate_name(name: &str) -> Result<()> {
    if wrenn_types::spec::is_template_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_owned()))
    }
}

/// Templates that have an image, sorted.
pub fn list_templates(wrenn_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(images_dir(wrenn_dir)) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| validate_name(n).is_ok() && template_path(wrenn_dir, n).is_file())
        .collect();
    out.sort();
    out
}

/// True when a loop device is attached to `image` (a sandbox uses it).
pub fn in_use(image: &Path) -> bool {
    let path = image.canonicalize().unwrap_or_else(|_| image.to_owned());
    crate::loopdev::backed_by(&path)
        .iter()
        .any(|(_, p)| *p == path)
}

/// Runs a command; a non-zero exit (other than those in `ok`) is an error
/// carrying its output.
pub(crate) fn run(cmd: &mut std::process::Command, path: &Path, ok: &[i32]) -> Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|source| Error::Io {
        step: "run (is e2fsprogs/debootstrap installed?)",
        path: PathBuf::from(&program),
        source,
    })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(c) if c == 0 || ok.contains(&c) => Ok(text),
        _ => Err(Error::Command {
            program,
            path: path.to_owned(),
            status: out.status.to_string(),
            output: tail(&text, 2000),
        }),
    }
}

/// The last `max` bytes of `s` (on a char boundary).
pub(crate) fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.trim().to_owned();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].trim().to_owned()
}

#[cfg(test)]
mod tests;
