//! What the app tests download, kept on the host between runs.
//!
//! Design: a sandbox downloads from PyPI or the npm registry itself (its
//! egress, its own Python and platform tags), packs the downloads into one
//! tar, and the test copies it out with `wrenn files get` to
//! `$WRENN_CACHE_DIR/apps/<name>-<key>.tar` (default `/var/cache/wrenn/apps`,
//! next to the `base` template cache). Later runs copy the tar into a fresh
//! sandbox with `wrenn files put` and install offline (`pip --no-index`,
//! `npm ci --offline`): the same install, no network, a few seconds of copying
//! instead of a minute of downloading. The key is a hash of the lock file
//! (and anything else that decides what is downloaded), so changing a pin
//! downloads afresh; old entries are left for `rm -r /var/cache/wrenn/apps`.
//!
//! `wrenn files get` writes next to the destination and renames at the end,
//! so an entry is either whole or absent, also when two runs fill it at once.

use std::hash::Hasher;
use std::path::PathBuf;

/// `$WRENN_CACHE_DIR/apps` or `/var/cache/wrenn/apps`, created.
pub fn dir() -> PathBuf {
    let root = std::env::var_os("WRENN_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/wrenn"));
    let dir = root.join("apps");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// The cache entry `<name>-<hash of parts>.tar`.
pub fn entry(name: &str, parts: &[&[u8]]) -> PathBuf {
    // FNV-1a, 64 bits: stable across Rust releases, unlike DefaultHasher.
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for p in parts {
        h.write(p);
        h.write(&[0xff]);
    }
    dir().join(format!("{name}-{:016x}.tar", h.finish()))
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
