//! Turning errors into a printed cause chain and an exit code.

use tonic::Code;

pub const FAILURE: i32 = 1;
pub const NOT_FOUND: i32 = 3;
pub const REFUSED: i32 = 4;
pub const UNREACHABLE: i32 = 5;
pub const INVALID: i32 = 6;
/// `exec`/`pty`: wrenn failed before the remote process ended.
pub const REMOTE_UNKNOWN: i32 = 125;

/// The control plane could not be reached.
#[derive(Debug)]
pub struct Unreachable {
    pub address: String,
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot reach the control plane at {} (is `wrenn up` running? set --control or WRENN_CONTROL)",
            self.address
        )
    }
}

impl std::error::Error for Unreachable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

pub fn report(r: anyhow::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            print_chain(&e);
            code_for(&e)
        }
    }
}

/// For commands whose success value is the remote exit code.
pub fn report_remote(r: anyhow::Result<i32>) -> i32 {
    match r {
        Ok(code) => code,
        Err(e) => {
            print_chain(&e);
            REMOTE_UNKNOWN
        }
    }
}

pub fn print_chain(e: &anyhow::Error) {
    let mut lines = e.chain().map(describe);
    if let Some(first) = lines.next() {
        eprintln!("error: {first}");
    }
    for cause in lines {
        eprintln!("  caused by: {cause}");
    }
}

fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    match e.downcast_ref::<tonic::Status>() {
        Some(s) if s.message().is_empty() => format!("{:?}", s.code()),
        Some(s) => format!("{} ({:?})", s.message(), s.code()),
        None => e.to_string(),
    }
}

pub fn code_for(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if cause.downcast_ref::<Unreachable>().is_some() {
            return UNREACHABLE;
        }
        if let Some(s) = cause.downcast_ref::<tonic::Status>() {
            return match s.code() {
                Code::NotFound => NOT_FOUND,
                Code::Unauthenticated | Code::PermissionDenied => REFUSED,
                Code::Unavailable => UNREACHABLE,
                Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::AlreadyExists
                | Code::OutOfRange
                | Code::ResourceExhausted => INVALID,
                _ => FAILURE,
            };
        }
    }
    FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_status_codes_through_context() {
        let e = anyhow::Error::new(tonic::Status::not_found("sandbox x not found"))
            .context("get sandbox x");
        assert_eq!(code_for(&e), NOT_FOUND);
        let e = anyhow::Error::new(tonic::Status::unauthenticated("")).context("list");
        assert_eq!(code_for(&e), REFUSED);
        let e = anyhow::Error::new(Unreachable {
            address: "http://127.0.0.1:1".into(),
            source: None,
        })
        .context("list sandboxes");
        assert_eq!(code_for(&e), UNREACHABLE);
        assert_eq!(code_for(&anyhow::anyhow!("boom")), FAILURE);
    }

    #[test]
    fn describes_status_by_message_and_code() {
        let s = tonic::Status::invalid_argument("vcpus must be 1-64");
        assert_eq!(describe(&s), "vcpus must be 1-64 (InvalidArgument)");
    }
}
