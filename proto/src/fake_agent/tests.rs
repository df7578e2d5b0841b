//! The watch protocol as the fake serves it.

use std::time::Duration;

use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use super::{FakeAgent, sandbox};
use crate::wrenn::v1::host_agent_client::HostAgentClient;
use crate::wrenn::v1::sandbox_event::Kind;
use crate::wrenn::v1::{SandboxEvent, SandboxState, WatchSandboxesRequest};

type Events = tonic::Streaming<SandboxEvent>;

async fn client(agent: &FakeAgent) -> HostAgentClient<Channel> {
    let ch = Endpoint::from_shared(agent.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    HostAgentClient::new(ch)
}

async fn watch(agent: &FakeAgent) -> Events {
    client(agent)
        .await
        .watch_sandboxes(WatchSandboxesRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// The next event as (kind, sandbox id).
async fn next(events: &mut Events) -> Result<Option<(Kind, String)>, tonic::Status> {
    let ev = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("an event within 10 s")?;
    Ok(ev.map(|e| (e.kind(), e.sandbox.map(|s| s.id).unwrap_or_default())))
}

fn running(id: &str) -> crate::wrenn::v1::Sandbox {
    sandbox(id, "127.0.0.1", SandboxState::Running, 1)
}

#[tokio::test]
async fn snapshot_synced_then_live_events() {
    let agent = FakeAgent::start().await;
    agent.set_quietly(running("a"));
    agent.set_quietly(running("b"));
    let mut events = watch(&agent).await;
    for want in [
        (Kind::Existing, "a"),
        (Kind::Existing, "b"),
        (Kind::Synced, ""),
    ] {
        assert_eq!(
            next(&mut events).await.unwrap(),
            Some((want.0, want.1.into()))
        );
    }
    assert_eq!((agent.watch_calls(), agent.watchers()), (1, 1));

    agent.emit(Kind::Running, running("c"));
    agent.emit(Kind::Destroyed, running("a"));
    agent.remove_quietly("b");
    assert_eq!(agent.len(), 1);
    assert_eq!(
        next(&mut events).await.unwrap(),
        Some((Kind::Running, "c".into()))
    );
    assert_eq!(
        next(&mut events).await.unwrap(),
        Some((Kind::Destroyed, "a".into()))
    );

    agent.drop_streams();
    let err = next(&mut events).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("fake agent"), "{err}");
    assert_eq!(agent.watchers(), 0);
}

#[tokio::test]
async fn a_slow_watcher_loses_nothing() {
    let agent = FakeAgent::start().await;
    let mut events = watch(&agent).await;
    assert_eq!(
        next(&mut events).await.unwrap(),
        Some((Kind::Synced, String::new()))
    );
    for i in 0..5000 {
        agent.emit(Kind::Running, running(&format!("s{i:04}")));
    }
    for i in 0..5000 {
        let got = next(&mut events).await.unwrap();
        assert_eq!(got, Some((Kind::Running, format!("s{i:04}"))));
    }
}

#[tokio::test]
async fn broken_snapshots_end_before_synced() {
    let agent = FakeAgent::start().await;
    agent.set_quietly(running("a"));
    agent.break_snapshots(true);
    let mut events = watch(&agent).await;
    assert_eq!(
        next(&mut events).await.unwrap(),
        Some((Kind::Existing, "a".into()))
    );
    let err = next(&mut events).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(agent.watchers(), 0);

    agent.break_snapshots(false);
    let mut events = watch(&agent).await;
    assert_eq!(
        next(&mut events).await.unwrap(),
        Some((Kind::Existing, "a".into()))
    );
    assert_eq!(
        next(&mut events).await.unwrap(),
        Some((Kind::Synced, String::new()))
    );
    assert_eq!(agent.watch_calls(), 2);
}

#[tokio::test]
async fn dropping_the_agent_ends_its_streams_and_closes_the_port() {
    let agent = FakeAgent::start().await;
    let addr = agent.addr;
    let mut events = watch(&agent).await;
    assert_eq!(
        next(&mut events).await.unwrap(),
        Some((Kind::Synced, String::new()))
    );
    drop(agent);
    assert_eq!(
        next(&mut events).await.unwrap_err().code(),
        Code::Unavailable
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still listening");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_restart_on_the_same_port_serves_the_same_state() {
    let mut agent = FakeAgent::start().await;
    agent.set_quietly(running("kept"));
    let (addr, state) = (agent.addr, agent.state.clone());
    agent.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let again = FakeAgent::start_on(listener, state).await;
    let mut events = watch(&again).await;
    assert_eq!(
        next(&mut events).await.unwrap(),
        Some((Kind::Existing, "kept".into()))
    );
    drop(agent); // already stopped: the new server's streams stay open
    again.emit(Kind::Paused, running("kept"));
    assert_eq!(
        next(&mut events).await.unwrap(),
        Some((Kind::Synced, String::new()))
    );
    assert_eq!(
        next(&mut events).await.unwrap(),
        Some((Kind::Paused, "kept".into()))
    );
}
