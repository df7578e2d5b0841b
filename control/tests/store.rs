//! The store suite, run unchanged against SQLite (a temporary file) and
//! PostgreSQL (a fresh database on the cluster `WRENN_TEST_DATABASE_URL`
//! points at; see `scripts/postgres`).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use wrenn_control::auth::{self, ADMIN_KEY_FILE, ApiKey, Authenticator};
use wrenn_control::store::{
    ApiKeyRecord, HostRecord, LiveUpdate, RecordState, SandboxFilter, SandboxRecord, SpecRecord,
    Store, StoreConfig, StoreError, TemplateDefaults, TemplateRecord, now_ms,
};
use wrenn_types::SandboxId;

/// A store under test and what is needed to open it again.
pub struct TestStore {
    pub store: Store,
    pub config: StoreConfig,
    _dir: Option<tempfile::TempDir>,
    _db: Option<common::pg::TestDatabase>,
}

impl TestStore {
    async fn sqlite() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::Sqlite(dir.path().join("state").join("wrenn.db"));
        let store = Store::open(&config).await.expect("open SQLite store");
        assert_eq!(store.backend(), "sqlite");
        TestStore {
            store,
            config,
            _dir: Some(dir),
            _db: None,
        }
    }

    async fn postgres() -> TestStore {
        let db = common::pg::TestDatabase::create().await;
        let config = StoreConfig::Url(db.url.clone());
        let store = Store::open(&config).await.expect("open PostgreSQL store");
        assert_eq!(store.backend(), "postgres");
        TestStore {
            store,
            config,
            _dir: None,
            _db: Some(db),
        }
    }

    async fn finish(self) {
        self.store.close().await;
    }
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let t = super::TestStore::sqlite().await;
                    super::$name(&t).await;
                    t.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                #[ignore = "needs PostgreSQL (WRENN_TEST_DATABASE_URL): scripts/test runs it"]
                async fn $name() {
                    let t = super::TestStore::postgres().await;
                    super::$name(&t).await;
                    t.finish().await;
                }
            )*
        }
    };
}

suite!(
    records_round_trip,
    duplicate_ids_are_refused,
    list_filters_by_state_host_and_metadata,
    metadata_is_data_not_sql,
    stopped_is_terminal_and_first_reason_wins,
    purge_removes_old_stopped_records_and_their_metadata,
    live_records_are_counted_per_host,
    api_keys_are_stored_hashed_and_revocable,
    api_key_last_use_is_written_at_most_once_a_gap,
    a_revoked_key_is_refused_at_once_despite_a_long_cache,
    hosts_upsert_keeps_created_at,
    reopening_keeps_data_and_migrations_are_idempotent,
    first_start_creates_one_admin_key,
    concurrent_writes_all_land,
    templates_round_trip_and_a_rebuild_replaces_whole,
    a_template_in_use_is_not_removed_unless_forced,
);

fn ts(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

fn record(host: &str, created_ms: i64, meta: &[(&str, &str)]) -> SandboxRecord {
    SandboxRecord {
        id: SandboxId::generate(),
        host_id: host.to_owned(),
        state: RecordState::Starting,
        spec: SpecRecord {
            template: "base".into(),
            vcpus: 2,
            memory_mb: 1024,
            disk_mb: 4096,
            internet: false,
            timeout_secs: 600,
        },
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        address: String::new(),
        generation: 0,
        backend: String::new(),
        created_at: ts(created_ms),
        expires_at: None,
        updated_at: ts(created_ms),
        stopped_at: None,
        stop_reason: String::new(),
    }
}

fn ids(recs: &[SandboxRecord]) -> Vec<SandboxId> {
    recs.iter().map(|r| r.id.clone()).collect()
}

async fn records_round_trip(t: &TestStore) {
    let mut rec = record(
        "local",
        1_700_000_000_123,
        &[("team", "ml"), ("owner", "ada")],
    );
    rec.state = RecordState::Running;
    rec.address = "10.210.23.113".into();
    rec.generation = u64::MAX;
    rec.backend = "namespace".into();
    rec.expires_at = Some(ts(1_700_000_300_456));
    t.store.insert_sandbox(&rec).await.unwrap();
    let got = t.store.get_sandbox(&rec.id).await.unwrap().expect("record");
    assert_eq!(got, rec);
    assert!(
        t.store
            .get_sandbox(&SandboxId::generate())
            .await
            .unwrap()
            .is_none()
    );
}

async fn duplicate_ids_are_refused(t: &TestStore) {
    let rec = record("local", 1, &[("a", "1")]);
    t.store.insert_sandbox(&rec).await.unwrap();
    let mut again = record("other", 2, &[("b", "2")]);
    again.id = rec.id.clone();
    match t.store.insert_sandbox(&again).await {
        Err(StoreError::SandboxExists(id)) => assert_eq!(id, rec.id),
        other => panic!("expected SandboxExists, got {other:?}"),
    }
    // The failed insert left nothing of itself behind.
    let got = t.store.get_sandbox(&rec.id).await.unwrap().unwrap();
    assert_eq!(got, rec);
}

async fn list_filters_by_state_host_and_metadata(t: &TestStore) {
    let a = record("h1", 1000, &[("team", "ml"), ("env", "prod")]);
    let b = record("h1", 2000, &[("team", "ml"), ("env", "dev")]);
    let c = record("h2", 3000, &[("team", "web")]);
    let d = record("h2", 4000, &[]);
    for r in [&c, &a, &d, &b] {
        t.store.insert_sandbox(r).await.unwrap();
    }
    t.store
        .mark_stopped(&b.id, "destroyed", ts(5000))
        .await
        .unwrap();

    let list = |f: SandboxFilter| async move { ids(&t.store.list_sandboxes(&f).await.unwrap()) };
    let meta = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };

    // Oldest first; stopped hidden unless asked.
    assert_eq!(
        list(SandboxFilter::default()).await,
        vec![a.id.clone(), c.id.clone(), d.id.clone()]
    );
    let all = t
        .store
        .list_sandboxes(&SandboxFilter {
            include_stopped: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&all),
        vec![a.id.clone(), b.id.clone(), c.id.clone(), d.id.clone()]
    );
    // Metadata comes back with every record of a list.
    assert_eq!(all[0].metadata, a.metadata);
    assert!(all[3].metadata.is_empty());

    let f = SandboxFilter {
        metadata: meta(&[("team", "ml")]),
        include_stopped: true,
        ..Default::default()
    };
    assert_eq!(list(f).await, vec![a.id.clone(), b.id.clone()]);
    // Every pair must match (AND), not any (OR).
    let f = SandboxFilter {
        metadata: meta(&[("team", "ml"), ("env", "dev")]),
        include_stopped: true,
        ..Default::default()
    };
    assert_eq!(list(f).await, vec![b.id.clone()]);
    let f = SandboxFilter {
        metadata: meta(&[("team", "ml"), ("env", "dev")]),
        ..Default::default()
    };
    assert_eq!(list(f).await, Vec::<SandboxId>::new());
    let f = SandboxFilter {
        metadata: meta(&[("team", "web"), ("env", "prod")]),
        ..Default::default()
    };
    assert_eq!(list(f).await, Vec::<SandboxId>::new());
    let f = SandboxFilter {
        metadata: meta(&[("nope", "x")]),
        ..Default::default()
    };
    assert_eq!(list(f).await, Vec::<SandboxId>::new());

    let f = SandboxFilter {
        host_id: Some("h2".into()),
        ..Default::default()
    };
    assert_eq!(list(f).await, vec![c.id.clone(), d.id.clone()]);
}

async fn metadata_is_data_not_sql(t: &TestStore) {
    let evil = "x' OR '1'='1' --";
    let rec = record(
        "local",
        1,
        &[("quote'key", evil), ("ünïcødé", "✓ \"double\" \\ back")],
    );
    t.store.insert_sandbox(&rec).await.unwrap();
    let other = record("local", 2, &[("quote'key", "plain")]);
    t.store.insert_sandbox(&other).await.unwrap();
    let got = t.store.get_sandbox(&rec.id).await.unwrap().unwrap();
    assert_eq!(got.metadata, rec.metadata);
    let f = SandboxFilter {
        metadata: [("quote'key".to_string(), evil.to_string())].into(),
        ..Default::default()
    };
    assert_eq!(
        ids(&t.store.list_sandboxes(&f).await.unwrap()),
        vec![rec.id.clone()]
    );
    let f = SandboxFilter {
        metadata: [("quote'key".to_string(), "' OR 1=1 --".to_string())].into(),
        ..Default::default()
    };
    assert!(t.store.list_sandboxes(&f).await.unwrap().is_empty());
}

async fn stopped_is_terminal_and_first_reason_wins(t: &TestStore) {
    let rec = record("local", 1, &[]);
    t.store.insert_sandbox(&rec).await.unwrap();
    let live = LiveUpdate {
        state: RecordState::Running,
        address: "10.210.23.115".into(),
        generation: 7,
        backend: "namespace".into(),
        expires_at: Some(ts(9_000)),
    };
    assert!(t.store.update_live(&rec.id, &live, ts(10)).await.unwrap());
    let got = t.store.get_sandbox(&rec.id).await.unwrap().unwrap();
    assert!(got.matches(&live), "{got:?}");
    assert_eq!(got.updated_at, ts(10));

    assert!(
        t.store
            .mark_stopped(&rec.id, "destroyed by request", ts(20))
            .await
            .unwrap()
    );
    assert!(!t.store.mark_stopped(&rec.id, "lost", ts(30)).await.unwrap());
    let paused = LiveUpdate {
        state: RecordState::Paused,
        ..live.clone()
    };
    assert!(!t.store.update_live(&rec.id, &paused, ts(40)).await.unwrap());
    let got = t.store.get_sandbox(&rec.id).await.unwrap().unwrap();
    assert_eq!(got.state, RecordState::Stopped);
    assert_eq!(got.stop_reason, "destroyed by request");
    assert_eq!(got.stopped_at, Some(ts(20)));
    assert_eq!(got.updated_at, ts(20));
    // Unknown ids change nothing.
    assert!(
        !t.store
            .mark_stopped(&SandboxId::generate(), "x", ts(1))
            .await
            .unwrap()
    );
    assert!(
        !t.store
            .update_live(&SandboxId::generate(), &live, ts(1))
            .await
            .unwrap()
    );
}

async fn purge_removes_old_stopped_records_and_their_metadata(t: &TestStore) {
    let old = record("local", 1, &[("k", "old")]);
    let recent = record("local", 2, &[("k", "recent")]);
    let live = record("local", 3, &[("k", "live")]);
    for r in [&old, &recent, &live] {
        t.store.insert_sandbox(r).await.unwrap();
    }
    t.store.mark_stopped(&old.id, "x", ts(100)).await.unwrap();
    t.store
        .mark_stopped(&recent.id, "x", ts(300))
        .await
        .unwrap();
    assert_eq!(t.store.delete_stopped_before(ts(200)).await.unwrap(), 1);
    assert!(t.store.get_sandbox(&old.id).await.unwrap().is_none());
    assert!(t.store.get_sandbox(&recent.id).await.unwrap().is_some());
    assert!(t.store.get_sandbox(&live.id).await.unwrap().is_some());
    // The metadata went with it (foreign key cascade on both backends).
    assert_eq!(metadata_rows(&t.store, &old.id).await, 0);
    assert_eq!(metadata_rows(&t.store, &recent.id).await, 1);
    // The id is free again.
    t.store.insert_sandbox(&old).await.unwrap();
}

async fn metadata_rows(store: &Store, id: &SandboxId) -> i64 {
    let sql = "SELECT COUNT(*) FROM sandbox_metadata WHERE sandbox_id = $1";
    let (n,): (i64,) = match store {
        Store::Sqlite(p) => sqlx::query_as(sql)
            .bind(id.as_str())
            .fetch_one(p)
            .await
            .unwrap(),
        Store::Postgres(p) => sqlx::query_as(sql)
            .bind(id.as_str())
            .fetch_one(p)
            .await
            .unwrap(),
    };
    n
}

async fn live_records_are_counted_per_host(t: &TestStore) {
    for (host, stop) in [("a", false), ("a", false), ("a", true), ("b", false)] {
        let r = record(host, 1, &[]);
        t.store.insert_sandbox(&r).await.unwrap();
        if stop {
            t.store.mark_stopped(&r.id, "x", ts(2)).await.unwrap();
        }
    }
    let counts = t.store.count_live_by_host().await.unwrap();
    assert_eq!(counts.get("a"), Some(&2));
    assert_eq!(counts.get("b"), Some(&1));
    assert_eq!(counts.len(), 2);
}

async fn api_keys_are_stored_hashed_and_revocable(t: &TestStore) {
    assert_eq!(t.store.count_active_api_keys().await.unwrap(), 0);
    let (rec, key) = auth::create_api_key(&t.store, "ci").await.unwrap();
    assert_eq!(rec.key_hash, key.hash());
    let stored = t.store.list_api_keys().await.unwrap();
    assert_eq!(stored, vec![rec.clone()]);
    assert!(
        !stored[0].key_hash.contains(&key.expose()[4..]),
        "the key itself is not stored"
    );
    assert_eq!(
        t.store.find_active_api_key(&key.hash()).await.unwrap(),
        Some(rec.clone())
    );
    assert_eq!(
        t.store
            .find_active_api_key(&ApiKey::generate().hash())
            .await
            .unwrap(),
        None
    );

    let dup = ApiKeyRecord {
        key_hash: ApiKey::generate().hash(),
        ..rec.clone()
    };
    assert!(
        matches!(t.store.insert_api_key(&dup).await, Err(StoreError::ApiKeyExists(id)) if id == rec.id)
    );

    assert!(t.store.revoke_api_key(&rec.id, now_ms()).await.unwrap());
    assert!(!t.store.revoke_api_key(&rec.id, now_ms()).await.unwrap());
    assert_eq!(
        t.store.find_active_api_key(&key.hash()).await.unwrap(),
        None
    );
    assert_eq!(t.store.count_active_api_keys().await.unwrap(), 0);
    assert_eq!(t.store.list_api_keys().await.unwrap().len(), 1);
}

async fn api_key_last_use_is_written_at_most_once_a_gap(t: &TestStore) {
    let (rec, _) = auth::create_api_key(&t.store, "used").await.unwrap();
    assert_eq!(rec.last_used_at, None);
    let gap = Duration::from_secs(60);
    let t0 = ts(1_000_000);
    assert!(t.store.touch_api_key(&rec.id, t0, gap).await.unwrap());
    assert!(
        !t.store
            .touch_api_key(&rec.id, ts(1_000_000 + 59_000), gap)
            .await
            .unwrap(),
        "within the gap: no write"
    );
    let last = |keys: Vec<ApiKeyRecord>| keys.into_iter().find(|k| k.id == rec.id).unwrap();
    assert_eq!(
        last(t.store.list_api_keys().await.unwrap()).last_used_at,
        Some(t0)
    );
    let t1 = ts(1_000_000 + 60_000);
    assert!(t.store.touch_api_key(&rec.id, t1, gap).await.unwrap());
    assert_eq!(
        last(t.store.list_api_keys().await.unwrap()).last_used_at,
        Some(t1)
    );
    assert!(!t.store.touch_api_key("key_nosuch", t1, gap).await.unwrap());
}

/// With a cache that would trust a key for an hour, revoking through the
/// authenticator refuses the key on the very next call, also while other
/// tasks keep looking it up (a lookup racing the revocation must not put the
/// key back into the cache): many rounds, to meet the race.
async fn a_revoked_key_is_refused_at_once_despite_a_long_cache(t: &TestStore) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (_, other) = auth::create_api_key(&t.store, "other").await.unwrap();
    let authn = Authenticator::with_ttl(t.store.clone(), Duration::from_secs(3600));
    let other_header = format!("Bearer {}", other.expose());
    for round in 0..50 {
        let (rec, key) = auth::create_api_key(&t.store, "racy").await.unwrap();
        let header = format!("Bearer {}", key.expose());
        assert!(authn.authenticate(Some(header.as_bytes())).await.is_some());
        let stop = Arc::new(AtomicBool::new(false));
        let mut racers = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (authn, header, stop) = (authn.clone(), header.clone(), stop.clone());
            racers.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    // Each lookup goes to the store, as one racing a
                    // revocation does.
                    authn.clear_cache();
                    authn.authenticate(Some(header.as_bytes())).await;
                    tokio::task::yield_now().await;
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(authn.revoke(&rec.id, now_ms()).await.unwrap());
        stop.store(true, Ordering::Relaxed);
        while racers.join_next().await.is_some() {}
        for _ in 0..3 {
            assert!(
                authn.authenticate(Some(header.as_bytes())).await.is_none(),
                "round {round}: the revoked key was accepted"
            );
        }
    }
    // The other key is untouched; revoking twice reports nothing to do.
    assert!(
        authn
            .authenticate(Some(other_header.as_bytes()))
            .await
            .is_some()
    );
    let keys = t.store.list_api_keys().await.unwrap();
    let racy = keys.iter().find(|k| k.name == "racy").unwrap();
    assert!(!authn.revoke(&racy.id, now_ms()).await.unwrap());
}

async fn hosts_upsert_keeps_created_at(t: &TestStore) {
    let h = HostRecord {
        id: "local".into(),
        agent_address: "http://127.0.0.1:7801".into(),
        proxy_address: String::new(),
        created_at: ts(1000),
        updated_at: ts(1000),
    };
    t.store.upsert_host(&h).await.unwrap();
    let moved = HostRecord {
        agent_address: "http://127.0.0.1:9801".into(),
        proxy_address: "127.0.0.1:7880".into(),
        created_at: ts(5000),
        updated_at: ts(5000),
        ..h.clone()
    };
    t.store.upsert_host(&moved).await.unwrap();
    let hosts = t.store.list_hosts().await.unwrap();
    assert_eq!(
        hosts,
        vec![HostRecord {
            created_at: ts(1000),
            ..moved
        }]
    );
}

async fn reopening_keeps_data_and_migrations_are_idempotent(t: &TestStore) {
    let rec = record("local", 1, &[("k", "v")]);
    t.store.insert_sandbox(&rec).await.unwrap();
    let again = Store::open(&t.config)
        .await
        .expect("second open applies no migration twice");
    assert_eq!(again.get_sandbox(&rec.id).await.unwrap(), Some(rec));
    again.close().await;
}

async fn first_start_creates_one_admin_key(t: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = auth::ensure_admin_key(&t.store, dir.path()).await.unwrap();
    assert_eq!(
        path.as_deref(),
        Some(dir.path().join(ADMIN_KEY_FILE).as_path())
    );
    let key = std::fs::read_to_string(dir.path().join(ADMIN_KEY_FILE)).unwrap();
    let key = key.trim();
    assert!(ApiKey::parse(key).is_some(), "{key:?} is not a wrn_ key");
    // Second start: keys exist, nothing is created or rewritten.
    assert_eq!(
        auth::ensure_admin_key(&t.store, dir.path()).await.unwrap(),
        None
    );
    assert_eq!(t.store.count_active_api_keys().await.unwrap(), 1);

    let authn = Authenticator::new(t.store.clone());
    let header = format!("Bearer {key}");
    let who = authn
        .authenticate(Some(header.as_bytes()))
        .await
        .expect("admin key accepted");
    assert_eq!(who.name, "admin");
    let wrong = format!("Bearer {}", ApiKey::generate().expose());
    assert!(authn.authenticate(Some(wrong.as_bytes())).await.is_none());
    assert!(
        authn.authenticate(Some(key.as_bytes())).await.is_none(),
        "no scheme"
    );
    assert!(authn.authenticate(None).await.is_none());
    // Revoked (and cache cleared): refused.
    t.store.revoke_api_key(&who.id, now_ms()).await.unwrap();
    authn.clear_cache();
    assert!(authn.authenticate(Some(header.as_bytes())).await.is_none());
}

async fn concurrent_writes_all_land(t: &TestStore) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let store = t.store.clone();
        tasks.spawn(async move {
            let r = record("local", i, &[("n", &i.to_string())]);
            store.insert_sandbox(&r).await.unwrap();
            if i % 2 == 0 {
                assert!(store.mark_stopped(&r.id, "x", ts(i + 1)).await.unwrap());
            }
        });
    }
    let deadline = Duration::from_secs(60);
    tokio::time::timeout(deadline, async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await
    .expect("concurrent writes finished");
    let all = t
        .store
        .list_sandboxes(&SandboxFilter {
            include_stopped: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 24);
    assert_eq!(
        all.iter()
            .filter(|r| r.state == RecordState::Stopped)
            .count(),
        12
    );
}

fn template(name: &str, at_ms: i64, env: &[(&str, &str)]) -> TemplateRecord {
    TemplateRecord {
        name: name.to_owned(),
        host_id: "local".into(),
        size_bytes: 2 << 30,
        recipe_digest: format!("{name}-{at_ms}"),
        defaults: TemplateDefaults {
            user: "wrenn-user".into(),
            workdir: "/home/wrenn-user/app".into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            start: "jupyter lab --port 8888".into(),
            ready: "curl -fs localhost:8888/api".into(),
        },
        build_log: "step 1/3 RUN true\n".into(),
        created_at: ts(at_ms),
        updated_at: ts(at_ms),
    }
}

async fn templates_round_trip_and_a_rebuild_replaces_whole(t: &TestStore) {
    let s = &t.store;
    assert_eq!(s.get_template("jupyter").await.unwrap(), None);
    let first = template("jupyter", 1000, &[("A", "1"), ("B", "two")]);
    s.put_template(&first).await.unwrap();
    s.put_template(&template("nextjs", 1500, &[]))
        .await
        .unwrap();
    assert_eq!(
        s.get_template("jupyter").await.unwrap(),
        Some(first.clone())
    );
    // A rebuild: every field replaced, the old ENV gone, the creation time kept.
    let mut rebuilt = template("jupyter", 2000, &[("C", "3")]);
    rebuilt.defaults.user = String::new();
    rebuilt.size_bytes = 1 << 30;
    s.put_template(&rebuilt).await.unwrap();
    let got = s.get_template("jupyter").await.unwrap().unwrap();
    assert_eq!(
        got,
        TemplateRecord {
            created_at: ts(1000),
            ..rebuilt
        }
    );
    let names: Vec<String> = s
        .list_templates()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["jupyter", "nextjs"]);
    // Names are data, not SQL.
    let odd = template("x'; DROP TABLE templates; --", 3000, &[("K", "'v'")]);
    s.put_template(&odd).await.unwrap();
    assert_eq!(s.get_template(&odd.name).await.unwrap(), Some(odd));
    assert_eq!(s.list_templates().await.unwrap().len(), 3);
}

async fn a_template_in_use_is_not_removed_unless_forced(t: &TestStore) {
    let s = &t.store;
    s.put_template(&template("jupyter", 1000, &[("A", "1")]))
        .await
        .unwrap();
    let mut running = record("local", 1000, &[]);
    running.spec.template = "jupyter".into();
    running.state = RecordState::Running;
    let mut paused = record("local", 2000, &[]);
    paused.spec.template = "jupyter".into();
    paused.state = RecordState::Paused;
    let mut stopped = record("local", 3000, &[]);
    stopped.spec.template = "jupyter".into();
    let other = record("local", 4000, &[]);
    for r in [&running, &paused, &stopped, &other] {
        s.insert_sandbox(r).await.unwrap();
    }
    s.mark_stopped(&stopped.id, "destroyed", ts(3500))
        .await
        .unwrap();
    assert_eq!(
        s.template_users("jupyter").await.unwrap(),
        vec![running.id.clone(), paused.id.clone()]
    );
    let err = s.delete_template("jupyter", false).await.unwrap_err();
    let StoreError::TemplateInUse { name, sandboxes } = &err else {
        panic!("{err}");
    };
    assert_eq!(name, "jupyter");
    assert_eq!(sandboxes, &vec![running.id.clone(), paused.id.clone()]);
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("sandboxes {} and {}", running.id, paused.id)),
        "{msg}"
    );
    assert!(s.get_template("jupyter").await.unwrap().is_some(), "kept");
    // Forced: gone, with its ENV; a second removal finds nothing.
    assert!(s.delete_template("jupyter", true).await.unwrap());
    assert_eq!(s.get_template("jupyter").await.unwrap(), None);
    assert!(!s.delete_template("jupyter", false).await.unwrap());
    // The same name again starts clean.
    s.put_template(&template("jupyter", 5000, &[]))
        .await
        .unwrap();
    let again = s.get_template("jupyter").await.unwrap().unwrap();
    assert!(again.defaults.env.is_empty());
    assert_eq!(again.created_at, ts(5000));
}
