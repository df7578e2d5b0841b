//! The three URL forms against a real upstream, and the answers the proxy
//! gives itself (308, 400, 404, 409) with their formats and headers.

use wrenn_proto::wrenn::v1::SandboxState;
use wrenn_proto::wrenn::v1::sandbox_event::Kind;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_form_strips_the_prefix_and_keeps_path_and_query_byte_for_byte() {
    let h = Harness::start().await;
    let up = Upstream::http().await;
    h.running("sbpath", 1).await;
    let p = up.port();
    let cases = [
        (format!("/proxy/sbpath/{p}/"), "/"),
        (format!("/proxy/sbpath/{p}/dir/sub/"), "/dir/sub/"),
        (format!("/proxy/sbpath/{p}/file.txt"), "/file.txt"),
        (
            format!("/proxy/sbpath/{p}/a%2Fb%20c/?x=%41&y=a+b"),
            "/a%2Fb%20c/?x=%41&y=a+b",
        ),
        (format!("/proxy/sbpath/{p}/q?"), "/q?"),
        (format!("/proxy/sbpath/{p}//double//"), "//double//"),
        (format!("/proxy/sbpath/{p}/%E2%9C%93"), "/%E2%9C%93"),
    ];
    for (target, upstream_target) in cases {
        let r = get(h.addr(), &target, &[]).await;
        assert_eq!(r.status, 200, "{target}: {}", r.text());
        assert_eq!(r.json()["target"], upstream_target, "{target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_prefix_redirects_into_it_with_the_query() {
    let h = Harness::start().await;
    h.running("sbredir", 1).await;
    for (target, location) in [
        ("/proxy/sbredir/8000", "/proxy/sbredir/8000/"),
        (
            "/proxy/sbredir/8000?tab=1&x=%2F",
            "/proxy/sbredir/8000/?tab=1&x=%2F",
        ),
    ] {
        let r = get(h.addr(), target, &[]).await;
        assert_eq!(r.status, 308, "{target}");
        assert_eq!(r.header("location"), Some(location));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_replace_client_values_and_host_is_public() {
    let h = Harness::start_with(|c| c.allowed_hosts = vec!["public.test".into()]).await;
    let up = Upstream::http().await;
    h.running("sbfwd", 1).await;
    let target = format!("/proxy/sbfwd/{}/x", up.port());
    let r = get(
        h.addr(),
        &target,
        &[
            ("host", "public.test:7880"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-prefix", "/evil"),
        ],
    )
    .await;
    let j = r.json();
    assert_eq!(
        j["host"], "public.test:7880",
        "the browser's Host goes upstream"
    );
    assert_eq!(
        j["x-forwarded-for"], "127.0.0.1",
        "a client-sent X-Forwarded-For is replaced"
    );
    assert_eq!(j["x-forwarded-proto"], "http");
    assert_eq!(j["x-forwarded-host"], "public.test:7880");
    assert_eq!(
        j["x-forwarded-prefix"],
        format!("/proxy/sbfwd/{}", up.port())
    );

    // Subdomain form: no prefix header, even a client-sent one.
    let host = format!("{}-sbfwd.localhost:{}", up.port(), h.addr().port());
    let r = get(
        h.addr(),
        "/x",
        &[("host", &host), ("x-forwarded-prefix", "/evil")],
    )
    .await;
    assert_eq!(r.json()["x-forwarded-prefix"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subdomain_form_routes_by_host_case_insensitively_and_keeps_the_path() {
    let h = Harness::start().await;
    let up = Upstream::http().await;
    h.running("sbsub", 1).await;
    let port = h.addr().port();
    for host in [
        format!("{}-sbsub.localhost:{port}", up.port()),
        format!("{}-SbSub.LOCALHOST:{port}", up.port()),
        format!("{}-sbsub.localhost", up.port()),
    ] {
        let r = get(h.addr(), "/proxy/not/1/a%2Fb/?q=1", &[("host", &host)]).await;
        assert_eq!(r.status, 200, "{host}: {}", r.text());
        assert_eq!(r.json()["target"], "/proxy/not/1/a%2Fb/?q=1", "{host}");
    }
    let r = get(
        h.addr(),
        "/",
        &[("host", &format!("0-sbsub.localhost:{port}"))],
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid port")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_form_routes_e2b_and_wrenn_headers_and_rejects_half_of_them() {
    let h = Harness::start().await;
    let up = Upstream::http().await;
    h.running("sbhdr", 1).await;
    let port = up.port().to_string();
    for (id_h, port_h, host) in [
        (
            "e2b-sandbox-id",
            "e2b-sandbox-port",
            format!("localhost:{}", h.addr().port()),
        ),
        (
            "wrenn-sandbox-id",
            "wrenn-sandbox-port",
            h.addr().to_string(),
        ),
    ] {
        let r = get(
            h.addr(),
            "/files?path=/a%20b",
            &[("host", &host), (id_h, "sbhdr"), (port_h, &port)],
        )
        .await;
        assert_eq!(r.status, 200, "{id_h}: {}", r.text());
        assert_eq!(r.json()["target"], "/files?path=/a%20b");
    }
    let r = get(h.addr(), "/", &[("e2b-sandbox-id", "sbhdr")]).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("E2b-Sandbox-Port")
    );
    let r = get(h.addr(), "/", &[("e2b-sandbox-port", &port)]).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("E2b-Sandbox-Id")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ports_and_ids_answer_400_naming_what_was_wrong() {
    let h = Harness::start().await;
    h.running("sbbad", 1).await;
    for (target, want) in [
        ("/proxy/sbbad/0/", "invalid port \"0\""),
        ("/proxy/sbbad/65536/", "invalid port \"65536\""),
        ("/proxy/sbbad/http/", "invalid port \"http\""),
        ("/proxy/SB-BAD/80/", "invalid sandbox id \"SB-BAD\""),
        ("/proxy/sbbad/", "expected /proxy/<sandbox-id>/<port>/"),
    ] {
        let r = get(h.addr(), target, &[]).await;
        assert_eq!(r.status, 400, "{target}");
        let e = &r.json()["error"];
        assert_eq!(e["code"], "bad_request");
        assert!(
            e["message"].as_str().unwrap().contains(want),
            "{target}: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sandbox_is_404_as_json_or_html_with_cors_and_no_store() {
    let h = Harness::start().await;
    let r = get(
        h.addr(),
        "/proxy/nosuch/8000/",
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("wrenn-error"), Some("sandbox_not_found"));
    let e = &r.json()["error"];
    assert_eq!(e["code"], "sandbox_not_found");
    assert_eq!(e["sandbox_id"], "nosuch");
    assert_eq!(e["message"], "sandbox nosuch does not exist on this host");

    let accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let r = get(h.addr(), "/proxy/nosuch/8000/", &[("accept", accept)]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(
        r.text().contains("sandbox nosuch does not exist"),
        "{}",
        r.text()
    );
    assert!(r.text().starts_with("<!doctype html>"));

    let r = get(h.addr(), "/", &[("sec-fetch-mode", "navigate")]).await;
    assert_eq!((r.status, r.header("wrenn-error")), (404, Some("no_route")));
    assert!(r.text().contains("<html"));
    // HEAD gets the same head and no body.
    let r = Conn::open(h.addr())
        .await
        .send("HEAD", "/proxy/nosuch/8000/", &[])
        .await;
    assert_eq!((r.status, r.body.len()), (404, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_and_starting_sandboxes_answer_409_naming_the_state() {
    let h = Harness::start().await;
    let up = Upstream::http().await;
    h.announce("sbpaused", "127.0.0.1", SandboxState::Paused, 1)
        .await;
    h.announce("sbstart", "", SandboxState::Starting, 1).await;
    for (id, state) in [("sbpaused", "paused"), ("sbstart", "starting")] {
        let r = get(h.addr(), &format!("/proxy/{id}/{}/", up.port()), &[]).await;
        assert_eq!(r.status, 409, "{id}");
        let e = &r.json()["error"];
        assert_eq!(e["code"], "sandbox_not_running");
        assert_eq!(e["message"], format!("sandbox {id} is {state}"));
    }
    assert_eq!(
        up.accepted(),
        0,
        "no connection to a sandbox that is not running"
    );
    // Resumed: routed again.
    h.agent.emit(
        Kind::Resumed,
        sandbox("sbpaused", "127.0.0.1", SandboxState::Running, 1),
    );
    let routes = h.proxy.routes().clone();
    wait_until("resume", std::time::Duration::from_secs(5), || {
        routes
            .get("sbpaused")
            .is_some_and(|r| r.state == wrenn_proxy::RouteState::Running)
    })
    .await;
    assert_eq!(
        get(h.addr(), &format!("/proxy/sbpaused/{}/", up.port()), &[])
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_can_send_localhost_as_host_per_port() {
    let h = Harness::start_with(|c| c.allowed_hosts = vec!["public.test".into()]).await;
    let up = Upstream::http().await;
    let mut sb = sandbox("sbvite", "127.0.0.1", SandboxState::Running, 1);
    sb.spec = Some(wrenn_proto::wrenn::v1::SandboxSpec {
        metadata: [(
            format!("wrenn.proxy.host.{}", up.port()),
            "localhost".to_owned(),
        )]
        .into(),
        ..Default::default()
    });
    h.agent.emit(Kind::Running, sb);
    let routes = h.proxy.routes().clone();
    wait_until("route", std::time::Duration::from_secs(5), || {
        routes.get("sbvite").is_some()
    })
    .await;
    let r = get(
        h.addr(),
        &format!("/proxy/sbvite/{}/", up.port()),
        &[("host", "public.test")],
    )
    .await;
    assert_eq!(r.json()["host"], format!("localhost:{}", up.port()));
    assert_eq!(r.json()["x-forwarded-host"], "public.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_can_keep_the_path_prefix_per_port() {
    let h = Harness::start().await;
    let kept = Upstream::http().await;
    let stripped = Upstream::http().await;
    let mut sb = sandbox("sbjupyter", "127.0.0.1", SandboxState::Running, 1);
    sb.spec = Some(wrenn_proto::wrenn::v1::SandboxSpec {
        metadata: [(
            format!("wrenn.proxy.prefix.{}", kept.port()),
            "keep".to_owned(),
        )]
        .into(),
        ..Default::default()
    });
    h.agent.emit(Kind::Running, sb);
    let routes = h.proxy.routes().clone();
    wait_until("route", std::time::Duration::from_secs(5), || {
        routes.get("sbjupyter").is_some()
    })
    .await;
    let target = format!("/proxy/sbjupyter/{}/lab?x=%2F", kept.port());
    let r = get(h.addr(), &target, &[]).await;
    assert_eq!(r.json()["target"], target, "the whole path goes upstream");
    assert_eq!(r.json()["x-forwarded-prefix"], serde_json::Value::Null);
    // A Location already under the prefix stays as it is.
    let r = get(
        h.addr(),
        &target,
        &[
            ("x-test-status", "302"),
            (
                "x-test-location",
                &format!("/proxy/sbjupyter/{}/tree", kept.port()),
            ),
        ],
    )
    .await;
    assert_eq!(
        r.header("location"),
        Some(format!("/proxy/sbjupyter/{}/tree", kept.port()).as_str())
    );
    // Other ports keep the default.
    let r = get(
        h.addr(),
        &format!("/proxy/sbjupyter/{}/lab", stripped.port()),
        &[],
    )
    .await;
    assert_eq!(r.json()["target"], "/lab");
    assert_eq!(
        r.json()["x-forwarded-prefix"],
        format!("/proxy/sbjupyter/{}", stripped.port())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_agent_port_is_denied_by_default() {
    let h = Harness::start().await;
    h.running("sbdeny", 1).await;
    let r = get(h.addr(), "/proxy/sbdeny/49983/", &[]).await;
    assert_eq!(r.status, 403);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "port_denied");
    assert_eq!(
        e["message"],
        "port 49983 of sandbox sbdeny is the sandbox agent's: it needs the sandbox's access token (X-Access-Token)"
    );
    let r = get(
        h.addr(),
        "/",
        &[("e2b-sandbox-id", "sbdeny"), ("e2b-sandbox-port", "49983")],
    )
    .await;
    assert_eq!(r.status, 403);
}

type Headers<'a> = Vec<(&'a str, &'a str)>;

/// Port 49983 passes what E2B's SDKs send to envd (a token, the health
/// check, signed file URLs), in every URL form, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_agent_port_passes_envd_clients_only() {
    let h = Harness::start().await;
    let (_up, addr) = envd_upstream(1).await;
    h.announce("sbenvd", &addr, SandboxState::Running, 1).await;
    let port = h.addr().port();
    let sub = format!("49983-sbenvd.localhost:{port}");
    let e2b = [("e2b-sandbox-id", "sbenvd"), ("e2b-sandbox-port", "49983")];
    let token = ("x-access-token", "0123456789abcdef");
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v: Vec<(&str, &str)> = e2b.to_vec();
        v.extend_from_slice(extra);
        v
    };
    let sub_host = |extra: &[(&'static str, &'static str)]| {
        let mut v = vec![("host", sub.as_str())];
        v.extend_from_slice(extra);
        v
    };
    let passed: Vec<(&str, String, Headers, &str)> = vec![
        ("GET", "/".into(), with(&[token]), "/"),
        (
            "POST",
            "/process.Process/List".into(),
            with(&[token, ("content-type", "application/json")]),
            "/process.Process/List",
        ),
        (
            "POST",
            "/filesystem.Filesystem/Stat".into(),
            sub_host(&[token]),
            "/filesystem.Filesystem/Stat",
        ),
        (
            "GET",
            "/files?path=%2Fetc%2Fhosts".into(),
            sub_host(&[token]),
            "/files?path=%2Fetc%2Fhosts",
        ),
        (
            "GET",
            "/proxy/sbenvd/49983/health".into(),
            vec![],
            "/health",
        ),
        ("GET", "/health".into(), with(&[]), "/health"),
        (
            "GET",
            "/files?path=a.txt&signature=v1_abc&signature_expiration=9".into(),
            sub_host(&[]),
            "/files?path=a.txt&signature=v1_abc&signature_expiration=9",
        ),
        (
            "POST",
            "/files?signature=v1_abc".into(),
            sub_host(&[]),
            "/files?signature=v1_abc",
        ),
    ];
    let mut c = Conn::open(h.addr()).await;
    for (method, target, headers, upstream) in &passed {
        let r = c.send(method, target, headers).await;
        assert_eq!(r.status, 200, "{method} {target}: {}", r.text());
        assert_eq!(r.json()["target"], *upstream, "{method} {target}");
        assert_eq!(r.json()["method"], *method, "{method} {target}");
    }
    let refused: Vec<(&str, &str, Headers)> = vec![
        ("GET", "/proxy/sbenvd/49983/", vec![]),
        ("POST", "/wrenn.v1.Guest/Assign", with(&[])),
        ("POST", "/process.Process/Start", sub_host(&[])),
        ("GET", "/files?path=%2Fetc%2Fshadow", sub_host(&[])),
        ("GET", "/files?signature=", sub_host(&[])),
        ("GET", "/", with(&[("x-access-token", "")])),
        ("HEAD", "/health", with(&[])),
        ("POST", "/health", with(&[])),
    ];
    for (method, target, headers) in &refused {
        let r = Conn::open(h.addr())
            .await
            .send(method, target, headers)
            .await;
        assert_eq!(r.status, 403, "{method} {target}");
        assert_eq!(
            r.header("wrenn-error"),
            Some("port_denied"),
            "{method} {target}"
        );
        if *method != "HEAD" {
            let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
            assert!(msg.contains("X-Access-Token"), "{msg}");
        }
    }
}

/// An operator who lists 49983 in `denied_ports` shuts envd's clients out too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_guest_agent_port_is_refused_even_with_a_token() {
    let h = Harness::start_with(|c| c.denied_ports = vec![wrenn_types::GUEST_PORT]).await;
    let (up, addr) = envd_upstream(2).await;
    h.announce("sbenvdoff", &addr, SandboxState::Running, 1)
        .await;
    for target in ["/proxy/sbenvdoff/49983/", "/proxy/sbenvdoff/49983/health"] {
        let r = get(h.addr(), target, &[("x-access-token", "0123456789abcdef")]).await;
        assert_eq!(r.status, 403, "{target}");
        assert_eq!(
            r.json()["error"]["message"],
            "port 49983 of sandbox sbenvdoff is not served through the proxy"
        );
    }
    assert_eq!(up.accepted(), 0, "nothing reached the sandbox");
}
