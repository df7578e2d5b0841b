use std::sync::Arc;

use bytes::Bytes;

use super::response::{Body, Reply, parse_response};
use super::*;
use crate::config::ProxyConfig;
use crate::connect::DirectConnector;
use crate::metrics::Metrics;
use crate::routes::{Route, RouteOptions, RouteState, RouteTable};

const ID: &str = "abc123";

fn fast(state: RouteState, options: RouteOptions) -> FastPath {
    let routes = Arc::new(RouteTable::new());
    routes.upsert(Route::new(
        ID.parse().unwrap(),
        state,
        Some("10.210.0.3".parse().unwrap()),
        1,
        options,
    ));
    let metrics = Metrics::new(routes.clone()).unwrap();
    let config = ProxyConfig::default();
    let own = crate::hosts::OwnAddrs::of(["192.0.2.10".parse().unwrap()]);
    let hosts = crate::hosts::AllowedHosts::new(&config.domain, &[], own).unwrap();
    let proxy = WrennProxy::new(
        &config,
        routes,
        metrics,
        Arc::new(DirectConnector),
        Arc::new(hosts),
    );
    FastPath::new(proxy, 8)
}

/// The plan for `head` and the upstream head it wrote.
fn planned(f: &FastPath, head: &str) -> Option<(Plan, String)> {
    let mut scratch = Scratch::default();
    let p = f.plan(
        &Bytes::copy_from_slice(head.as_bytes()),
        "192.0.2.7",
        &mut scratch,
    )?;
    Some((p, String::from_utf8(scratch.head).unwrap()))
}

fn plan_of(f: &FastPath, head: &str) -> Option<Plan> {
    planned(f, head).map(|(p, _)| p)
}

#[test]
fn path_form_get_is_taken_with_the_prefix_stripped_and_forwarded_headers() {
    let f = fast(RouteState::Running, RouteOptions::default());
    let (p, up) = planned(
        &f,
        "GET /proxy/abc123/8000/a%20b/?q=1 HTTP/1.1\r\nHost: localhost:7880\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: keep-alive\r\nAccept: text/html\r\nCookie: x=1\r\n\r\n",
    )
    .expect("taken");
    assert!(p.html && !p.head_only && !p.client_close);
    assert_eq!(&p.head[p.path.clone()], b"/proxy/abc123/8000/a%20b/");
    assert_eq!(
        up,
        "GET /a%20b/?q=1 HTTP/1.1\r\nHost: localhost:7880\r\nAccept: text/html\r\nCookie: x=1\r\n\
         x-forwarded-host: localhost:7880\r\nx-forwarded-for: 192.0.2.7\r\n\
         x-forwarded-proto: http\r\nx-forwarded-prefix: /proxy/abc123/8000\r\n"
    );
}

#[test]
fn hop_by_hop_request_headers_stay_here_as_pingora_strips_them() {
    let f = fast(RouteState::Running, RouteOptions::default());
    let (_, up) = planned(
        &f,
        "GET /proxy/abc123/8000/ HTTP/1.1\r\nHost: localhost\r\nKeep-Alive: 5\r\n\
         Proxy-Authorization: Basic eDp5\r\nProxy-Connection: keep-alive\r\nTrailer: x\r\n\
         Proxy-Authenticate: Basic\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nX-Kept: 1\r\n\r\n",
    )
    .expect("taken");
    assert_eq!(
        up,
        "GET / HTTP/1.1\r\nHost: localhost\r\nX-Kept: 1\r\nx-forwarded-host: localhost\r\n\
         x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: http\r\nx-forwarded-prefix: /proxy/abc123/8000\r\n"
    );
}

#[test]
fn subdomain_head_with_localhost_host_policy() {
    let options = RouteOptions {
        default_host: Some(crate::routes::HostPolicy::Localhost),
        ..RouteOptions::default()
    };
    let f = fast(RouteState::Running, options);
    let (p, up) = planned(
        &f,
        "HEAD /x?y HTTP/1.1\r\nhost: 3000-ABC123.localhost\r\nconnection: Close\r\nX-Forwarded-Prefix: /evil\r\n\r\n",
    )
    .expect("taken");
    assert!(p.head_only && p.client_close);
    assert_eq!(
        up,
        "HEAD /x?y HTTP/1.1\r\nhost: localhost:3000\r\nx-forwarded-host: 3000-ABC123.localhost\r\n\
         x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: http\r\n"
    );
}

#[test]
fn everything_else_is_left_to_pingora() {
    let f = fast(RouteState::Running, RouteOptions::default());
    let ok = "GET /proxy/abc123/8000/ HTTP/1.1\r\nHost: localhost\r\n\r\n";
    assert!(plan_of(&f, ok).is_some());
    for (why, head) in [
        (
            "a body",
            "POST /proxy/abc123/8000/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\n",
        ),
        (
            "GET with a length",
            "GET /proxy/abc123/8000/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
        ),
        (
            "chunked",
            "GET /proxy/abc123/8000/ HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        (
            "upgrade",
            "GET /proxy/abc123/8000/ HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        ),
        (
            "expect",
            "GET /proxy/abc123/8000/ HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n\r\n",
        ),
        (
            "connection options",
            "GET /proxy/abc123/8000/ HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive, x-secret\r\n\r\n",
        ),
        (
            "two hosts",
            "GET /proxy/abc123/8000/ HTTP/1.1\r\nHost: localhost\r\nHost: evil\r\n\r\n",
        ),
        (
            "HTTP/1.0",
            "GET /proxy/abc123/8000/ HTTP/1.0\r\nHost: localhost\r\n\r\n",
        ),
        (
            "the 308",
            "GET /proxy/abc123/8000 HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ),
        (
            "an unknown sandbox",
            "GET /proxy/zzz/8000/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ),
        (
            "a bad port",
            "GET /proxy/abc123/0/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ),
        (
            "the guest port",
            "GET /proxy/abc123/49983/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ),
        (
            "no route form",
            "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        ),
        (
            "an incomplete head",
            "GET /proxy/abc123/8000/ HTTP/1.1\r\nHost: localhost\r\n",
        ),
        (
            "a Host the proxy does not answer (421)",
            "GET /proxy/abc123/8000/ HTTP/1.1\r\nHost: rebound.example\r\n\r\n",
        ),
        (
            "another host's address (421)",
            "GET /proxy/abc123/8000/ HTTP/1.1\r\nHost: 192.0.2.11:7880\r\n\r\n",
        ),
        (
            "a header-routed request with a foreign Host (421)",
            "GET / HTTP/1.1\r\nHost: rebound.example\r\nE2b-Sandbox-Id: abc123\r\nE2b-Sandbox-Port: 8000\r\n\r\n",
        ),
        (
            "an absolute-form target naming a foreign host (421)",
            "GET http://rebound.example/proxy/abc123/8000/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ),
    ] {
        assert!(plan_of(&f, head).is_none(), "{why}");
    }
    let paused = fast(RouteState::Paused, RouteOptions::default());
    assert!(plan_of(&paused, ok).is_none(), "a paused sandbox");
    // The host's own address, loopback, and header routing on localhost.
    for head in [
        "GET /proxy/abc123/8000/ HTTP/1.1\r\nHost: 192.0.2.10:7880\r\n\r\n",
        "GET /proxy/abc123/8000/ HTTP/1.1\r\nHost: [::1]:7880\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: localhost\r\nE2b-Sandbox-Id: abc123\r\nE2b-Sandbox-Port: 8000\r\n\r\n",
    ] {
        assert!(plan_of(&f, head).is_some(), "{head:?}");
    }
}

#[test]
fn response_framing() {
    let head = |s: &str| parse_response(s.as_bytes(), None);
    let r = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nbody")
        .unwrap()
        .unwrap();
    assert!(matches!(r.body, Body::Length(12)) && !r.http10 && !r.upstream_close);
    assert_eq!(r.len, 39);
    let r = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(
        matches!(r.body, Body::Chunked(_)),
        "chunked wins over a length"
    );
    let r = head("HTTP/1.0 200 OK\r\nConnection: keep-alive, Close\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(matches!(r.body, Body::Close) && r.http10 && r.upstream_close);
    let r = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(matches!(r.body, Body::Close));
    assert!(
        head("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n")
            .unwrap()
            .is_none()
    );
    for bad in [
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "SSH-2.0-OpenSSH\r\n\r\n",
    ] {
        assert!(head(bad).is_err(), "{bad}");
    }
}

#[test]
fn client_head_rewrites_location_and_drops_hop_by_hop() {
    let f = fast(RouteState::Running, RouteOptions::default());
    let p = plan_of(
        &f,
        "GET /proxy/abc123/8000/d HTTP/1.1\r\nHost: localhost:7880\r\n\r\n",
    )
    .unwrap();
    let client = |raw: &str, closing: bool| {
        let mut out = Vec::new();
        let keep = move || closing;
        let mut reply = Reply {
            plan: &p,
            closing: &keep,
            out: &mut out,
        };
        let head = parse_response(raw.as_bytes(), Some(&mut reply))
            .unwrap()
            .unwrap();
        (head, String::from_utf8(out).unwrap())
    };
    let (head, out) = client(
        "HTTP/1.0 301 Moved\r\nLocation: /d/\r\nConnection: close\r\nKeep-Alive: 5\r\n\
         Set-Cookie: s=1; Path=/\r\nContent-Length: 0\r\nX-App: y\r\n\r\n",
        false,
    );
    assert!(!head.close_client && head.upstream_close && head.http10);
    assert_eq!(
        out,
        "HTTP/1.1 301 Moved\r\nLocation: /proxy/abc123/8000/d/\r\n\
         Set-Cookie: s=1; Path=/proxy/abc123/8000/\r\nContent-Length: 0\r\nX-App: y\r\n\r\n"
    );
    let (head, out) = client(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
        true,
    );
    assert!(head.close_client && matches!(head.body, Body::Chunked(_)));
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    // Without a length the body runs to the upstream's close: so does the client's connection.
    let (head, out) = client("HTTP/1.1 200 OK\r\nX: 1\r\n\r\n", false);
    assert!(head.close_client && matches!(head.body, Body::Close));
    assert!(out.ends_with("connection: close\r\n\r\n"));
    // 304 has no body whatever its headers say; informational heads are not rewritten.
    let (head, _) = client(
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        false,
    );
    assert!(matches!(head.body, Body::None) && !head.close_client);
    let (head, out) = client("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", false);
    assert_eq!((head.status, out.as_str()), (103, ""));
}
