use super::*;

fn header<'a>(h: &'a ResponseHeader, name: &str) -> &'a str {
    h.headers.get(name).unwrap().to_str().unwrap()
}

#[test]
fn statuses_and_codes() {
    let id = || "abc".to_owned();
    let cases = [
        (
            Failure::BadRequest {
                message: "x".into(),
                sandbox_id: None,
                port: None,
            },
            400,
        ),
        (
            Failure::PortDenied {
                id: id(),
                port: 49983,
                why: PortDenial::Listed,
            },
            403,
        ),
        (
            Failure::NoRoute {
                domain: "localhost".into(),
            },
            404,
        ),
        (
            Failure::NotFound {
                id: id(),
                envd: false,
            },
            404,
        ),
        (
            Failure::NotRunning {
                id: id(),
                state: RouteState::Paused,
            },
            409,
        ),
        (
            Failure::PortClosed {
                id: id(),
                port: 8000,
            },
            502,
        ),
        (
            Failure::Unreachable {
                id: id(),
                port: 8000,
            },
            504,
        ),
        (
            Failure::UpstreamBroke {
                id: id(),
                port: 8000,
            },
            502,
        ),
        (
            Failure::UpstreamTimeout {
                id: id(),
                port: 8000,
            },
            504,
        ),
        (Failure::Internal, 500),
        (
            Failure::HostNotAllowed {
                host: "evil.com".into(),
            },
            421,
        ),
        (
            Failure::HeadersTooLarge {
                limit: HeadLimit::Bytes,
            },
            431,
        ),
    ];
    for (i, (f, status)) in cases.iter().enumerate() {
        assert_eq!(f.status(), *status, "{f:?}");
        assert_eq!(f.code(), Failure::CODES[i]);
    }
}

#[test]
fn a_gone_sandbox_on_the_envd_port_is_e2bs_502() {
    let f = Failure::NotFound {
        id: "abc".into(),
        envd: true,
    };
    assert_eq!(f.status(), 502);
    assert_eq!(f.code(), "sandbox_not_found");
    // E2B's SDKs read a 502 whose message says "was not found" as gone.
    assert!(f.message().contains("was not found"), "{}", f.message());
}

#[test]
fn a_denied_envd_port_says_the_token_is_missing() {
    let f = Failure::PortDenied {
        id: "abc".into(),
        port: 49983,
        why: PortDenial::NoAccessToken,
    };
    assert_eq!((f.status(), f.code()), (403, "port_denied"));
    let v: serde_json::Value = serde_json::from_str(&f.json()).unwrap();
    assert_eq!(
        v["error"]["message"],
        "port 49983 of sandbox abc is the sandbox agent's: it needs the sandbox's access token (X-Access-Token)"
    );
    assert_eq!(v["error"]["port"], 49983);
    assert!(f.html().contains("X-Access-Token"));
}

#[test]
fn json_body_names_sandbox_and_port() {
    let f = Failure::PortClosed {
        id: "abc".into(),
        port: 8000,
    };
    let (h, body) = f.response(false);
    assert_eq!(h.status.as_u16(), 502);
    assert_eq!(header(&h, "content-type"), "application/json");
    assert_eq!(header(&h, "cache-control"), "no-store");
    assert_eq!(header(&h, "access-control-allow-origin"), "*");
    assert_eq!(header(&h, "wrenn-error"), "port_closed");
    assert_eq!(header(&h, "content-length"), body.len().to_string());
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "port_closed");
    assert_eq!(v["error"]["sandbox_id"], "abc");
    assert_eq!(v["error"]["port"], 8000);
    assert_eq!(
        v["error"]["message"],
        "sandbox abc is running but nothing listens on port 8000"
    );
    let v: serde_json::Value =
        serde_json::from_str(&Failure::NoRoute { domain: "d".into() }.json()).unwrap();
    assert!(v["error"]["sandbox_id"].is_null() && v["error"]["port"].is_null());
}

#[test]
fn html_page_is_escaped_and_explains_what_to_do() {
    let f = Failure::BadRequest {
        message: "invalid sandbox id \"<script>\"".into(),
        sandbox_id: None,
        port: None,
    };
    let page = f.html();
    assert!(
        !page.contains("<script>") && page.contains("&lt;script&gt;"),
        "{page}"
    );
    let page = Failure::PortClosed {
        id: "abc".into(),
        port: 8000,
    }
    .html();
    assert!(page.contains("nothing listens on port 8000"), "{page}");
    assert!(
        page.contains("<code>python3 -m http.server 8000 --bind 0.0.0.0</code>"),
        "{page}"
    );
    let (h, _) = Failure::Internal.response(true);
    assert_eq!(header(&h, "content-type"), "text/html; charset=utf-8");
}

#[test]
fn html_is_for_navigations_and_html_accepts() {
    assert!(wants_html(
        Some(b"text/html,application/xhtml+xml,*/*;q=0.8"),
        None
    ));
    assert!(wants_html(None, Some(b"navigate")));
    assert!(!wants_html(Some(b"application/json"), Some(b"cors")));
    assert!(!wants_html(Some(b"*/*"), None));
    assert!(!wants_html(None, None));
}

#[test]
fn redirect_has_location_and_the_common_headers() {
    let (h, _) = redirect(http::HeaderValue::from_static("/proxy/abc/80/?q=1"));
    assert_eq!(h.status.as_u16(), 308);
    assert_eq!(header(&h, "location"), "/proxy/abc/80/?q=1");
    assert_eq!(header(&h, "cache-control"), "no-store");
    assert_eq!(header(&h, "access-control-allow-origin"), "*");
}

#[test]
fn refused_hosts_and_large_heads_explain_themselves_on_the_wire() {
    let f = Failure::HostNotAllowed {
        host: "evil.com:7880".into(),
    };
    assert_eq!(
        f.message(),
        "host \"evil.com:7880\" is not served by this proxy"
    );
    assert!(f.hint().contains("allowed_hosts"));
    let wire = String::from_utf8(f.to_wire(false, false)).unwrap();
    assert!(
        wire.starts_with("HTTP/1.1 421 Misdirected Request\r\n"),
        "{wire}"
    );
    assert!(wire.contains("wrenn-error: host_not_allowed\r\n"), "{wire}");
    assert!(
        wire.contains("connection: close\r\n\r\n{\"error\""),
        "{wire}"
    );

    let f = Failure::HeadersTooLarge {
        limit: HeadLimit::Bytes,
    };
    assert!(
        f.message().contains("64 KiB (65536 bytes)"),
        "{}",
        f.message()
    );
    let wire = String::from_utf8(f.to_wire(true, false)).unwrap();
    assert!(
        wire.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{wire}"
    );
    assert!(wire.contains("Content-Type: text/html"), "{wire}");
    assert!(wire.contains("clear this site"), "{wire}");
    let head_only = String::from_utf8(f.to_wire(true, true)).unwrap();
    assert!(head_only.ends_with("\r\n\r\n"), "{head_only}");
    let fields = Failure::HeadersTooLarge {
        limit: HeadLimit::Fields,
    };
    assert!(fields.message().contains("more than 256 header fields"));
}
