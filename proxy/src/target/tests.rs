use super::*;

const DOMAIN: &str = "localhost";

fn req<'a>(host: &'a str, target: &'a str) -> RequestView<'a> {
    RequestView {
        host: Some(host.as_bytes()),
        target: target.as_bytes(),
        ..Default::default()
    }
}

fn target(p: Parsed<'_>) -> (Form, String, u16, Option<String>) {
    match p {
        Parsed::Target(t) => (
            t.form,
            t.id.into_owned(),
            t.port,
            t.upstream_path
                .map(|p| String::from_utf8(p.to_vec()).unwrap()),
        ),
        other => panic!("expected a target, got {other:?}"),
    }
}

fn bad(p: Parsed<'_>) -> String {
    match p {
        Parsed::Bad(b) => b.message,
        other => panic!("expected a bad request, got {other:?}"),
    }
}

#[test]
fn path_form_keeps_rest_query_and_encoding_byte_for_byte() {
    let cases = [
        ("/proxy/abc/8000/", "/"),
        ("/proxy/abc/8000/x/y/", "/x/y/"),
        ("/proxy/abc/8000/x?q=1&r=%2F", "/x?q=1&r=%2F"),
        ("/proxy/abc/8000/a%2Fb%20c/", "/a%2Fb%20c/"),
        ("/proxy/abc/8000//double", "//double"),
        ("/proxy/abc/8000/?only=query", "/?only=query"),
    ];
    for (path, upstream) in cases {
        let (form, id, port, up) = target(parse(DOMAIN, req("localhost:7880", path)));
        assert_eq!(
            (form, id.as_str(), port),
            (Form::Path, "abc", 8000),
            "{path}"
        );
        assert_eq!(up.as_deref(), Some(upstream), "{path}");
    }
}

#[test]
fn bare_path_prefix_redirects_with_query() {
    assert_eq!(
        parse(DOMAIN, req("h", "/proxy/abc/8000")),
        Parsed::Redirect(b"/proxy/abc/8000/".to_vec())
    );
    assert_eq!(
        parse(DOMAIN, req("h", "/proxy/abc/8000?a=1&b")),
        Parsed::Redirect(b"/proxy/abc/8000/?a=1&b".to_vec())
    );
}

#[test]
fn path_form_rejects_bad_ids_and_ports() {
    assert!(bad(parse(DOMAIN, req("h", "/proxy/ABC/8000/"))).contains("invalid sandbox id"));
    assert!(bad(parse(DOMAIN, req("h", "/proxy/a-b/8000/"))).contains("invalid sandbox id"));
    for port in ["0", "65536", "80x", "-1", "999999", "+80"] {
        let msg = bad(parse(DOMAIN, req("h", &format!("/proxy/abc/{port}/"))));
        assert!(
            msg.contains("invalid port") && msg.contains("1 to 65535"),
            "{port}: {msg}"
        );
    }
    for path in [
        "/proxy",
        "/proxy/",
        "/proxy/abc",
        "/proxy/abc/",
        "/proxy/abc//x",
    ] {
        let msg = bad(parse(DOMAIN, req("h", path)));
        assert!(msg.contains("/proxy/<sandbox-id>/<port>/"), "{path}: {msg}");
    }
    assert_eq!(
        target(parse(DOMAIN, req("h", "/proxy/abc/65535/"))).2,
        65535
    );
    assert_eq!(target(parse(DOMAIN, req("h", "/proxy/abc/1/"))).2, 1);
}

#[test]
fn subdomain_form_is_case_insensitive_and_ignores_the_path() {
    for host in [
        "8000-abc.localhost",
        "8000-abc.localhost:7880",
        "8000-ABC.LocalHost:7880",
    ] {
        let (form, id, port, up) = target(parse(DOMAIN, req(host, "/proxy/x/1/y?z")));
        assert_eq!(
            (form, id.as_str(), port, up),
            (Form::Subdomain, "abc", 8000, None),
            "{host}"
        );
    }
    let (_, id, port, _) = target(parse("sb.example.com", req("3000-x9.sb.example.com", "/")));
    assert_eq!((id.as_str(), port), ("x9", 3000));
}

#[test]
fn subdomain_form_rejects_malformed_labels() {
    let cases = [
        ("abc.localhost", "no '-'"),
        ("0-abc.localhost", "invalid port"),
        ("80-.localhost", "invalid sandbox id"),
        ("80-a_b.localhost", "invalid sandbox id"),
        ("x.80-abc.localhost", "more than one label"),
        ("abc-80.localhost", "invalid port"),
    ];
    for (host, want) in cases {
        let msg = bad(parse(DOMAIN, req(host, "/")));
        assert!(msg.contains(want), "{host}: {msg}");
    }
    // Split at the first '-': the rest must be a valid id.
    assert!(bad(parse(DOMAIN, req("80-a-b.localhost", "/"))).contains("invalid sandbox id"));
}

#[test]
fn header_form_on_localhost_ip_and_domain() {
    for host in [
        "localhost:7880",
        "127.0.0.1:7880",
        "[::1]:7880",
        "localhost",
        "LOCALHOST",
    ] {
        let r = RequestView {
            id_header: Some(b"abc"),
            port_header: Some(b"49983"),
            ..req(host, "/files?path=/x")
        };
        let (form, id, port, up) = target(parse(DOMAIN, r));
        assert_eq!(
            (form, id.as_str(), port, up),
            (Form::Header, "abc", 49983, None),
            "{host}"
        );
    }
    let r = RequestView {
        id_header: Some(b"abc"),
        port_header: Some(b"80"),
        ..req("sb.io", "/")
    };
    assert_eq!(target(parse("sb.io", r)).0, Form::Header);
}

#[test]
fn header_form_needs_both_headers() {
    let only_id = RequestView {
        id_header: Some(b"abc"),
        ..req("localhost", "/")
    };
    assert!(bad(parse(DOMAIN, only_id)).contains("E2b-Sandbox-Port"));
    let only_port = RequestView {
        port_header: Some(b"80"),
        ..req("localhost", "/")
    };
    assert!(bad(parse(DOMAIN, only_port)).contains("E2b-Sandbox-Id"));
    let bad_port = RequestView {
        id_header: Some(b"abc"),
        port_header: Some(b"0"),
        ..req("localhost", "/")
    };
    assert!(bad(parse(DOMAIN, bad_port)).contains("invalid port"));
}

#[test]
fn routing_headers_keep_the_first_of_each_and_prefer_wrenns() {
    let mut r = RoutingHeaders::default();
    for (name, value) in [
        ("e2b-sandbox-id", "e2b"),
        ("Accept", "*/*"),
        ("WRENN-SANDBOX-ID", "first"),
        ("e2b-sandbox-port", "81"),
        ("wrenn-sandbox-id", "second"),
    ] {
        let taken = r.offer(name, value.as_bytes());
        assert_eq!(taken, name != "Accept", "{name}");
    }
    let v = r.view(Some(b"localhost"), b"/");
    assert_eq!(v.id_header, Some(&b"first"[..]));
    assert_eq!(v.port_header, Some(&b"81"[..]));
    assert_eq!(v.repeated, Some("Wrenn-Sandbox-Id"));
    let once = RoutingHeaders::default().view(None, b"/");
    assert_eq!((once.id_header, once.repeated), (None, None));
}

#[test]
fn a_repeated_routing_header_is_refused_where_headers_route() {
    let r = RequestView {
        id_header: Some(b"abc"),
        port_header: Some(b"80"),
        repeated: Some("Wrenn-Sandbox-Id"),
        ..req("localhost", "/")
    };
    let message = bad(parse(DOMAIN, r));
    assert!(
        message.contains("Wrenn-Sandbox-Id is given more than once"),
        "{message}"
    );
    // Where the headers do not route, their repetition does not matter.
    let r = RequestView {
        id_header: Some(b"abc"),
        port_header: Some(b"80"),
        repeated: Some("Wrenn-Sandbox-Id"),
        ..req("90-def.localhost", "/")
    };
    assert_eq!(target(parse(DOMAIN, r)).0, Form::Subdomain);
}

#[test]
fn headers_are_ignored_on_other_hosts_and_subdomains_win() {
    let r = RequestView {
        id_header: Some(b"abc"),
        port_header: Some(b"80"),
        ..req("proxy.example.com", "/proxy/def/90/x")
    };
    let (form, id, port, _) = target(parse(DOMAIN, r));
    assert_eq!((form, id.as_str(), port), (Form::Path, "def", 90));
    let r = RequestView {
        id_header: Some(b"abc"),
        port_header: Some(b"80"),
        ..req("90-def.localhost", "/")
    };
    assert_eq!(target(parse(DOMAIN, r)).0, Form::Subdomain);
}

#[test]
fn absolute_form_uses_its_authority() {
    let (form, id, port, _) = target(parse(DOMAIN, req("ignored", "http://8000-abc.localhost/x")));
    assert_eq!((form, id.as_str(), port), (Form::Subdomain, "abc", 8000));
    let (form, _, _, up) = target(parse(DOMAIN, req("h", "http://h:7880/proxy/abc/80/y?z")));
    assert_eq!((form, up.as_deref()), (Form::Path, Some("/y?z")));
}

#[test]
fn other_urls_have_no_route() {
    for path in ["/", "/favicon.ico", "/proxyx/abc/80/", "/api/proxy/abc/80/"] {
        assert_eq!(
            parse(DOMAIN, req("localhost:7880", path)),
            Parsed::NoRoute,
            "{path}"
        );
    }
    assert_eq!(parse(DOMAIN, req("localhost", "/")), Parsed::NoRoute);
    let no_host = RequestView {
        target: b"/",
        ..Default::default()
    };
    assert_eq!(parse(DOMAIN, no_host), Parsed::NoRoute);
}
