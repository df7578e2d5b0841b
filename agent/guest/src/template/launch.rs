//! Running the template's START and READY commands as the sandbox's
//! processes: `/bin/sh -c <command>`, resolved like a process request that
//! names no user, `cwd` or `envs` (so with the template's defaults).
//!
//! START goes through the process table like any background process (listed,
//! tagged [`START_TAG`], its output read and discarded until a client
//! attaches). READY's runs do not: each is a short, bounded run whose output
//! tail is kept for the failure line ([`crate::process::run_bounded`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use wrenn_proto::process::{ProcessConfig, StartRequest};

use super::Template;
use super::ready::{self, Failure};
use crate::env::BaseEnv;
use crate::process::{ProcessTable, SpawnSpec, TableError, run_bounded};
use crate::reaper::Reaper;
use crate::users::UserDb;
use crate::wire::chain;

/// The tag of the START process (`Connect` by tag finds it).
pub const START_TAG: &str = "start";
/// The shell both commands run under.
const SHELL: &str = "/bin/sh";
/// Bytes of a READY run's output kept for the failure line.
const OUTPUT_TAIL: usize = 4096;

/// Starts the template's commands; see the module docs.
#[derive(Debug, Clone)]
pub struct Launcher {
    table: Arc<ProcessTable>,
    reaper: Arc<Reaper>,
    users: Arc<UserDb>,
    env: Arc<BaseEnv>,
    template: Arc<Template>,
}

/// `/bin/sh -c <command>` with nothing else set: the defaults fill it in.
fn shell_request(command: &str) -> StartRequest {
    StartRequest {
        process: Some(ProcessConfig {
            cmd: SHELL.into(),
            args: vec!["-c".into(), command.into()],
            ..Default::default()
        }),
        stdin: Some(false),
        ..Default::default()
    }
}

impl Launcher {
    pub fn new(
        table: Arc<ProcessTable>,
        reaper: Arc<Reaper>,
        users: Arc<UserDb>,
        env: Arc<BaseEnv>,
        template: Arc<Template>,
    ) -> Self {
        Self {
            table,
            reaper,
            users,
            env,
            template,
        }
    }

    fn spec(&self, req: &StartRequest) -> Result<SpawnSpec, crate::process::SpawnError> {
        SpawnSpec::from_request(req, &self.users, &self.env, &self.template)
    }

    /// Starts START in the background, if the template has one; returns its
    /// pid. A failure is logged (the sandbox runs on without it).
    pub fn start(&self) -> Option<u32> {
        let command = self.template.start.as_deref()?;
        let req = shell_request(command);
        let started = self.spec(&req).map_err(TableError::from).and_then(|spec| {
            let config = req.process.clone().unwrap_or_default();
            self.table.start(&spec, config, Some(START_TAG.into()))
        });
        match started {
            // Nobody is attached: its output is read and discarded like any
            // background process's until a client connects by tag.
            Ok((proc, _first_client)) => {
                tracing::info!(pid = proc.pid, tag = START_TAG, command, "START running");
                Some(proc.pid)
            }
            Err(err) => {
                tracing::error!("START could not be started: {}", chain(&err));
                None
            }
        }
    }

    /// With a READY check, runs it in a task that turns health service `""`
    /// to `SERVING` once it passes (it stays `NOT_SERVING` on timeout, and the
    /// failure is logged); `None` without one. `started` is the agent's
    /// start-up, which the timeout counts from.
    pub fn gate_ready(&self, health: HealthReporter, started: Instant) -> Option<JoinHandle<()>> {
        let ready = self.template.ready.clone()?;
        let this = self.clone();
        Some(tokio::spawn(async move {
            let command = ready.command.as_str();
            let launcher = &this;
            match ready::poll(&ready, started, |limit| launcher.ready_run(command, limit)).await {
                Ok(attempts) => {
                    tracing::info!(
                        attempts,
                        after_ms = started.elapsed().as_millis() as u64,
                        "READY passed"
                    );
                    health.set_service_status("", ServingStatus::Serving).await;
                }
                Err(not_ready) => tracing::error!("{not_ready}"),
            }
        }))
    }

    /// One READY run, killed after `limit`.
    async fn ready_run(&self, command: &str, limit: Duration) -> Result<(), Failure> {
        let not_started = |e: crate::process::SpawnError| Failure::NotStarted(chain(&e));
        let spec = self.spec(&shell_request(command)).map_err(not_started)?;
        let finished = run_bounded(&spec, &self.reaper, limit, OUTPUT_TAIL)
            .await
            .map_err(not_started)?;
        if finished.passed() {
            return Ok(());
        }
        Err(Failure::Exit {
            code: finished.end.exit_code,
            killed_after: finished.killed_after,
            output: finished.output,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_run_under_sh_with_no_stdin_and_nothing_else_set() {
        let req = shell_request("echo hi; sleep 1");
        let process = req.process.unwrap();
        assert_eq!(process.cmd, "/bin/sh");
        assert_eq!(process.args, ["-c", "echo hi; sleep 1"]);
        assert!(process.cwd.is_none() && process.envs.is_empty());
        assert!(req.user.is_none() && req.pty.is_none() && req.tag.is_none());
        assert_eq!(req.stdin, Some(false));
    }
}
