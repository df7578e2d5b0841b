//! `EntryInfo` for a path: type, size, permissions, owner, modification time.
//! Symbolic links are described, not followed.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::Path;

use prost_types::Timestamp;
use wrenn_proto::filesystem::{EntryInfo, FileType};

use crate::users::UserDb;

/// Describes `path` (`lstat`). Names that are not UTF-8 are converted lossily.
pub fn entry_info(path: &Path, users: &UserDb) -> io::Result<EntryInfo> {
    let meta = fs::symlink_metadata(path)?;
    let symlink_target = if meta.file_type().is_symlink() {
        Some(fs::read_link(path)?.to_string_lossy().into_owned())
    } else {
        None
    };
    Ok(from_metadata(path, &meta, symlink_target, users))
}

fn from_metadata(
    path: &Path,
    meta: &Metadata,
    symlink_target: Option<String>,
    users: &UserDb,
) -> EntryInfo {
    let name = match path.file_name() {
        Some(name) => name.to_string_lossy().into_owned(),
        None => "/".to_owned(),
    };
    EntryInfo {
        name,
        r#type: file_type(meta) as i32,
        path: path.to_string_lossy().into_owned(),
        size: meta.size() as i64,
        mode: meta.mode() & 0o7777,
        permissions: permissions(meta.mode()),
        owner: users.user_name(meta.uid()),
        group: users.group_name(meta.gid()),
        modified_time: Some(Timestamp {
            seconds: meta.mtime(),
            nanos: meta.mtime_nsec() as i32,
        }),
        symlink_target,
        metadata: Default::default(),
        is_symlink: meta.file_type().is_symlink(),
    }
}

fn file_type(meta: &Metadata) -> FileType {
    let t = meta.file_type();
    if t.is_symlink() {
        FileType::Symlink
    } else if t.is_dir() {
        FileType::Directory
    } else if t.is_file() {
        FileType::File
    } else {
        // Devices, sockets and FIFOs.
        FileType::Unspecified
    }
}

/// `ls -l` style: `drwxr-xr-x`, `-rw-r--r--`, `lrwxrwxrwx`, with s/S and t/T.
pub fn permissions(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        _ => '-',
    };
    let bit = |mask: u32, c: char| if mode & mask != 0 { c } else { '-' };
    let special = |exec: u32, special: u32, set: char| match (mode & exec != 0, mode & special != 0)
    {
        (true, true) => set,
        (false, true) => set.to_ascii_uppercase(),
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        kind,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't'),
    ]
    .into_iter()
    .collect()
}

/// Lets `ListDir` describe entries without a second `lstat` when it already
/// has the metadata.
pub fn entry_from(path: &Path, meta: &Metadata, users: &UserDb) -> EntryInfo {
    let target = meta
        .file_type()
        .is_symlink()
        .then(|| {
            fs::read_link(path)
                .ok()
                .map(|t| t.to_string_lossy().into_owned())
        })
        .flatten();
    from_metadata(path, meta, target, users)
}

/// Whether `meta` is a block/char device, FIFO or socket.
pub fn is_special(meta: &Metadata) -> bool {
    let t = meta.file_type();
    t.is_block_device() || t.is_char_device() || t.is_fifo() || t.is_socket()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_strings_match_ls() {
        assert_eq!(permissions(libc::S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(permissions(libc::S_IFREG | 0o644), "-rw-r--r--");
        assert_eq!(permissions(libc::S_IFLNK | 0o777), "lrwxrwxrwx");
        assert_eq!(permissions(libc::S_IFREG | 0o4755), "-rwsr-xr-x");
        assert_eq!(permissions(libc::S_IFDIR | 0o1777), "drwxrwxrwt");
        assert_eq!(permissions(libc::S_IFREG | 0o2644), "-rw-r-Sr--");
    }

    #[test]
    fn entries_describe_files_dirs_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let users = UserDb::system();
        let file = dir.path().join("a file.txt");
        fs::write(&file, b"12345").unwrap();
        std::os::unix::fs::symlink("a file.txt", dir.path().join("link")).unwrap();
        let info = entry_info(&file, &users).unwrap();
        assert_eq!(info.name, "a file.txt");
        assert_eq!(info.r#type, FileType::File as i32);
        assert_eq!(info.size, 5);
        assert_eq!(info.path, file.to_string_lossy());
        assert!(info.modified_time.is_some());
        let link = entry_info(&dir.path().join("link"), &users).unwrap();
        assert_eq!(link.r#type, FileType::Symlink as i32);
        assert_eq!(link.symlink_target.as_deref(), Some("a file.txt"));
        let root = entry_info(Path::new("/"), &users).unwrap();
        assert_eq!(
            (root.name.as_str(), root.r#type),
            ("/", FileType::Directory as i32)
        );
    }
}
