//! The build context: the files a recipe's `COPY` and `ADD` steps read,
//! checked before anything runs, and each step's digest of them (with the
//! instruction, the key a build's step cache is looked up by).
//!
//! # Rules
//! - A source names a file, a directory (taken whole) or a symlink under
//!   the context root; one that does not exist is refused, naming it.
//! - Nothing may lead out of the context: not the source's own path (any
//!   of its components a symlink pointing out), not a symlink inside a
//!   directory source (refused naming the source and the link). Symlinks
//!   that stay inside are kept as symlinks.
//! - The digest covers every entry's path, kind, permission bits and
//!   content (or link target), in path order: a change to any file a step
//!   reads changes that step's digest, and nothing else does.
//!
//! # Limitations
//! Wildcards and `$VAR` in sources are refused (name the files, or a
//! directory); sockets, devices and FIFOs in a directory source are refused.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Instruction, Recipe, Step};

/// What the recipe's copy steps read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The context root (canonical when the recipe copies anything).
    pub root: PathBuf,
    pub steps: Vec<StepSources>,
}

/// One copy step's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSources {
    /// Index of the step in [`Recipe::steps`].
    pub step: usize,
    /// Every entry the step reads, in path order, paths relative to the root.
    pub entries: Vec<Entry>,
    /// Hex SHA-256 over the entries.
    pub digest: String,
}

/// A file, directory or symlink of the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File { len: u64 },
    Dir,
    Symlink { target: PathBuf },
}

/// A source that cannot be copied, and where the step is.
#[derive(Debug)]
pub struct ContextError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub source_name: String,
    pub problem: Problem,
}

#[derive(Debug)]
pub enum Problem {
    /// The context root is not a readable directory.
    Root(PathBuf, io::Error),
    Missing(PathBuf),
    /// The source, or the symlink `link` under it, points out of the context.
    Escapes {
        link: PathBuf,
        target: PathBuf,
    },
    /// A wildcard or a variable in the source.
    Pattern,
    /// A socket, device or FIFO.
    Special(PathBuf),
    Io(PathBuf, io::Error),
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        let s = &self.source_name;
        match &self.problem {
            Problem::Root(root, e) => {
                write!(
                    f,
                    "the build context {} cannot be read: {e}",
                    root.display()
                )
            }
            Problem::Missing(root) => write!(
                f,
                "source `{s}`: no such file or directory in the build context {}",
                root.display()
            ),
            Problem::Escapes { link, target } => write!(
                f,
                "source `{s}`: the symlink {} points out of the build context (to {})",
                link.display(),
                target.display()
            ),
            Problem::Pattern => write!(
                f,
                "source `{s}`: wildcards and variables in sources are not supported; name the files or a directory"
            ),
            Problem::Special(p) => write!(
                f,
                "source `{s}`: {} is a socket, device or FIFO, which cannot be copied",
                p.display()
            ),
            Problem::Io(p, e) => write!(f, "source `{s}`: reading {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for ContextError {}

/// Reads and checks what `recipe`'s copy steps take from the context
/// directory `root`; `file` names the recipe in errors.
pub fn collect(file: &str, recipe: &Recipe, root: &Path) -> Result<Context, ContextError> {
    let fail = |step: &Step, source: &str, problem| ContextError {
        file: file.to_owned(),
        line: step.line,
        column: step.column,
        source_name: source.to_owned(),
        problem,
    };
    let copies: Vec<(usize, &Step, &[String])> = recipe
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, step)| match &step.instruction {
            Instruction::Copy { sources, .. } => Some((i, step, sources.as_slice())),
            _ => None,
        })
        .collect();
    let Some(&(_, first, _)) = copies.first() else {
        return Ok(Context {
            root: root.to_owned(),
            steps: Vec::new(),
        });
    };
    let real_root = root
        .canonicalize()
        .map_err(|e| fail(first, "", Problem::Root(root.to_owned(), e)))?;
    let walker = Walker { root: &real_root };
    let mut steps = Vec::new();
    for (i, step, sources) in copies {
        let mut entries = Vec::new();
        for source in sources {
            if source.contains(['*', '?', '[', '$']) {
                return Err(fail(step, source, Problem::Pattern));
            }
            walker
                .source(Path::new(source), &mut entries)
                .map_err(|p| fail(step, source, p))?;
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        entries.dedup_by(|a, b| a.path == b.path);
        let digest = digest(&real_root, &entries).map_err(|p| fail(step, "", p))?;
        steps.push(StepSources {
            step: i,
            entries,
            digest,
        });
    }
    Ok(Context {
        root: real_root,
        steps,
    })
}

struct Walker<'a> {
    root: &'a Path,
}

impl Walker<'_> {
    /// Adds the entries of `source` (relative to the root).
    fn source(&self, source: &Path, out: &mut Vec<Entry>) -> Result<(), Problem> {
        if source.components().any(|c| {
            matches!(
                c,
                Component::ParentDir | Component::RootDir | Component::Prefix(_)
            )
        }) {
            return Err(Problem::Escapes {
                link: source.to_owned(),
                target: source.to_owned(),
            });
        }
        let rel = normalize(source);
        let full = self.root.join(&rel);
        let meta = match fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Problem::Missing(self.root.to_owned()));
            }
            Err(e) => return Err(Problem::Io(full, e)),
        };
        // Every component of the path, the source itself included, must
        // resolve inside the root.
        if let Some(parent) = full.parent() {
            self.inside(&rel, parent)?;
        }
        self.entry(&rel, &full, &meta, out)
    }

    /// Whether `dir` (a directory on the way to `rel`) resolves inside.
    fn inside(&self, rel: &Path, dir: &Path) -> Result<(), Problem> {
        let real = dir
            .canonicalize()
            .map_err(|e| Problem::Io(dir.to_owned(), e))?;
        if real.starts_with(self.root) {
            Ok(())
        } else {
            Err(Problem::Escapes {
                link: rel.to_owned(),
                target: real,
            })
        }
    }

    fn entry(
        &self,
        rel: &Path,
        full: &Path,
        meta: &fs::Metadata,
        out: &mut Vec<Entry>,
    ) -> Result<(), Problem> {
        let mode = meta.permissions().mode() & 0o7777;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(full).map_err(|e| Problem::Io(full.to_owned(), e))?;
            let resolved = normalize(&full.parent().unwrap_or(self.root).join(&target));
            // The lexical target, then the real one if it exists (a chain).
            let real = resolved.canonicalize().unwrap_or(resolved);
            if !real.starts_with(self.root) {
                return Err(Problem::Escapes {
                    link: rel.to_owned(),
                    target,
                });
            }
            out.push(Entry {
                path: rel.to_owned(),
                kind: EntryKind::Symlink { target },
                mode,
            });
        } else if ft.is_dir() {
            out.push(Entry {
                path: rel.to_owned(),
                kind: EntryKind::Dir,
                mode,
            });
            let mut children: Vec<_> = fs::read_dir(full)
                .map_err(|e| Problem::Io(full.to_owned(), e))?
                .collect::<Result<_, _>>()
                .map_err(|e| Problem::Io(full.to_owned(), e))?;
            children.sort_by_key(|c| c.file_name());
            for child in children {
                let path = child.path();
                let meta = fs::symlink_metadata(&path).map_err(|e| Problem::Io(path.clone(), e))?;
                self.entry(&rel.join(child.file_name()), &path, &meta, out)?;
            }
        } else if ft.is_file() {
            out.push(Entry {
                path: rel.to_owned(),
                kind: EntryKind::File { len: meta.len() },
                mode,
            });
        } else {
            return Err(Problem::Special(rel.to_owned()));
        }
        Ok(())
    }
}

/// `p` with `.` components dropped and `..` applied lexically.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Hex SHA-256 over the entries: path, kind, mode, content or target.
fn digest(root: &Path, entries: &[Entry]) -> Result<String, Problem> {
    let mut h = Sha256::new();
    for e in entries {
        h.update(e.path.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(e.mode.to_le_bytes());
        match &e.kind {
            EntryKind::Dir => h.update(b"d"),
            EntryKind::Symlink { target } => {
                h.update(b"l");
                h.update(target.as_os_str().as_encoded_bytes());
                h.update([0]);
            }
            EntryKind::File { len } => {
                h.update(b"f");
                h.update(len.to_le_bytes());
                let path = root.join(&e.path);
                let mut f = fs::File::open(&path).map_err(|e| Problem::Io(path.clone(), e))?;
                io::copy(&mut f, &mut h).map_err(|e| Problem::Io(path.clone(), e))?;
            }
        }
    }
    Ok(hex::encode(h.finalize()))
}
