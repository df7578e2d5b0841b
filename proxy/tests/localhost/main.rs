//! Issue 7 end to end: apps bound to localhost inside real namespace
//! sandboxes, reached through the real proxy in both URL forms — once over
//! the namespace fast path (the proxy opens sockets inside the sandbox's
//! netns) and once over the guest agent's forwarder with a proxy that only
//! dials the sandbox's address (what a Firecracker sandbox gets).
//!
//! Root only. Builds the `base` template on first use (debootstrap, cached
//! under `/var/cache/wrenn`). See `env.rs` for what is created and removed.

mod env;
mod sandbox;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wrenn_proxy::ProxyHandle;

use env::{Client, Env};
use sandbox::{Process, Resp, forms, get, sh};

const APP_PORT: u16 = 8123;
const WS_PORT: u16 = 8200;
const SWAP_PORT: u16 = 9000;
const QUIET_PORT: u16 = 8999;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn localhost_apps_through_the_namespace_fast_path() {
    let mut env = Env::start(8000..=8049).await;
    let proxy = env.fast().listen_addr();
    let attempts = connect_attempts(env.fast());
    scenario(&mut env.client, proxy, "tffast", false, &attempts).await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn localhost_apps_through_the_guest_forwarder() {
    let mut env = Env::start(8050..=8099).await;
    let proxy = env.direct().listen_addr();
    let attempts = connect_attempts(env.direct());
    scenario(&mut env.client, proxy, "tffwd", true, &attempts).await;
    env.finish().await;
}

/// Reads `wrenn_proxy_connect_attempts_total` of `proxy`.
fn connect_attempts(proxy: &ProxyHandle) -> impl Fn() -> f64 + use<> {
    let m = proxy.metrics().clone();
    move || {
        m.render()
            .lines()
            .find_map(|l| l.strip_prefix("wrenn_proxy_connect_attempts_total "))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }
}

async fn scenario(
    c: &mut Client,
    proxy: SocketAddr,
    id: &str,
    forward: bool,
    attempts: &impl Fn() -> f64,
) {
    let how = if forward {
        "guest forwarder"
    } else {
        "netns fast path"
    };
    sandbox::create(c, id, forward).await;
    sh(
        c,
        id,
        "mkdir -p /srv/local /srv/wide && echo l > /srv/local/local-app.txt && echo w > /srv/wide/wide-app.txt",
    )
    .await;

    // 1. `python3 -m http.server 8123 --bind 127.0.0.1` answers in both URL
    //    forms within 1 s of printing that it listens.
    let app = http_server(c, id, "127.0.0.1", APP_PORT, "/srv/local").await;
    let listening = app.1;
    for (host, target) in forms(proxy, id, APP_PORT) {
        until(&format!("{host}{target} to list the app"), || async {
            ok_with(&get(proxy, &host, &target).await, "local-app.txt")
        })
        .await;
    }
    let delay = listening.elapsed();
    println!("{how}: app printed that it listens → both URL forms answered: {delay:?}");
    assert!(delay < Duration::from_secs(1), "{how}: {delay:?}");

    // 2. 100 sequential connects (http.server closes every connection).
    for i in 0..100 {
        let (host, target) = &forms(proxy, id, APP_PORT)[i % 2];
        let r = get(proxy, host, target).await;
        assert!(ok_with(&r, "local-app.txt"), "{how}: connect {i}: {r:?}");
    }

    // 3. The guest agent's port is refused without an access token.
    let r = get(
        proxy,
        &format!("localhost:{}", proxy.port()),
        &format!("/proxy/{id}/49983/"),
    )
    .await;
    assert_eq!(r.status, 403, "{how}: {r:?}");

    // 4. A WebSocket to an app bound to localhost.
    let mut ws_app = Process::start(
        c,
        id,
        "python3",
        &["-c", sandbox::WS_ECHO, &WS_PORT.to_string()],
    )
    .await;
    ws_app.wait_line("listening").await;
    websocket_echo(proxy, id).await;

    // 5. Stopping the app answers 502 again, in both forms.
    app.0.kill(c, id).await;
    for (host, target) in forms(proxy, id, APP_PORT) {
        until(&format!("{host}{target} to answer 502"), || async {
            get(proxy, &host, &target).await.status == 502
        })
        .await;
    }

    // 6. Restarting on 0.0.0.0 right after the localhost app stopped: no fight
    //    over the port (the forwarder has let go by the time the app binds).
    for round in 0..3 {
        let local = http_server(c, id, "127.0.0.1", SWAP_PORT, "/srv/local").await;
        let (host, target) = &forms(proxy, id, SWAP_PORT)[round % 2];
        until("the localhost app", || async {
            ok_with(&get(proxy, host, target).await, "local-app.txt")
        })
        .await;
        local.0.kill(c, id).await;
        let wide = http_server(c, id, "0.0.0.0", SWAP_PORT, "/srv/wide").await;
        until("the 0.0.0.0 app", || async {
            ok_with(&get(proxy, host, target).await, "wide-app.txt")
        })
        .await;
        wide.0.kill(c, id).await;
    }

    // 7. A port nothing listens on keeps the 3-attempt connect retry.
    let before = attempts();
    let (host, target) = &forms(proxy, id, QUIET_PORT)[0];
    let r = get(proxy, host, target).await;
    assert_eq!(r.status, 502, "{how}: {r:?}");
    assert!(r.body.contains("port_closed"), "{how}: {r:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while attempts() < before + 3.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(attempts() - before, 3.0, "{how}: connect attempts");
}

/// `python3 -m http.server <port> --bind <bind> --directory <dir>`, once it
/// printed that it listens (a failed bind ends the output: the test fails).
async fn http_server(
    c: &mut Client,
    id: &str,
    bind: &str,
    port: u16,
    dir: &str,
) -> (Process, Instant) {
    let port = port.to_string();
    let args = [
        "-m",
        "http.server",
        &port,
        "--bind",
        bind,
        "--directory",
        dir,
    ];
    let mut p = Process::start(c, id, "python3", &args).await;
    let at = p.wait_line("Serving HTTP").await;
    (p, at)
}

fn ok_with(r: &Resp, marker: &str) -> bool {
    r.status == 200 && r.body.contains(marker)
}

/// Polls `cond` (each call is a real request) until it holds, for up to 5 s.
async fn until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn websocket_echo(proxy: SocketAddr, id: &str) {
    let host = format!("localhost:{}", proxy.port());
    let url = format!("ws://{host}/proxy/{id}/{WS_PORT}/echo");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut ws = loop {
        let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
        match tokio_tungstenite::client_async(url.as_str().into_client_request().unwrap(), tcp)
            .await
        {
            Ok((ws, resp)) if resp.status() == 101 => break ws,
            other => {
                assert!(Instant::now() < deadline, "no WebSocket upgrade: {other:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    for text in ["hello", "from outside the sandbox"] {
        ws.send(Message::text(text)).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo in time");
        assert_eq!(back.unwrap().unwrap(), Message::text(text));
    }
    let _ = ws.close(None).await;
}
