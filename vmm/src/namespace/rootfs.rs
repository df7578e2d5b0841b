//! Root filesystem pieces on the host side: shared read-only template mounts
//! and per-sandbox writable disks.
//!
//! # Design
//!
//! - **Template** (overlay lower layer): the template image is attached
//!   read-only to a loop device (autoclear) and mounted read-only once per
//!   template image at `$WRENN_DIR/mnt/<prefix>-<first>-<last>/<template>@<inode>` inside
//!   the runtime's spawn mount namespace ([`super::mountns`]), refcounted by
//!   the sandboxes started from it and unmounted (lazily) when the last goes. Every sandbox's overlay holds its own reference to that
//!   mount, so unmounting on the host never disturbs a running sandbox, and
//!   the loop device is released when the last overlay goes. The image's
//!   inode is part of the key: a rebuilt template (a new file renamed over
//!   the old) gets a mount of its own for the sandboxes started after it,
//!   while those started before keep the old image.
//! - **Disk** (overlay upper layer, the disk limit): a sparse ext4 file of
//!   `disk_mb` without a journal (no jbd2 thread per sandbox), holding the
//!   `upper/` and `work/` directories. A blank image per size is built once
//!   with `mkfs.ext4` into `$WRENN_DIR/cache/` and copied sparsely (about
//!   1 MiB of data for 2 GiB) for each sandbox — about 1 ms instead of the
//!   ~25 ms of `mkfs`. The disk is mounted inside the sandbox's own mount
//!   namespace ([`super::spawn`]), so it vanishes with the sandbox.
//!
//! # Limitations
//!
//! A sandbox sees `ENOSPC` when its upper layer is full; files of the template
//! it does not modify do not count against its limit. `/tmp` and `/dev/shm`
//! are tmpfs and count against memory instead.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use parking_lot::Mutex;
use wrenn_types::ByteSize;

use super::mountns::SpawnNs;
use crate::image;
use crate::loopdev;
use crate::runtime::{Error, Result};

/// Refcounted read-only template mounts of one runtime instance.
#[derive(Debug)]
pub struct Templates {
    wrenn_dir: PathBuf,
    mnt_dir: PathBuf,
    mounts: Mutex<HashMap<String, usize>>,
    ns: SpawnNs,
}

impl Templates {
    pub fn new(wrenn_dir: &Path, instance: &str) -> Result<Self> {
        Ok(Templates {
            wrenn_dir: wrenn_dir.to_owned(),
            mnt_dir: wrenn_dir.join("mnt").join(instance),
            mounts: Mutex::new(HashMap::new()),
            ns: SpawnNs::new()?,
        })
    }

    /// The spawn mount namespace the templates are mounted in.
    pub fn ns(&self) -> &SpawnNs {
        &self.ns
    }

    pub fn mnt_dir(&self) -> &Path {
        &self.mnt_dir
    }

    /// Mounts `template`'s current image if needed and takes a reference.
    /// Returns the mount's key (for [`Templates::release`]) and its mount
    /// point (the overlay's lower directory).
    pub fn acquire(&self, template: &str) -> Result<(String, PathBuf)> {
        let image = image::template_path(&self.wrenn_dir, template);
        let ino = fs::metadata(&image)
            .map_err(|source| Error::Io {
                step: "open template image",
                path: image.clone(),
                source,
            })?
            .ino();
        let key = format!("{template}@{ino}");
        let dir = self.mnt_dir.join(&key);
        let mut mounts = self.mounts.lock();
        if let Some(n) = mounts.get_mut(&key) {
            *n += 1;
            return Ok((key, dir));
        }
        fs::create_dir_all(&dir).map_err(|source| Error::Io {
            step: "create template mount point",
            path: dir.clone(),
            source,
        })?;
        let dev = loopdev::attach(&image, true)?;
        self.ns
            .run(|| {
                mount(
                    Some(&dev.path()),
                    &dir,
                    Some("ext4"),
                    MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
                    Some("noload"),
                )
            })?
            .map_err(|e| Error::Io {
                step: "mount template",
                path: dir.clone(),
                source: e.into(),
            })?;
        // The mount now holds the loop device; autoclear frees it with the last user.
        drop(dev);
        mounts.insert(key.clone(), 1);
        tracing::debug!(template, path = %dir.display(), "template mounted");
        Ok((key, dir))
    }

    /// Drops a reference taken by [`Templates::acquire`] (by its key); the
    /// last one unmounts.
    pub fn release(&self, key: &str) {
        let mut mounts = self.mounts.lock();
        let Some(n) = mounts.get_mut(key) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            mounts.remove(key);
            self.unmount(key);
        }
    }

    fn unmount(&self, key: &str) {
        let dir = self.mnt_dir.join(key);
        match self.ns.run(|| umount2(&dir, MntFlags::MNT_DETACH)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(path = %dir.display(), error = %e, "unmount template"),
            Err(e) => tracing::warn!(path = %dir.display(), error = %e, "unmount template"),
        }
        let _ = fs::remove_dir(&dir);
        tracing::debug!(mount = key, "template unmounted");
    }

    pub fn in_use(&self) -> usize {
        self.mounts.lock().len()
    }

    /// Unmounts everything under this instance's mount directory (a previous
    /// run's leftovers or, at shutdown, the unused rest) and removes it.
    pub fn clear(&self) {
        let mounts = self.mounts.lock();
        if !mounts.is_empty() {
            return;
        }
        // In the spawn namespace, and in the host's (where older versions
        // mounted templates).
        let _ = self.ns.run(|| crate::mounts::unmount_under(&self.mnt_dir));
        crate::mounts::unmount_under(&self.mnt_dir);
        if let Ok(entries) = fs::read_dir(&self.mnt_dir) {
            for e in entries.flatten() {
                let _ = fs::remove_dir(e.path());
            }
        }
        let _ = fs::remove_dir(&self.mnt_dir);
        let _ = fs::remove_dir(self.mnt_dir.parent().unwrap_or(&self.mnt_dir));
    }
}

/// Blank disk images per size, copied sparsely for each sandbox.
#[derive(Debug)]
pub struct Disks {
    cache: PathBuf,
    build: Mutex<()>,
}

impl Disks {
    pub fn new(wrenn_dir: &Path) -> Self {
        Disks {
            cache: wrenn_dir.join("cache"),
            build: Mutex::new(()),
        }
    }

    /// The blank image of `disk_mb`, built on first use.
    fn blank(&self, disk_mb: u32) -> Result<PathBuf> {
        let path = self.cache.join(format!("disk-{disk_mb}M.ext4"));
        if path.is_file() {
            return Ok(path);
        }
        let _guard = self.build.lock();
        if !path.is_file() {
            fs::create_dir_all(&self.cache).map_err(|source| Error::Io {
                step: "create",
                path: self.cache.clone(),
                source,
            })?;
            image::mkfs_blank(&path, ByteSize::mib(u64::from(disk_mb)), &["upper", "work"])?;
        }
        Ok(path)
    }

    /// Creates the sandbox's disk at `dest`.
    pub fn create(&self, disk_mb: u32, dest: &Path) -> Result<()> {
        let blank = self.blank(disk_mb)?;
        image::sparse::copy(&blank, dest)?;
        Ok(())
    }
}
