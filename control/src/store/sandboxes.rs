//! Sandbox records and their metadata.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use wrenn_types::SandboxId;

use super::records::{from_ms, to_ms};
use super::{
    LiveUpdate, RecordState, SandboxFilter, SandboxRecord, SpecRecord, Store, StoreError, with_pool,
};

const SELECT_SANDBOXES: &str = "SELECT s.id, s.host_id, s.state, s.template, s.vcpus, \
     s.memory_mb, s.disk_mb, s.internet, s.timeout_secs, s.address, s.generation, s.backend, \
     s.created_at, s.expires_at, s.updated_at, s.stopped_at, s.stop_reason, \
     m.meta_key, m.meta_value \
     FROM sandboxes s LEFT JOIN sandbox_metadata m ON m.sandbox_id = s.id";

/// One row of `SELECT_SANDBOXES`: a sandbox joined with one of its metadata
/// entries (or none).
#[derive(sqlx::FromRow)]
struct SandboxRow {
    id: String,
    host_id: String,
    state: String,
    template: String,
    vcpus: i64,
    memory_mb: i64,
    disk_mb: i64,
    internet: bool,
    timeout_secs: i64,
    address: String,
    generation: i64,
    backend: String,
    created_at: i64,
    expires_at: Option<i64>,
    updated_at: i64,
    stopped_at: Option<i64>,
    stop_reason: String,
    meta_key: Option<String>,
    meta_value: Option<String>,
}

impl Store {
    /// Inserts a new record with its metadata in one transaction.
    /// [`StoreError::SandboxExists`] when the id is taken.
    pub async fn insert_sandbox(&self, rec: &SandboxRecord) -> Result<(), StoreError> {
        let op = "insert_sandbox";
        let res: Result<(), sqlx::Error> = with_pool!(self, |pool| {
            async {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO sandboxes (id, host_id, state, template, vcpus, memory_mb, disk_mb, \
                 internet, timeout_secs, address, generation, backend, created_at, expires_at, \
                 updated_at, stopped_at, stop_reason) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
            )
            .bind(rec.id.as_str())
            .bind(&rec.host_id)
            .bind(rec.state.as_str())
            .bind(&rec.spec.template)
            .bind(i64::from(rec.spec.vcpus))
            .bind(i64::from(rec.spec.memory_mb))
            .bind(i64::from(rec.spec.disk_mb))
            .bind(rec.spec.internet)
            .bind(i64::from(rec.spec.timeout_secs))
            .bind(&rec.address)
            .bind(rec.generation.cast_signed())
            .bind(&rec.backend)
            .bind(to_ms(rec.created_at))
            .bind(rec.expires_at.map(to_ms))
            .bind(to_ms(rec.updated_at))
            .bind(rec.stopped_at.map(to_ms))
            .bind(&rec.stop_reason)
            .execute(&mut *tx)
            .await?;
            if !rec.metadata.is_empty() {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO sandbox_metadata (sandbox_id, meta_key, meta_value) ",
                );
                qb.push_values(&rec.metadata, |mut b, (k, v)| {
                    b.push_bind(rec.id.as_str()).push_bind(k).push_bind(v);
                });
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await
        });
        res.map_err(|e| match e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::SandboxExists(rec.id.clone())
            }
            source => StoreError::Query { op, source },
        })
    }

    /// The record of `id`, stopped or not.
    pub async fn get_sandbox(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, StoreError> {
        let sql = format!("{SELECT_SANDBOXES} WHERE s.id = $1 ORDER BY m.meta_key");
        let rows: Vec<SandboxRow> = with_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(id.as_str()).fetch_all(pool).await
        })
        .map_err(StoreError::query("get_sandbox"))?;
        Ok(group_rows(rows)?.into_iter().next())
    }

    /// Records matching `filter`, oldest first.
    pub async fn list_sandboxes(
        &self,
        filter: &SandboxFilter,
    ) -> Result<Vec<SandboxRecord>, StoreError> {
        let rows: Vec<SandboxRow> = with_pool!(self, |pool| {
            let mut qb = QueryBuilder::new(SELECT_SANDBOXES);
            qb.push(" WHERE 1 = 1");
            if !filter.include_stopped {
                qb.push(" AND s.state <> ")
                    .push_bind(RecordState::Stopped.as_str());
            }
            if let Some(host) = &filter.host_id {
                qb.push(" AND s.host_id = ").push_bind(host.as_str());
            }
            if !filter.metadata.is_empty() {
                qb.push(" AND s.id IN (SELECT sandbox_id FROM sandbox_metadata WHERE ");
                for (i, (k, v)) in filter.metadata.iter().enumerate() {
                    if i > 0 {
                        qb.push(" OR ");
                    }
                    qb.push("(meta_key = ").push_bind(k.as_str());
                    qb.push(" AND meta_value = ")
                        .push_bind(v.as_str())
                        .push(")");
                }
                qb.push(" GROUP BY sandbox_id HAVING COUNT(*) = ")
                    .push_bind(filter.metadata.len() as i64)
                    .push(")");
            }
            qb.push(" ORDER BY s.created_at, s.id, m.meta_key");
            qb.build_query_as().fetch_all(pool).await
        })
        .map_err(StoreError::query("list_sandboxes"))?;
        group_rows(rows)
    }

    /// Applies what a host reports about a live sandbox. Stopped records are
    /// left alone (stopped is terminal); returns whether a record changed.
    pub async fn update_live(
        &self,
        id: &SandboxId,
        live: &LiveUpdate,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        if live.state.is_stopped() {
            return self.mark_stopped(id, "stopped on host", at).await;
        }
        let done = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE sandboxes SET state = $2, address = $3, generation = $4, backend = $5, \
                 expires_at = $6, updated_at = $7 WHERE id = $1 AND state <> 'stopped'",
            )
            .bind(id.as_str())
            .bind(live.state.as_str())
            .bind(&live.address)
            .bind(live.generation.cast_signed())
            .bind(&live.backend)
            .bind(live.expires_at.map(to_ms))
            .bind(to_ms(at))
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .map_err(StoreError::query("update_live"))?;
        Ok(done > 0)
    }

    /// Marks a record stopped with `reason`. Returns false when it was already
    /// stopped (the first reason wins) or does not exist.
    pub async fn mark_stopped(
        &self,
        id: &SandboxId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE sandboxes SET state = 'stopped', stop_reason = $2, stopped_at = $3, \
                 updated_at = $3 WHERE id = $1 AND state <> 'stopped'",
            )
            .bind(id.as_str())
            .bind(reason)
            .bind(to_ms(at))
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .map_err(StoreError::query("mark_stopped"))?;
        Ok(done > 0)
    }

    /// Deletes stopped records (and their metadata) that stopped before
    /// `cutoff`. Returns how many went.
    pub async fn delete_stopped_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM sandboxes WHERE state = 'stopped' AND stopped_at < $1")
                .bind(to_ms(cutoff))
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
        .map_err(StoreError::query("delete_stopped_before"))
    }

    /// Records that are not stopped, counted per host.
    pub async fn count_live_by_host(&self) -> Result<HashMap<String, u64>, StoreError> {
        let rows: Vec<(String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT host_id, COUNT(*) FROM sandboxes WHERE state <> 'stopped' GROUP BY host_id",
            )
            .fetch_all(pool)
            .await
        })
        .map_err(StoreError::query("count_live_by_host"))?;
        Ok(rows
            .into_iter()
            .map(|(h, n)| (h, n.max(0).cast_unsigned()))
            .collect())
    }
}

/// Folds joined rows (one per metadata entry) into records, keeping order.
fn group_rows(rows: Vec<SandboxRow>) -> Result<Vec<SandboxRecord>, StoreError> {
    let mut out: Vec<SandboxRecord> = Vec::new();
    for row in rows {
        let same = out.last().is_some_and(|r| r.id.as_str() == row.id);
        if !same {
            out.push(record_from_row(&row)?);
        }
        if let (Some(k), Some(v), Some(rec)) = (row.meta_key, row.meta_value, out.last_mut()) {
            rec.metadata.insert(k, v);
        }
    }
    Ok(out)
}

fn record_from_row(row: &SandboxRow) -> Result<SandboxRecord, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        table: "sandboxes",
        id: row.id.clone(),
        detail,
    };
    let u32_col = |name: &str, v: i64| {
        u32::try_from(v).map_err(|_| corrupt(format!("{name} {v} is out of range")))
    };
    Ok(SandboxRecord {
        id: row.id.parse().map_err(|e| corrupt(format!("{e}")))?,
        host_id: row.host_id.clone(),
        state: row.state.parse().map_err(|e| corrupt(format!("{e}")))?,
        spec: SpecRecord {
            template: row.template.clone(),
            vcpus: u32_col("vcpus", row.vcpus)?,
            memory_mb: u32_col("memory_mb", row.memory_mb)?,
            disk_mb: u32_col("disk_mb", row.disk_mb)?,
            internet: row.internet,
            timeout_secs: u32_col("timeout_secs", row.timeout_secs)?,
        },
        metadata: BTreeMap::new(),
        address: row.address.clone(),
        generation: row.generation.cast_unsigned(),
        backend: row.backend.clone(),
        created_at: from_ms(row.created_at),
        expires_at: row.expires_at.map(from_ms),
        updated_at: from_ms(row.updated_at),
        stopped_at: row.stopped_at.map(from_ms),
        stop_reason: row.stop_reason.clone(),
    })
}
