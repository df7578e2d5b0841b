//! The step cache: `$WRENN_DIR/cache/steps/<key>/` holds a step's image
//! (`rootfs.ext4`) and what the build needs back from it (`meta.json`).
//! An entry is complete when both exist; the directory's modification time
//! is its last use, and eviction removes the least recently used entries
//! first until the cache fits its cap.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use wrenn_vmm::image::{ROOTFS_FILE, STEP_TEMPLATE_PREFIX, steps_dir};

/// Default cap of the step cache (bytes on disk).
pub const DEFAULT_CAP_BYTES: u64 = 20 << 30;
/// Environment variable that sets the cap (e.g. `50G`).
pub const CAP_ENV: &str = "WRENN_TEMPLATE_CACHE_SIZE";

/// What a cached step hands to the steps after it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    /// The filesystem's size at its minimum (final images) or its size.
    pub shrunk_bytes: u64,
    /// `USER`: the user's home directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    cap: u64,
}

impl Cache {
    pub fn new(wrenn_dir: &Path, cap: u64) -> Cache {
        Cache {
            dir: steps_dir(wrenn_dir),
            cap,
        }
    }

    pub fn entry(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    pub fn image(&self, key: &str) -> PathBuf {
        self.entry(key).join(ROOTFS_FILE)
    }

    /// The template name a sandbox starts from this entry's image by.
    pub fn template(key: &str) -> String {
        format!("{STEP_TEMPLATE_PREFIX}{key}")
    }

    /// A complete entry's meta, its use recorded; `None` when there is none.
    pub fn get(&self, key: &str) -> Option<Meta> {
        let dir = self.entry(key);
        if !self.image(key).is_file() {
            return None;
        }
        let meta: Meta = serde_json::from_slice(&fs::read(dir.join("meta.json")).ok()?).ok()?;
        let _ = fs::File::open(&dir).and_then(|f| f.set_modified(SystemTime::now()));
        Some(meta)
    }

    /// Marks an entry complete (its image is in place).
    pub fn put_meta(&self, key: &str, meta: &Meta) -> std::io::Result<()> {
        let dir = self.entry(key);
        let tmp = dir.join(".meta.json.tmp");
        fs::write(
            &tmp,
            serde_json::to_vec(meta).map_err(std::io::Error::other)?,
        )?;
        fs::rename(&tmp, dir.join("meta.json"))
    }

    /// Removes what builds of a previous run left unfinished: kept disks
    /// (`.disk-*`), flatten's temporary directories (`.build-*`) and entries
    /// without their image or meta. Returns how many went.
    pub fn remove_partial(&self) -> usize {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let partial = name.starts_with('.')
                || !path.join(ROOTFS_FILE).is_file()
                || !path.join("meta.json").is_file();
            if partial {
                let gone = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                if gone.is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Removes an entry (a step that failed after its directory appeared).
    pub fn remove(&self, key: &str) {
        let _ = fs::remove_dir_all(self.entry(key));
    }

    /// Removes least recently used entries, none of `keep`, until the
    /// cache takes at most its cap. Returns how many went.
    pub fn evict(&self, keep: &HashSet<String>) -> usize {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut all: Vec<(SystemTime, u64, String)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                if name.starts_with('.') {
                    return None;
                }
                let modified = e.metadata().ok()?.modified().ok()?;
                Some((modified, disk_usage(&e.path()), name))
            })
            .collect();
        let mut total: u64 = all.iter().map(|e| e.1).sum();
        all.sort();
        let mut removed = 0;
        for (_, bytes, name) in all {
            if total <= self.cap {
                break;
            }
            if keep.contains(&name) {
                continue;
            }
            self.remove(&name);
            total = total.saturating_sub(bytes);
            removed += 1;
            tracing::info!(key = %name, bytes, "template step cache: evicted");
        }
        removed
    }
}

/// Bytes a directory's files take on disk (sparse files count their data).
fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// The cap from [`CAP_ENV`], or the default; a bad value is an error
/// naming the variable.
pub fn cap_from_env() -> Result<u64, String> {
    match std::env::var(CAP_ENV) {
        Err(_) => Ok(DEFAULT_CAP_BYTES),
        Ok(v) => v
            .parse::<wrenn_types::ByteSize>()
            .map(|b| b.bytes())
            .map_err(|e| format!("{CAP_ENV}={v:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_complete_with_image_and_meta_and_evicted_oldest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path(), 10_000);
        let put = |key: &str, bytes: usize| {
            fs::create_dir_all(cache.entry(key)).unwrap();
            fs::write(cache.image(key), vec![1u8; bytes]).unwrap();
            cache
                .put_meta(
                    key,
                    &Meta {
                        shrunk_bytes: bytes as u64,
                        home: None,
                    },
                )
                .unwrap();
        };
        assert_eq!(cache.get("a"), None);
        fs::create_dir_all(cache.entry("half")).unwrap();
        fs::write(cache.image("half"), b"x").unwrap();
        assert_eq!(cache.get("half"), None, "no meta: incomplete");
        fs::write(tmp.path().join("cache/steps/.disk-x"), b"disk").unwrap();
        assert_eq!(
            cache.remove_partial(),
            2,
            "the half entry and the kept disk"
        );
        assert!(!cache.entry("half").exists());
        put("a", 6000);
        std::thread::sleep(std::time::Duration::from_millis(20));
        put("b", 6000);
        std::thread::sleep(std::time::Duration::from_millis(20));
        put("c", 6000);
        // `a` used last: `b` is the oldest now.
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(cache.get("a").is_some());
        let keep: HashSet<String> = ["c".to_owned()].into();
        assert_eq!(cache.evict(&keep), 2, "over the cap until one is left");
        assert!(cache.get("b").is_none() && cache.get("a").is_none());
        assert!(cache.get("c").is_some(), "kept");
    }
}
