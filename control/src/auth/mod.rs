//! API keys: generation, hashing, the first-start admin key, and checking the
//! `authorization: Bearer wrn_…` header of every request (and E2B's
//! `X-API-Key`, which `e2b.rs` hands to the same [`Authenticator`]).
//!
//! # Design
//!
//! A key is `wrn_` followed by 32 random letters and digits (190 bits from the
//! OS-seeded CSPRNG). Only its SHA-256 is stored: the key is already
//! high-entropy, so a slow password hash would add latency to every call and no
//! strength. A malformed header is refused without touching the store; a
//! well-formed key is looked up by hash and, when found, cached in memory for
//! [`CACHE_TTL`] (one second) so the hot path (an exec every few
//! milliseconds) asks the store at most once a second per key.
//!
//! Every failure is `UNAUTHENTICATED` with the same message: a caller learns
//! nothing about which part was wrong or whether the key ever existed.
//!
//! Every key can do everything: there are no scopes, and any key may create
//! and revoke keys. The admin key is only the first key.
//!
//! ## Revocation
//!
//! [`Authenticator::revoke`] marks the key revoked in the store and then
//! bumps the cache's epoch: every cached entry carries the epoch it was
//! looked up in and counts only while that is still current, so the very
//! next request with the revoked key — gRPC or REST, they share the
//! authenticator — goes to the store and is refused. A lookup that started
//! before the revocation and finishes after it caches its answer under the
//! old epoch, where it is never used, so it cannot bring the key back.
//!
//! Several control planes sharing one PostgreSQL (issue 24) do not see each
//! other's caches. The choice here is the short [`CACHE_TTL`]: a key revoked
//! through one control plane is refused by that one at once and by every
//! other within one second, with no message between them that could be
//! lost. (A PostgreSQL `NOTIFY` on revocation could make the others
//! immediate too; the TTL would stay as the bound when a notification is
//! missed.)
//!
//! ## Last use
//!
//! A lookup that reaches the store also records the key's last use, at most
//! once a minute per key and control plane ([`LAST_USED_GRANULARITY`]), in
//! a task of its own so no request waits for the write.
//!
//! # Limitations
//!
//! - Revocation refuses new requests; a stream already open with the key (an
//!   interactive terminal, a streaming exec, a build) runs until it ends.
//! - On a control plane other than the one that revoked a key, the key keeps
//!   working for up to [`CACHE_TTL`].
//! - Keys carry no scopes.

mod layer;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::store::{ApiKeyRecord, Store, StoreError, now_ms};

pub use layer::{AuthLayer, AuthService, AuthenticatedKey};

/// Every key starts with this.
pub const API_KEY_PREFIX: &str = "wrn_";
/// Random characters after the prefix.
pub const API_KEY_RANDOM_LEN: usize = 32;
/// File in `$WRENN_DIR` that receives the admin key on first start.
pub const ADMIN_KEY_FILE: &str = "admin.key";
/// How long a verified key is trusted without asking the store again; also
/// the longest a key revoked through another control plane keeps working.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// How precisely a key's last use is recorded.
pub const LAST_USED_GRANULARITY: Duration = Duration::from_secs(60);
/// The one message every refused request gets.
pub const UNAUTHENTICATED_MESSAGE: &str = "missing or invalid API key";

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Errors of key management.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the API key store")]
    Store(#[from] StoreError),
    #[error("cannot create directory {path} for the admin key")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the admin key to {path}")]
    WriteKeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A whole API key. Its `Debug` shows only the prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({API_KEY_PREFIX}…)")
    }
}

impl ApiKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut s = String::with_capacity(API_KEY_PREFIX.len() + API_KEY_RANDOM_LEN);
        s.push_str(API_KEY_PREFIX);
        for _ in 0..API_KEY_RANDOM_LEN {
            s.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
        }
        ApiKey(s)
    }

    /// `s` when it has the shape of a key (prefix, length, alphabet).
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix(API_KEY_PREFIX)?;
        (rest.len() == API_KEY_RANDOM_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| ApiKey(s.to_owned()))
    }

    /// The key itself, for writing to a file or a header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the key, lowercase hex: what the store keeps.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

/// Creates and stores a new key named `name`; the key itself is returned once
/// and never stored.
pub async fn create_api_key(
    store: &Store,
    name: &str,
) -> Result<(ApiKeyRecord, ApiKey), AuthError> {
    let key = ApiKey::generate();
    let record = ApiKeyRecord {
        id: new_key_id(),
        name: name.to_owned(),
        key_hash: key.hash(),
        created_at: now_ms(),
        revoked_at: None,
        last_used_at: None,
    };
    store.insert_api_key(&record).await?;
    Ok((record, key))
}

/// On first start (no active key in the store) creates an admin key and writes
/// it to `<wrenn_dir>/admin.key` with mode 0600. Returns the file's path when a
/// key was created, `None` when keys already exist.
///
/// The file is written before the key is stored: a crash in between leaves a
/// useless file (replaced on the next start), never a stored key that nobody
/// knows.
pub async fn ensure_admin_key(
    store: &Store,
    wrenn_dir: &Path,
) -> Result<Option<PathBuf>, AuthError> {
    if store.count_active_api_keys().await? > 0 {
        return Ok(None);
    }
    let key = ApiKey::generate();
    let path = wrenn_dir.join(ADMIN_KEY_FILE);
    write_key_file(&path, &key)?;
    let record = ApiKeyRecord {
        id: new_key_id(),
        name: "admin".to_owned(),
        key_hash: key.hash(),
        created_at: now_ms(),
        revoked_at: None,
        last_used_at: None,
    };
    store.insert_api_key(&record).await?;
    tracing::info!(path = %path.display(), key_id = %record.id, "created the admin API key");
    Ok(Some(path))
}

/// Writes `key` and a newline to `path` atomically (temporary file, fsync,
/// rename), readable by the owner only.
fn write_key_file(path: &Path, key: &ApiKey) -> Result<(), AuthError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    wrenn_proto::auth::private_dir(dir).map_err(|source| AuthError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let tmp = dir.join(format!(".{ADMIN_KEY_FILE}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(key.expose().as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|source| {
        let _ = fs::remove_file(&tmp);
        AuthError::WriteKeyFile {
            path: path.to_owned(),
            source,
        }
    })
}

/// A public identifier for a key record (not derived from the key).
fn new_key_id() -> String {
    let mut rng = rand::rng();
    let suffix: String = (0..12)
        .map(|_| ALPHABET[rng.random_range(26..ALPHABET.len())] as char)
        .collect();
    format!("key_{}", suffix.to_ascii_lowercase())
}

/// Checks bearer keys against the store, with a short-lived cache of keys that
/// passed; revokes keys so that the cache forgets them at once.
#[derive(Debug)]
pub struct Authenticator {
    store: Store,
    cache: DashMap<String, Cached>,
    ttl: Duration,
    /// Bumped by every revocation; entries of an older epoch do not count.
    epoch: AtomicU64,
    /// When this control plane last recorded each key's use (by key id).
    touched: DashMap<String, Instant>,
}

/// A key that passed, when, and in which epoch.
#[derive(Debug)]
struct Cached {
    who: AuthenticatedKey,
    at: Instant,
    epoch: u64,
}

impl Authenticator {
    pub fn new(store: Store) -> Arc<Self> {
        Self::with_ttl(store, CACHE_TTL)
    }

    /// Like [`new`](Self::new) with another cache lifetime (tests use a long
    /// one to show that revocation does not wait for it).
    pub fn with_ttl(store: Store, ttl: Duration) -> Arc<Self> {
        Arc::new(Authenticator {
            store,
            cache: DashMap::new(),
            ttl,
            epoch: AtomicU64::new(0),
            touched: DashMap::new(),
        })
    }

    /// The key behind an `authorization` header value, or `None` for anything
    /// that is not a valid, unrevoked key. Store errors also refuse (and are
    /// logged), so a broken store never lets a request through.
    pub async fn authenticate(&self, header: Option<&[u8]>) -> Option<AuthenticatedKey> {
        let value = std::str::from_utf8(header?).ok()?;
        let (scheme, token) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let key = ApiKey::parse(token.trim())?;
        let hash = key.hash();
        // Read before the lookup: a revocation that lands during it makes
        // the answer's cache entry stale before anyone can use it.
        let epoch = self.epoch.load(Ordering::Acquire);
        if let Some(hit) = self.cache.get(&hash)
            && hit.epoch == epoch
            && hit.at.elapsed() < self.ttl
        {
            return Some(hit.who.clone());
        }
        match self.store.find_active_api_key(&hash).await {
            Ok(Some(rec)) => {
                let who = AuthenticatedKey {
                    id: rec.id,
                    name: rec.name,
                };
                self.cache.insert(
                    hash,
                    Cached {
                        who: who.clone(),
                        at: Instant::now(),
                        epoch,
                    },
                );
                self.record_use(&who.id);
                Some(who)
            }
            Ok(None) => {
                self.cache.remove(&hash);
                None
            }
            Err(e) => {
                tracing::error!(error = %wrenn_types::Chain(&e), "API key lookup failed; refusing");
                None
            }
        }
    }

    /// Writes key `id`'s last use, unless this control plane did so within
    /// [`LAST_USED_GRANULARITY`]; in a task of its own, so nobody waits.
    fn record_use(&self, id: &str) {
        let due = match self.touched.get(id) {
            Some(at) => at.elapsed() >= LAST_USED_GRANULARITY,
            None => true,
        };
        if !due {
            return;
        }
        self.touched.insert(id.to_owned(), Instant::now());
        let store = self.store.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            if let Err(e) = store
                .touch_api_key(&id, now_ms(), LAST_USED_GRANULARITY)
                .await
            {
                tracing::warn!(key_id = %id, error = %wrenn_types::Chain(&e), "cannot record the API key's last use");
            }
        });
    }

    /// Revokes key `id` in the store (as of `at`) and forgets every cached
    /// key, so the next request with it is refused on this control plane.
    /// Returns false when there is no such active key.
    pub async fn revoke(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = self.store.revoke_api_key(id, at).await?;
        // After the store write: a lookup from now on sees the revocation,
        // and every earlier one is of the old epoch.
        self.clear_cache();
        self.touched.remove(id);
        Ok(done)
    }

    /// Forgets cached keys (after a revocation made elsewhere, for
    /// instance): the next request of each key asks the store.
    pub fn clear_cache(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.cache.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let k = ApiKey::generate();
        assert!(k.expose().starts_with("wrn_"));
        assert_eq!(k.expose().len(), 4 + 32);
        assert_eq!(ApiKey::parse(k.expose()), Some(k.clone()));
        assert_ne!(ApiKey::generate(), k);
        assert_eq!(k.hash().len(), 64);
        assert!(!format!("{k:?}").contains(&k.expose()[4..]));
    }

    #[test]
    fn malformed_keys_are_rejected() {
        let good = ApiKey::generate();
        let long = format!("{}x", good.expose());
        let short = &good.expose()[..good.expose().len() - 1];
        let punct = format!("wrn_{}", "-".repeat(32));
        for bad in ["", "wrn_", "abc", short, &long, &punct, &good.expose()[4..]] {
            assert!(ApiKey::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn key_file_is_private_and_holds_the_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(ADMIN_KEY_FILE);
        let key = ApiKey::generate();
        write_key_file(&path, &key).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", key.expose())
        );
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(ADMIN_KEY_FILE)]);
    }
}
