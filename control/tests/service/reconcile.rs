//! The reconciler against a host whose live set changes behind the control
//! plane's back.

use std::time::Duration;

use tokio::net::TcpListener;
use wrenn_control::OrphanPolicy;
use wrenn_control::ReconcileError;
use wrenn_control::store::{LiveUpdate, RecordState, now_ms};
use wrenn_proto::wrenn::v1::{CreateSandboxRequest, ListHostsRequest, SandboxRef, SandboxState};
use wrenn_types::SandboxId;

use crate::common::{FakeAgent, TestControl, eventually};

async fn create(t: &TestControl) -> String {
    let mut c = t.client().await;
    c.sandboxes
        .create(CreateSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .id
}

async fn record(t: &TestControl, id: &str) -> wrenn_control::store::SandboxRecord {
    t.control
        .store()
        .get_sandbox(&id.parse().unwrap())
        .await
        .unwrap()
        .expect("record exists")
}

/// One pass, once the clock has moved past every record's last change (the
/// reconciler leaves records changed in the millisecond its pass began for
/// the next pass).
async fn pass(t: &TestControl) -> wrenn_control::ReconcileReport {
    settle(t).await;
    let mut reports = t.control.reconcile_now().await;
    assert_eq!(reports.len(), 1);
    reports.pop().unwrap().expect("pass succeeds")
}

async fn settle(t: &TestControl) {
    let all = t
        .control
        .store()
        .list_sandboxes(&wrenn_control::store::SandboxFilter {
            include_stopped: true,
            ..Default::default()
        })
        .await
        .unwrap();
    if let Some(newest) = all.iter().map(|r| r.updated_at).max() {
        eventually(
            Duration::from_secs(5),
            "the clock to pass the newest record",
            || async move { now_ms() > newest },
        )
        .await;
    }
}

#[tokio::test]
async fn vanished_and_expired_sandboxes_become_stopped_with_the_reason() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let lost = create(&t).await;
    let expired = create(&t).await;
    let kept = create(&t).await;
    // `expired` ran out its timeout: its record says so, and the host dropped it.
    let rec = record(&t, &expired).await;
    let past = LiveUpdate {
        state: rec.state,
        address: rec.address.clone(),
        generation: rec.generation,
        backend: rec.backend.clone(),
        expires_at: Some(now_ms() - chrono::Duration::seconds(5)),
    };
    t.control
        .store()
        .update_live(&rec.id, &past, now_ms() - chrono::Duration::seconds(5))
        .await
        .unwrap();
    agent.state.sandboxes.lock().remove(&lost);
    agent.state.sandboxes.lock().remove(&expired);

    let report = pass(&t).await;
    assert_eq!(report.live, 1);
    let mut stopped: Vec<_> = report
        .stopped
        .iter()
        .map(|(id, _)| id.to_string())
        .collect();
    stopped.sort();
    let mut want = vec![lost.clone(), expired.clone()];
    want.sort();
    assert_eq!(stopped, want);

    let l = record(&t, &lost).await;
    assert_eq!(l.state, RecordState::Stopped);
    assert_eq!(
        l.stop_reason,
        "lost: no longer on host local (found by the reconciler)"
    );
    let e = record(&t, &expired).await;
    assert_eq!(
        e.stop_reason,
        "expired: its timeout ran out and host local destroyed it"
    );
    assert_eq!(record(&t, &kept).await.state, RecordState::Running);

    // A second pass changes nothing.
    let again = pass(&t).await;
    assert!(
        again.stopped.is_empty()
            && again.updated.is_empty()
            && again.adopted.is_empty()
            && again.destroyed.is_empty(),
        "{again:?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn drift_on_the_host_updates_the_record() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let id = create(&t).await;
    agent.state.sandboxes.lock().get_mut(&id).unwrap().state = SandboxState::Paused as i32;
    let report = pass(&t).await;
    assert_eq!(report.updated, vec![id.parse::<SandboxId>().unwrap()]);
    assert_eq!(record(&t, &id).await.state, RecordState::Paused);
    t.stop().await;
}

#[tokio::test]
async fn orphans_are_adopted_by_default() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    agent.state.insert("orphan1", &[("owner", "someone")]);
    let report = pass(&t).await;
    assert_eq!(
        report.adopted,
        vec!["orphan1".parse::<SandboxId>().unwrap()]
    );
    let rec = record(&t, "orphan1").await;
    assert_eq!(
        (rec.state, rec.host_id.as_str()),
        (RecordState::Running, "local")
    );
    assert_eq!(
        rec.metadata.get("owner").map(String::as_str),
        Some("someone")
    );
    assert!(
        agent.state.sandboxes.lock().contains_key("orphan1"),
        "adopting destroys nothing"
    );
    // Adopted once.
    assert!(pass(&t).await.adopted.is_empty());
    t.stop().await;
}

#[tokio::test]
async fn orphans_are_destroyed_when_so_configured() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start_with(&agent.url(), |mut o| {
        o.orphan_policy = OrphanPolicy::Destroy;
        o
    })
    .await;
    let mine = create(&t).await;
    agent.state.insert("orphan2", &[]);
    let report = pass(&t).await;
    assert_eq!(
        report.destroyed,
        vec!["orphan2".parse::<SandboxId>().unwrap()]
    );
    assert!(!agent.state.sandboxes.lock().contains_key("orphan2"));
    assert!(
        agent.state.sandboxes.lock().contains_key(&mine),
        "recorded sandboxes are left alone"
    );
    assert!(
        t.control
            .store()
            .get_sandbox(&"orphan2".parse().unwrap())
            .await
            .unwrap()
            .is_none()
    );
    t.stop().await;
}

#[tokio::test]
async fn a_live_sandbox_whose_record_is_stopped_is_destroyed() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let id = create(&t).await;
    // As after a create the control plane gave up on (a timeout): the record
    // says stopped, the host has it anyway.
    let sid: SandboxId = id.parse().unwrap();
    t.control
        .store()
        .mark_stopped(&sid, "create failed: timed out", now_ms())
        .await
        .unwrap();
    let report = pass(&t).await;
    assert_eq!(report.destroyed, vec![sid.clone()]);
    assert!(!agent.state.sandboxes.lock().contains_key(&id));
    assert_eq!(
        record(&t, &id).await.stop_reason,
        "create failed: timed out"
    );
    t.stop().await;
}

#[tokio::test]
async fn an_unreachable_host_changes_no_record_and_recovers() {
    let mut agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let id = create(&t).await;
    let addr = agent.addr;
    let state = agent.state.clone();
    agent.stop().await;

    settle(&t).await;
    let mut reports = t.control.reconcile_now().await;
    match reports.pop().unwrap() {
        Err(ReconcileError::Agent { host, .. }) => assert_eq!(host, "local"),
        other => panic!("expected an agent error, got {other:?}"),
    }
    assert_eq!(
        record(&t, &id).await.state,
        RecordState::Running,
        "an unseen host is not an empty host"
    );
    let mut c = t.client().await;
    assert_eq!(
        c.hosts
            .list(ListHostsRequest {})
            .await
            .unwrap()
            .into_inner()
            .hosts[0]
            .state,
        "unreachable"
    );

    // The agent comes back on the same address with the same sandboxes.
    let _agent = FakeAgent::start_on(TcpListener::bind(addr).await.unwrap(), state).await;
    let report = pass(&t).await;
    assert_eq!(report.live, 1);
    assert!(report.stopped.is_empty());
    assert_eq!(
        c.hosts
            .list(ListHostsRequest {})
            .await
            .unwrap()
            .into_inner()
            .hosts[0]
            .state,
        "ready"
    );
    t.stop().await;
}

#[tokio::test]
async fn the_periodic_pass_runs_by_itself() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start_with(&agent.url(), |mut o| {
        o.reconcile_interval = Duration::from_millis(100);
        o
    })
    .await;
    let id = create(&t).await;
    agent.state.sandboxes.lock().remove(&id);
    let mut c = t.client().await;
    eventually(
        Duration::from_secs(10),
        "the periodic reconciler to stop the record",
        || {
            let mut c = c.clone();
            let id = id.clone();
            async move {
                let sb = c
                    .sandboxes
                    .get(SandboxRef { sandbox_id: id })
                    .await
                    .unwrap()
                    .into_inner();
                sb.state() == SandboxState::Stopped
            }
        },
    )
    .await;
    let sb = c
        .sandboxes
        .get(SandboxRef { sandbox_id: id })
        .await
        .unwrap()
        .into_inner();
    assert!(sb.stop_reason.starts_with("lost:"), "{}", sb.stop_reason);
    t.stop().await;
}
