//! Template records: what a build made and the defaults its sandboxes get.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use wrenn_types::SandboxId;

use super::records::{from_ms, to_ms};
use super::{Store, StoreError, with_pool};

/// A built template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRecord {
    pub name: String,
    /// The host holding the image.
    pub host_id: String,
    pub size_bytes: u64,
    /// Hex SHA-256 over the recipe and its sources' digests.
    pub recipe_digest: String,
    pub defaults: TemplateDefaults,
    pub build_log: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a template's sandboxes start with unless a request says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateDefaults {
    /// `USER` at the end of the build ('' = root).
    pub user: String,
    /// `WORKDIR` at the end of the build ('' = the user's home).
    pub workdir: String,
    /// The recipe's `ENV`, expanded.
    pub env: BTreeMap<String, String>,
    pub start: String,
    pub ready: String,
}

#[derive(sqlx::FromRow)]
struct TemplateRow {
    name: String,
    host_id: String,
    size_bytes: i64,
    recipe_digest: String,
    default_user: String,
    default_workdir: String,
    start_command: String,
    ready_command: String,
    build_log: String,
    created_at: i64,
    updated_at: i64,
}

#[derive(sqlx::FromRow)]
struct EnvRow {
    template_name: String,
    env_key: String,
    env_value: String,
}

const SELECT_TEMPLATES: &str = "SELECT name, host_id, size_bytes, recipe_digest, default_user, \
     default_workdir, start_command, ready_command, build_log, created_at, updated_at \
     FROM templates";

impl TemplateRow {
    fn into_record(self, env: BTreeMap<String, String>) -> TemplateRecord {
        TemplateRecord {
            name: self.name,
            host_id: self.host_id,
            size_bytes: self.size_bytes.cast_unsigned(),
            recipe_digest: self.recipe_digest,
            defaults: TemplateDefaults {
                user: self.default_user,
                workdir: self.default_workdir,
                env,
                start: self.start_command,
                ready: self.ready_command,
            },
            build_log: self.build_log,
            created_at: from_ms(self.created_at),
            updated_at: from_ms(self.updated_at),
        }
    }
}

impl Store {
    /// Stores `t`, replacing a template of the same name whole (its
    /// creation time kept) in one transaction: a reader sees the old
    /// record or the new one, never a mix.
    pub async fn put_template(&self, t: &TemplateRecord) -> Result<(), StoreError> {
        let res: Result<(), sqlx::Error> = with_pool!(self, |pool| {
            async {
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "INSERT INTO templates (name, host_id, size_bytes, recipe_digest, \
                     default_user, default_workdir, start_command, ready_command, build_log, \
                     created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                     ON CONFLICT (name) DO UPDATE SET host_id = excluded.host_id, \
                     size_bytes = excluded.size_bytes, recipe_digest = excluded.recipe_digest, \
                     default_user = excluded.default_user, \
                     default_workdir = excluded.default_workdir, \
                     start_command = excluded.start_command, \
                     ready_command = excluded.ready_command, build_log = excluded.build_log, \
                     updated_at = excluded.updated_at",
                )
                .bind(&t.name)
                .bind(&t.host_id)
                .bind(t.size_bytes.cast_signed())
                .bind(&t.recipe_digest)
                .bind(&t.defaults.user)
                .bind(&t.defaults.workdir)
                .bind(&t.defaults.start)
                .bind(&t.defaults.ready)
                .bind(&t.build_log)
                .bind(to_ms(t.created_at))
                .bind(to_ms(t.updated_at))
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM template_env WHERE template_name = $1")
                    .bind(&t.name)
                    .execute(&mut *tx)
                    .await?;
                if !t.defaults.env.is_empty() {
                    let mut qb = QueryBuilder::new(
                        "INSERT INTO template_env (template_name, env_key, env_value) ",
                    );
                    qb.push_values(&t.defaults.env, |mut b, (k, v)| {
                        b.push_bind(&t.name).push_bind(k).push_bind(v);
                    });
                    qb.build().execute(&mut *tx).await?;
                }
                tx.commit().await
            }
            .await
        });
        res.map_err(StoreError::query("put_template"))
    }

    /// The template `name`, if there is one.
    pub async fn get_template(&self, name: &str) -> Result<Option<TemplateRecord>, StoreError> {
        let mut found = self.templates(Some(name)).await?;
        Ok(found.pop())
    }

    /// Every template, by name.
    pub async fn list_templates(&self) -> Result<Vec<TemplateRecord>, StoreError> {
        self.templates(None).await
    }

    async fn templates(&self, name: Option<&str>) -> Result<Vec<TemplateRecord>, StoreError> {
        let op = "list_templates";
        let (rows, env): (Vec<TemplateRow>, Vec<EnvRow>) = with_pool!(self, |pool| {
            let rows = sqlx::query_as(&format!(
                "{SELECT_TEMPLATES} WHERE ($1 IS NULL OR name = $1) ORDER BY name"
            ))
            .bind(name)
            .fetch_all(pool)
            .await
            .map_err(StoreError::query(op))?;
            let env = sqlx::query_as(
                "SELECT template_name, env_key, env_value FROM template_env \
                 WHERE ($1 IS NULL OR template_name = $1)",
            )
            .bind(name)
            .fetch_all(pool)
            .await
            .map_err(StoreError::query(op))?;
            (rows, env)
        });
        let mut by_template: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for e in env {
            by_template
                .entry(e.template_name)
                .or_default()
                .insert(e.env_key, e.env_value);
        }
        Ok(rows
            .into_iter()
            .map(|r| {
                let env = by_template.remove(&r.name).unwrap_or_default();
                r.into_record(env)
            })
            .collect())
    }

    /// The sandboxes not stopped that were created from `name`, oldest first.
    pub async fn template_users(&self, name: &str) -> Result<Vec<SandboxId>, StoreError> {
        let ids: Vec<(String,)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id FROM sandboxes WHERE template = $1 AND state <> 'stopped' \
                 ORDER BY created_at, id",
            )
            .bind(name)
            .fetch_all(pool)
            .await
            .map_err(StoreError::query("template_users"))?
        });
        ids.into_iter()
            .map(|(id,)| {
                id.parse().map_err(|e| StoreError::Corrupt {
                    table: "sandboxes",
                    id: id.clone(),
                    detail: format!("{e}"),
                })
            })
            .collect()
    }

    /// Removes the template `name`. Refused with
    /// [`StoreError::TemplateInUse`] naming the sandboxes that use it,
    /// unless `force`. `false` when there was no such template.
    pub async fn delete_template(&self, name: &str, force: bool) -> Result<bool, StoreError> {
        if !force {
            if self.get_template(name).await?.is_none() {
                return Ok(false);
            }
            let users = self.template_users(name).await?;
            if !users.is_empty() {
                return Err(StoreError::TemplateInUse {
                    name: name.to_owned(),
                    sandboxes: users,
                });
            }
        }
        let res: Result<u64, sqlx::Error> = with_pool!(self, |pool| {
            async {
                let mut tx = pool.begin().await?;
                sqlx::query("DELETE FROM template_env WHERE template_name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                let gone = sqlx::query("DELETE FROM templates WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(gone)
            }
            .await
        });
        Ok(res.map_err(StoreError::query("delete_template"))? > 0)
    }
}
