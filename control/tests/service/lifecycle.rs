//! Create, get, list, destroy, pause, resume, timeout: through the store, to
//! the host, and back.

use std::collections::HashMap;
use std::time::SystemTime;

use tonic::Code;
use wrenn_proto::wrenn::v1::{
    CreateSandboxRequest, ExecRequest, ListHostsRequest, ListSandboxesRequest, Sandbox, SandboxRef,
    SandboxSpec, SandboxState, SetTimeoutRequest,
};
use wrenn_types::SandboxId;

use crate::common::fake_agent::SANDBOX_ADDRESS;
use crate::common::{FakeAgent, TestControl};

fn spec(meta: &[(&str, &str)]) -> SandboxSpec {
    SandboxSpec {
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        env: HashMap::from([("SECRET".to_owned(), "hunter2".to_owned())]),
        timeout_secs: 120,
        ..Default::default()
    }
}

fn create(meta: &[(&str, &str)]) -> CreateSandboxRequest {
    CreateSandboxRequest {
        sandbox_id: String::new(),
        spec: Some(spec(meta)),
    }
}

fn ids(list: &[Sandbox]) -> Vec<&str> {
    list.iter().map(|s| s.id.as_str()).collect()
}

#[tokio::test]
async fn create_get_list_destroy() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let mut c = t.client().await;

    let a = c
        .sandboxes
        .create(create(&[("team", "ml"), ("run", "1")]))
        .await
        .unwrap()
        .into_inner();
    // The list is ordered by creation time (milliseconds), then id: with the
    // fake agent two creates can land in the same millisecond.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let b = c
        .sandboxes
        .create(create(&[("team", "web")]))
        .await
        .unwrap()
        .into_inner();
    assert!(SandboxId::is_valid(&a.id), "{}", a.id);
    assert_ne!(a.id, b.id);
    assert_eq!(a.state(), SandboxState::Running);
    assert_eq!(a.address, SANDBOX_ADDRESS);
    assert_eq!(a.host_id, "local");
    assert_eq!(a.backend, "namespace");
    let a_spec = a.spec.clone().unwrap();
    assert_eq!(a_spec.metadata.get("team").map(String::as_str), Some("ml"));
    assert_eq!(
        (
            a_spec.template.as_str(),
            a_spec.memory_mb,
            a_spec.timeout_secs
        ),
        ("base", 512, 120)
    );
    assert!(
        a_spec.env.is_empty(),
        "environment values are not kept or returned"
    );
    // The control plane chose the id and passed it to the host.
    assert!(agent.state.calls().contains(&format!("create {}", a.id)));

    let got = c
        .sandboxes
        .get(SandboxRef {
            sandbox_id: a.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, a);

    let all = c
        .sandboxes
        .list(ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sandboxes;
    assert_eq!(ids(&all), vec![a.id.as_str(), b.id.as_str()]);
    let filter = ListSandboxesRequest {
        metadata: HashMap::from([("team".to_owned(), "web".to_owned())]),
        include_stopped: false,
    };
    let web = c
        .sandboxes
        .list(filter)
        .await
        .unwrap()
        .into_inner()
        .sandboxes;
    assert_eq!(ids(&web), vec![b.id.as_str()]);

    c.sandboxes
        .destroy(SandboxRef {
            sandbox_id: a.id.clone(),
        })
        .await
        .unwrap();
    assert!(!agent.state.sandboxes.lock().contains_key(&a.id));
    let gone = c
        .sandboxes
        .get(SandboxRef {
            sandbox_id: a.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.state(), SandboxState::Stopped);
    assert_eq!(gone.stop_reason, "destroyed by request");
    // Destroying again is fine and asks the host nothing.
    let before = agent.state.calls().len();
    c.sandboxes
        .destroy(SandboxRef {
            sandbox_id: a.id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(agent.state.calls().len(), before);

    let live = c
        .sandboxes
        .list(ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sandboxes;
    assert_eq!(ids(&live), vec![b.id.as_str()]);
    let every = c
        .sandboxes
        .list(ListSandboxesRequest {
            include_stopped: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .sandboxes;
    assert_eq!(ids(&every), vec![a.id.as_str(), b.id.as_str()]);

    // Interactive calls on a stopped sandbox are refused with its reason.
    let err = c
        .sandboxes
        .exec(ExecRequest {
            sandbox_id: a.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        format!("sandbox {} is stopped: destroyed by request", a.id)
    );
    t.stop().await;
}

#[tokio::test]
async fn pause_resume_and_timeout_are_recorded() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let mut c = t.client().await;
    let sb = c.sandboxes.create(create(&[])).await.unwrap().into_inner();
    let r = || SandboxRef {
        sandbox_id: sb.id.clone(),
    };

    let paused = c.sandboxes.pause(r()).await.unwrap().into_inner();
    assert_eq!(paused.state(), SandboxState::Paused);
    assert_eq!(
        c.sandboxes.get(r()).await.unwrap().into_inner().state(),
        SandboxState::Paused
    );

    let resumed = c.sandboxes.resume(r()).await.unwrap().into_inner();
    assert_eq!(resumed.state(), SandboxState::Running);
    assert_ne!(
        resumed.generation, sb.generation,
        "a resumed sandbox gets a new generation"
    );
    let stored = c.sandboxes.get(r()).await.unwrap().into_inner();
    assert_eq!(
        (stored.state(), stored.generation),
        (SandboxState::Running, resumed.generation)
    );

    let longer = c
        .sandboxes
        .set_timeout(SetTimeoutRequest {
            sandbox_id: sb.id.clone(),
            timeout_secs: 3600,
        })
        .await
        .unwrap()
        .into_inner();
    let expires = longer.expires_at.unwrap().seconds;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now + 3590..=now + 3610).contains(&expires),
        "expires {expires}, now {now}"
    );
    assert_eq!(
        c.sandboxes.get(r()).await.unwrap().into_inner().expires_at,
        longer.expires_at
    );
    let calls = agent.state.calls();
    for want in [
        format!("pause {}", sb.id),
        format!("resume {}", sb.id),
        format!("timeout {} 3600", sb.id),
    ] {
        assert!(calls.contains(&want), "{want} not in {calls:?}");
    }
    t.stop().await;
}

#[tokio::test]
async fn bad_input_is_named_and_never_reaches_the_host() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let mut c = t.client().await;

    let err = c
        .sandboxes
        .create(CreateSandboxRequest {
            sandbox_id: "mine".into(),
            spec: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("sandbox_id:"),
        "{}",
        err.message()
    );

    let bad = SandboxSpec {
        template: "../../etc".into(),
        ..Default::default()
    };
    let err = c
        .sandboxes
        .create(CreateSandboxRequest {
            sandbox_id: String::new(),
            spec: Some(bad),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("spec.template:"),
        "{}",
        err.message()
    );

    let err = c
        .sandboxes
        .get(SandboxRef {
            sandbox_id: "NOT-AN-ID".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("sandbox_id: invalid sandbox id \"NOT-AN-ID\""),
        "{}",
        err.message()
    );

    let unknown = SandboxId::generate();
    let err = c
        .sandboxes
        .pause(SandboxRef {
            sandbox_id: unknown.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), format!("sandbox {unknown} not found"));

    let err = c
        .sandboxes
        .list(ListSandboxesRequest {
            metadata: HashMap::from([(String::new(), "x".into())]),
            include_stopped: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("metadata[\"\"]: key must be 1-128 bytes"),
        "{}",
        err.message()
    );

    // (The reconciler's pass at start lists the host's sandboxes; nothing else.)
    let calls = agent.state.calls();
    assert!(calls.iter().all(|c| c == "list"), "{calls:?}");
    // The service kept serving.
    c.sandboxes.create(create(&[])).await.unwrap();
    t.stop().await;
}

#[tokio::test]
async fn a_failed_create_leaves_a_stopped_record_with_the_reason() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let mut c = t.client().await;
    *agent.state.fail_create.lock() = Some(tonic::Status::resource_exhausted(
        "not enough memory: 100 MiB free, 512 MiB asked",
    ));

    let err = c
        .sandboxes
        .create(create(&[("job", "x")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(
        err.message(),
        "not enough memory: 100 MiB free, 512 MiB asked"
    );

    assert!(
        c.sandboxes
            .list(ListSandboxesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .sandboxes
            .is_empty()
    );
    let all = c
        .sandboxes
        .list(ListSandboxesRequest {
            include_stopped: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .sandboxes;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state(), SandboxState::Stopped);
    assert_eq!(
        all[0].stop_reason,
        "create failed on host local: not enough memory: 100 MiB free, 512 MiB asked"
    );
    t.stop().await;
}

#[tokio::test]
async fn an_unreachable_host_is_named_and_nothing_is_left_running() {
    let mut agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let mut c = t.client().await;
    agent.stop().await;

    let err = c.sandboxes.create(create(&[])).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message()
            .starts_with("host local (agent http://127.0.0.1:"),
        "{}",
        err.message()
    );
    let all = c
        .sandboxes
        .list(ListSandboxesRequest {
            include_stopped: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .sandboxes;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state(), SandboxState::Stopped);
    assert!(
        all[0]
            .stop_reason
            .starts_with("create failed on host local: host local"),
        "{}",
        all[0].stop_reason
    );

    let hosts = c
        .hosts
        .list(ListHostsRequest {})
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert_eq!(hosts.len(), 1);
    assert_eq!(
        (hosts[0].id.as_str(), hosts[0].state.as_str()),
        ("local", "unreachable")
    );
    t.stop().await;
}

#[tokio::test]
async fn a_sandbox_gone_from_its_host_is_marked_stopped_on_contact() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let mut c = t.client().await;
    let sb = c.sandboxes.create(create(&[])).await.unwrap().into_inner();
    agent.state.sandboxes.lock().remove(&sb.id);

    let err = c
        .sandboxes
        .pause(SandboxRef {
            sandbox_id: sb.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        err.message(),
        format!(
            "sandbox {} no longer exists on host local; its record is now stopped",
            sb.id
        )
    );
    let rec = c
        .sandboxes
        .get(SandboxRef {
            sandbox_id: sb.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rec.state(), SandboxState::Stopped);
    assert_eq!(rec.stop_reason, "gone from host local (found by pause)");
    t.stop().await;
}

#[tokio::test]
async fn hosts_list_reports_state_and_live_records() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let mut c = t.client().await;
    for _ in 0..3 {
        c.sandboxes.create(create(&[])).await.unwrap();
    }
    let victim = c
        .sandboxes
        .list(ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sandboxes[0]
        .id
        .clone();
    c.sandboxes
        .destroy(SandboxRef { sandbox_id: victim })
        .await
        .unwrap();
    for r in t.control.reconcile_now().await {
        r.unwrap();
    }
    let hosts = c
        .hosts
        .list(ListHostsRequest {})
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].state, "ready");
    assert_eq!(hosts[0].sandboxes, 2);
    assert_eq!(hosts[0].agent_address, agent.url());
    t.stop().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL (WRENN_TEST_DATABASE_URL): scripts/test runs it"]
async fn the_service_runs_on_postgresql_too() {
    let db = crate::common::pg::TestDatabase::create().await;
    let agent = FakeAgent::start().await;
    let url = db.url.clone();
    let t = TestControl::start_with(&agent.url(), move |o| {
        o.with_store(wrenn_control::StoreConfig::Url(url))
    })
    .await;
    assert_eq!(t.control.store().backend(), "postgres");
    let mut c = t.client().await;
    let a = c
        .sandboxes
        .create(create(&[("team", "ml")]))
        .await
        .unwrap()
        .into_inner();
    let b = c
        .sandboxes
        .create(create(&[("team", "web")]))
        .await
        .unwrap()
        .into_inner();
    let filter = ListSandboxesRequest {
        metadata: HashMap::from([("team".to_owned(), "ml".to_owned())]),
        include_stopped: false,
    };
    let ml = c
        .sandboxes
        .list(filter)
        .await
        .unwrap()
        .into_inner()
        .sandboxes;
    assert_eq!(ids(&ml), vec![a.id.as_str()]);
    c.sandboxes
        .destroy(SandboxRef {
            sandbox_id: a.id.clone(),
        })
        .await
        .unwrap();
    agent.state.sandboxes.lock().remove(&b.id);
    // Let the clock pass b's last change, then reconcile.
    let newest = t
        .control
        .store()
        .get_sandbox(&b.id.parse().unwrap())
        .await
        .unwrap()
        .unwrap()
        .updated_at;
    crate::common::eventually(
        std::time::Duration::from_secs(5),
        "the clock to move",
        || async move { wrenn_control::store::now_ms() > newest },
    )
    .await;
    for r in t.control.reconcile_now().await {
        r.unwrap();
    }
    let every = c
        .sandboxes
        .list(ListSandboxesRequest {
            include_stopped: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .sandboxes;
    let reasons: Vec<_> = every
        .iter()
        .map(|s| (s.id.as_str(), s.stop_reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (a.id.as_str(), "destroyed by request"),
            (
                b.id.as_str(),
                "lost: no longer on host local (found by the reconciler)"
            )
        ]
    );
    t.stop().await;
    drop(db);
}
