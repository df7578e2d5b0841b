//! A PostgreSQL database per platform, on the cluster `WRENN_TEST_DATABASE_URL`
//! points at (`scripts/postgres start` prints it; `scripts/test` exports it).
//! Missing or unreachable is a test failure that says how to start it, never
//! a skip.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

pub const ENV: &str = "WRENN_TEST_DATABASE_URL";
const HOW: &str = "start the test cluster (as root) with `export WRENN_TEST_DATABASE_URL=$(scripts/postgres start)` and run the tests again";

/// The cluster's URL, or a panic that says how to get one.
pub fn base_url() -> String {
    match std::env::var(ENV) {
        Ok(u) if !u.trim().is_empty() => u.trim().to_owned(),
        _ => panic!("{ENV} is not set: the PostgreSQL store tests need a server; {HOW}"),
    }
}

fn redact(url: &str) -> String {
    wrenn_control::store::redact_url(url)
}

/// Runs `f` on a runtime of its own on a thread of its own (callers may be
/// inside a runtime, or unwinding).
fn block_on<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> std::thread::Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for PostgreSQL")
            .block_on(f)
    })
    .join()
}

async fn admin(base: &str) -> Result<PgConnection, String> {
    let opts = PgConnectOptions::from_str(base)
        .map_err(|e| format!("{ENV}={} is not a PostgreSQL URL: {e}", redact(base)))?;
    opts.connect().await.map_err(|e| {
        format!(
            "cannot reach PostgreSQL at {} ({ENV}): {e}; {HOW}",
            redact(base)
        )
    })
}

/// `base` with its database name replaced by `db`.
fn with_database(base: &str, db: &str) -> String {
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let (head, query) = match base.find('?') {
        Some(q) => (&base[..q], &base[q..]),
        None => (base, ""),
    };
    let authority_end = head[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(head.len());
    format!("{}/{db}{query}", &head[..authority_end])
}

/// A fresh database, dropped (and checked gone) when this guard drops, even
/// when the test failed.
#[derive(Debug)]
pub struct TestDatabase {
    base: String,
    pub name: String,
    /// What to give the control plane as `DATABASE_URL`.
    pub url: String,
}

impl TestDatabase {
    pub fn create() -> TestDatabase {
        let base = base_url();
        let name = format!(
            "wrenn_te_{}_{}",
            std::process::id(),
            wrenn_types::SandboxId::generate()
        );
        let (b, n) = (base.clone(), name.clone());
        let made = block_on(async move {
            let mut conn = admin(&b).await?;
            sqlx::query(&format!("CREATE DATABASE \"{n}\""))
                .execute(&mut conn)
                .await
                .map_err(|e| format!("cannot create test database {n}: {e}"))?;
            conn.close().await.ok();
            Ok::<(), String>(())
        })
        .expect("creating a test database panicked");
        if let Err(e) = made {
            panic!("{e}");
        }
        let url = with_database(&base, &name);
        TestDatabase { base, name, url }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        let outcome = block_on(async move {
            let mut conn = admin(&base).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .map_err(|e| format!("cannot drop test database {name}: {e}"))?;
            let (left,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
                    .bind(&name)
                    .fetch_one(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
            if left != 0 {
                return Err(format!("test database {name} still exists after DROP"));
            }
            Ok(())
        })
        .unwrap_or_else(|_| Err(format!("dropping test database {} panicked", self.name)));
        if let Err(e) = outcome {
            if std::thread::panicking() {
                eprintln!("{e}");
            } else {
                panic!("{e}");
            }
        }
    }
}

#[test]
fn database_names_are_replaced() {
    assert_eq!(
        with_database("postgres://u:p@127.0.0.1:5432/wrenn?sslmode=disable", "x"),
        "postgres://u:p@127.0.0.1:5432/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
}
