//! `wrenn.v1.Keys`: create, list and revoke API keys.
//!
//! Every key can do everything (no scopes), this service included: any key
//! may create keys and revoke any key. Create answers the whole key once;
//! the store keeps its SHA-256 only. Revoke goes through the
//! [`Authenticator`] that checks every request (gRPC and E2B's REST API), so
//! the revoked key is refused from the very next request on this control
//! plane (see `auth` for other control planes).
//!
//! # Design
//!
//! Revoke takes an id, a name when exactly one active key has it, or the
//! whole key (to revoke a leaked key whose id nobody noted; it is never
//! echoed back). It refuses the key making the call unless `force`: that one
//! rule keeps a user from cutting off the very session they are typing in,
//! and, because the last active key can only be revoked with itself, it also
//! keeps the control plane from being left with no key at all. With `force`
//! it does as told; a control plane with no active key writes a new admin
//! key on its next start.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};
use wrenn_proto::wrenn::v1::keys_server::Keys;
use wrenn_proto::wrenn::v1::{
    ApiKey as KeyMessage, CreateKeyRequest, CreateKeyResponse, ListKeysRequest, ListKeysResponse,
    RevokeKeyRequest,
};

use super::store_error;
use crate::auth::{self, ApiKey, AuthenticatedKey, Authenticator};
use crate::state::ControlState;
use crate::store::{ApiKeyRecord, now_ms};

/// Longest key name.
pub const MAX_KEY_NAME: usize = 64;
/// Longest id or name `Revoke` looks for (a whole key is shorter).
const MAX_REF: usize = 64;

/// The `Keys` service.
#[derive(Debug, Clone)]
pub struct KeysService {
    state: Arc<ControlState>,
    auth: Arc<Authenticator>,
}

impl KeysService {
    /// `auth` must be the authenticator that checks this control plane's
    /// requests: revocations evict its cache.
    pub fn new(state: Arc<ControlState>, auth: Arc<Authenticator>) -> Self {
        KeysService { state, auth }
    }
}

/// 1-[`MAX_KEY_NAME`] letters, digits, `-`, `_` or `.`, starting with a
/// letter or digit, and shaped like neither an id (`key_…`, which `Revoke`
/// looks up first) nor a key (`wrn_…`, which a name would store in clear).
fn check_name(name: &str) -> Result<(), Status> {
    let refuse = |why: &str| {
        let shown: String = name.chars().take(MAX_KEY_NAME).collect();
        let more = if shown.len() < name.len() { "…" } else { "" };
        Err(Status::invalid_argument(format!(
            "name: {shown:?}{more} {why}"
        )))
    };
    if name.is_empty() {
        return Err(Status::invalid_argument(
            "name: empty; leave it out for a key without a name",
        ));
    }
    if name.len() > MAX_KEY_NAME {
        return refuse(&format!(
            "is {} bytes long; at most {MAX_KEY_NAME}",
            name.len()
        ));
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok_chars || !name.as_bytes()[0].is_ascii_alphanumeric() {
        return refuse(
            "is not a key name: expected letters, digits, '-', '_' or '.', starting with a letter or digit",
        );
    }
    if name.starts_with("key_") || name.starts_with(auth::API_KEY_PREFIX) {
        return refuse("looks like a key's id or a key: a name may not start with key_ or wrn_");
    }
    Ok(())
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos().try_into().unwrap_or(0),
    }
}

fn to_proto(r: &ApiKeyRecord, caller: Option<&AuthenticatedKey>) -> KeyMessage {
    KeyMessage {
        id: r.id.clone(),
        name: r.name.clone(),
        created_at: Some(timestamp(r.created_at)),
        last_used_at: r.last_used_at.map(timestamp),
        revoked_at: r.revoked_at.map(timestamp),
        current: caller.is_some_and(|c| c.id == r.id),
    }
}

/// `key_x (ci)`, or `key_x` for a key without a name.
fn describe(r: &ApiKeyRecord) -> String {
    if r.name.is_empty() {
        r.id.clone()
    } else {
        format!("{} ({})", r.id, r.name)
    }
}

/// The key `given` names among `keys`: an id, a whole key, or a name that
/// one active key has (a name only revoked keys have finds the newest of
/// them, so the caller hears it is revoked already).
fn resolve<'a>(keys: &'a [ApiKeyRecord], given: &str) -> Result<&'a ApiKeyRecord, Status> {
    if given.is_empty() {
        return Err(Status::invalid_argument(
            "key: empty; give a key's id or name (see `wrenn key ls`)",
        ));
    }
    if let Some(key) = ApiKey::parse(given) {
        let hash = key.hash();
        return keys
            .iter()
            .find(|k| k.key_hash == hash)
            .ok_or_else(|| Status::not_found("no API key matches the key given"));
    }
    if given.len() > MAX_REF {
        return Err(Status::invalid_argument(format!(
            "key: {} bytes is too long for a key's id or name (at most {MAX_REF})",
            given.len()
        )));
    }
    if let Some(k) = keys.iter().find(|k| k.id == given) {
        return Ok(k);
    }
    let named: Vec<&ApiKeyRecord> = keys.iter().filter(|k| k.name == given).collect();
    let active: Vec<&ApiKeyRecord> = named
        .iter()
        .copied()
        .filter(|k| k.revoked_at.is_none())
        .collect();
    match (active.as_slice(), named.last()) {
        ([one], _) => Ok(one),
        ([], Some(revoked)) => Ok(revoked),
        ([], None) => Err(Status::not_found(format!(
            "no API key has the id or name {given:?} (see `wrenn key ls`)"
        ))),
        (many, _) => Err(Status::invalid_argument(format!(
            "{} active keys are named {given:?} ({}): give the id of the one to revoke",
            many.len(),
            many.iter()
                .map(|k| k.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[tonic::async_trait]
impl Keys for KeysService {
    async fn create(
        &self,
        request: Request<CreateKeyRequest>,
    ) -> Result<Response<CreateKeyResponse>, Status> {
        let caller = request.extensions().get::<AuthenticatedKey>().cloned();
        let name = request.into_inner().name;
        if let Some(n) = &name {
            check_name(n)?;
        }
        let (rec, key) = auth::create_api_key(&self.state.store, name.as_deref().unwrap_or(""))
            .await
            .map_err(|e| match e {
                auth::AuthError::Store(e) => store_error(e),
                other => Status::internal(crate::error::Chain(&other).to_string()),
            })?;
        tracing::info!(
            key_id = %rec.id,
            name = %rec.name,
            by = caller.as_ref().map_or("", |c| c.id.as_str()),
            "API key created"
        );
        Ok(Response::new(CreateKeyResponse {
            key: Some(to_proto(&rec, caller.as_ref())),
            secret: key.expose().to_owned(),
        }))
    }

    async fn list(
        &self,
        request: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysResponse>, Status> {
        let caller = request.extensions().get::<AuthenticatedKey>();
        let keys = self
            .state
            .store
            .list_api_keys()
            .await
            .map_err(store_error)?
            .iter()
            .map(|r| to_proto(r, caller))
            .collect();
        Ok(Response::new(ListKeysResponse { keys }))
    }

    async fn revoke(
        &self,
        request: Request<RevokeKeyRequest>,
    ) -> Result<Response<KeyMessage>, Status> {
        let caller = request.extensions().get::<AuthenticatedKey>().cloned();
        let req = request.into_inner();
        let keys = self
            .state
            .store
            .list_api_keys()
            .await
            .map_err(store_error)?;
        let target = resolve(&keys, &req.key)?;
        let already = |at: DateTime<Utc>| {
            Status::failed_precondition(format!(
                "key {} was already revoked at {}",
                describe(target),
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ))
        };
        if let Some(at) = target.revoked_at {
            return Err(already(at));
        }
        let is_caller = caller.as_ref().is_some_and(|c| c.id == target.id);
        if is_caller && !req.force {
            let active = keys.iter().filter(|k| k.revoked_at.is_none()).count();
            let why = if active <= 1 {
                "and the last active key: revoking it leaves no key that works until the \
                 control plane's next start writes a new admin key; create another key first, \
                 or force it (`wrenn key rm --force`)"
            } else {
                "and would refuse your next request: revoke it with another key, or force \
                 it (`wrenn key rm --force`)"
            };
            return Err(Status::failed_precondition(format!(
                "key {} is the key making this call {why}",
                describe(target)
            )));
        }
        let at = now_ms();
        if !self
            .auth
            .revoke(&target.id, at)
            .await
            .map_err(store_error)?
        {
            // Revoked by someone else since the list above.
            return Err(already(at));
        }
        tracing::info!(
            key_id = %target.id,
            name = %target.name,
            by = caller.as_ref().map_or("", |c| c.id.as_str()),
            force = req.force,
            "API key revoked"
        );
        let mut rec = target.clone();
        rec.revoked_at = Some(at);
        Ok(Response::new(to_proto(&rec, caller.as_ref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, name: &str, revoked: bool) -> ApiKeyRecord {
        ApiKeyRecord {
            id: id.into(),
            name: name.into(),
            key_hash: format!("hash-{id}"),
            created_at: now_ms(),
            revoked_at: revoked.then(now_ms),
            last_used_at: None,
        }
    }

    #[test]
    fn names_follow_the_rules() {
        for good in [
            "ci",
            "a",
            "CI-runner_2.old",
            &"x".repeat(MAX_KEY_NAME),
            "keys",
        ] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
        for (bad, says) in [
            ("", "empty"),
            (&"x".repeat(MAX_KEY_NAME + 1) as &str, "at most 64"),
            ("-ci", "not a key name"),
            ("ci runner", "not a key name"),
            ("cï", "not a key name"),
            ("key_abc", "key_"),
            ("wrn_abc", "wrn_"),
        ] {
            let e = check_name(bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
            assert!(e.message().contains(says), "{bad:?}: {}", e.message());
        }
        // A long name is not echoed whole.
        let e = check_name(&"y".repeat(10_000)).unwrap_err();
        assert!(e.message().len() < 200, "{}", e.message());
    }

    #[test]
    fn revoke_finds_by_id_name_or_key() {
        let key = ApiKey::generate();
        let mut leaked = rec("key_leaked", "", false);
        leaked.key_hash = key.hash();
        let keys = vec![
            rec("key_a", "admin", false),
            rec("key_b", "ci", false),
            rec("key_c", "ci", false),
            rec("key_d", "old", true),
            rec("key_e", "old", true),
            rec("key_f", "solo", false),
            leaked,
        ];
        assert_eq!(resolve(&keys, "key_b").unwrap().id, "key_b");
        assert_eq!(resolve(&keys, "admin").unwrap().id, "key_a");
        assert_eq!(resolve(&keys, "solo").unwrap().id, "key_f");
        assert_eq!(resolve(&keys, key.expose()).unwrap().id, "key_leaked");
        assert_eq!(resolve(&keys, "old").unwrap().id, "key_e", "newest revoked");

        let e = resolve(&keys, "ci").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("key_b, key_c"), "{}", e.message());
        let e = resolve(&keys, "nosuch").unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(e.message().contains("\"nosuch\""), "{}", e.message());
        let other = ApiKey::generate();
        let e = resolve(&keys, other.expose()).unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(!e.message().contains(other.expose()), "{}", e.message());
        assert_eq!(
            resolve(&keys, "").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let e = resolve(&keys, &"z".repeat(5000)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().len() < 200, "{}", e.message());
    }
}
