//! The synchronous filesystem operations behind `Stat`, `ListDir`, `MakeDir`,
//! `Move` and `Remove` (run on the blocking pool).

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use wrenn_proto::filesystem::EntryInfo;

use super::FsError;
use super::entry::{entry_from, entry_info, is_special};
use crate::paths::is_root;
use crate::users::UserDb;

pub fn stat(path: &Path, users: &UserDb) -> Result<EntryInfo, FsError> {
    entry_info(path, users).map_err(FsError::io("stat", path))
}

/// Entries of `path` down to `depth` levels (0 and 1: its own entries), sorted
/// by path. Symbolic links to directories are listed, not entered; unreadable
/// subdirectories are listed without their contents.
pub fn list_dir(path: &Path, depth: u32, users: &UserDb) -> Result<Vec<EntryInfo>, FsError> {
    let meta = fs::metadata(path).map_err(FsError::io("list", path))?;
    if !meta.is_dir() {
        return Err(FsError::NotDir {
            op: "list",
            path: path.into(),
        });
    }
    let mut entries = Vec::new();
    walk(path, depth.max(1), users, &mut entries).map_err(FsError::io("list", path))?;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

fn walk(dir: &Path, levels: u32, users: &UserDb, out: &mut Vec<EntryInfo>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        // Vanished since readdir: skip.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        out.push(entry_from(&path, &meta, users));
        if levels > 1
            && meta.is_dir()
            && let Err(err) = walk(&path, levels - 1, users, out)
        {
            tracing::debug!(path = %path.display(), error = %err, "not listing subdirectory");
        }
    }
    Ok(())
}

/// Creates `path` and its missing parents, owned by `owner` (uid, gid) when
/// given; `AlreadyExists` if it exists.
pub fn make_dir(
    path: &Path,
    owner: Option<(u32, u32)>,
    users: &UserDb,
) -> Result<EntryInfo, FsError> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(FsError::Exists {
            op: "make directory",
            path: path.into(),
        });
    }
    match owner {
        Some((uid, gid)) => create_dirs_owned(path, uid, gid)?,
        None => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(FsError::io("make directory", path))?,
    }
    stat(path, users)
}

/// Renames `from` to `to`, creating `to`'s parent directories. Across file
/// systems, files and symbolic links are copied and the source removed.
pub fn rename(from: &Path, to: &Path, users: &UserDb) -> Result<EntryInfo, FsError> {
    if is_root(from) || is_root(to) {
        return Err(FsError::Root { op: "move" });
    }
    let meta = fs::symlink_metadata(from).map_err(FsError::io("move", from))?;
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(FsError::io("create directory", parent))?;
    }
    match fs::rename(from, to) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
            if meta.is_dir() || is_special(&meta) {
                return Err(FsError::CrossDevice {
                    from: from.into(),
                    to: to.into(),
                });
            }
            copy_then_remove(from, to, &meta)?;
        }
        Err(e) => {
            return Err(FsError::Io {
                op: "move",
                path: from.into(),
                source: e,
            });
        }
    }
    stat(to, users)
}

fn copy_then_remove(from: &Path, to: &Path, meta: &fs::Metadata) -> Result<(), FsError> {
    if meta.file_type().is_symlink() {
        let target = fs::read_link(from).map_err(FsError::io("read link", from))?;
        std::os::unix::fs::symlink(target, to).map_err(FsError::io("create link", to))?;
    } else {
        fs::copy(from, to).map_err(FsError::io("copy", to))?;
    }
    fs::remove_file(from).map_err(FsError::io("remove", from))
}

/// Removes a file, link or whole directory tree.
pub fn remove(path: &Path) -> Result<(), FsError> {
    if is_root(path) {
        return Err(FsError::Root { op: "remove" });
    }
    let meta = fs::symlink_metadata(path).map_err(FsError::io("remove", path))?;
    let result = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    result.map_err(FsError::io("remove", path))
}

/// Creates `dir` and its missing parents (mode 0755), each new one owned by
/// `uid:gid`. Fails when a component exists but is not a directory.
pub fn create_dirs_owned(dir: &Path, uid: u32, gid: u32) -> Result<(), FsError> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut current = Some(dir);
    while let Some(path) = current {
        match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                return Err(FsError::NotDir {
                    op: "create directory",
                    path: path.into(),
                });
            }
            // ENOTDIR: an ancestor is not a directory; the walk up finds which.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                missing.push(path.into())
            }
            Err(e) => {
                return Err(FsError::Io {
                    op: "create directory",
                    path: path.into(),
                    source: e,
                });
            }
        }
        current = path.parent();
    }
    for path in missing.iter().rev() {
        match fs::DirBuilder::new().mode(0o755).create(path) {
            Ok(()) => std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(FsError::io("chown directory", path))?,
            // Created concurrently: fine.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(FsError::Io {
                    op: "create directory",
                    path: path.clone(),
                    source: e,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wrenn_proto::filesystem::FileType;

    fn names(entries: &[EntryInfo], base: &Path) -> Vec<String> {
        let base = format!("{}/", base.display());
        entries
            .iter()
            .map(|e| e.path.strip_prefix(&base).unwrap().to_owned())
            .collect()
    }

    #[test]
    fn list_dir_honours_depth_and_does_not_follow_links() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        fs::create_dir_all(base.join("a/b/c")).unwrap();
        fs::write(base.join("a/b/file"), b"x").unwrap();
        fs::write(base.join("top"), b"x").unwrap();
        std::os::unix::fs::symlink(base.join("a"), base.join("link")).unwrap();
        let users = UserDb::system();
        let one = list_dir(base, 1, &users).unwrap();
        assert_eq!(names(&one, base), ["a", "link", "top"]);
        assert_eq!(list_dir(base, 0, &users).unwrap(), one);
        assert_eq!(
            names(&list_dir(base, 2, &users).unwrap(), base),
            ["a", "a/b", "link", "top"]
        );
        assert_eq!(
            names(&list_dir(base, 9, &users).unwrap(), base),
            ["a", "a/b", "a/b/c", "a/b/file", "link", "top"]
        );
        let link = list_dir(base, 1, &users)
            .unwrap()
            .into_iter()
            .find(|e| e.name == "link")
            .unwrap();
        assert_eq!(link.r#type, FileType::Symlink as i32);
        let err = list_dir(&base.join("top"), 1, &users).unwrap_err();
        assert!(matches!(err, FsError::NotDir { .. }), "{err}");
    }

    #[test]
    #[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
    fn owned_directories_are_created_with_their_parents() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x/y/z");
        create_dirs_owned(&target, 0, 0).unwrap();
        assert!(target.is_dir());
        fs::write(dir.path().join("file"), b"").unwrap();
        let err = create_dirs_owned(&dir.path().join("file/sub"), 0, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "create directory {}: not a directory",
                dir.path().join("file").display()
            )
        );
    }

    #[test]
    fn root_cannot_be_removed_or_moved() {
        assert!(matches!(remove(Path::new("/")), Err(FsError::Root { .. })));
        let users = UserDb::system();
        assert!(matches!(
            rename(Path::new("/"), Path::new("/x"), &users),
            Err(FsError::Root { .. })
        ));
    }
}
