//! The durable record: sandboxes, their metadata, API keys, hosts and
//! templates.
//!
//! # Design
//!
//! [`Store`] is one enum over two sqlx pools, SQLite (the default, a file at
//! `$WRENN_DIR/wrenn.db`, nothing to install) and PostgreSQL (when
//! `DATABASE_URL=postgres://…`). Every query is written once, in SQL both
//! accept (`$1` placeholders, `ON CONFLICT … DO UPDATE`, BIGINT milliseconds),
//! and the `with_pool!` macro expands the same code for each pool, so the two
//! backends cannot drift apart. The migrations in `control/migrations/` are
//! embedded in the binary and applied by [`Store::open`].
//!
//! Metadata lives in its own table with an index on `(key, value)`; a metadata
//! filter on list is one `IN (… GROUP BY … HAVING COUNT(*) = n)` subquery.
//!
//! # Limitations
//!
//! - A migration that needs dialect-specific SQL would have to split the
//!   migration directory per backend.
//! - Environment variables of a sandbox are not stored (they may hold secrets).

mod keys;
mod records;
mod sandboxes;
mod templates;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};
use wrenn_types::SandboxId;

pub use records::{
    ApiKeyRecord, HostRecord, LiveUpdate, RecordState, SandboxFilter, SandboxRecord, SpecRecord,
    UnknownState, now_ms,
};
pub use templates::{TemplateDefaults, TemplateRecord};

/// File name of the SQLite store inside `$WRENN_DIR`.
pub const SQLITE_FILE: &str = "wrenn.db";
/// Connections per pool.
const MAX_CONNECTIONS: u32 = 8;
/// How long a query waits for a free connection (and SQLite for its write lock).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// An SQLite database file (created if missing).
    Sqlite(PathBuf),
    /// `postgres://…`, `postgresql://…` or `sqlite:…`.
    Url(String),
}

impl StoreConfig {
    /// `DATABASE_URL` when it is set and not empty, else `<wrenn_dir>/wrenn.db`.
    pub fn from_env(wrenn_dir: &Path) -> Self {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => StoreConfig::Url(url),
            _ => StoreConfig::Sqlite(wrenn_dir.join(SQLITE_FILE)),
        }
    }

    /// A description safe to log: the password of a URL is masked.
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::Sqlite(path) => format!("sqlite:{}", path.display()),
            StoreConfig::Url(url) => redact_url(url),
        }
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported store URL {url:?}: expected postgres://…, postgresql://… or sqlite:PATH")]
    UnsupportedUrl { url: String },
    #[error("invalid store URL {url}")]
    InvalidUrl {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create the store directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the SQLite store {location}")]
    OpenSqlite {
        location: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot connect to the PostgreSQL store {url}")]
    ConnectPostgres {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot apply the schema migrations to the {backend} store")]
    Migrate {
        backend: &'static str,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("store query {op} failed")]
    Query {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("sandbox {0} already exists")]
    SandboxExists(SandboxId),
    #[error("API key {0} already exists")]
    ApiKeyExists(String),
    #[error(
        "template {name} is in use by {}: destroy them first, or force the removal",
        list_ids(sandboxes)
    )]
    TemplateInUse {
        name: String,
        sandboxes: Vec<SandboxId>,
    },
    #[error("corrupt row {id} in {table}: {detail}")]
    Corrupt {
        table: &'static str,
        id: String,
        detail: String,
    },
}

/// `a, b and c` (at most 10 named, then how many more).
fn list_ids(ids: &[SandboxId]) -> String {
    const SHOWN: usize = 10;
    let mut names: Vec<String> = ids.iter().take(SHOWN).map(|i| i.to_string()).collect();
    if ids.len() > SHOWN {
        names.push(format!("{} more", ids.len() - SHOWN));
    }
    match names.split_last() {
        Some((last, [])) => format!("sandbox {last}"),
        Some((last, rest)) => format!("sandboxes {} and {last}", rest.join(", ")),
        None => "no sandbox".to_owned(),
    }
}

impl StoreError {
    pub(crate) fn query(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Query { op, source }
    }
}

/// The control plane's store: one of two backends, same queries.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool `$store` holds. The body
/// is the same code for both backends; only the types differ.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite($pool) => $body,
            $crate::store::Store::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

impl Store {
    /// Opens (creating an SQLite file and its directory if needed) and applies
    /// every embedded migration not yet applied.
    pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let store = match config {
            StoreConfig::Sqlite(path) => {
                create_parent_dir(path)?;
                let opts = SqliteConnectOptions::new().filename(path);
                open_sqlite(opts, config.describe()).await?
            }
            StoreConfig::Url(url) => {
                let lower = url.to_ascii_lowercase();
                if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
                    open_postgres(url).await?
                } else if lower.starts_with("sqlite:") {
                    let opts = SqliteConnectOptions::from_str(url).map_err(|source| {
                        StoreError::InvalidUrl {
                            url: redact_url(url),
                            source,
                        }
                    })?;
                    create_parent_dir(opts.get_filename())?;
                    open_sqlite(opts, config.describe()).await?
                } else {
                    return Err(StoreError::UnsupportedUrl {
                        url: redact_url(url),
                    });
                }
            }
        };
        store.migrate().await?;
        Ok(store)
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let backend = self.backend();
        with_pool!(self, |pool| MIGRATOR.run(pool).await)
            .map_err(|source| StoreError::Migrate { backend, source })
    }

    /// Closes every pooled connection; waits for queries in flight.
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }
}

fn create_parent_dir(path: &Path) -> Result<(), StoreError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

async fn open_sqlite(opts: SqliteConnectOptions, location: String) -> Result<Store, StoreError> {
    let opts = opts
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(ACQUIRE_TIMEOUT);
    let pool = SqlitePoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(opts)
        .await
        .map_err(|source| StoreError::OpenSqlite { location, source })?;
    Ok(Store::Sqlite(pool))
}

async fn open_postgres(url: &str) -> Result<Store, StoreError> {
    let redacted = redact_url(url);
    let opts = PgConnectOptions::from_str(url).map_err(|source| StoreError::InvalidUrl {
        url: redacted.clone(),
        source,
    })?;
    let failed = |source| StoreError::ConnectPostgres {
        url: redacted.clone(),
        source,
    };
    // One plain attempt first: a refused or misconfigured server fails at
    // once with its own error, instead of after the pool's retries.
    let probe = tokio::time::timeout(ACQUIRE_TIMEOUT, opts.connect())
        .await
        .map_err(|_| failed(sqlx::Error::PoolTimedOut))?
        .map_err(failed)?;
    let _ = probe.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(opts)
        .await
        .map_err(failed)?;
    Ok(Store::Postgres(pool))
}

/// `scheme://user:secret@host/db` → `scheme://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:***{}",
        &url[..scheme_end + 3],
        &userinfo[..colon],
        &rest[at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_only_the_password() {
        assert_eq!(
            redact_url("postgres://wrenn:s3cret@127.0.0.1:5432/db?sslmode=disable"),
            "postgres://wrenn:***@127.0.0.1:5432/db?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://wrenn@localhost/db"),
            "postgres://wrenn@localhost/db"
        );
        assert_eq!(redact_url("sqlite:/tmp/x.db"), "sqlite:/tmp/x.db");
    }

    #[tokio::test]
    async fn unsupported_url_is_named() {
        let err = Store::open(&StoreConfig::Url("mysql://u:pw@h/db".into()))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("mysql://u:***@h/db"), "{msg}");
        assert!(msg.contains("expected postgres://"), "{msg}");
    }
}
