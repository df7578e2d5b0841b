//! The route table follows the agent's WatchSandboxes stream: snapshot, live
//! events, reconnect and resync, the decode limit; and the admin listener
//! reports on it (`/readyz`, `/routes` behind the agent's key).

use std::time::Duration;

use wrenn_proto::auth::Secret;
use wrenn_proto::wrenn::v1::sandbox_event::Kind;
use wrenn_proto::wrenn::v1::{SandboxSpec, SandboxState};
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
    // A port for an agent that is not up yet.
    let agent_port = unused_port();
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
    let agent = FakeAgent::start_on(listener, Default::default()).await;
    agent.set_quietly(sandbox("sblate", "127.0.0.1", SandboxState::Running, 1));
    wait_until("sync", Duration::from_secs(10), || routes.is_synced()).await;
    assert!(routes.get("sblate").is_some());
    assert_eq!(get(admin, "/readyz", &[]).await.status, 200);
}

const AGENT_AUTH: &str = "Bearer test-agent-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_serves_metrics_routes_and_health() {
    let h = Harness::start_with(|c| c.agent_key = Secret::new("test-agent-key")).await;
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

    // `/routes` lists every sandbox id: the agent's key holder only.
    let r = get(h.admin(), "/routes", &[]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert!(r.text().contains("authorization: Bearer <agent key>"));
    for wrong in [
        "Bearer wrong",
        "Bearer test-agent-key-",
        "bearer test-agent-key",
        "test-agent-key",
        "Basic dGVzdA==",
    ] {
        let r = get(h.admin(), "/routes", &[("authorization", wrong)]).await;
        assert_eq!(r.status, 401, "{wrong}");
        assert!(!r.text().contains("sbadm"));
    }
    let r = get(h.admin(), "/routes", &[("authorization", AGENT_AUTH)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["synced"], true);
    assert_eq!(j["routes"][0]["sandbox_id"], "sbadm");
    assert_eq!(j["routes"][0]["state"], "running");
    assert_eq!(j["routes"][0]["generation"], 4);
    assert_eq!(get(h.admin(), "/healthz", &[]).await.status, 200);
    assert_eq!(get(h.admin(), "/readyz", &[]).await.status, 200);
    assert_eq!(get(h.admin(), "/nope", &[]).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_is_disabled_without_an_agent_key() {
    let h = Harness::start().await; // agent_key: empty, the default
    h.running("sbnokey", 1).await;
    for auth in [None, Some("Bearer "), Some("Bearer x")] {
        let headers: Vec<_> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let r = get(h.admin(), "/routes", &headers).await;
        assert_eq!(r.status, 404, "{auth:?}");
        assert!(r.text().contains("/routes is disabled"), "{}", r.text());
        assert!(!r.text().contains("sbnokey"));
    }
    assert_eq!(get(h.admin(), "/readyz", &[]).await.status, 200);
}

/// Polls `path` on the admin listener until it answers `status`; the last body.
async fn admin_until(h: &Harness, path: &str, status: u16) -> String {
    let start = std::time::Instant::now();
    loop {
        let r = get(h.admin(), path, &[]).await;
        if r.status == status {
            return r.text();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{path} still answers {} ({}), not {status}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn quick_reconnects(c: &mut wrenn_proxy::ProxyConfig, fast_path: bool) {
    c.watch_backoff_ms = 20;
    c.watch_backoff_max_ms = 100;
    c.fast_path = fast_path;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_cannot_resync_is_not_ready_and_keeps_serving_its_routes() {
    for fast_path in [true, false] {
        let h = Harness::start_with(|c| quick_reconnects(c, fast_path)).await;
        let up = Upstream::http().await;
        h.running("sbstay", 1).await;
        let target = format!("/proxy/sbstay/{}/", up.port());
        assert_eq!(admin_until(&h, "/readyz", 200).await, "ready\n");

        // The stream breaks, and every new one breaks before its snapshot ends.
        h.agent.break_snapshots(true);
        h.agent.drop_streams();
        let why = admin_until(&h, "/readyz", 503).await;
        assert!(why.starts_with("not ready: "), "{why}");
        assert!(why.contains("fake agent"), "{why}");
        assert!(why.contains("the last 1 routes keep serving"), "{why}");
        let calls = h.agent.watch_calls();
        let agent = &h.agent;
        wait_until("two more failed resyncs", Duration::from_secs(10), || {
            agent.watch_calls() >= calls + 2
        })
        .await;
        assert_eq!(get(h.admin(), "/readyz", &[]).await.status, 503);
        let r = get(h.addr(), &target, &[]).await;
        assert_eq!(r.status, 200, "fast_path {fast_path}: {}", r.text());
        assert_eq!(h.metric("wrenn_proxy_watch_synced"), 0.0);

        // A good snapshot again: ready.
        h.agent.break_snapshots(false);
        assert_eq!(admin_until(&h, "/readyz", 200).await, "ready\n");
        assert_eq!(get(h.addr(), &target, &[]).await.status, 200);
        assert_eq!(h.metric("wrenn_proxy_watch_synced"), 1.0);
        let fast = h.metric("wrenn_proxy_fast_path_requests_total");
        assert_eq!(fast, if fast_path { 2.0 } else { 0.0 });
    }
}

/// A sandbox whose metadata holds `bytes` bytes.
fn with_metadata(id: &str, bytes: usize) -> wrenn_proto::wrenn::v1::Sandbox {
    let mut sb = sandbox(id, "127.0.0.1", SandboxState::Running, 1);
    sb.spec = Some(SandboxSpec {
        metadata: [("note".to_owned(), "x".repeat(bytes))].into(),
        ..Default::default()
    });
    sb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_decode_limit_makes_the_proxy_not_ready_until_a_good_snapshot() {
    for fast_path in [true, false] {
        let h = Harness::start_with(|c| quick_reconnects(c, fast_path)).await;
        let up = Upstream::http().await;
        h.running("sbkept", 1).await;
        let target = format!("/proxy/sbkept/{}/", up.port());

        // The largest legal event (env and metadata capped at 64 KiB) passes.
        h.agent
            .emit(Kind::Running, with_metadata("sbbig", 64 * 1024));
        let routes = h.proxy.routes().clone();
        wait_until("the 64 KiB event", Duration::from_secs(5), || {
            routes.get("sbbig").is_some()
        })
        .await;
        assert_eq!(admin_until(&h, "/readyz", 200).await, "ready\n");

        // A live event over the limit breaks the stream; the snapshot on
        // every reconnect carries it again.
        h.agent
            .emit(Kind::Running, with_metadata("sbhuge", 300 * 1024));
        let why = admin_until(&h, "/readyz", 503).await;
        assert!(
            why.contains("OutOfRange") && why.contains("262144"),
            "the reason names the limit: {why}"
        );
        assert!(routes.get("sbhuge").is_none());
        let r = get(h.addr(), &target, &[]).await;
        assert_eq!(r.status, 200, "fast_path {fast_path}: {}", r.text());
        let calls = h.agent.watch_calls();
        let agent = &h.agent;
        wait_until("two more failed resyncs", Duration::from_secs(10), || {
            agent.watch_calls() >= calls + 2
        })
        .await;
        assert_eq!(get(h.admin(), "/readyz", &[]).await.status, 503);
        assert!(routes.get("sbkept").is_some(), "routes are kept");

        // The agent stops sending it: the next snapshot syncs.
        h.agent.remove_quietly("sbhuge");
        assert_eq!(admin_until(&h, "/readyz", 200).await, "ready\n");
        assert!(routes.get("sbbig").is_some() && routes.get("sbkept").is_some());
        assert_eq!(get(h.addr(), &target, &[]).await.status, 200);
    }
}
