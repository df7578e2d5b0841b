//! Flatten: a sandbox's layers — its template image and the overlay upper
//! directory on top of it — made into one new template image, as a
//! template build ends with.
//!
//! # Design
//! - The lower image is sparse-copied (data extents only) and grown to the
//!   target size, attached to a loop device and mounted; the upper
//!   directory is then applied onto it the way overlayfs reads it: a
//!   whiteout (a character device 0:0) removes the path, an opaque
//!   directory (`trusted.overlay.opaque=y`) replaces the directory's
//!   contents, anything else replaces what was there. Ownership goes
//!   through `map_id`, because a sandbox's layers are idmapped: its upper
//!   directory holds host ids that the template must store as the sandbox
//!   sees them.
//! - Then the image is shrunk to its minimum (`e2fsck -f`, `resize2fs -M`)
//!   and grown again to the target size: the sizing `base` follows.
//! - Atomic: `dest` appears complete or not at all; the mount and the loop
//!   device are gone when it returns, on every path.
//!
//! # Limitations
//! Hard links in the upper layer become separate files; extended
//! attributes other than overlay's own are not copied; sockets are skipped.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, lchown};
use std::path::Path;

use nix::fcntl::AT_FDCWD;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mknod, utimensat};
use nix::sys::time::TimeSpec;
use wrenn_types::ByteSize;

use super::resize::{ResizeOutcome, ensure_image_size, fs_size, shrink_image};
use super::{Error, Result, io_err};

/// What flattening made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flattened {
    /// The filesystem's size at its minimum, before growing again.
    pub shrunk_bytes: u64,
    /// The image's size as stored (the target size; sparse).
    pub bytes: u64,
}

/// Writes `lower` with `upper` applied to `dest` (see the module docs),
/// sized `size`; `map_id` turns the upper layer's owner ids into the ids the
/// image stores.
pub fn flatten(
    lower: &Path,
    upper: &Path,
    dest: &Path,
    size: ByteSize,
    map_id: &dyn Fn(u32) -> u32,
) -> Result<Flattened> {
    flatten_with(lower, upper, dest, size, map_id, Shrink::Yes)
}

/// Whether [`flatten_disk`] shrinks the result to its minimum before
/// growing it to the target size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shrink {
    /// A template's final image: shrunk, then grown (as `base` is sized).
    Yes,
    /// An intermediate image (a build step's): only grown; `shrunk_bytes`
    /// reports the filesystem's size.
    No,
}

/// [`flatten`] with the upper layer read from a sandbox's disk image (the
/// `upper/` directory of an ext4 image, as a namespace sandbox leaves it),
/// mounted read-only for the time it takes. The disk stores ids as the
/// sandbox saw them (it is idmapped while the sandbox runs), so they are
/// kept. The disk must not be in use: no loop device attached to it.
pub fn flatten_disk(
    lower: &Path,
    disk: &Path,
    dest: &Path,
    size: ByteSize,
    shrink: Shrink,
) -> Result<Flattened> {
    let work = super::build::tempdir_near(dest)?;
    let mnt = work.join("disk");
    let result = (|| {
        fs::create_dir_all(&mnt).map_err(io_err("create", &mnt))?;
        let dev = crate::loopdev::attach(disk, true).map_err(|e| Error::Io {
            step: "attach a loop device to",
            path: disk.to_owned(),
            source: io::Error::other(e.to_string()),
        })?;
        mount(
            Some(&dev.path()),
            &mnt,
            Some("ext4"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("noload"),
        )
        .map_err(|e| Error::Io {
            step: "mount",
            path: disk.to_owned(),
            source: e.into(),
        })?;
        drop(dev);
        let flattened = flatten_with(lower, &mnt.join("upper"), dest, size, &|id| id, shrink);
        let unmounted = umount2(&mnt, MntFlags::empty()).map_err(|e| Error::Io {
            step: "unmount",
            path: mnt.clone(),
            source: e.into(),
        });
        let flattened = flattened?;
        unmounted.map(|()| flattened)
    })();
    let _ = fs::remove_dir_all(&work);
    result
}

fn flatten_with(
    lower: &Path,
    upper: &Path,
    dest: &Path,
    size: ByteSize,
    map_id: &dyn Fn(u32) -> u32,
    shrink: Shrink,
) -> Result<Flattened> {
    let work = super::build::tempdir_near(dest)?;
    let tmp = work.join("image");
    let result = (|| {
        super::sparse::copy(lower, &tmp)?;
        ensure_image_size(&tmp, size)?;
        apply_mounted(&tmp, &work.join("mnt"), upper, map_id)?;
        let shrunk = match shrink {
            Shrink::No => fs_size(&tmp)?,
            Shrink::Yes => match shrink_image(&tmp)? {
                ResizeOutcome::Resized { to, .. } => to,
                _ => fs_size(&tmp)?,
            },
        };
        ensure_image_size(&tmp, size)?;
        fs::rename(&tmp, dest).map_err(io_err("rename to", dest))?;
        let bytes = fs::metadata(dest).map_err(io_err("stat", dest))?.len();
        Ok(Flattened {
            shrunk_bytes: shrunk,
            bytes,
        })
    })();
    let _ = fs::remove_dir_all(&work);
    result
}

/// Mounts `image` at `mnt`, applies `upper`, unmounts (also on failure).
fn apply_mounted(
    image: &Path,
    mnt: &Path,
    upper: &Path,
    map_id: &dyn Fn(u32) -> u32,
) -> Result<()> {
    fs::create_dir_all(mnt).map_err(io_err("create", mnt))?;
    let dev = crate::loopdev::attach(image, false).map_err(|e| Error::Io {
        step: "attach a loop device to",
        path: image.to_owned(),
        source: io::Error::other(e.to_string()),
    })?;
    mount(
        Some(&dev.path()),
        mnt,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| Error::Io {
        step: "mount",
        path: image.to_owned(),
        source: e.into(),
    })?;
    let applied = Apply { map_id }.dir(upper, mnt);
    let unmounted = umount2(mnt, MntFlags::empty()).map_err(|e| Error::Io {
        step: "unmount",
        path: mnt.to_owned(),
        source: e.into(),
    });
    // The loop device clears itself once unmounted and its descriptor closes.
    drop(dev);
    applied.and(unmounted)
}

struct Apply<'a> {
    map_id: &'a dyn Fn(u32) -> u32,
}

impl Apply<'_> {
    /// Applies the upper directory `from` onto the directory `to`.
    fn dir(&self, from: &Path, to: &Path) -> Result<()> {
        let mut entries: Vec<_> = fs::read_dir(from)
            .map_err(io_err("read", from))?
            .collect::<io::Result<_>>()
            .map_err(io_err("read", from))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let src = e.path();
            let dst = to.join(e.file_name());
            let meta = fs::symlink_metadata(&src).map_err(io_err("stat", &src))?;
            self.entry(&src, &dst, &meta)?;
        }
        Ok(())
    }

    fn entry(&self, src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<()> {
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            // A whiteout: the path is gone.
            return remove(dst);
        }
        if ft.is_dir() {
            let opaque = crate::sys::lgetxattr(src, "trusted.overlay.opaque")
                .map_err(io_err("read xattrs of", src))?
                .is_some_and(|v| v == b"y");
            match fs::symlink_metadata(dst) {
                Ok(m) if m.is_dir() && !opaque => {}
                Ok(_) => {
                    remove(dst)?;
                    fs::create_dir(dst).map_err(io_err("create", dst))?;
                }
                Err(_) => fs::create_dir(dst).map_err(io_err("create", dst))?,
            }
            self.dir(src, dst)?;
        } else {
            remove(dst)?;
            if ft.is_file() {
                // Across filesystems: std falls back from copy_file_range.
                fs::copy(src, dst).map_err(io_err("copy to", dst))?;
            } else if ft.is_symlink() {
                let target = fs::read_link(src).map_err(io_err("read link", src))?;
                std::os::unix::fs::symlink(&target, dst).map_err(io_err("create symlink", dst))?;
            } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
                let kind = if ft.is_fifo() {
                    SFlag::S_IFIFO
                } else if ft.is_char_device() {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                mknod(
                    dst,
                    kind,
                    Mode::from_bits_truncate(meta.mode()),
                    meta.rdev(),
                )
                .map_err(|e| io_err("mknod", dst)(e.into()))?;
            } else {
                // A socket: meaningless in an image.
                return Ok(());
            }
        }
        self.attrs(dst, meta)
    }

    /// Owner (mapped), permission bits and times of `meta` on `dst`.
    fn attrs(&self, dst: &Path, meta: &fs::Metadata) -> Result<()> {
        let (uid, gid) = ((self.map_id)(meta.uid()), (self.map_id)(meta.gid()));
        lchown(dst, Some(uid), Some(gid)).map_err(io_err("chown", dst))?;
        if !meta.file_type().is_symlink() {
            // After chown, which clears set-id bits.
            fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(io_err("chmod", dst))?;
        }
        let at = TimeSpec::new(meta.atime(), meta.atime_nsec());
        let mt = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
        utimensat(AT_FDCWD, dst, &at, &mt, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| io_err("set times of", dst)(e.into()))?;
        Ok(())
    }
}

/// Removes whatever is at `p` (a directory with everything under it).
fn remove(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).map_err(io_err("remove", p)),
        Ok(_) => fs::remove_file(p).map_err(io_err("remove", p)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("stat", p)(e)),
    }
}
