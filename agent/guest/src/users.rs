//! Users and groups from the root filesystem's own `/etc/passwd` and `/etc/group`.
//!
//! # Design
//! The files are parsed once and cached; each lookup `stat`s both files and
//! re-parses only when their inode, size or modification time changed, so `exec`
//! does not pay for parsing on every call while `useradd` inside the sandbox is
//! seen at the next request.
//!
//! # Limitations
//! No NSS: users that exist only in LDAP/NIS are unknown. `root` always resolves
//! (uid 0, home `/root`, shell `/bin/sh`) even without `/etc/passwd`, so a
//! busybox-only root filesystem works.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tonic::Status;

/// The user every request defaults to.
pub const DEFAULT_USER: &str = "root";

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
    /// Primary group first, then every group that lists the user as a member.
    pub groups: Vec<u32>,
}

/// Why a user could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user {name:?} does not exist in {passwd}", passwd = passwd.display())]
    Unknown { name: String, passwd: PathBuf },
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<UserError> for Status {
    fn from(err: UserError) -> Self {
        match &err {
            UserError::Unknown { .. } => Status::invalid_argument(err.to_string()),
            UserError::Read { source, .. } => Status::internal(format!("{err}: {source}")),
        }
    }
}

/// Cached view of `/etc/passwd` and `/etc/group`.
#[derive(Debug)]
pub struct UserDb {
    passwd: PathBuf,
    group: PathBuf,
    cache: Mutex<Option<Arc<Snapshot>>>,
}

/// Identity of a file version: (device, inode, size, mtime seconds, mtime nanos).
type FileKey = Option<(u64, u64, u64, i64, i64)>;

#[derive(Debug, Default)]
struct Snapshot {
    key: (FileKey, FileKey),
    users: HashMap<String, Arc<User>>,
    user_names: HashMap<u32, String>,
    group_names: HashMap<u32, String>,
}

impl UserDb {
    /// The root filesystem's own database.
    pub fn system() -> Self {
        Self::new("/etc/passwd", "/etc/group")
    }

    pub fn new(passwd: impl Into<PathBuf>, group: impl Into<PathBuf>) -> Self {
        Self {
            passwd: passwd.into(),
            group: group.into(),
            cache: Mutex::new(None),
        }
    }

    /// Resolves `name`; `root` always resolves.
    pub fn user(&self, name: &str) -> Result<Arc<User>, UserError> {
        let snapshot = self.snapshot()?;
        if let Some(user) = snapshot.users.get(name) {
            return Ok(user.clone());
        }
        if name == DEFAULT_USER {
            return Ok(Arc::new(User {
                name: DEFAULT_USER.into(),
                uid: 0,
                gid: 0,
                home: "/root".into(),
                shell: "/bin/sh".into(),
                groups: vec![0],
            }));
        }
        Err(UserError::Unknown {
            name: name.into(),
            passwd: self.passwd.clone(),
        })
    }

    /// Name of `uid`, or the number itself when unknown.
    pub fn user_name(&self, uid: u32) -> String {
        let found = self
            .snapshot()
            .ok()
            .and_then(|s| s.user_names.get(&uid).cloned());
        found.unwrap_or_else(|| {
            if uid == 0 {
                DEFAULT_USER.into()
            } else {
                uid.to_string()
            }
        })
    }

    /// Name of `gid`, or the number itself when unknown.
    pub fn group_name(&self, gid: u32) -> String {
        let found = self
            .snapshot()
            .ok()
            .and_then(|s| s.group_names.get(&gid).cloned());
        found.unwrap_or_else(|| {
            if gid == 0 {
                DEFAULT_USER.into()
            } else {
                gid.to_string()
            }
        })
    }

    fn snapshot(&self) -> Result<Arc<Snapshot>, UserError> {
        let key = (file_key(&self.passwd)?, file_key(&self.group)?);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(snapshot) = cache.as_ref().filter(|s| s.key == key) {
            return Ok(snapshot.clone());
        }
        let passwd = read_optional(&self.passwd)?;
        let group = read_optional(&self.group)?;
        let snapshot = Arc::new(Snapshot::parse(key, &passwd, &group));
        tracing::debug!(
            passwd = %self.passwd.display(),
            users = snapshot.users.len(),
            "user database loaded"
        );
        *cache = Some(snapshot.clone());
        Ok(snapshot)
    }
}

fn file_key(path: &Path) -> Result<FileKey, UserError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some((
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(UserError::Read {
            path: path.into(),
            source,
        }),
    }
}

fn read_optional(path: &Path) -> Result<String, UserError> {
    match fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(UserError::Read {
            path: path.into(),
            source,
        }),
    }
}

impl Snapshot {
    fn parse(key: (FileKey, FileKey), passwd: &str, group: &str) -> Self {
        let mut members: HashMap<&str, Vec<u32>> = HashMap::new();
        let mut group_names = HashMap::new();
        for fields in records(group, 4) {
            let Ok(gid) = fields[2].parse::<u32>() else {
                continue;
            };
            group_names
                .entry(gid)
                .or_insert_with(|| fields[0].to_owned());
            for member in fields[3]
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
            {
                members.entry(member).or_default().push(gid);
            }
        }
        let mut users = HashMap::new();
        let mut user_names = HashMap::new();
        for fields in records(passwd, 7) {
            let (Ok(uid), Ok(gid)) = (fields[2].parse::<u32>(), fields[3].parse::<u32>()) else {
                continue;
            };
            let name = fields[0];
            let mut groups = vec![gid];
            for &g in members.get(name).into_iter().flatten() {
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
            let shell = if fields[6].is_empty() {
                "/bin/sh"
            } else {
                fields[6]
            };
            let user = User {
                name: name.to_owned(),
                uid,
                gid,
                home: PathBuf::from(if fields[5].is_empty() { "/" } else { fields[5] }),
                shell: PathBuf::from(shell),
                groups,
            };
            user_names.entry(uid).or_insert_with(|| name.to_owned());
            users
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(user));
        }
        Self {
            key,
            users,
            user_names,
            group_names,
        }
    }
}

/// Non-comment lines of a colon-separated file with at least `min_fields` fields.
fn records(text: &str, min_fields: usize) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim_end)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.split(':').collect::<Vec<_>>())
        .filter(move |fields| fields.len() >= min_fields && !fields[0].is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        # comment\n\
        alice:x:1000:1000:Alice:/home/alice:/bin/zsh\n\
        broken line\n\
        bob:x:1001:100::/home/bob:\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:alice\nalice:x:1000:\ndocker:x:999:alice,bob\n";

    fn db(dir: &tempfile::TempDir, passwd: &str, group: &str) -> UserDb {
        fs::write(dir.path().join("passwd"), passwd).unwrap();
        fs::write(dir.path().join("group"), group).unwrap();
        UserDb::new(dir.path().join("passwd"), dir.path().join("group"))
    }

    #[test]
    fn users_resolve_with_supplementary_groups() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir, PASSWD, GROUP);
        let alice = db.user("alice").unwrap();
        assert_eq!((alice.uid, alice.gid), (1000, 1000));
        assert_eq!(alice.home, PathBuf::from("/home/alice"));
        assert_eq!(alice.shell, PathBuf::from("/bin/zsh"));
        assert_eq!(alice.groups, vec![1000, 100, 999]);
        let bob = db.user("bob").unwrap();
        assert_eq!(bob.shell, PathBuf::from("/bin/sh"));
        assert_eq!(bob.groups, vec![100, 999]);
        assert_eq!(db.user_name(1001), "bob");
        assert_eq!(db.group_name(999), "docker");
        assert_eq!(db.user_name(4242), "4242");
    }

    #[test]
    fn unknown_user_is_invalid_argument_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir, PASSWD, GROUP);
        let status = Status::from(db.user("mallory").unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("\"mallory\""),
            "{}",
            status.message()
        );
    }

    #[test]
    fn root_resolves_without_passwd_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = UserDb::new(dir.path().join("missing"), dir.path().join("missing-group"));
        let root = db.user("root").unwrap();
        assert_eq!(
            (root.uid, root.gid, root.home.as_path()),
            (0, 0, Path::new("/root"))
        );
        assert!(db.user("alice").is_err());
    }

    #[test]
    fn changes_to_passwd_are_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir, PASSWD, GROUP);
        assert!(db.user("carol").is_err());
        let more = format!("{PASSWD}carol:x:1002:1002::/home/carol:/bin/sh\n");
        // Write a new file and rename it over, as useradd does.
        fs::write(dir.path().join("passwd.new"), more).unwrap();
        fs::rename(dir.path().join("passwd.new"), dir.path().join("passwd")).unwrap();
        assert_eq!(db.user("carol").unwrap().uid, 1002);
    }
}
