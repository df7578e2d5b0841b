//! Validating a `StartRequest` into a [`SpawnSpec`]: command, arguments,
//! environment, terminal size, user and working directory, each error naming
//! the request field it is about.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use tonic::Status;
use wrenn_proto::process::StartRequest;

use super::pty::{PtyError, WindowSize};
use crate::env::BaseEnv;
use crate::paths::{self, PathError};
use crate::users::{DEFAULT_USER, User, UserDb, UserError};
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
            E::CannotSwitchUser { .. } | E::PermissionDenied { .. } => {
                Status::permission_denied(err.to_string())
            }
            E::NotFound { .. } => Status::not_found(err.to_string()),
            E::Cwd { .. } | E::Exec { .. } | E::Pipes { .. } => Status::internal(chain(&err)),
        }
    }
}

impl SpawnSpec {
    /// Validates `req` and resolves its user, directory and environment.
    pub fn from_request(
        req: &StartRequest,
        users: &UserDb,
        base: &BaseEnv,
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
        let user_name = req
            .user
            .as_deref()
            .filter(|u| !u.is_empty())
            .unwrap_or(DEFAULT_USER);
        let user = users.user(user_name)?;
        let agent = nix::unistd::geteuid().as_raw();
        if agent != 0 && agent != user.uid {
            return Err(SpawnError::CannotSwitchUser {
                agent,
                user: user.name.clone(),
            });
        }
        let cwd = match process.cwd.as_deref().filter(|c| !c.is_empty()) {
            Some(cwd) => {
                let cwd = paths::absolute("process.cwd", cwd)?;
                check_dir(&cwd)?;
                cwd
            }
            // The user's home, or `/` when it does not exist (minimal images).
            None => Some(user.home.clone())
                .filter(|h| h.is_dir())
                .unwrap_or_else(|| "/".into()),
        };
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

fn check_dir(cwd: &std::path::Path) -> Result<(), SpawnError> {
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
        SpawnSpec::from_request(req, &users, &BaseEnv::default()).map_err(Status::from)
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
