//! API keys (hashes only) and hosts.

use chrono::{DateTime, Utc};

use super::records::{from_ms, to_ms};
use super::{ApiKeyRecord, HostRecord, Store, StoreError, with_pool};

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: String,
    name: String,
    key_hash: String,
    created_at: i64,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
}

impl From<ApiKeyRow> for ApiKeyRecord {
    fn from(r: ApiKeyRow) -> Self {
        ApiKeyRecord {
            id: r.id,
            name: r.name,
            key_hash: r.key_hash,
            created_at: from_ms(r.created_at),
            revoked_at: r.revoked_at.map(from_ms),
            last_used_at: r.last_used_at.map(from_ms),
        }
    }
}

#[derive(sqlx::FromRow)]
struct HostRow {
    id: String,
    agent_address: String,
    proxy_address: String,
    created_at: i64,
    updated_at: i64,
}

impl Store {
    /// Stores a new key record. [`StoreError::ApiKeyExists`] when its id or
    /// hash is taken.
    pub async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let res = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO api_keys (id, name, key_hash, created_at, revoked_at, last_used_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&key.id)
            .bind(&key.name)
            .bind(&key.key_hash)
            .bind(to_ms(key.created_at))
            .bind(key.revoked_at.map(to_ms))
            .bind(key.last_used_at.map(to_ms))
            .execute(pool)
            .await
            .map(|_| ())
        });
        match res {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Err(StoreError::ApiKeyExists(key.id.clone()))
            }
            Err(source) => Err(StoreError::Query {
                op: "insert_api_key",
                source,
            }),
        }
    }

    /// The key whose hash is `key_hash`, unless revoked.
    pub async fn find_active_api_key(
        &self,
        key_hash: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row: Option<ApiKeyRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, name, key_hash, created_at, revoked_at, last_used_at FROM api_keys \
                 WHERE key_hash = $1 AND revoked_at IS NULL",
            )
            .bind(key_hash)
            .fetch_optional(pool)
            .await
        })
        .map_err(StoreError::query("find_active_api_key"))?;
        Ok(row.map(Into::into))
    }

    /// Every key, revoked ones included, oldest first.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows: Vec<ApiKeyRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, name, key_hash, created_at, revoked_at, last_used_at FROM api_keys \
                 ORDER BY created_at, id",
            )
            .fetch_all(pool)
            .await
        })
        .map_err(StoreError::query("list_api_keys"))?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// How many keys are not revoked.
    pub async fn count_active_api_keys(&self) -> Result<u64, StoreError> {
        let (n,): (i64,) = with_pool!(self, |pool| {
            sqlx::query_as("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL")
                .fetch_one(pool)
                .await
        })
        .map_err(StoreError::query("count_active_api_keys"))?;
        Ok(n.max(0).cast_unsigned())
    }

    /// Revokes key `id`. Returns false when there is no such active key.
    pub async fn revoke_api_key(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = with_pool!(self, |pool| {
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(to_ms(at))
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
        .map_err(StoreError::query("revoke_api_key"))?;
        Ok(done > 0)
    }

    /// Records that key `id` was used at `at`, unless its last use on
    /// record is less than `min_gap` older. Returns whether it wrote.
    pub async fn touch_api_key(
        &self,
        id: &str,
        at: DateTime<Utc>,
        min_gap: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let gap = i64::try_from(min_gap.as_millis()).unwrap_or(i64::MAX);
        let at = to_ms(at);
        let done = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $2 \
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= $3)",
            )
            .bind(id)
            .bind(at)
            .bind(at.saturating_sub(gap))
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .map_err(StoreError::query("touch_api_key"))?;
        Ok(done > 0)
    }

    /// Inserts a host or updates its addresses (`created_at` is kept).
    pub async fn upsert_host(&self, host: &HostRecord) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO hosts (id, agent_address, proxy_address, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (id) DO UPDATE SET agent_address = excluded.agent_address, \
                 proxy_address = excluded.proxy_address, updated_at = excluded.updated_at",
            )
            .bind(&host.id)
            .bind(&host.agent_address)
            .bind(&host.proxy_address)
            .bind(to_ms(host.created_at))
            .bind(to_ms(host.updated_at))
            .execute(pool)
            .await
            .map(|_| ())
        })
        .map_err(StoreError::query("upsert_host"))?;
        Ok(())
    }

    /// Every host, by id.
    pub async fn list_hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        let rows: Vec<HostRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, agent_address, proxy_address, created_at, updated_at FROM hosts \
                 ORDER BY id",
            )
            .fetch_all(pool)
            .await
        })
        .map_err(StoreError::query("list_hosts"))?;
        Ok(rows
            .into_iter()
            .map(|r| HostRecord {
                id: r.id,
                agent_address: r.agent_address,
                proxy_address: r.proxy_address,
                created_at: from_ms(r.created_at),
                updated_at: from_ms(r.updated_at),
            })
            .collect())
    }
}
