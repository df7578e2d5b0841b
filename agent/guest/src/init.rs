//! What the agent does first, depending on whether it is PID 1.
//!
//! As PID 1 it may be the only thing that ran in the root filesystem (a microVM
//! whose kernel started it, or a bare `chroot`), so it mounts what processes and
//! terminals need and is missing: `/proc`, `/sys`, a minimal `/dev` (tmpfs with
//! the standard character devices) when there is none, and a private `devpts` on
//! `/dev/pts` with `/dev/ptmx`. Anything already mounted (a namespace runtime may
//! have prepared it) is left alone. Each step is best-effort: a failure is logged
//! with its step and path and the agent carries on.
//!
//! When not PID 1 the agent becomes a child subreaper, so orphans of its
//! processes are reparented to it and reaped by the same reaper as under PID 1.

use std::io;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MsFlags, mount};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::sys::statfs::{
    DEVPTS_SUPER_MAGIC, FsType, PROC_SUPER_MAGIC, SYSFS_MAGIC, TMPFS_MAGIC, statfs,
};

/// A failed init step.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("mounting {fstype} on {target}")]
    Mount {
        fstype: &'static str,
        target: &'static str,
        #[source]
        source: Errno,
    },
    #[error("creating {path}")]
    Create {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("becoming a child subreaper")]
    Subreaper(#[source] Errno),
}

/// Runs the start-up steps for `pid1`; returns the steps that failed (already
/// logged).
pub fn prepare(pid1: bool) -> Vec<InitError> {
    let mut failed = Vec::new();
    let mut step = |result: Result<(), InitError>| {
        if let Err(err) = result {
            tracing::warn!(error = crate::wire::chain(&err), "init step failed");
            failed.push(err);
        }
    };
    if !pid1 {
        step(nix::sys::prctl::set_child_subreaper(true).map_err(InitError::Subreaper));
        return failed;
    }
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    step(mount_if_missing(
        "proc",
        "/proc",
        PROC_SUPER_MAGIC,
        nodev,
        None,
    ));
    step(mount_if_missing("sysfs", "/sys", SYSFS_MAGIC, nodev, None));
    if !Path::new("/dev/null").exists() {
        step(mount_if_missing(
            "tmpfs",
            "/dev",
            TMPFS_MAGIC,
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ));
        step(populate_dev());
    }
    let pts_flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    step(mount_if_missing(
        "devpts",
        "/dev/pts",
        DEVPTS_SUPER_MAGIC,
        pts_flags,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    ));
    if std::fs::symlink_metadata("/dev/ptmx").is_err() {
        step(symlink("pts/ptmx", "/dev/ptmx"));
    }
    step(mount_if_missing(
        "tmpfs",
        "/dev/shm",
        TMPFS_MAGIC,
        nodev,
        Some("mode=1777"),
    ));
    failed
}

/// Mounts `fstype` on `target` unless a file system of that type is there.
fn mount_if_missing(
    fstype: &'static str,
    target: &'static str,
    magic: FsType,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), InitError> {
    if statfs(target).is_ok_and(|s| s.filesystem_type() == magic) {
        return Ok(());
    }
    std::fs::create_dir_all(target).map_err(|source| InitError::Create {
        path: target.into(),
        source,
    })?;
    mount(Some(fstype), target, Some(fstype), flags, data).map_err(|source| InitError::Mount {
        fstype,
        target,
        source,
    })?;
    tracing::info!(fstype, target, "mounted");
    Ok(())
}

/// The character devices and links every program expects in `/dev`.
fn populate_dev() -> Result<(), InitError> {
    let devices = [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ];
    for (name, major, minor) in devices {
        let path = format!("/dev/{name}");
        mknod(
            path.as_str(),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(|e| InitError::Create {
            path: path.clone(),
            source: e.into(),
        })?;
        // mknod honours the umask; devices must be world-usable.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .map_err(|source| InitError::Create { path, source })?;
    }
    for (target, link) in [
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ] {
        symlink(target, link)?;
    }
    Ok(())
}

fn symlink(target: &str, link: &str) -> Result<(), InitError> {
    std::os::unix::fs::symlink(target, link).map_err(|source| InitError::Create {
        path: link.into(),
        source,
    })
}
