//! Users created for a test with `useradd`, removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::agent::require_root;

/// A user (and an extra group it belongs to) created with `useradd`; removed on
/// drop, home included.
pub struct TestUser {
    pub name: String,
    pub group: String,
    pub home: PathBuf,
}

impl TestUser {
    pub fn create(tag: &str) -> TestUser {
        require_root();
        let suffix = format!("{}{}", std::process::id() % 100_000, tag);
        let name = format!("wtg{suffix}");
        let group = format!("wtgx{suffix}");
        let home = PathBuf::from(format!("/home/{name}"));
        // Concurrent tests may hold the passwd lock for a moment: retry.
        let status = |c: &mut Command| {
            (0..50).any(|_| {
                let ok = c.status().expect("running useradd/groupadd").success();
                if !ok {
                    std::thread::sleep(Duration::from_millis(100));
                }
                ok
            })
        };
        assert!(
            status(Command::new("groupadd").arg(&group)),
            "groupadd {group}"
        );
        let user = TestUser { name, group, home };
        assert!(
            status(Command::new("useradd").args([
                "-m",
                "-s",
                "/bin/sh",
                "-G",
                &user.group,
                &user.name
            ])),
            "useradd {}",
            user.name
        );
        user
    }

    pub fn uid(&self) -> u32 {
        id_of(&["-u", &self.name])
    }

    pub fn gid(&self) -> u32 {
        id_of(&["-g", &self.name])
    }
}

fn id_of(args: &[&str]) -> u32 {
    let out = Command::new("id").args(args).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel")
            .args(["-r", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("groupdel").arg(&self.group).status();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// True while `/proc/<pid>` exists (running or zombie).
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}
