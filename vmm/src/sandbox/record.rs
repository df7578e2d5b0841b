//! What the runtime keeps on disk per sandbox: `$WRENN_DIR/sandboxes/<id>/`.
//!
//! ```text
//! sandbox.json   the record below (written first, so recovery can attribute
//!                everything else to a prefix and slot)
//! disk.ext4      the sandbox's writable disk (sparse ext4, no journal)
//! disk/          mount point of the disk (inside the sandbox's mount ns only)
//! root/          mount point of the overlay (ditto)
//! guest.log      the guest agent's stdout and stderr (capped, with its
//!                rotated part guest.log.1: [`crate::guestlog`])
//! ```
//!
//! The directory is `0700` and the record `0600`: it holds the sandbox's
//! environment and its guest's credential.
//!
//! A directory is created as `.creating-<prefix>-<slot>` holding the record
//! and renamed into place, and retired as `.deleting-<prefix>-<slot>-<id>-<n>`
//! before it is deleted, so a crash at any point leaves only names recovery
//! can attribute to its own prefix and slot range.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wrenn_types::SandboxId;

use crate::runtime::{Backend, SandboxSpec};
use crate::slot::Slot;

pub const RECORD: &str = "sandbox.json";
const CREATING: &str = ".creating-";
const DELETING: &str = ".deleting-";

/// The persisted description of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: SandboxId,
    pub prefix: String,
    pub slot: u16,
    pub backend: Backend,
    pub template: String,
    pub vcpus: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub env: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub internet: bool,
    #[serde(default)]
    pub allow_out: Vec<wrenn_types::Cidr>,
    #[serde(default)]
    pub deny_out: Vec<wrenn_types::Cidr>,
    /// PID (in the root PID namespace) of the sandbox's first process and its
    /// start time in clock ticks since boot, which identifies it across PID reuse.
    pub pid: Option<i32>,
    pub pid_start: Option<u64>,
    /// The credential the guest agent requires on every call.
    #[serde(default)]
    pub guest_token: String,
    /// The pipe the first process's stdout and stderr go to.
    #[serde(default)]
    pub console: Option<crate::guestlog::PipeId>,
    /// [`SandboxSpec::envd_access_token`]; empty in records of agents that
    /// predate it (those sandboxes' guests have none).
    #[serde(default)]
    pub envd_access_token: String,
}

impl Record {
    pub fn new(spec: &SandboxSpec, prefix: &str, slot: Slot, backend: Backend) -> Self {
        Record {
            id: spec.id.clone(),
            prefix: prefix.to_owned(),
            slot: slot.get(),
            backend,
            template: spec.template.clone(),
            vcpus: spec.vcpus,
            memory_mb: spec.memory_mb,
            disk_mb: spec.disk_mb,
            env: spec.env.clone(),
            metadata: spec.metadata.clone(),
            internet: spec.internet,
            allow_out: spec.allow_out.clone(),
            deny_out: spec.deny_out.clone(),
            pid: None,
            pid_start: None,
            guest_token: new_token(),
            console: None,
            envd_access_token: spec.envd_access_token.clone(),
        }
    }

    pub fn spec(&self) -> SandboxSpec {
        SandboxSpec {
            id: self.id.clone(),
            template: self.template.clone(),
            vcpus: self.vcpus,
            memory_mb: self.memory_mb,
            disk_mb: self.disk_mb,
            env: self.env.clone(),
            metadata: self.metadata.clone(),
            internet: self.internet,
            allow_out: self.allow_out.clone(),
            deny_out: self.deny_out.clone(),
            envd_access_token: self.envd_access_token.clone(),
        }
    }

    pub fn slot(&self) -> Option<Slot> {
        Slot::new(self.slot)
    }
}

/// The paths of one sandbox directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxDir {
    pub dir: PathBuf,
}

impl SandboxDir {
    pub fn new(wrenn_dir: &Path, id: &SandboxId) -> Self {
        SandboxDir {
            dir: sandboxes_dir(wrenn_dir).join(id.as_str()),
        }
    }

    pub fn record(&self) -> PathBuf {
        self.dir.join(RECORD)
    }
    pub fn disk_image(&self) -> PathBuf {
        self.dir.join("disk.ext4")
    }
    pub fn disk_dir(&self) -> PathBuf {
        self.dir.join("disk")
    }
    pub fn root_dir(&self) -> PathBuf {
        self.dir.join("root")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("guest.log")
    }
    pub fn api_socket(&self) -> PathBuf {
        self.dir.join("firecracker.sock")
    }
    pub fn rootfs_copy(&self) -> PathBuf {
        self.dir.join("rootfs.ext4")
    }

    /// Creates the directory with the record, `disk/` and `root/` in it,
    /// atomically. `AlreadyExists` if the sandbox directory exists.
    pub fn create(&self, wrenn_dir: &Path, record: &Record) -> io::Result<()> {
        let sandboxes = sandboxes_dir(wrenn_dir);
        fs::create_dir_all(&sandboxes)?;
        let tmp = sandboxes.join(creating_name(&record.prefix, record.slot));
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::DirBuilder::new().mode(0o700).create(&tmp)?;
        let result = (|| {
            write_record_at(&tmp.join(RECORD), record)?;
            fs::create_dir(tmp.join("disk"))?;
            fs::create_dir(tmp.join("root"))?;
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                &tmp,
                nix::fcntl::AT_FDCWD,
                &self.dir,
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            )
            .map_err(io::Error::from)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    pub fn write_record(&self, record: &Record) -> io::Result<()> {
        write_record_at(&self.record(), record)
    }

    pub fn read_record(&self) -> io::Result<Record> {
        read_record(&self.record())
    }
}

/// The egress lists of the records among `entries` (of the sandboxes
/// directory) that belong to `prefix` and `slots`, one per slot.
pub fn recorded_egress(
    wrenn_dir: &Path,
    prefix: &str,
    slots: &std::ops::RangeInclusive<u16>,
    entries: &[fs::DirEntry],
) -> Vec<crate::net::firewall::Egress> {
    let mut seen = std::collections::BTreeSet::new();
    entries
        .iter()
        .filter_map(|e| e.file_name().to_str()?.parse::<SandboxId>().ok())
        .filter_map(|id| SandboxDir::new(wrenn_dir, &id).read_record().ok())
        .filter_map(|r| {
            let slot = r.slot()?;
            let ours = r.prefix == prefix && slots.contains(&slot.get());
            (ours && seen.insert(slot)).then(|| crate::net::firewall::Egress {
                addr: slot.sandbox_addr(),
                allow: r.allow_out,
                deny: r.deny_out,
            })
        })
        .collect()
}

/// `$WRENN_DIR/sandboxes`.
pub fn sandboxes_dir(wrenn_dir: &Path) -> PathBuf {
    wrenn_dir.join("sandboxes")
}

/// Name of a half-created directory of `prefix` and `slot`.
pub fn creating_name(prefix: &str, slot: u16) -> String {
    format!("{CREATING}{prefix}-{slot}")
}

/// The prefix-and-slot part of a half-created directory's name.
pub fn parse_creating(name: &str) -> Option<&str> {
    name.strip_prefix(CREATING)
}

/// Name of a destroyed sandbox's directory awaiting deletion (`n` makes it
/// unique if the same id was destroyed twice in quick succession).
pub fn deleting_name(prefix: &str, slot: u16, id: &SandboxId, n: u32) -> String {
    format!("{DELETING}{prefix}-{slot}-{id}-{n}")
}

/// The slot of a directory awaiting deletion, if it belongs to `prefix`.
pub fn parse_deleting(prefix: &str, name: &str) -> Option<u16> {
    let rest = name
        .strip_prefix(DELETING)?
        .strip_prefix(prefix)?
        .strip_prefix('-')?;
    let (slot, _) = rest.split_once('-')?;
    slot.parse().ok()
}

fn write_record_at(path: &Path, record: &Record) -> io::Result<()> {
    write_private(
        path,
        &serde_json::to_vec_pretty(record).map_err(io::Error::other)?,
    )
}

/// Writes `bytes` to `path` readable by the owner only (`0600`), replacing
/// it atomically (a temporary file beside it, renamed over it).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    fs::rename(&tmp, path)
}

/// A new credential for a guest agent (or an envd access token): 32 random
/// bytes, lowercase hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    crate::sys::random_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn read_record(path: &Path) -> io::Result<Record> {
    let bytes = fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Start time (clock ticks since boot) of `pid`, from `/proc/<pid>/stat`.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_creation_is_atomic() {
        let tmp = tempfile::tempdir().unwrap();
        let id: SandboxId = "abc".parse().unwrap();
        let mut spec = SandboxSpec::new(id.clone());
        spec.envd_access_token = new_token();
        let rec = Record::new(
            &spec,
            "wrenn-tv",
            Slot::new(1001).unwrap(),
            Backend::Namespace,
        );
        let dir = SandboxDir::new(tmp.path(), &id);
        dir.create(tmp.path(), &rec).unwrap();
        assert_eq!(dir.read_record().unwrap(), rec);
        assert_eq!(rec.spec(), spec);
        assert!(dir.disk_dir().is_dir() && dir.root_dir().is_dir());
        let again = dir.create(tmp.path(), &rec).unwrap_err();
        assert!(
            matches!(
                again.raw_os_error(),
                Some(libc::EEXIST) | Some(libc::ENOTEMPTY)
            ),
            "{again}"
        );
        let names: Vec<_> = fs::read_dir(sandboxes_dir(tmp.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("abc")],
            "no half-created directory left"
        );
    }

    #[test]
    fn records_of_older_agents_still_load() {
        let tmp = tempfile::tempdir().unwrap();
        let id: SandboxId = "old1".parse().unwrap();
        let rec = Record::new(
            &SandboxSpec::new(id.clone()),
            "wrenn-tv",
            Slot::new(1002).unwrap(),
            Backend::Namespace,
        );
        let mut json = serde_json::to_value(&rec).unwrap();
        let fields = json.as_object_mut().unwrap();
        for newer in ["envd_access_token", "console", "guest_token"] {
            fields.remove(newer);
        }
        let path = tmp.path().join(RECORD);
        fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        let old = read_record(&path).unwrap();
        assert_eq!(old.envd_access_token, "");
        assert_eq!(old.spec().envd_access_token, "");
        assert_eq!(old.id, id);
    }

    #[test]
    fn tokens_are_64_lowercase_hex_digits_and_differ() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
            "{a}"
        );
        assert_ne!(a, b);
    }

    #[test]
    fn retired_directory_names_are_attributable() {
        let id: SandboxId = "abc1".parse().unwrap();
        let name = deleting_name("wrenn-tv", 1001, &id, 0);
        assert_eq!(name, ".deleting-wrenn-tv-1001-abc1-0");
        assert_eq!(parse_deleting("wrenn-tv", &name), Some(1001));
        assert_eq!(
            parse_deleting("wrenn", &name),
            None,
            "prefix wrenn-tv is not wrenn's"
        );
        assert_eq!(parse_deleting("wrenn-tv", ".creating-wrenn-tv-1001"), None);
    }

    #[test]
    fn start_time_of_this_process_is_stable() {
        let me = std::process::id() as i32;
        let a = process_start_time(me).unwrap();
        assert_eq!(process_start_time(me), Some(a));
        assert!(process_start_time(i32::MAX).is_none());
    }
}
