//! The route table follows the agent's WatchSandboxes stream: snapshot, live
//! events, reconnect and resync; and the admin listener reports on it.

use std::time::Duration;

use wrenn_proto::wrenn::v1::SandboxState;
use wrenn_proxy::{Proxy, RouteState};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_existing_before_start_is_routed() {
    let agent = FakeAgent::start().await;
    agent.set_quietly(sandbox("sbold", "127.0.0.1", SandboxState::Running, 7));
    agent.set_quietly(sandbox("sbnap", "127.0.0.1", SandboxState::Paused, 1));
    let proxy = Proxy::new(config(&agent)).start().unwrap();
    let routes = proxy.routes().clone();
    wait_until("sync", Duration::from_secs(10), || routes.is_synced()).await;
    assert_eq!(routes.len(), 2);
    let old = routes.get("sbold").unwrap();
    assert_eq!((old.state, old.generation), (RouteState::Running, 7));
    assert_eq!(old.address, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(routes.get("sbnap").unwrap().state, RouteState::Paused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_stream_reconnects_and_resyncs() {
    let h = Harness::start_with(|c| c.watch_backoff_ms = 50).await;
    h.running("sbkeep", 1).await;
    h.running("sbdrop", 1).await;
    assert_eq!(h.agent.watch_calls(), 1);
    let before = h.proxy.routes().changes();

    // While the proxy is disconnected, one sandbox goes away and one appears.
    h.agent.remove_quietly("sbdrop");
    h.agent
        .set_quietly(sandbox("sbnew", "127.0.0.1", SandboxState::Running, 3));
    h.agent.drop_streams();

    let routes = h.proxy.routes().clone();
    wait_until("the resync", Duration::from_secs(10), || {
        routes.changes() > before && routes.get("sbnew").is_some()
    })
    .await;
    assert!(
        routes.get("sbdrop").is_none(),
        "a route the agent no longer has is dropped"
    );
    assert!(routes.get("sbkeep").is_some());
    assert_eq!(h.agent.watch_calls(), 2);
    assert_eq!(h.metric("wrenn_proxy_watch_reconnects_total"), 1.0);
    assert_eq!(h.metric("wrenn_proxy_watch_synced"), 1.0);

    // Live events flow on the new stream.
    h.running("sblive", 1).await;
    h.destroy("sbkeep", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_is_down_at_start_is_waited_for() {
    // Reserve a port for an agent that is not up yet.
    let agent_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = config_for(format!("http://127.0.0.1:{agent_port}"));
    c.watch_backoff_ms = 50;
    c.watch_backoff_max_ms = 200;
    let proxy = Proxy::new(c).start().unwrap();
    let admin = proxy.admin_addr().unwrap();
    let r = get(admin, "/readyz", &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let routes = proxy.routes().clone();
    assert!(!routes.is_synced());
    let m = proxy.metrics().clone();
    wait_until("a failed watch attempt", Duration::from_secs(5), || {
        metric(&m.render(), "wrenn_proxy_watch_reconnects_total") >= 1.0
    })
    .await;
    // Now the agent comes up on that port, with one sandbox.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", agent_port))
        .await
        .unwrap();
    let agent = FakeAgent::start_on(listener).await;
    agent.set_quietly(sandbox("sblate", "127.0.0.1", SandboxState::Running, 1));
    wait_until("sync", Duration::from_secs(10), || routes.is_synced()).await;
    assert!(routes.get("sblate").is_some());
    assert_eq!(get(admin, "/readyz", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_serves_metrics_routes_and_health() {
    let h = Harness::start().await;
    let up = Upstream::http().await;
    h.running("sbadm", 4).await;
    assert_eq!(
        get(h.addr(), &format!("/proxy/sbadm/{}/", up.port()), &[])
            .await
            .status,
        200
    );
    assert_eq!(get(h.addr(), "/proxy/nope/1/", &[]).await.status, 404);

    h.wait_metric("wrenn_proxy_request_duration_seconds_count", 2.0)
        .await;
    let text = get(h.admin(), "/metrics", &[]).await.text();
    assert_eq!(
        metric(&text, "wrenn_proxy_requests_total{class=\"2xx\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "wrenn_proxy_requests_total{class=\"4xx\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "wrenn_proxy_errors_total{class=\"sandbox_not_found\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "wrenn_proxy_request_duration_seconds_count"),
        2.0
    );
    assert_eq!(metric(&text, "wrenn_proxy_routes"), 1.0);
    assert_eq!(
        metric(
            &text,
            "wrenn_proxy_sandbox_open_connections{sandbox_id=\"sbadm\"}"
        ),
        0.0
    );
    assert!(
        text.contains("wrenn_proxy_sandbox_open_connections{sandbox_id=\"sbadm\"} 0"),
        "{text}"
    );
    assert!(metric(&text, "wrenn_proxy_response_body_bytes_total") > 0.0);
    assert_eq!(metric(&text, "wrenn_proxy_watch_synced"), 1.0);

    let r = get(h.admin(), "/routes", &[]).await;
    let j = r.json();
    assert_eq!(j["synced"], true);
    assert_eq!(j["routes"][0]["sandbox_id"], "sbadm");
    assert_eq!(j["routes"][0]["state"], "running");
    assert_eq!(j["routes"][0]["generation"], 4);
    assert_eq!(get(h.admin(), "/healthz", &[]).await.status, 200);
    assert_eq!(get(h.admin(), "/readyz", &[]).await.status, 200);
    assert_eq!(get(h.admin(), "/nope", &[]).await.status, 404);
}
