//! Validating a `StartRequest` into a [`SpawnSpec`]: command, arguments,
//! environment, terminal size, user and working directory (the template's
//! when the request names none), each error naming the request field or
//! template default it is about.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::Status;
use wrenn_proto::process::StartRequest;

use super::pty::{PtyError, WindowSize};
use crate::env::BaseEnv;
use crate::paths::{self, PathError};
use crate::template::{Requested, Template};
use crate::users::{User, UserDb, UserError};
use crate::wire::chain;

/// Everything needed to start a process, validated.
#[derive(Debug)]
pub struct SpawnSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<OsString, OsString>,
    pub cwd: PathBuf,
    pub user: Arc<User>,
    pub pty: Option<WindowSize>,
    pub stdin: bool,
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("process is required")]
    MissingProcess,
    #[error("process.cmd is empty")]
    EmptyCmd,
    #[error("{field} contains a NUL byte")]
    Nul { field: String },
    #[error("process.envs: invalid variable name {name:?}")]
    EnvName { name: String },
    #[error("pty.size is required")]
    MissingPtySize,
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Pty(#[from] PtyError),
    #[error("process.cwd {}: does not exist", cwd.display())]
    CwdMissing { cwd: PathBuf },
    #[error("process.cwd {}: not a directory", cwd.display())]
    CwdNotDir { cwd: PathBuf },
    #[error("process.cwd {}", cwd.display())]
    Cwd {
        cwd: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the template's workdir {} (used as process.cwd was not given)", workdir.display())]
    Workdir {
        workdir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the agent runs as uid {agent} and cannot start processes as user {user:?}")]
    CannotSwitchUser { agent: u32, user: String },
    #[error("process.cmd {program:?}: not found (PATH={path})")]
    NotFound { program: String, path: String },
    #[error("process.cmd {program:?}: permission denied")]
    PermissionDenied { program: String },
    #[error("starting {program:?}")]
    Exec {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("setting up the output pipes of pid {pid}")]
    Pipes {
        pid: u32,
        #[source]
        source: io::Error,
    },
}

impl From<SpawnError> for Status {
    fn from(err: SpawnError) -> Self {
        use SpawnError as E;
        match err {
            E::Path(e) => e.into(),
            E::User(e) => e.into(),
            E::Pty(e) => e.into(),
            E::MissingProcess
            | E::EmptyCmd
            | E::Nul { .. }
            | E::EnvName { .. }
            | E::MissingPtySize
            | E::CwdMissing { .. }
            | E::CwdNotDir { .. } => Status::invalid_argument(err.to_string()),
            E::Workdir { .. } => Status::failed_precondition(chain(&err)),
            E::CannotSwitchUser { .. } | E::PermissionDenied { .. } => {
                Status::permission_denied(err.to_string())
            }
            E::NotFound { .. } => Status::not_found(err.to_string()),
            E::Cwd { .. } | E::Exec { .. } | E::Pipes { .. } => Status::internal(chain(&err)),
        }
    }
}

impl SpawnSpec {
    /// Validates `req` and resolves its user, directory and environment;
    /// `defaults` fills in what it leaves out.
    pub fn from_request(
        req: &StartRequest,
        users: &UserDb,
        base: &BaseEnv,
        defaults: &Template,
    ) -> Result<Self, SpawnError> {
        let process = req.process.as_ref().ok_or(SpawnError::MissingProcess)?;
        if process.cmd.is_empty() {
            return Err(SpawnError::EmptyCmd);
        }
        no_nul("process.cmd", &process.cmd)?;
        for (i, arg) in process.args.iter().enumerate() {
            no_nul(&format!("process.args[{i}]"), arg)?;
        }
        for (name, value) in &process.envs {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(SpawnError::EnvName { name: name.clone() });
            }
            no_nul(&format!("process.envs[{name:?}]"), value)?;
        }
        let pty = match &req.pty {
            Some(pty) => {
                let size = pty.size.ok_or(SpawnError::MissingPtySize)?;
                Some(WindowSize::new(size.cols, size.rows)?)
            }
            None => None,
        };
        let user = users.user(defaults.user(req.user.as_deref()))?;
        let agent = nix::unistd::geteuid().as_raw();
        if agent != 0 && agent != user.uid {
            return Err(SpawnError::CannotSwitchUser {
                agent,
                user: user.name.clone(),
            });
        }
        let cwd = working_dir(defaults.workdir(process.cwd.as_deref()), &user)?;
        Ok(Self {
            program: process.cmd.clone(),
            args: process.args.clone(),
            env: base.for_process(&user, pty.is_some(), &process.envs),
            cwd,
            user,
            pty,
            stdin: req.stdin.unwrap_or(true),
        })
    }
}

fn no_nul(field: &str, value: &str) -> Result<(), SpawnError> {
    if value.contains('\0') {
        return Err(SpawnError::Nul {
            field: field.to_owned(),
        });
    }
    Ok(())
}

/// The directory a process starts in: the requested one, else the
/// template's, else the user's home, or `/` when it does not exist (minimal
/// images).
fn working_dir(requested: Option<Requested<'_>>, user: &User) -> Result<PathBuf, SpawnError> {
    match requested {
        Some(Requested::Request(cwd)) => {
            let cwd = paths::absolute("process.cwd", cwd)?;
            check_dir(&cwd)?;
            Ok(cwd)
        }
        Some(Requested::Template(workdir)) => {
            check_workdir(workdir)?;
            Ok(workdir.to_owned())
        }
        None => Ok(Some(user.home.clone())
            .filter(|h| h.is_dir())
            .unwrap_or_else(|| "/".into())),
    }
}

fn check_workdir(workdir: &Path) -> Result<(), SpawnError> {
    let err = |source| SpawnError::Workdir {
        workdir: workdir.into(),
        source,
    };
    match std::fs::metadata(workdir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(err(io::Error::from_raw_os_error(libc::ENOTDIR))),
        Err(source) => Err(err(source)),
    }
}

fn check_dir(cwd: &Path) -> Result<(), SpawnError> {
    match std::fs::metadata(cwd) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(SpawnError::CwdNotDir { cwd: cwd.into() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(SpawnError::CwdMissing { cwd: cwd.into() })
        }
        Err(source) => Err(SpawnError::Cwd {
            cwd: cwd.into(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wrenn_proto::process::{ProcessConfig, Pty as PtyRequest, pty};

    fn request(cmd: &str) -> StartRequest {
        StartRequest {
            process: Some(ProcessConfig {
                cmd: cmd.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn spec(req: &StartRequest) -> Result<SpawnSpec, Status> {
        let dir = tempfile::tempdir().unwrap();
        let users = UserDb::new(dir.path().join("passwd"), dir.path().join("group"));
        SpawnSpec::from_request(req, &users, &BaseEnv::default(), &Template::default())
            .map_err(Status::from)
    }

    /// A user database with `app` and `bob`, both the test's own uid (so no
    /// switch is needed), homes under `dir`.
    fn users_as_me(dir: &Path) -> UserDb {
        let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
        let home = dir.join("home-app");
        std::fs::create_dir(&home).unwrap();
        let passwd = format!(
            "app:x:{uid}:{gid}::{}:/bin/sh\nbob:x:{uid}:{gid}::/nonexistent:/bin/sh\n",
            home.display()
        );
        std::fs::write(dir.join("passwd"), passwd).unwrap();
        UserDb::new(dir.join("passwd"), dir.join("group"))
    }

    #[test]
    fn the_template_fills_in_user_and_cwd_a_request_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let users = users_as_me(dir.path());
        let workdir = dir.path().join("app");
        std::fs::create_dir(&workdir).unwrap();
        let template = Template {
            user: Some("app".into()),
            workdir: Some(workdir.clone()),
            ..Template::default()
        };
        let base = BaseEnv::default();
        let spec = SpawnSpec::from_request(&request("true"), &users, &base, &template).unwrap();
        assert_eq!(spec.user.name, "app");
        assert_eq!(spec.cwd, workdir);
        assert_eq!(
            spec.env.get(&OsString::from("USER")),
            Some(&OsString::from("app"))
        );
        // What the request names wins.
        let mut req = request("true");
        req.user = Some("bob".into());
        req.process.as_mut().unwrap().cwd = Some(dir.path().display().to_string());
        let spec = SpawnSpec::from_request(&req, &users, &base, &template).unwrap();
        assert_eq!(spec.user.name, "bob");
        assert_eq!(spec.cwd, dir.path());
        // Without a template workdir: the user's home, or `/` without one.
        let no_workdir = Template {
            user: Some("app".into()),
            ..Template::default()
        };
        let spec = SpawnSpec::from_request(&request("true"), &users, &base, &no_workdir).unwrap();
        assert_eq!(spec.cwd, dir.path().join("home-app"));
        let mut req = request("true");
        req.user = Some("bob".into());
        let spec = SpawnSpec::from_request(&req, &users, &base, &no_workdir).unwrap();
        assert_eq!(spec.cwd, PathBuf::from("/"));
    }

    #[test]
    fn a_missing_template_workdir_fails_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let users = users_as_me(dir.path());
        let file = dir.path().join("passwd");
        for (workdir, needle) in [
            (dir.path().join("gone"), "No such file or directory"),
            (file, "Not a directory"),
        ] {
            let template = Template {
                user: Some("app".into()),
                workdir: Some(workdir.clone()),
                ..Template::default()
            };
            let err =
                SpawnSpec::from_request(&request("true"), &users, &BaseEnv::default(), &template)
                    .unwrap_err();
            let status = Status::from(err);
            assert_eq!(status.code(), tonic::Code::FailedPrecondition);
            let want = format!(
                "the template's workdir {} (used as process.cwd was not given): {needle}",
                workdir.display()
            );
            assert!(status.message().starts_with(&want), "{}", status.message());
        }
        // An unknown template user is named like a requested one.
        let template = Template {
            user: Some("nobody-here".into()),
            ..Template::default()
        };
        let err = SpawnSpec::from_request(&request("true"), &users, &BaseEnv::default(), &template)
            .unwrap_err();
        assert!(err.to_string().contains("\"nobody-here\""), "{err}");
    }

    #[test]
    #[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
    fn defaults_are_root_home_or_slash_and_stdin_on() {
        let spec = spec(&request("true")).unwrap();
        assert_eq!(spec.user.name, "root");
        let home = if std::path::Path::new("/root").is_dir() {
            "/root"
        } else {
            "/"
        };
        assert_eq!(spec.cwd, PathBuf::from(home));
        assert!(spec.stdin);
        assert!(spec.pty.is_none());
    }

    #[test]
    #[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
    fn bad_requests_are_invalid_arguments_naming_what() {
        let cases: Vec<(StartRequest, &str)> = vec![
            (StartRequest::default(), "process is required"),
            (request(""), "process.cmd is empty"),
            (
                StartRequest {
                    process: Some(ProcessConfig {
                        cmd: "ls".into(),
                        cwd: Some("tmp".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "process.cwd: path \"tmp\" is not absolute",
            ),
            (
                StartRequest {
                    process: Some(ProcessConfig {
                        cmd: "ls".into(),
                        cwd: Some("/definitely/not/here".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "process.cwd /definitely/not/here: does not exist",
            ),
            (
                StartRequest {
                    user: Some("nobody-here".into()),
                    ..request("ls")
                },
                "\"nobody-here\"",
            ),
            (
                StartRequest {
                    pty: Some(PtyRequest {
                        size: Some(pty::Size { cols: 0, rows: 24 }),
                    }),
                    ..request("sh")
                },
                "0x24",
            ),
            (
                StartRequest {
                    pty: Some(PtyRequest { size: None }),
                    ..request("sh")
                },
                "pty.size is required",
            ),
            (
                StartRequest {
                    process: Some(ProcessConfig {
                        cmd: "env".into(),
                        envs: [("A=B".to_owned(), "x".to_owned())].into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "invalid variable name \"A=B\"",
            ),
            (
                StartRequest {
                    process: Some(ProcessConfig {
                        cmd: "echo".into(),
                        args: vec!["ok".into(), "a\0b".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "process.args[1] contains a NUL byte",
            ),
        ];
        for (req, needle) in cases {
            let status = spec(&req).unwrap_err();
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{req:?}: {status:?}"
            );
            assert!(
                status.message().contains(needle),
                "{:?} lacks {needle:?}",
                status.message()
            );
        }
    }
}
