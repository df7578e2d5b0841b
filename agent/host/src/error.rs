//! Errors of the agent: start-up failures ([`Error`], returned by
//! [`crate::run`]) and per-request failures ([`SandboxError`], turned into a
//! gRPC status in one place).

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tonic::{Code, Status};
use wrenn_types::SandboxId;

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid agent configuration: {0}")]
    Config(String),
    #[error(
        "wrenn-guest binary not found (looked at: {searched}); build it with \
         `cargo build -p wrenn-guest --target x86_64-unknown-linux-musl` or set WRENN_GUEST_BIN"
    )]
    GuestBinNotFound { searched: String },
    #[error("create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bind the HostAgent gRPC server to {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("start-up step {step:?} failed")]
    Startup {
        step: &'static str,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("HostAgent gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
}

/// Why one sandbox request failed. Every variant names what was wrong; the
/// gRPC status carries the whole cause chain.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("sandbox {0} not found")]
    NotFound(SandboxId),
    #[error("sandbox {0} already exists")]
    AlreadyExists(SandboxId),
    #[error("sandbox {id} is {state}")]
    WrongState { id: SandboxId, state: &'static str },
    #[error(
        "not enough {resource} on this host for sandbox {id}: requested {requested_mb} MiB; \
         {free_mb} MiB free, {reserve_mb} MiB kept for the host, {needed_mb} MiB needed for the \
         limits of {sandboxes} sandboxes ({committed_mb} MiB) and this one, divided by \
         {resource}_overcommit {overcommit}"
    )]
    Insufficient {
        id: SandboxId,
        resource: &'static str,
        requested_mb: u64,
        free_mb: u64,
        reserve_mb: u64,
        sandboxes: usize,
        committed_mb: u64,
        overcommit: u32,
        needed_mb: u64,
    },
    #[error("read host {what} from {path}")]
    HostResources {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} sandbox {id}")]
    Runtime {
        op: &'static str,
        id: SandboxId,
        #[source]
        source: Box<wrenn_vmm::Error>,
    },
    #[error(
        "sandbox {id}: guest agent at {addr} not healthy after {waited:?} (last probe: {last_error}); \
         guest output:\n{output}"
    )]
    GuestNotReady {
        id: SandboxId,
        addr: SocketAddr,
        waited: Duration,
        last_error: String,
        output: String,
    },
    #[error("the agent is shutting down")]
    ShuttingDown,
    #[error("create task for sandbox {id} failed: {reason}")]
    Internal { id: SandboxId, reason: String },
}

impl SandboxError {
    /// A runtime failure of `op` on sandbox `id`.
    pub(crate) fn runtime(
        op: &'static str,
        id: &SandboxId,
    ) -> impl FnOnce(wrenn_vmm::Error) -> Self {
        let id = id.clone();
        move |source| SandboxError::Runtime {
            op,
            id,
            source: Box::new(source),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SandboxError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn code(&self) -> Code {
        use wrenn_vmm::Error as V;
        match self {
            SandboxError::InvalidArgument { .. } => Code::InvalidArgument,
            SandboxError::NotFound(_) => Code::NotFound,
            SandboxError::AlreadyExists(_) => Code::AlreadyExists,
            SandboxError::WrongState { .. } => Code::FailedPrecondition,
            SandboxError::Insufficient { .. } => Code::ResourceExhausted,
            SandboxError::ShuttingDown => Code::Unavailable,
            SandboxError::Runtime { source, .. } => match **source {
                V::InvalidSpec(_) => Code::InvalidArgument,
                V::UnknownTemplate { .. } => Code::NotFound,
                V::AlreadyExists(_) => Code::AlreadyExists,
                V::NotFound(_) => Code::NotFound,
                V::SlotsExhausted { .. } => Code::ResourceExhausted,
                V::WrongState { .. } => Code::FailedPrecondition,
                _ => Code::Internal,
            },
            SandboxError::HostResources { .. }
            | SandboxError::GuestNotReady { .. }
            | SandboxError::Internal { .. } => Code::Internal,
        }
    }
}

pub(crate) use wrenn_types::chain;

impl From<SandboxError> for Status {
    fn from(err: SandboxError) -> Status {
        Status::new(err.code(), chain(&err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_code_and_chain() {
        let id: SandboxId = "abc".parse().unwrap();
        let s: Status = SandboxError::Runtime {
            op: "create",
            id: id.clone(),
            source: Box::new(wrenn_vmm::Error::SlotsExhausted { first: 1, last: 2 }),
        }
        .into();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.message(),
            "create sandbox abc: no free network slot in 1..=2"
        );

        let s: Status = SandboxError::invalid("spec.vcpus", "65 is above the maximum 64").into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "spec.vcpus: 65 is above the maximum 64");

        let s: Status = SandboxError::WrongState {
            id,
            state: "paused",
        }
        .into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(s.message(), "sandbox abc is paused");
    }
}
