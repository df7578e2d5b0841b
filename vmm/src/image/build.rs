//! Building ext4 images from directories (`mkfs.ext4 -d`, nothing mounted).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use wrenn_types::ByteSize;

use super::{Error, Result, io_err, run, sparse, template_path, validate_name};

/// Name of the test template built by [`build_busybox`].
pub const BUSYBOX_TEMPLATE: &str = "busybox";
const MIB: u64 = 1 << 20;
/// Smallest image built.
const MIN_IMAGE: u64 = 64 * MIB;

/// `mkfs.ext4` options shared by every image: 4 KiB blocks, no journal (no
/// jbd2 thread per mount, nothing to replay), no reserved blocks, no discard
/// (the file is new and sparse).
fn mkfs(
    dest: &Path,
    size_mib: u64,
    populate: Option<&Path>,
    inodes: Option<u64>,
    label: &str,
) -> Result<()> {
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args([
        "-q",
        "-F",
        "-b",
        "4096",
        "-O",
        "^has_journal",
        "-m",
        "0",
        "-E",
        "nodiscard,root_owner=0:0",
    ]);
    cmd.args(["-L", label]);
    if let Some(n) = inodes {
        cmd.args(["-N", &n.to_string()]);
    }
    if let Some(src) = populate {
        cmd.arg("-d").arg(src);
    }
    cmd.arg(dest).arg(format!("{size_mib}M"));
    run(&mut cmd, dest, &[]).map(drop)
}

/// Builds an empty ext4 image of `size` at `dest` (atomically: temp + rename),
/// holding the directories in `dirs` (mode 0755, root-owned).
pub fn mkfs_blank(dest: &Path, size: ByteSize, dirs: &[&str]) -> Result<()> {
    let skel = tempdir_near(dest)?;
    for d in dirs {
        let p = skel.join(d);
        fs::create_dir_all(&p).map_err(io_err("create", &p))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).map_err(io_err("chmod", &p))?;
    }
    let tmp = dest.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let result = mkfs(&tmp, size.as_mib(), Some(&skel), None, "wrenn-disk")
        .and_then(|()| fs::rename(&tmp, dest).map_err(io_err("rename to", dest)));
    let _ = fs::remove_dir_all(&skel);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Builds `dest` from the directory `src`. `size` defaults to what the tree
/// needs plus a quarter and 32 MiB of room (at least 64 MiB). Atomic: the
/// image appears complete or not at all.
pub fn build_from_dir(src: &Path, dest: &Path, size: Option<ByteSize>) -> Result<()> {
    if !src.is_dir() {
        return Err(Error::Io {
            step: "read source directory",
            path: src.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        });
    }
    let (bytes, files) = tree_usage(src)?;
    let size_mib = match size {
        Some(s) => s.as_mib(),
        None => (bytes + bytes / 4 + 32 * MIB).max(MIN_IMAGE).div_ceil(MIB),
    };
    let inodes = files + files / 2 + 4096;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    }
    let tmp = dest.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let label = dest
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("wrenn");
    let label: String = label.chars().take(16).collect();
    let result = mkfs(&tmp, size_mib, Some(src), Some(inodes), &label)
        .and_then(|()| fs::rename(&tmp, dest).map_err(io_err("rename to", dest)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Bytes (rounded up to 4 KiB blocks) and inodes a tree needs.
fn tree_usage(dir: &Path) -> Result<(u64, u64)> {
    let mut bytes = 0;
    let mut files = 1;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(io_err("read", &d))? {
            let e = e.map_err(io_err("read", &d))?;
            let m = e.metadata().map_err(io_err("stat", &e.path()))?;
            files += 1;
            bytes += m.size().div_ceil(4096) * 4096;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok((bytes, files))
}

/// A fresh directory next to `path` (same filesystem).
pub(crate) fn tempdir_near(path: &Path) -> Result<PathBuf> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    for i in 0..1000u32 {
        let p = parent.join(format!(".build-{}-{i}", std::process::id()));
        match fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create", &p)(e)),
        }
    }
    Err(Error::Io {
        step: "create temporary directory in",
        path: parent.to_owned(),
        source: std::io::Error::other("no free name"),
    })
}

/// Where Debian's `busybox-static` installs its binary.
const BUSYBOX_BINS: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];

/// Builds the `busybox` template (or the one named `name`) in `wrenn_dir` from
/// the host's static busybox: every applet as a symlink, `root`,
/// `wrenn-user` (uid 1000) and `user` (uid 1001, E2B's default user)
/// accounts with their homes, the directories a sandbox mounts on (no sudo:
/// busybox has none). Returns the image path; an existing image is kept
/// (idempotent).
pub fn build_busybox(wrenn_dir: &Path, name: &str) -> Result<PathBuf> {
    validate_name(name)?;
    let dest = template_path(wrenn_dir, name);
    if dest.is_file() {
        return Ok(dest);
    }
    let busybox = BUSYBOX_BINS
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Io {
            step: "find busybox (apt-get install busybox-static)",
            path: BUSYBOX_BINS[0].into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not installed"),
        })?;
    let tree = tempdir_near(&dest)?;
    let result = populate_busybox(&tree, busybox).and_then(|()| build_from_dir(&tree, &dest, None));
    let _ = fs::remove_dir_all(&tree);
    result.map(|()| dest)
}

fn populate_busybox(root: &Path, busybox: &Path) -> Result<()> {
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "root",
        "home/wrenn-user",
        "home/user",
        "var/tmp",
    ] {
        let p = root.join(d);
        fs::create_dir_all(&p).map_err(io_err("create", &p))?;
    }
    for d in ["tmp", "var/tmp"] {
        let p = root.join(d);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o1777)).map_err(io_err("chmod", &p))?;
    }
    for (home, id) in [("home/wrenn-user", 1000), ("home/user", 1001)] {
        let home = root.join(home);
        std::os::unix::fs::chown(&home, Some(id), Some(id)).map_err(io_err("chown", &home))?;
    }
    let bin = root.join("bin/busybox");
    fs::copy(busybox, &bin).map_err(io_err("copy busybox to", &bin))?;
    // runs: busybox
    let list = run(Command::new(busybox).arg("--list-full"), busybox, &[])?;
    for applet in list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.ends_with("/busybox"))
    {
        let link = root.join(applet);
        if link.exists() {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        }
        symlink("/bin/busybox", &link).map_err(io_err("symlink", &link))?;
    }
    let files: [(&str, &str); 5] = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nwrenn-user:x:1000:1000:wrenn:/home/wrenn-user:/bin/sh\n\
             user:x:1001:1001:user:/home/user:/bin/sh\n",
        ),
        (
            "etc/group",
            "root:x:0:\ntty:x:5:\nwrenn-user:x:1000:\nuser:x:1001:\n",
        ),
        ("etc/hosts", "127.0.0.1 localhost\n"),
        ("etc/resolv.conf", ""),
        ("etc/hostname", "wrenn\n"),
    ];
    for (rel, text) in files {
        let p = root.join(rel);
        fs::write(&p, text).map_err(io_err("write", &p))?;
    }
    Ok(())
}

/// Copies an image sparsely to `dest` through a temp file (atomic).
pub(crate) fn install_copy(src: &Path, dest: &Path) -> Result<()> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    }
    let tmp = dest.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    sparse::copy(src, &tmp)?;
    fs::rename(&tmp, dest).map_err(io_err("rename to", dest))
}
