//! The host watcher: lifecycle events from the agent reach the store at once,
//! without waiting for a reconciler pass (the tests set its interval to an
//! hour).

use std::time::Duration;

use tokio::net::TcpListener;
use wrenn_control::store::RecordState;
use wrenn_proto::wrenn::v1::{CreateSandboxRequest, SandboxRef, SandboxState, sandbox_event::Kind};

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

async fn watching(agent: &FakeAgent) {
    let state = agent.state.clone();
    eventually(
        Duration::from_secs(10),
        "the control plane to watch the host",
        move || {
            let n = state.watchers();
            async move { n == 1 }
        },
    )
    .await;
}

async fn stopped_with(t: &TestControl, id: &str, what: &str) -> String {
    let store = t.control.store().clone();
    let sid: wrenn_types::SandboxId = id.parse().unwrap();
    eventually(Duration::from_secs(10), what, || {
        let store = store.clone();
        let sid = sid.clone();
        async move { store.get_sandbox(&sid).await.unwrap().unwrap().state == RecordState::Stopped }
    })
    .await;
    record(t, id).await.stop_reason
}

#[tokio::test]
async fn a_ttl_expiry_on_the_host_is_recorded_at_once() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    watching(&agent).await;
    let id = create(&t).await;
    agent.state.expire(&id);
    let reason = stopped_with(&t, &id, "the expiry to be recorded").await;
    assert_eq!(
        reason,
        "expired: its timeout ran out and host local destroyed it"
    );
    t.stop().await;
}

#[tokio::test]
async fn host_side_changes_update_the_record() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    watching(&agent).await;
    let id = create(&t).await;

    // Paused by the host itself.
    let sb = {
        let mut map = agent.state.sandboxes.lock();
        let sb = map.get_mut(&id).unwrap();
        sb.state = SandboxState::Paused as i32;
        sb.clone()
    };
    agent.state.publish(Kind::Paused, sb);
    let store = t.control.store().clone();
    let sid: wrenn_types::SandboxId = id.parse().unwrap();
    eventually(Duration::from_secs(10), "the pause to be recorded", || {
        let store = store.clone();
        let sid = sid.clone();
        async move { store.get_sandbox(&sid).await.unwrap().unwrap().state == RecordState::Paused }
    })
    .await;

    // Destroyed by the host before its time (an agent shutting down, say).
    let sb = agent.state.sandboxes.lock().remove(&id).unwrap();
    agent.state.publish(Kind::Destroyed, sb);
    assert_eq!(
        stopped_with(&t, &id, "the destroy to be recorded").await,
        "destroyed on host local"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_destroy_through_the_api_keeps_its_own_reason() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    watching(&agent).await;
    let mut c = t.client().await;
    for _ in 0..20 {
        let id = create(&t).await;
        c.sandboxes
            .destroy(SandboxRef {
                sandbox_id: id.clone(),
            })
            .await
            .unwrap();
        assert_eq!(record(&t, &id).await.stop_reason, "destroyed by request");
    }
    t.stop().await;
}

#[tokio::test]
async fn the_watch_comes_back_after_the_agent_restarts() {
    let mut agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    watching(&agent).await;
    let id = create(&t).await;
    let (addr, state) = (agent.addr, agent.state.clone());
    agent.stop().await;
    let again = FakeAgent::start_on(TcpListener::bind(addr).await.unwrap(), state).await;
    watching(&again).await;
    again.state.expire(&id);
    let reason = stopped_with(&t, &id, "the expiry to be recorded after the restart").await;
    assert!(reason.starts_with("expired:"), "{reason}");
    t.stop().await;
}
