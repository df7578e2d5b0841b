use super::*;

fn ctx(form: Form) -> RewriteCtx<'static> {
    RewriteCtx {
        form,
        id: "abc",
        port: 8000,
        sandbox_addr: Some("10.210.15.161".parse().unwrap()),
        public_host: Some(b"localhost:7880"),
    }
}

fn apply(f: impl Fn(&[u8]) -> Option<Vec<u8>>, v: &str) -> String {
    f(v.as_bytes()).map_or_else(|| v.to_owned(), |n| String::from_utf8(n).unwrap())
}

#[test]
fn location_table_path_form() {
    let c = ctx(Form::Path);
    let table = [
        // root-relative
        ("/", "/proxy/abc/8000/"),
        ("/login/", "/proxy/abc/8000/login/"),
        ("/x?y=1#f", "/proxy/abc/8000/x?y=1#f"),
        ("/a%2Fb/", "/proxy/abc/8000/a%2Fb/"),
        // already under the prefix: untouched
        ("/proxy/abc/8000/x", "/proxy/abc/8000/x"),
        ("/proxy/abc/8000", "/proxy/abc/8000"),
        // another sandbox's prefix is just a path
        ("/proxy/abcd/8000/x", "/proxy/abc/8000/proxy/abcd/8000/x"),
        // absolute URLs pointing at the upstream itself
        ("http://127.0.0.1:8000/x?y=1", "/proxy/abc/8000/x?y=1"),
        ("http://localhost:8000", "/proxy/abc/8000/"),
        ("http://LOCALHOST:8000?q", "/proxy/abc/8000/?q"),
        ("http://0.0.0.0:8000/", "/proxy/abc/8000/"),
        ("http://10.210.15.161:8000/tree", "/proxy/abc/8000/tree"),
        ("http://[::1]:8000/v6", "/proxy/abc/8000/v6"),
        ("http://user@127.0.0.1:8000/u", "/proxy/abc/8000/u"),
        ("HTTP://127.0.0.1:8000/case", "/proxy/abc/8000/case"),
        (
            "http://127.0.0.1:8000/proxy/abc/8000/known",
            "/proxy/abc/8000/known",
        ),
        // the browser's own host (the app echoed the forwarded Host)
        ("http://localhost:7880/lab", "/proxy/abc/8000/lab"),
        // untouched: protocol-relative, relative, foreign, other ports, other schemes
        ("//cdn.example.com/x", "//cdn.example.com/x"),
        ("x/y", "x/y"),
        ("../up", "../up"),
        ("?q=1", "?q=1"),
        ("https://example.com/login", "https://example.com/login"),
        ("http://127.0.0.1:9000/x", "http://127.0.0.1:9000/x"),
        ("http://127.0.0.1/x", "http://127.0.0.1/x"),
        ("http://10.210.0.9:8000/x", "http://10.210.0.9:8000/x"),
        ("mailto:a@b", "mailto:a@b"),
        ("", ""),
    ];
    for (input, want) in table {
        assert_eq!(apply(|v| c.location(v), input), want, "{input:?}");
    }
}

#[test]
fn location_table_subdomain_and_header_forms() {
    for form in [Form::Subdomain, Form::Header] {
        let c = ctx(form);
        let table = [
            ("/login/", "/login/"),
            ("/proxy/abc/8000/x?y", "/x?y"),
            ("/proxy/abc/8000", "/"),
            ("/proxy/abc/8000?q", "/?q"),
            ("/proxy/other/8000/x", "/proxy/other/8000/x"),
            ("http://127.0.0.1:8000/x?y=1", "/x?y=1"),
            ("http://localhost:8000", "/"),
            ("http://127.0.0.1:8000/proxy/abc/8000/z", "/z"),
            ("http://localhost:7880/lab", "http://localhost:7880/lab"),
            ("//cdn.example.com/x", "//cdn.example.com/x"),
            ("https://example.com/", "https://example.com/"),
            ("rel", "rel"),
            // A path starting with `//` stays a path on this host, never a
            // protocol-relative URL to host `x` (found by fuzzing).
            ("http://localhost:8000//x", "/.//x"),
            ("/proxy/abc/8000//x", "/.//x"),
        ];
        for (input, want) in table {
            assert_eq!(apply(|v| c.location(v), input), want, "{form:?} {input:?}");
        }
    }
}

#[test]
fn refresh_url_is_rewritten_like_location() {
    let c = ctx(Form::Path);
    let table = [
        ("5; url=/next", "5; url=/proxy/abc/8000/next"),
        ("0;URL='/q?x=1'", "0;URL='/proxy/abc/8000/q?x=1'"),
        (
            "3; url = \"http://127.0.0.1:8000/\"",
            "3; url = \"/proxy/abc/8000/\"",
        ),
        ("5; url=https://example.com/", "5; url=https://example.com/"),
        ("10", "10"),
    ];
    for (input, want) in table {
        assert_eq!(apply(|v| c.refresh(v), input), want, "{input:?}");
    }
}

#[test]
fn cookie_paths_move_under_the_prefix_in_path_form_only() {
    let c = ctx(Form::Path);
    let table = [
        ("sid=1; Path=/", "sid=1; Path=/proxy/abc/8000/"),
        (
            "sid=1; HttpOnly; path=/app; SameSite=Lax",
            "sid=1; HttpOnly; path=/proxy/abc/8000/app; SameSite=Lax",
        ),
        ("sid=1;Path= /", "sid=1;Path= /proxy/abc/8000/"),
        (
            "sid=1; Path=/proxy/abc/8000/",
            "sid=1; Path=/proxy/abc/8000/",
        ),
        ("sid=1", "sid=1"),
        ("path=/value-not-attr", "path=/value-not-attr"),
    ];
    for (input, want) in table {
        assert_eq!(apply(|v| c.set_cookie(v), input), want, "{input:?}");
    }
    assert_eq!(ctx(Form::Subdomain).set_cookie(b"sid=1; Path=/"), None);
    assert_eq!(
        ctx(Form::Header).set_cookie(b"sid=1; Path=/; Domain=x"),
        None
    );
}

#[test]
fn every_cookie_path_is_rewritten_and_every_domain_dropped() {
    let c = ctx(Form::Path);
    let table = [
        // Several Path attributes (browsers use the last): all of them.
        (
            "sid=1; Path=/a; Path=/b",
            "sid=1; Path=/proxy/abc/8000/a; Path=/proxy/abc/8000/b",
        ),
        (
            "sid=1; Path=/proxy/abc/8000/x; path=/",
            "sid=1; Path=/proxy/abc/8000/x; path=/proxy/abc/8000/",
        ),
        // Case variants and whitespace around names and values.
        ("sid=1; PATH=/x", "sid=1; PATH=/proxy/abc/8000/x"),
        ("sid=1; pAtH=/x", "sid=1; pAtH=/proxy/abc/8000/x"),
        (
            "sid=1;   Path  =   /x  ",
            "sid=1;   Path  =   /proxy/abc/8000/x  ",
        ),
        ("sid=1;\tPath\t=\t/x", "sid=1;\tPath\t=\t/proxy/abc/8000/x"),
        // Domain, in any case and spacing, with or without a value: dropped.
        ("sid=1; Domain=localhost", "sid=1"),
        (
            "sid=1; domain=.localhost; Path=/",
            "sid=1; Path=/proxy/abc/8000/",
        ),
        (
            "sid=1; Path=/; DOMAIN = example.com ; Secure",
            "sid=1; Path=/proxy/abc/8000/; Secure",
        ),
        ("sid=1; Domain; HttpOnly", "sid=1; HttpOnly"),
        (
            "sid=1; Domain=a; Domain=b; Path=/x; Domain=c",
            "sid=1; Path=/proxy/abc/8000/x",
        ),
        // Quoted, empty, relative and attribute-less Paths: browsers ignore
        // them (the default path is under the prefix already); kept as sent.
        ("sid=1; Path=\"/x\"", "sid=1; Path=\"/x\""),
        ("sid=1; Path=", "sid=1; Path="),
        ("sid=1; Path", "sid=1; Path"),
        ("sid=1; Path=x/y", "sid=1; Path=x/y"),
        // A quoted cookie value is the name=value part: never an attribute.
        ("sid=\"a b\"; Path=/", "sid=\"a b\"; Path=/proxy/abc/8000/"),
        ("Domain=x; Path=/", "Domain=x; Path=/proxy/abc/8000/"),
        ("Path=/", "Path=/"),
        // Another sandbox's prefix, or one that only starts like ours.
        (
            "sid=1; Path=/proxy/other/8000/",
            "sid=1; Path=/proxy/abc/8000/proxy/other/8000/",
        ),
        (
            "sid=1; Path=/proxy/abc/80001",
            "sid=1; Path=/proxy/abc/8000/proxy/abc/80001",
        ),
        // Look-alike attribute names are left alone.
        (
            "sid=1; Pathname=/x; XDomain=y",
            "sid=1; Pathname=/x; XDomain=y",
        ),
        // Empty attributes and a trailing `;` survive.
        ("sid=1;; Path=/;", "sid=1;; Path=/proxy/abc/8000/;"),
        // No Path at all: nothing to do.
        (
            "sid=1; Max-Age=60; Secure; HttpOnly",
            "sid=1; Max-Age=60; Secure; HttpOnly",
        ),
    ];
    for (input, want) in table {
        assert_eq!(apply(|v| c.set_cookie(v), input), want, "{input:?}");
    }
    // Unchanged values allocate nothing.
    assert_eq!(c.set_cookie(b"sid=1; Path=/proxy/abc/8000/; Secure"), None);
    assert_eq!(c.set_cookie(b"sid=1"), None);
}
