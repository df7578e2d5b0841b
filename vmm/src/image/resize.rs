//! EnsureImageSizes (grow at agent start) and ShrinkImage (at shutdown).

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use wrenn_types::ByteSize;

use super::{Error, Result, in_use, io_err, list_templates, run, template_path};

/// Environment variable holding the size every template image is grown to.
pub const ROOTFS_SIZE_ENV: &str = "WRENN_DEFAULT_ROOTFS_SIZE";
/// Used when the variable is unset.
pub const DEFAULT_ROOTFS_SIZE: ByteSize = ByteSize::gib(2);

/// What happened to one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResizeOutcome {
    Unchanged,
    Resized {
        from: u64,
        to: u64,
    },
    /// Attached to a loop device (a sandbox uses it): left alone.
    SkippedInUse,
}

/// `WRENN_DEFAULT_ROOTFS_SIZE`, or [`DEFAULT_ROOTFS_SIZE`] when unset. A bad
/// value is an error naming the variable and the accepted forms.
pub fn rootfs_size_from_env() -> Result<ByteSize> {
    parse_rootfs_size(std::env::var_os(ROOTFS_SIZE_ENV).as_deref())
}

/// The value of [`ROOTFS_SIZE_ENV`] (`None`: unset) as a size.
pub fn parse_rootfs_size(value: Option<&std::ffi::OsStr>) -> Result<ByteSize> {
    let Some(value) = value else {
        return Ok(DEFAULT_ROOTFS_SIZE);
    };
    let text = value.to_string_lossy().into_owned();
    text.parse().map_err(|source| Error::BadSize {
        var: ROOTFS_SIZE_ENV,
        value: text,
        source,
    })
}

/// EnsureImageSizes with the size from [`rootfs_size_from_env`].
pub fn ensure_image_sizes(wrenn_dir: &Path) -> Result<Vec<(String, ResizeOutcome)>> {
    ensure_image_sizes_to(wrenn_dir, rootfs_size_from_env()?)
}

/// Grows every template image smaller than `size`.
pub fn ensure_image_sizes_to(
    wrenn_dir: &Path,
    size: ByteSize,
) -> Result<Vec<(String, ResizeOutcome)>> {
    list_templates(wrenn_dir)
        .into_iter()
        .map(|t| {
            let outcome = ensure_image_size(&template_path(wrenn_dir, &t), size)?;
            Ok((t, outcome))
        })
        .collect()
}

/// Grows one image to `size` (sparse truncate, `e2fsck -fy`, `resize2fs`)
/// unless it is at least that big or in use.
pub fn ensure_image_size(image: &Path, size: ByteSize) -> Result<ResizeOutcome> {
    let current = fs::metadata(image).map_err(io_err("stat", image))?.len();
    if current >= size.bytes() {
        return Ok(ResizeOutcome::Unchanged);
    }
    if in_use(image) {
        tracing::info!(image = %image.display(), "image in use by a sandbox: not grown");
        return Ok(ResizeOutcome::SkippedInUse);
    }
    let file = fs::OpenOptions::new()
        .write(true)
        .open(image)
        .map_err(io_err("open", image))?;
    file.set_len(size.bytes()).map_err(io_err("grow", image))?;
    drop(file);
    fsck(image)?;
    run(Command::new("resize2fs").arg(image), image, &[])?;
    tracing::info!(image = %image.display(), from = current, to = size.bytes(), "image grown");
    Ok(ResizeOutcome::Resized {
        from: current,
        to: size.bytes(),
    })
}

/// ShrinkImage for every template image of `wrenn_dir`.
pub fn shrink_images(wrenn_dir: &Path) -> Result<Vec<(String, ResizeOutcome)>> {
    list_templates(wrenn_dir)
        .into_iter()
        .map(|t| Ok((t.clone(), shrink_image(&template_path(wrenn_dir, &t))?)))
        .collect()
}

/// Shrinks one image to its minimum (`e2fsck -fy`, `resize2fs -M`, truncate
/// the file to the filesystem) unless it is in use.
pub fn shrink_image(image: &Path) -> Result<ResizeOutcome> {
    if in_use(image) {
        tracing::info!(image = %image.display(), "image in use by a sandbox: not shrunk");
        return Ok(ResizeOutcome::SkippedInUse);
    }
    let before = fs::metadata(image).map_err(io_err("stat", image))?.len();
    // resize2fs -M re-estimates after each pass and may shrink again: repeat
    // until the size holds, so a second ShrinkImage changes nothing.
    let mut fs_bytes = fs_size(image)?;
    for _ in 0..4 {
        fsck(image)?;
        run(Command::new("resize2fs").arg("-M").arg(image), image, &[])?;
        let now = fs_size(image)?;
        if now >= fs_bytes {
            break;
        }
        fs_bytes = now;
    }
    if fs_bytes < before {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(image)
            .map_err(io_err("open", image))?;
        file.set_len(fs_bytes).map_err(io_err("truncate", image))?;
    }
    let after = fs::metadata(image).map_err(io_err("stat", image))?.len();
    if after == before {
        return Ok(ResizeOutcome::Unchanged);
    }
    tracing::info!(image = %image.display(), from = before, to = after, "image shrunk");
    Ok(ResizeOutcome::Resized {
        from: before,
        to: after,
    })
}

/// `e2fsck -fy`; exit codes 1 and 2 mean "errors corrected".
fn fsck(image: &Path) -> Result<()> {
    run(Command::new("e2fsck").arg("-fy").arg(image), image, &[1, 2]).map(drop)
}

/// Size in bytes of the ext4 filesystem in `image`, from its superblock.
pub fn fs_size(image: &Path) -> Result<u64> {
    let mut sb = [0u8; 1024];
    let f = File::open(image).map_err(io_err("open", image))?;
    f.read_exact_at(&mut sb, 1024)
        .map_err(io_err("read superblock of", image))?;
    let u32_at = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().expect("4 bytes"));
    let magic = u16::from_le_bytes([sb[56], sb[57]]);
    if magic != 0xEF53 {
        return Err(Error::NotExt4 {
            path: image.to_owned(),
            reason: format!("superblock magic {magic:#x}"),
        });
    }
    let log = u32_at(24);
    if log > 6 {
        return Err(Error::NotExt4 {
            path: image.to_owned(),
            reason: format!("block size 1024<<{log}"),
        });
    }
    let block = 1024u64 << log;
    let incompat_64bit = u32_at(96) & 0x80 != 0;
    let hi = if incompat_64bit {
        u64::from(u32_at(0x150))
    } else {
        0
    };
    Ok(((hi << 32) | u64::from(u32_at(4))) * block)
}

/// ShrinkImage of every template of `dir` not in use, giving up (with a log
/// line) when `timeout` has passed.
pub(crate) async fn shrink_with_deadline(dir: PathBuf, timeout: Duration) {
    let work = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + timeout;
        for t in super::list_templates(&dir) {
            if std::time::Instant::now() >= deadline {
                tracing::info!(template = %t, "shutdown deadline reached: image not shrunk");
                continue;
            }
            let path = super::template_path(&dir, &t);
            if let Err(e) = shrink_image(&path) {
                tracing::warn!(template = %t, error = %e, "shrinking image");
            }
        }
    });
    if tokio::time::timeout(timeout, work).await.is_err() {
        tracing::warn!("shrinking images did not finish before the shutdown deadline");
    }
}
