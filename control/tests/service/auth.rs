//! API keys: everything but health needs one; refusals reveal nothing.

use tonic::Code;
use tonic::transport::Endpoint;
use wrenn_control::auth::{ApiKey, UNAUTHENTICATED_MESSAGE};
use wrenn_control::client::Client;
use wrenn_proto::wrenn::v1::sandboxes_client::SandboxesClient;
use wrenn_proto::wrenn::v1::{CreateSandboxRequest, ListSandboxesRequest};

use crate::common::{FakeAgent, TestControl};

#[tokio::test]
async fn missing_or_wrong_keys_are_refused_alike() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let channel = Endpoint::from_shared(t.control.url())
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut bare = SandboxesClient::new(channel.clone());
    let err = bare
        .create(CreateSandboxRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.message(), UNAUTHENTICATED_MESSAGE);

    let unknown = ApiKey::generate();
    let bad_headers = [
        format!("Bearer {}", unknown.expose()),
        format!("Bearer {}x", t.key),
        format!("Basic {}", t.key),
        t.key.clone(),
        "Bearer wrn_short".to_owned(),
        "Bearer ".to_owned(),
    ];
    for header in bad_headers {
        let mut req = tonic::Request::new(CreateSandboxRequest::default());
        req.metadata_mut()
            .insert("authorization", header.parse().unwrap());
        let err = bare.create(req).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{header:?}");
        assert_eq!(err.message(), UNAUTHENTICATED_MESSAGE, "{header:?}");
    }
    // Nothing reached the host.
    assert!(
        agent.state.calls().iter().all(|c| !c.starts_with("create")),
        "{:?}",
        agent.state.calls()
    );

    // An unknown service without a key: still only UNAUTHENTICATED.
    let mut other =
        wrenn_proto::wrenn::v1::host_agent_client::HostAgentClient::new(channel.clone());
    let err = other
        .list_sandboxes(ListSandboxesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // The right key, scheme in any case, works.
    let mut req = tonic::Request::new(ListSandboxesRequest::default());
    req.metadata_mut().insert(
        "authorization",
        format!("bearer {}", t.key).parse().unwrap(),
    );
    bare.list(req).await.expect("valid key accepted");
    let mut c = t.client().await;
    assert!(
        c.sandboxes
            .list(ListSandboxesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .sandboxes
            .is_empty()
    );
    t.stop().await;
}

#[tokio::test]
async fn health_needs_no_key() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let channel = Endpoint::from_shared(t.control.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["wrenn.v1.Sandboxes", "wrenn.v1.Hosts", "wrenn.v1.Keys"] {
        let res = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            res.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }
    t.stop().await;
}

#[tokio::test]
async fn admin_key_is_private_and_survives_a_restart() {
    use std::os::unix::fs::PermissionsExt;
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let path = t.control.admin_key_path();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
    let key = t.key.clone();
    let dir = t.dir.keep();
    t.control.shutdown();
    t.control.wait().await.unwrap();

    let opts = wrenn_control::Options::new(&dir)
        .with_listen("127.0.0.1:0".parse().unwrap())
        .with_agent(agent.url());
    let again = wrenn_control::start(opts).await.unwrap();
    assert_eq!(
        again.admin_key_created(),
        None,
        "a second start makes no new key"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), key);
    let mut c = Client::connect(&again.url(), &key).await.unwrap();
    c.sandboxes
        .list(ListSandboxesRequest::default())
        .await
        .expect("old key still valid");
    again.shutdown();
    again.wait().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
