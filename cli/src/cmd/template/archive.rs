//! The archives a build's COPY/ADD steps send: POSIX ustar, written here
//! byte for byte the same for the same files (owner 0, times 0, entries in
//! order), so the host's cache key (the archive's SHA-256) changes only
//! when a file, a mode or a link does.
//!
//! # Limitations
//! Paths up to 255 bytes (split at a `/` into ustar's prefix and name),
//! link targets up to 100 bytes, files up to 8 GiB: longer ones are
//! refused, naming them. Modification times are not kept (files copied
//! into a template date from 1970).

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// What an entry is.
pub enum Kind<'a> {
    /// A regular file, read from this path.
    File(&'a Path),
    Dir,
    Symlink(&'a str),
}

/// Builds an archive in memory.
#[derive(Default)]
pub struct Archive {
    bytes: Vec<u8>,
}

impl Archive {
    pub fn add(&mut self, name: &str, mode: u32, kind: Kind<'_>) -> Result<()> {
        let mut h = [0u8; 512];
        let name = match kind {
            Kind::Dir if !name.ends_with('/') => format!("{name}/"),
            _ => name.to_owned(),
        };
        let (prefix, short) = split(&name).with_context(|| {
            format!("{name}: the path is longer than an archive entry allows (255 bytes)")
        })?;
        h[..short.len()].copy_from_slice(short.as_bytes());
        octal(&mut h[100..108], u64::from(mode & 0o7777));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[136..148], 0);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        let mut data = Vec::new();
        match kind {
            Kind::File(path) => {
                std::fs::File::open(path)
                    .and_then(|mut f| f.read_to_end(&mut data))
                    .with_context(|| format!("read {}", path.display()))?;
                if data.len() as u64 >= 8 << 30 {
                    bail!(
                        "{}: files of 8 GiB or more cannot be copied",
                        path.display()
                    );
                }
                octal(&mut h[124..136], data.len() as u64);
                h[156] = b'0';
            }
            Kind::Dir => {
                octal(&mut h[124..136], 0);
                h[156] = b'5';
            }
            Kind::Symlink(target) => {
                if target.len() > 100 {
                    bail!("{name}: the link's target is longer than 100 bytes");
                }
                octal(&mut h[124..136], 0);
                h[156] = b'2';
                h[157..157 + target.len()].copy_from_slice(target.as_bytes());
            }
        }
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let chk = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(chk.as_bytes());
        self.bytes.extend_from_slice(&h);
        self.bytes.extend_from_slice(&data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        Ok(())
    }

    /// The archive with its end marker.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.extend_from_slice(&[0u8; 1024]);
        self.bytes
    }
}

/// `name` as ustar's (prefix, name): the name at most 100 bytes, the
/// prefix at most 155, split at a `/`.
fn split(name: &str) -> Option<(&str, &str)> {
    if name.len() <= 100 {
        return Some(("", name));
    }
    // The last `/` that leaves at most 100 bytes after it (a directory's
    // own trailing `/` stays with its name).
    let body = name.strip_suffix('/').unwrap_or(name);
    let mut at = None;
    for (i, c) in body.char_indices() {
        if c == '/' && name.len() - i - 1 <= 100 && i <= 155 {
            at = Some(i);
            break;
        }
    }
    let i = at?;
    Some((&name[..i], &name[i + 1..]))
}

/// `n` as zero-padded octal filling `field` but its last byte (NUL).
fn octal(field: &mut [u8], n: u64) {
    let width = field.len() - 1;
    let s = format!("{n:0width$o}");
    field[..width].copy_from_slice(&s.as_bytes()[s.len() - width..]);
    field[width] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(h: &[u8], r: std::ops::Range<usize>) -> String {
        String::from_utf8_lossy(&h[r])
            .trim_end_matches('\0')
            .to_owned()
    }

    #[test]
    fn writes_ustar_headers_with_checksums_and_the_same_bytes_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("a.txt");
        std::fs::write(&f, b"hello").unwrap();
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let build = || {
            let mut a = Archive::default();
            a.add("copy", 0o755, Kind::Dir).unwrap();
            a.add("copy/a.txt", 0o644, Kind::File(&f)).unwrap();
            a.add("copy/l", 0o777, Kind::Symlink("a.txt")).unwrap();
            a.add(&long, 0o600, Kind::File(&f)).unwrap();
            a.finish()
        };
        let bytes = build();
        assert_eq!(bytes, build(), "deterministic");
        assert_eq!(bytes.len() % 512, 0);
        let h = &bytes[..512];
        assert_eq!(field(h, 0..100), "copy/");
        assert_eq!(h[156], b'5');
        let file = &bytes[512..1024];
        assert_eq!(field(file, 0..100), "copy/a.txt");
        assert_eq!(field(file, 124..135), "00000000005");
        assert_eq!(&bytes[1024..1029], b"hello");
        // Every header's checksum adds up.
        for h in [&bytes[..512], file] {
            let mut copy = h.to_vec();
            copy[148..156].fill(b' ');
            let sum: u32 = copy.iter().map(|&b| u32::from(b)).sum();
            assert_eq!(field(h, 148..154), format!("{sum:06o}"));
        }
        let link = &bytes[1536..2048];
        assert_eq!(
            (link[156], field(link, 157..257)),
            (b'2', "a.txt".to_owned())
        );
        let l = &bytes[2048..2560];
        assert_eq!(field(l, 345..500), "d".repeat(120));
        assert_eq!(field(l, 0..100), "f".repeat(90));
    }

    #[test]
    fn refuses_what_ustar_cannot_hold() {
        let mut a = Archive::default();
        let err = a
            .add(&"x".repeat(300), 0o644, Kind::Dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("longer than an archive entry allows"), "{err}");
        let err = a
            .add("l", 0o777, Kind::Symlink(&"t".repeat(101)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("longer than 100 bytes"), "{err}");
    }
}
