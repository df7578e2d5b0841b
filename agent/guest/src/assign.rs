//! `wrenn.v1.Guest`: what only the host agent asks of a guest.
//!
//! `Assign` hands a sandbox the host made ahead of time (its warm pool) to the
//! sandbox a create named: processes started from then on get the new
//! `WRENN_SANDBOX_ID` and the create's environment, and `/etc/hosts` names the
//! new id where it named the old. The hostname is the host's to change (the
//! sandbox's root may not). Calls carry the guest's token like every other.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use wrenn_proto::SandboxId;
use wrenn_proto::wrenn::v1::guest_server::Guest;
use wrenn_proto::wrenn::v1::{AssignRequest, AssignResponse};

use crate::env::BaseEnv;
use crate::envd::AccessToken;

/// Serves `wrenn.v1.Guest`.
#[derive(Debug, Clone)]
pub struct GuestService {
    env: Arc<BaseEnv>,
    hosts: PathBuf,
    token: AccessToken,
}

impl GuestService {
    pub fn new(env: Arc<BaseEnv>, hosts: PathBuf, token: AccessToken) -> Self {
        Self { env, hosts, token }
    }
}

#[tonic::async_trait]
impl Guest for GuestService {
    async fn assign(
        &self,
        req: Request<AssignRequest>,
    ) -> Result<Response<AssignResponse>, Status> {
        let req = req.into_inner();
        if !SandboxId::is_valid(&req.sandbox_id) {
            return Err(Status::invalid_argument(format!(
                "sandbox_id {:?} is not a sandbox id (1-40 lowercase letters and digits)",
                req.sandbox_id
            )));
        }
        check_env(&req.env)?;
        if !req.envd_access_token.is_empty() {
            self.token.set(req.envd_access_token.clone());
        }
        let old = self.env.assign(&req.sandbox_id, &req.env);
        if let Some(old) = old.filter(|o| *o != req.sandbox_id) {
            // A sandbox without the file (or with it read-only) still runs;
            // only name lookups of its own hostname miss.
            match std::fs::read_to_string(&self.hosts) {
                Ok(text) => {
                    let renamed = rename_host(&text, &old, &req.sandbox_id);
                    if renamed != text
                        && let Err(e) = std::fs::write(&self.hosts, renamed)
                    {
                        tracing::warn!(path = %self.hosts.display(), error = %e, "rewriting the hosts file");
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %self.hosts.display(), error = %e, "reading the hosts file")
                }
            }
        }
        tracing::debug!(sandbox_id = %req.sandbox_id, vars = req.env.len(), "assigned");
        Ok(Response::new(AssignResponse {}))
    }
}

/// Names an environment variable a process could not be given.
fn check_env(env: &HashMap<String, String>) -> Result<(), Status> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(Status::invalid_argument(format!(
                "env name {k:?} is empty or holds '=' or a NUL byte"
            )));
        }
        if v.contains('\0') {
            return Err(Status::invalid_argument(format!(
                "env {k}'s value holds a NUL byte"
            )));
        }
    }
    Ok(())
}

/// `hosts` with every name field equal to `old` replaced by `new`; comments,
/// spacing and other names kept.
fn rename_host(hosts: &str, old: &str, new: &str) -> String {
    let mut out = String::with_capacity(hosts.len() + new.len());
    for line in hosts.split_inclusive('\n') {
        let (body, comment) = match line.find('#') {
            Some(i) => line.split_at(i),
            None => (line, ""),
        };
        let mut first = true;
        let mut rest = body;
        while !rest.is_empty() {
            let start = rest.len() - rest.trim_start().len();
            out.push_str(&rest[..start]);
            rest = &rest[start..];
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let field = &rest[..end];
            // The first field is the address.
            out.push_str(if !first && field == old { new } else { field });
            first = false;
            rest = &rest[end..];
        }
        out.push_str(comment);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_the_hostname_and_nothing_else() {
        let hosts =
            "127.0.0.1\tlocalhost\n# pool\n10.0.0.2\tpool1 pool1x\n10.0.0.3  other pool1 # pool1\n";
        assert_eq!(
            rename_host(hosts, "pool1", "mine"),
            "127.0.0.1\tlocalhost\n# pool\n10.0.0.2\tmine pool1x\n10.0.0.3  other mine # pool1\n"
        );
        assert_eq!(rename_host("pool1 pool1", "pool1", "x"), "pool1 x");
        assert_eq!(rename_host("", "a", "b"), "");
    }

    #[test]
    fn env_names_are_checked() {
        let bad = |k: &str, v: &str| check_env(&HashMap::from([(k.to_owned(), v.to_owned())]));
        assert!(bad("A", "1").is_ok());
        for (k, v) in [("", "1"), ("A=B", "1"), ("A\0", "1"), ("A", "x\0")] {
            let e = bad(k, v).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{k:?}={v:?}");
        }
    }
}
