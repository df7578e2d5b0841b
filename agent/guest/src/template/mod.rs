//! Template defaults: what a template build left in the image for every
//! sandbox made from it, read once at start-up from
//! `/etc/wrenn/template.json` (`--template-file`).
//!
//! ```json
//! {
//!   "user": "wrenn-user",
//!   "workdir": "/home/wrenn-user/app",
//!   "env": {"X": "1"},
//!   "start": "python3 -m http.server 8000",
//!   "ready": {"command": "curl -sf localhost:8000", "timeout_ms": 120000, "interval_ms": 200}
//! }
//! ```
//!
//! # Design
//! - Every field is optional and unknown fields are ignored, so older agents
//!   read newer files. An empty string counts as absent.
//! - `user` and `workdir` are what a process request that names no user or
//!   no `cwd` gets (PTYs too); a request that names one wins.
//! - `env` lies under the sandbox's own environment and over the runtime's
//!   defaults ([`crate::env::BaseEnv::with_template`]).
//! - `start` runs as `/bin/sh -c <start>` once the process service is up, as
//!   a background process tagged `start`, with the defaults above.
//! - `ready` holds health service `""` at `NOT_SERVING` until
//!   `/bin/sh -c <command>` exits 0 ([`ready`]); the process and filesystem
//!   services serve meanwhile.
//!
//! # Limitations
//! - A file that cannot be read, is not JSON of this shape, or holds an
//!   invalid value (a relative `workdir`, an `env` name with `=`, a NUL byte,
//!   a zero `interval_ms`) is rejected whole: the error is logged naming the
//!   file and the sandbox comes up with no defaults at all.
//! - The file is read once; editing it later changes nothing until restart.
//! - Users and the working directory are checked when a process starts, not
//!   at load: an unknown `user` or a missing `workdir` fails each request
//!   that relies on it (and START, and every READY poll), naming it.
//! - File operations (`filesystem.Filesystem`) still default to `root`.

mod launch;
pub mod ready;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::paths;
use crate::users::DEFAULT_USER;

pub use launch::Launcher;

/// Where a template build leaves the file, inside the sandbox.
pub const DEFAULT_FILE: &str = "/etc/wrenn/template.json";
/// `ready.timeout_ms` unless the file gives one.
pub const DEFAULT_READY_TIMEOUT: Duration = wrenn_types::recipe::DEFAULT_READY_TIMEOUT;
/// `ready.interval_ms` unless the file gives one.
pub const DEFAULT_READY_INTERVAL: Duration = wrenn_types::recipe::DEFAULT_READY_INTERVAL;

/// The defaults of the template a sandbox was made from; `Default` is "none".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Template {
    /// User of requests that name none.
    pub user: Option<String>,
    /// Working directory of requests that name none (absolute, normalized).
    pub workdir: Option<PathBuf>,
    /// Variables under the sandbox's own; see the module docs.
    pub env: BTreeMap<String, String>,
    /// Shell command started in the background at start-up.
    pub start: Option<String>,
    /// Check that must pass before the sandbox reports itself ready.
    pub ready: Option<Ready>,
}

/// The template's READY check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// Shell command; passes when it exits 0.
    pub command: String,
    /// Measured from the agent's start-up.
    pub timeout: Duration,
    /// Pause between the end of one run and the start of the next.
    pub interval: Duration,
}

/// Why the template file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("reading the template file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parsing the template file {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the template file {}: {problem}", path.display())]
    Invalid { path: PathBuf, problem: String },
}

/// The file as written; checked into a [`Template`] by [`parse`].
#[derive(Debug, Default, Deserialize)]
struct RawTemplate {
    user: Option<String>,
    workdir: Option<String>,
    env: Option<BTreeMap<String, String>>,
    start: Option<String>,
    ready: Option<RawReady>,
}

#[derive(Debug, Deserialize)]
struct RawReady {
    command: Option<String>,
    timeout_ms: Option<u64>,
    interval_ms: Option<u64>,
}

impl Template {
    /// The user of a request: the one it names, else the template's, else
    /// [`DEFAULT_USER`].
    pub fn user<'a>(&'a self, requested: Option<&'a str>) -> &'a str {
        requested
            .filter(|u| !u.is_empty())
            .or(self.user.as_deref())
            .unwrap_or(DEFAULT_USER)
    }

    /// The working directory of a request: the one it names, else the
    /// template's; `None` leaves it to the user's home.
    pub fn workdir<'a>(&'a self, requested: Option<&'a str>) -> Option<Requested<'a>> {
        match requested.filter(|c| !c.is_empty()) {
            Some(cwd) => Some(Requested::Request(cwd)),
            None => self.workdir.as_deref().map(Requested::Template),
        }
    }
}

/// Where a working directory came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested<'a> {
    /// `process.cwd`, unchecked.
    Request(&'a str),
    /// The template's `workdir`, absolute and normalized.
    Template(&'a Path),
}

/// Reads the template file at `path`: `Ok(None)` when there is none.
pub fn load(path: &Path) -> Result<Option<Template>, TemplateError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TemplateError::Read {
            path: path.into(),
            source,
        }),
    }
}

/// [`load`], logging a failure and falling back to no defaults: a broken
/// template never keeps the sandbox from coming up.
pub fn load_or_none(path: &Path) -> Template {
    match load(path) {
        Ok(Some(template)) => {
            tracing::info!(
                path = %path.display(),
                user = template.user.as_deref(),
                workdir = template.workdir.as_ref().map(|w| w.display().to_string()),
                env = template.env.len(),
                start = template.start.is_some(),
                ready = template.ready.is_some(),
                "template defaults loaded"
            );
            template
        }
        Ok(None) => Template::default(),
        Err(err) => {
            tracing::error!(
                "{}; starting without template defaults",
                crate::wire::chain(&err)
            );
            Template::default()
        }
    }
}

/// Parses and checks the file's `text`; `path` is for messages.
pub fn parse(path: &Path, text: &str) -> Result<Template, TemplateError> {
    let raw: RawTemplate = serde_json::from_str(text).map_err(|source| TemplateError::Parse {
        path: path.into(),
        source,
    })?;
    check(raw).map_err(|problem| TemplateError::Invalid {
        path: path.into(),
        problem,
    })
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

fn no_nul(field: &str, value: &str) -> Result<(), String> {
    match value.contains('\0') {
        true => Err(format!("{field} contains a NUL byte")),
        false => Ok(()),
    }
}

fn check(raw: RawTemplate) -> Result<Template, String> {
    let user = non_empty(raw.user);
    if let Some(user) = &user {
        no_nul("user", user)?;
    }
    let workdir = non_empty(raw.workdir)
        .map(|w| paths::absolute("workdir", &w))
        .transpose()
        .map_err(|e| e.to_string())?;
    let env = raw.env.unwrap_or_default();
    for (name, value) in &env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(format!("env: invalid variable name {name:?}"));
        }
        no_nul(&format!("env[{name:?}]"), value)?;
    }
    let start = non_empty(raw.start);
    if let Some(start) = &start {
        no_nul("start", start)?;
    }
    let ready = match raw.ready {
        Some(ready) => match non_empty(ready.command) {
            Some(command) => {
                no_nul("ready.command", &command)?;
                if ready.interval_ms == Some(0) {
                    return Err("ready.interval_ms must be at least 1".into());
                }
                Some(Ready {
                    command,
                    timeout: ready
                        .timeout_ms
                        .map_or(DEFAULT_READY_TIMEOUT, Duration::from_millis),
                    interval: ready
                        .interval_ms
                        .map_or(DEFAULT_READY_INTERVAL, Duration::from_millis),
                })
            }
            None => None,
        },
        None => None,
    };
    Ok(Template {
        user,
        workdir,
        env,
        start,
        ready,
    })
}

#[cfg(test)]
mod tests;
