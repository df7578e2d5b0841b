//! Response header rewriting through the running proxy (the full table is a
//! unit test in `src/rewrite/tests.rs`).

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_is_rewritten_per_form() {
    let h = Harness::start().await;
    let up = Upstream::http().await;
    h.running("sbloc", 1).await;
    let p = up.port();
    let path_form = [
        ("/login/".to_owned(), format!("/proxy/sbloc/{p}/login/")),
        (
            format!("http://127.0.0.1:{p}/x?y=1"),
            format!("/proxy/sbloc/{p}/x?y=1"),
        ),
        (
            format!("http://localhost:{p}"),
            format!("/proxy/sbloc/{p}/"),
        ),
        (
            "//cdn.example.com/x".to_owned(),
            "//cdn.example.com/x".to_owned(),
        ),
        (
            "https://example.com/".to_owned(),
            "https://example.com/".to_owned(),
        ),
        ("rel/x".to_owned(), "rel/x".to_owned()),
    ];
    for (location, want) in path_form {
        let r = get(
            h.addr(),
            &format!("/proxy/sbloc/{p}/"),
            &[("x-test-status", "302"), ("x-test-location", &location)],
        )
        .await;
        assert_eq!(r.status, 302);
        assert_eq!(
            r.header("location"),
            Some(want.as_str()),
            "path form, {location}"
        );
    }
    let host = format!("{p}-sbloc.localhost:{}", h.addr().port());
    let subdomain_form = [
        (format!("/proxy/sbloc/{p}/app/"), "/app/".to_owned()),
        (format!("http://127.0.0.1:{p}/x?y=1"), "/x?y=1".to_owned()),
        ("/login/".to_owned(), "/login/".to_owned()),
        (
            "//cdn.example.com/x".to_owned(),
            "//cdn.example.com/x".to_owned(),
        ),
    ];
    for (location, want) in subdomain_form {
        let r = get(
            h.addr(),
            "/",
            &[
                ("host", &host),
                ("x-test-status", "301"),
                ("x-test-location", &location),
            ],
        )
        .await;
        assert_eq!(
            r.header("location"),
            Some(want.as_str()),
            "subdomain form, {location}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_refresh_and_content_location_follow_the_prefix() {
    let h = Harness::start().await;
    let up = Upstream::http().await;
    h.running("sbcook", 1).await;
    let p = up.port();
    let mut conn = Conn::open(h.addr()).await;
    let r = conn
        .send(
            "GET",
            &format!("/proxy/sbcook/{p}/"),
            &[
                ("x-test-set-cookie", "a=1; Path=/"),
                ("x-test-set-cookie", "b=2; HttpOnly; path=/api"),
                ("x-test-refresh", "0; url=/next"),
                ("x-test-content-location", "/doc.json"),
            ],
        )
        .await;
    let cookies: Vec<_> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        cookies,
        [
            format!("a=1; Path=/proxy/sbcook/{p}/"),
            format!("b=2; HttpOnly; path=/proxy/sbcook/{p}/api")
        ]
    );
    assert_eq!(
        r.header("refresh"),
        Some(format!("0; url=/proxy/sbcook/{p}/next").as_str())
    );
    assert_eq!(
        r.header("content-location"),
        Some(format!("/proxy/sbcook/{p}/doc.json").as_str())
    );

    // Subdomain form: cookies stay as the app set them.
    let host = format!("{p}-sbcook.localhost");
    let r = get(
        h.addr(),
        "/",
        &[("host", &host), ("x-test-set-cookie", "a=1; Path=/")],
    )
    .await;
    assert_eq!(r.header("set-cookie"), Some("a=1; Path=/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cookie_path_and_domain_is_rewritten_on_both_paths() {
    for fast_path in [true, false] {
        let h = Harness::start_with(|c| c.fast_path = fast_path).await;
        let up = Upstream::http().await;
        h.running("sbcook2", 1).await;
        let p = up.port();
        let r = get(
            h.addr(),
            &format!("/proxy/sbcook2/{p}/"),
            &[
                (
                    "x-test-set-cookie",
                    "a=1; Path=/x; Domain=localhost; path=/",
                ),
                ("x-test-set-cookie", "b=2; DOMAIN=.localhost"),
                ("x-test-set-cookie", "c=3; Path=\"/q\"; Secure"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "fast_path {fast_path}");
        let cookies: Vec<_> = r
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            cookies,
            [
                format!("a=1; Path=/proxy/sbcook2/{p}/x; path=/proxy/sbcook2/{p}/"),
                "b=2".to_owned(),
                "c=3; Path=\"/q\"; Secure".to_owned(),
            ],
            "fast_path {fast_path}"
        );
        let fast = h.metric("wrenn_proxy_fast_path_requests_total");
        assert_eq!(fast, if fast_path { 1.0 } else { 0.0 });

        // Subdomain form: as the app set them.
        let host = format!("{p}-sbcook2.localhost");
        let r = get(
            h.addr(),
            "/",
            &[
                ("host", &host),
                ("x-test-set-cookie", "a=1; Path=/; Domain=localhost"),
            ],
        )
        .await;
        assert_eq!(
            r.header("set-cookie"),
            Some("a=1; Path=/; Domain=localhost")
        );
    }
}
