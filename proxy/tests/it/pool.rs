//! The upstream keep-alive pool: reuse within a sandbox generation, never
//! across generations, nothing after destroy, and the per-upstream cap.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generations_at_the_same_address_never_share_a_pooled_socket() {
    // Each proxy thread has its own pool and each `get` is a new client
    // connection, which may land on either thread: one thread, one pool.
    let h = Harness::start_with(|c| c.threads = 1).await;
    let up = Upstream::http().await;
    let target = format!("/proxy/sbgen/{}/", up.port());
    h.running("sbgen", 1).await;
    let a = get(h.addr(), &target, &[]).await.json()["conn_id"].clone();
    let b = get(h.addr(), &target, &[]).await.json()["conn_id"].clone();
    assert_eq!(a, b, "same generation: the pooled connection is reused");
    assert_eq!(
        h.metric("wrenn_proxy_upstream_connections_total{reused=\"true\"}"),
        1.0
    );

    // The sandbox is recreated at the same address: a new generation.
    h.running("sbgen", 2).await;
    let c = get(h.addr(), &target, &[]).await.json()["conn_id"].clone();
    assert_ne!(
        c, a,
        "a new generation must not get the old generation's socket"
    );
    assert_eq!(up.accepted(), 2);
    let d = get(h.addr(), &target, &[]).await.json()["conn_id"].clone();
    assert_eq!(d, c, "the new generation pools its own connection");
    assert!(h.metric("wrenn_proxy_pool_reuse_ratio") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_right_after_destroy_is_404_without_touching_the_old_address() {
    let h = Harness::start().await;
    let up = Upstream::http().await;
    let target = format!("/proxy/sbdel/{}/", up.port());
    h.running("sbdel", 1).await;
    assert_eq!(get(h.addr(), &target, &[]).await.status, 200);
    let (accepted, attempts) = (
        up.accepted(),
        h.metric("wrenn_proxy_connect_attempts_total"),
    );
    let reused = h.metric("wrenn_proxy_upstream_connections_total{reused=\"true\"}");

    h.destroy("sbdel", 1).await;
    let r = get(h.addr(), &target, &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "sandbox_not_found");
    assert_eq!(
        up.accepted(),
        accepted,
        "no new connection to the old address"
    );
    assert_eq!(h.metric("wrenn_proxy_connect_attempts_total"), attempts);
    assert_eq!(
        h.metric("wrenn_proxy_upstream_connections_total{reused=\"true\"}"),
        reused,
        "the pooled socket of the destroyed sandbox is not used either"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_in_flight_cap_upstream_requests_ask_to_close() {
    let h = Harness::start_with(|c| c.upstream_max_in_flight = 1).await;
    let up = Upstream::http().await;
    h.running("sbcap", 1).await;
    let target = format!("/proxy/sbcap/{}/", up.port());
    let slow = [("x-test-delay-ms", "400")];
    let (a, b) = tokio::join!(get(h.addr(), &target, &slow), get(h.addr(), &target, &slow));
    let closes: Vec<_> = [a.json(), b.json()]
        .iter()
        .map(|j| j["connection"].clone())
        .collect();
    assert!(
        closes.contains(&serde_json::json!("close")) && closes.contains(&serde_json::Value::Null),
        "exactly the request above the cap carries Connection: close: {closes:?}"
    );
    assert_eq!(h.metric("wrenn_proxy_upstream_forced_close_total"), 1.0);
    // The open-connections gauge goes back to zero (logging runs after the response is out).
    let routes = h.proxy.routes().clone();
    wait_until(
        "in-flight released",
        std::time::Duration::from_secs(5),
        || routes.get("sbcap").unwrap().open_connections() == 0,
    )
    .await;
}
