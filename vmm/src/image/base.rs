//! The built-in `base` template: Debian bookworm from debootstrap.
//!
//! Recipe: `debootstrap --variant=minbase` plus [`BASE_PACKAGES`] (with
//! `python-is-python3`: `python` is `python3`), then the [`ACCOUNTS`] (bash,
//! a home of their own, passwordless sudo): `wrenn-user` (uid 1000), the
//! user of wrenn's own CLI, and `user` (uid 1001), the default user E2B's
//! SDKs and their callers assume. pip is allowed system-wide (Debian's
//! `EXTERNALLY-MANAGED` marker removed) and the apt caches are dropped.
//!
//! The image is cached under [`cache_dir`] as `base-<recipe id>.ext4`, the
//! id a hash of the suite, mirror, package list, [`RECIPE_VERSION`] and the
//! host's local CAs, together with debootstrap's downloaded packages; an
//! exclusive lock on the cache serialises concurrent builds. The installed
//! image carries the id it was built from (`images/base/recipe`): a wrenn
//! whose recipe differs builds (or takes from the cache) the new one and
//! swaps it in.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{Flock, FlockArg};

use super::build::{build_from_dir, install_copy};
use super::{Error, Result, io_err, run, template_path};

pub const DEBIAN_SUITE: &str = "bookworm";
pub const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
pub const BASE_PACKAGES: &[&str] = &[
    "python3",
    "python3-venv",
    "python3-pip",
    "ca-certificates",
    "procps",
    "iproute2",
    "curl",
    "sudo",
    "python-is-python3",
];
/// The accounts [`customize`] adds (name, uid; a group of the same name and
/// id, `/home/<name>`, bash, passwordless sudo).
pub const ACCOUNTS: [(&str, u32); 2] = [("wrenn-user", 1000), ("user", 1001)];
/// Bump when the customisation below changes (2: the `user` account).
const RECIPE_VERSION: u32 = 2;
/// Where the cache lives unless `WRENN_CACHE_DIR` says otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/wrenn";
/// Rough number of packages debootstrap handles, for the progress fraction.
const EXPECTED_PACKAGES: f32 = 150.0;

/// A phase of the base image build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStep {
    /// The image was already built (in `$WRENN_DIR` or the cache).
    Cached,
    Download,
    Extract,
    Unpack,
    Configure,
    Customize,
    Image,
    Done,
}

/// One progress report: `fraction` of the whole build, never decreasing.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildProgress {
    pub step: BuildStep,
    pub fraction: f32,
    pub message: String,
}

/// `$WRENN_CACHE_DIR` or `/var/cache/wrenn`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("WRENN_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR))
}

fn recipe_id() -> String {
    recipe_hash(BASE_PACKAGES, RECIPE_VERSION, &host_local_cas())
}

/// FNV-1a over everything that changes the result.
fn recipe_hash(packages: &[&str], version: u32, cas: &[(String, Vec<u8>)]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let text = format!(
        "{DEBIAN_SUITE} {DEBIAN_MIRROR} {} v{version}",
        packages.join(",")
    );
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(text.as_bytes());
    for (name, pem) in cas {
        feed(name.as_bytes());
        feed(pem);
    }
    format!("{h:016x}")
}

/// Where Debian keeps a machine's own CA certificates.
const LOCAL_CA_DIR: &str = "usr/local/share/ca-certificates";

/// The host's local CA certificates (`/usr/local/share/ca-certificates/*.crt`),
/// sorted by name. A host behind a TLS-inspecting gateway trusts its CA
/// there; sandboxes built on that host must trust it too, or `pip` and `curl`
/// inside them fail with "self-signed certificate".
fn host_local_cas() -> Vec<(String, Vec<u8>)> {
    let mut cas: Vec<(String, Vec<u8>)> = fs::read_dir(Path::new("/").join(LOCAL_CA_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".crt"))
        .filter_map(|e| {
            let pem = fs::read(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), pem))
        })
        .collect();
    cas.sort();
    cas
}

/// Copies the host's local CAs into the tree and rebuilds its bundle.
fn install_host_cas(root: &Path) -> Result<()> {
    let cas = host_local_cas();
    if cas.is_empty() {
        return Ok(());
    }
    let dir = root.join(LOCAL_CA_DIR);
    fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    for (name, pem) in &cas {
        let p = dir.join(name);
        fs::write(&p, pem).map_err(io_err("write", &p))?;
    }
    run(
        Command::new("chroot")
            .arg(root)
            .args(["update-ca-certificates", "--fresh"]),
        root,
        &[],
    )
    .map(|_| ())
}

/// Beside the installed image: the recipe it was built from.
const RECIPE_FILE: &str = "recipe";

/// Builds the `base` template into `wrenn_dir` (if it is not there yet, or
/// was built from an older recipe: a wrenn upgrade gets the new packages and
/// CAs), reporting progress. Returns the image path.
///
/// A replaced image is swapped in by rename: sandboxes kept from an earlier
/// run keep the old file they have mounted.
pub fn build_base(wrenn_dir: &Path, progress: &mut dyn FnMut(&BuildProgress)) -> Result<PathBuf> {
    let dest = template_path(wrenn_dir, "base");
    let marker = dest.with_file_name(RECIPE_FILE);
    let recipe = recipe_id();
    let mut report = Reporter::new(progress);
    if dest.is_file() {
        let built_from = fs::read_to_string(&marker).unwrap_or_default();
        if built_from.trim() == recipe {
            report.send(BuildStep::Cached, 1.0, format!("{} exists", dest.display()));
            return Ok(dest);
        }
        tracing::info!(
            image = %dest.display(),
            built_from = built_from.trim(),
            recipe,
            "the base image was built from another recipe; replacing it"
        );
    }
    let cache = cache_dir();
    fs::create_dir_all(&cache).map_err(io_err("create", &cache))?;
    let lock_path = cache.join("base.lock");
    let lock_file = File::create(&lock_path).map_err(io_err("create", &lock_path))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, e)| Error::Io {
        step: "lock",
        path: lock_path.clone(),
        source: e.into(),
    })?;
    let cached = cache.join(format!("base-{recipe}.ext4"));
    if cached.is_file() {
        report.send(
            BuildStep::Cached,
            0.9,
            format!("copying cached image {}", cached.display()),
        );
    } else {
        debootstrap_image(&cache, &cached, &mut report)?;
        remove_stale_images(&cache, &cached);
    }
    report.send(
        BuildStep::Image,
        0.95,
        format!("installing {}", dest.display()),
    );
    install_copy(&cached, &dest)?;
    fs::write(&marker, format!("{recipe}\n")).map_err(io_err("write", &marker))?;
    report.send(BuildStep::Done, 1.0, format!("{} ready", dest.display()));
    Ok(dest)
}

fn debootstrap_image(cache: &Path, cached: &Path, report: &mut Reporter<'_>) -> Result<()> {
    let tree = cache.join(format!("rootfs-{}.tmp", recipe_id()));
    if tree.exists() {
        // A build that died half-way may have left /proc or /sys mounted inside.
        crate::mounts::unmount_under(&tree);
        fs::remove_dir_all(&tree).map_err(io_err("remove stale build tree", &tree))?;
    }
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).map_err(io_err("create", &debs))?;
    let result = debootstrap(&tree, &debs, report)
        .and_then(|()| {
            report.send(BuildStep::Customize, 0.8, "adding the accounts".into());
            customize(&tree)
        })
        .and_then(|()| {
            report.send(BuildStep::Image, 0.85, "mkfs.ext4 -d".into());
            build_from_dir(&tree, cached, None)
        });
    crate::mounts::unmount_under(&tree);
    let _ = fs::remove_dir_all(&tree);
    result
}

fn debootstrap(tree: &Path, debs: &Path, report: &mut Reporter<'_>) -> Result<()> {
    let (reader, writer) = std::io::pipe().map_err(io_err("pipe for", Path::new("debootstrap")))?;
    let writer2 = writer
        .try_clone()
        .map_err(io_err("pipe for", Path::new("debootstrap")))?;
    let mut child = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", BASE_PACKAGES.join(",")))
        .arg(format!("--cache-dir={}", debs.display()))
        .arg(DEBIAN_SUITE)
        .arg(tree)
        .arg(DEBIAN_MIRROR)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2)
        .spawn()
        .map_err(io_err(
            "run debootstrap (apt-get install debootstrap)",
            tree,
        ))?;
    let mut counts = [0f32; 4];
    let mut lines = Vec::new();
    for line in BufReader::new(reader).lines().map_while(|l| l.ok()) {
        let (step, i, base, span) =
            if line.starts_with("I: Retrieving") || line.starts_with("I: Validating") {
                (BuildStep::Download, 0, 0.0, 0.35)
            } else if line.starts_with("I: Extracting") {
                (BuildStep::Extract, 1, 0.35, 0.1)
            } else if line.starts_with("I: Unpacking") {
                (BuildStep::Unpack, 2, 0.45, 0.15)
            } else if line.starts_with("I: Configuring") {
                (BuildStep::Configure, 3, 0.6, 0.2)
            } else {
                lines.push(line);
                continue;
            };
        // Retrieving and Validating both appear once per package.
        let per = if i == 0 { 2.0 } else { 1.0 };
        counts[i] += 1.0;
        let frac = base + span * (counts[i] / (EXPECTED_PACKAGES * per)).min(1.0);
        report.send(step, frac, line.trim_start_matches("I: ").to_owned());
        lines.push(line);
    }
    let status = child.wait().map_err(io_err("wait for debootstrap", tree))?;
    if !status.success() {
        let log = tree.join("debootstrap/debootstrap.log");
        let mut output = lines.join("\n");
        if let Ok(text) = fs::read_to_string(&log) {
            output.push_str("\n--- debootstrap.log ---\n");
            output.push_str(&text);
        }
        return Err(Error::Command {
            program: "debootstrap".into(),
            path: tree.to_owned(),
            status: status.to_string(),
            output: super::tail(&output, 3000),
        });
    }
    Ok(())
}

fn customize(root: &Path) -> Result<()> {
    for (name, uid) in ACCOUNTS {
        add_account(root, name, uid)?;
    }
    install_host_cas(root)?;
    for (rel, text) in [("etc/resolv.conf", ""), ("etc/hostname", "wrenn\n")] {
        let p = root.join(rel);
        let _ = fs::remove_file(&p);
        fs::write(&p, text).map_err(io_err("write", &p))?;
    }
    for dir in ["var/lib/apt/lists", "var/cache/apt/archives"] {
        remove_files_in(&root.join(dir));
    }
    for e in fs::read_dir(root.join("usr/lib"))
        .map_err(io_err("read", &root.join("usr/lib")))?
        .flatten()
    {
        let marker = e.path().join("EXTERNALLY-MANAGED");
        if e.file_name().to_string_lossy().starts_with("python3") && marker.exists() {
            fs::remove_file(&marker).map_err(io_err("remove", &marker))?;
        }
    }
    Ok(())
}

/// Adds account `name` (uid and gid `uid`, its own group, bash, home
/// `/home/<name>` owned by it) unless the tree has it, and lets it sudo
/// without a password.
fn add_account(root: &Path, name: &str, uid: u32) -> Result<()> {
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    if !passwd.lines().any(|l| l.split(':').next() == Some(name)) {
        run(
            Command::new("chroot").arg(root).args([
                "useradd",
                "--create-home",
                "--shell",
                "/bin/bash",
                "--uid",
                &uid.to_string(),
                "--user-group",
                name,
            ]),
            root,
            &[],
        )?;
    }
    let sudoers = root.join("etc/sudoers.d").join(name);
    fs::write(&sudoers, format!("{name} ALL=(ALL:ALL) NOPASSWD:ALL\n"))
        .map_err(io_err("write", &sudoers))?;
    fs::set_permissions(&sudoers, fs::Permissions::from_mode(0o440))
        .map_err(io_err("chmod", &sudoers))
}

/// Cached base images of older recipes are never used again.
fn remove_stale_images(cache: &Path, keep: &Path) {
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("base-") && name.ends_with(".ext4") && e.path() != keep {
            match fs::remove_file(e.path()) {
                Ok(()) => {
                    tracing::info!(image = %e.path().display(), "removed a cached base image of an older recipe")
                }
                Err(err) => {
                    tracing::warn!(image = %e.path().display(), error = %err, "cannot remove a stale cached base image")
                }
            }
        }
    }
}

/// Removes the regular files directly in `dir` (apt's caches).
fn remove_files_in(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Sends monotone progress to the caller's callback.
struct Reporter<'a> {
    cb: &'a mut dyn FnMut(&BuildProgress),
    last: f32,
}

impl<'a> Reporter<'a> {
    fn new(cb: &'a mut dyn FnMut(&BuildProgress)) -> Self {
        Reporter { cb, last: 0.0 }
    }

    fn send(&mut self, step: BuildStep, fraction: f32, message: String) {
        self.last = self.last.max(fraction.clamp(0.0, 1.0));
        (self.cb)(&BuildProgress {
            step,
            fraction: self.last,
            message,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_recipe_has_another_id() {
        let id = recipe_hash(BASE_PACKAGES, RECIPE_VERSION, &[]);
        assert_eq!(id.len(), 16);
        assert_eq!(id, recipe_hash(BASE_PACKAGES, RECIPE_VERSION, &[]));
        assert_ne!(id, recipe_hash(BASE_PACKAGES, RECIPE_VERSION - 1, &[]));
        let fewer = &BASE_PACKAGES[..BASE_PACKAGES.len() - 1];
        assert_ne!(id, recipe_hash(fewer, RECIPE_VERSION, &[]));
        let ca = [("corp.crt".to_owned(), b"pem".to_vec())];
        assert_ne!(id, recipe_hash(BASE_PACKAGES, RECIPE_VERSION, &ca));
    }

    #[test]
    fn e2b_conventions_are_in_the_recipe() {
        assert!(BASE_PACKAGES.contains(&"python-is-python3"));
        assert!(ACCOUNTS.contains(&("user", 1001)));
        assert!(ACCOUNTS.contains(&("wrenn-user", 1000)));
    }
}
