//! Reading the mount table and unmounting subtrees.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, umount2};

/// Mount points of the calling thread's mount namespace that lie under `dir`
/// (inclusive), deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    // The calling thread's namespace: a thread may have joined another one.
    let text = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// Lazily unmounts everything mounted under `dir` (stacked mounts too).
/// Returns how many mounts were removed.
pub fn unmount_under(dir: &Path) -> usize {
    let mut n = 0;
    for _ in 0..8 {
        let found = mounts_under(dir);
        if found.is_empty() {
            break;
        }
        for m in found {
            match umount2(&m, MntFlags::MNT_DETACH) {
                Ok(()) => n += 1,
                Err(e) => tracing::warn!(path = %m.display(), error = %e, "unmount"),
            }
        }
    }
    n
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn unescapes_octal_sequences() {
        assert_eq!(super::unescape("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(super::unescape("/plain"), "/plain");
    }
}
