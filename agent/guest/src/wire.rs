//! Turning outcomes into wire values: exit statuses into `EndEvent`s, errors into
//! gRPC statuses whose message carries the whole cause chain.

use std::io;

use tonic::Code;
use wrenn_proto::process::process_event::EndEvent;

use crate::reaper::ExitStatus;

/// `EndEvent` of a finished process, in envd's wording: `exit status 1`,
/// `signal: killed`; signals as `128 + n`.
pub fn end_event(status: ExitStatus) -> EndEvent {
    match status {
        ExitStatus::Exited(code) => EndEvent {
            exit_code: code,
            exited: true,
            status: format!("exit status {code}"),
            error: None,
        },
        ExitStatus::Signaled { signal, core } => EndEvent {
            exit_code: 128 + signal,
            exited: false,
            status: format!(
                "signal: {}{}",
                signal_name(signal),
                if core { " (core dumped)" } else { "" }
            ),
            error: None,
        },
    }
}

/// Go's names for the common signals (what envd reports), else `signal <n>`.
fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "hangup",
        libc::SIGINT => "interrupt",
        libc::SIGQUIT => "quit",
        libc::SIGILL => "illegal instruction",
        libc::SIGTRAP => "trace/breakpoint trap",
        libc::SIGABRT => "aborted",
        libc::SIGBUS => "bus error",
        libc::SIGFPE => "floating point exception",
        libc::SIGKILL => "killed",
        libc::SIGUSR1 => "user defined signal 1",
        libc::SIGSEGV => "segmentation fault",
        libc::SIGUSR2 => "user defined signal 2",
        libc::SIGPIPE => "broken pipe",
        libc::SIGALRM => "alarm clock",
        libc::SIGTERM => "terminated",
        _ => return format!("signal {signal}"),
    };
    name.to_owned()
}

pub use wrenn_types::chain;

/// The gRPC code for an I/O failure.
pub fn io_code(err: &io::Error) -> Code {
    use io::ErrorKind as K;
    match err.kind() {
        K::NotFound => Code::NotFound,
        K::PermissionDenied => Code::PermissionDenied,
        K::AlreadyExists => Code::AlreadyExists,
        K::InvalidInput | K::InvalidFilename => Code::InvalidArgument,
        K::NotADirectory
        | K::IsADirectory
        | K::DirectoryNotEmpty
        | K::CrossesDevices
        | K::ReadOnlyFilesystem => Code::FailedPrecondition,
        K::StorageFull | K::QuotaExceeded | K::FileTooLarge => Code::ResourceExhausted,
        _ => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_events_follow_envd_wording() {
        let ok = end_event(ExitStatus::Exited(0));
        assert_eq!(
            (ok.exit_code, ok.exited, ok.status.as_str()),
            (0, true, "exit status 0")
        );
        let killed = end_event(ExitStatus::Signaled {
            signal: 9,
            core: false,
        });
        assert_eq!(
            (killed.exit_code, killed.exited, killed.status.as_str()),
            (137, false, "signal: killed")
        );
        let segv = end_event(ExitStatus::Signaled {
            signal: 11,
            core: true,
        });
        assert_eq!(segv.status, "signal: segmentation fault (core dumped)");
        assert_eq!(
            end_event(ExitStatus::Signaled {
                signal: 40,
                core: false
            })
            .status,
            "signal: signal 40"
        );
    }

    #[test]
    fn chains_join_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("writing /x")]
        struct Outer(#[source] io::Error);
        let err = Outer(io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(chain(&err), "writing /x: entity not found");
        assert_eq!(io_code(&err.0), Code::NotFound);
    }
}
