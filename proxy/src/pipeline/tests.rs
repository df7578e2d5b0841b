use std::sync::Arc;

use super::response::{self, Edit, REWRITTEN};
use super::upstream;
use super::*;
use crate::routes::{Route, RouteOptions, RouteState};
use crate::target::Form;

fn ctx(form: Form) -> RequestCtx {
    let mut ctx = RequestCtx::new();
    ctx.route = Some(Arc::new(Route::new(
        "abc123".parse().unwrap(),
        RouteState::Running,
        Some("10.210.0.3".parse().unwrap()),
        1,
        RouteOptions::default(),
    )));
    ctx.form = Some(form);
    ctx.port = 8000;
    ctx
}

#[test]
fn every_rewritten_name_is_one_the_rewriter_changes_and_no_other() {
    let ctx = ctx(Form::Path);
    let rw = response::rewrite_ctx(&ctx, Some(b"localhost:7880")).unwrap();
    // A value each rewritten header changes in path form.
    let value = |name: &str| match name {
        "refresh" => &b"0; url=/next"[..],
        "set-cookie" => b"s=1; Path=/",
        _ => b"/next",
    };
    for name in REWRITTEN {
        for spelled in [name.to_owned(), name.to_ascii_uppercase()] {
            assert!(
                matches!(
                    response::edit(&rw, &spelled, value(name), false),
                    Edit::Replace(_)
                ),
                "{spelled}"
            );
        }
    }
    for other in ["x-location", "link", "content-type"] {
        assert_eq!(
            response::edit(&rw, other, b"/next", false),
            Edit::Keep,
            "{other}"
        );
    }
    for hop in ["Connection", "keep-alive", "Proxy-Connection"] {
        assert_eq!(
            response::edit(&rw, hop, b"close", false),
            Edit::Drop,
            "{hop}"
        );
    }
    assert_eq!(
        response::edit(&rw, "content-length", b"3", true),
        Edit::Drop
    );
    assert_eq!(
        response::edit(&rw, "content-length", b"3", false),
        Edit::Keep
    );
}

#[test]
fn added_headers_come_in_one_order_with_their_values() {
    let ctx = ctx(Form::Path);
    let edits = UpstreamEdits {
        strip_from: Some(18),
        localhost_host: true,
        prefix: true,
    };
    let mut got = Vec::new();
    upstream::added(
        &ctx,
        edits,
        Some(b"localhost:7880"),
        Some("192.0.2.7"),
        |n, value| {
            let mut v = Vec::new();
            value(&mut v);
            got.push(format!("{n}: {}", String::from_utf8(v).unwrap()));
        },
    );
    assert_eq!(
        got,
        [
            "host: localhost:8000",
            "x-forwarded-host: localhost:7880",
            "x-forwarded-for: 192.0.2.7",
            "x-forwarded-proto: http",
            "x-forwarded-prefix: /proxy/abc123/8000",
        ]
    );
    // Without a Host, a client address or the prefix, those are left out.
    let edits = UpstreamEdits {
        strip_from: None,
        localhost_host: false,
        prefix: false,
    };
    let mut got = Vec::new();
    upstream::added(&ctx, edits, None, None, |n, _| got.push(n));
    assert_eq!(got, ["x-forwarded-proto"]);
}

#[test]
fn dropped_and_replaced_names() {
    let public = UpstreamEdits {
        strip_from: None,
        localhost_host: false,
        prefix: false,
    };
    let localhost = UpstreamEdits {
        localhost_host: true,
        ..public
    };
    for name in [
        "Connection",
        "proxy-authorization",
        "X-Forwarded-For",
        "x-forwarded-prefix",
    ] {
        assert!(public.dropped(name), "{name}");
    }
    for name in ["Cookie", "Authorization", "Accept", "Host"] {
        assert!(!public.dropped(name), "{name}");
    }
    assert!(localhost.dropped("HOST"));
    // Pingora strips hop-by-hop headers itself: it removes only these.
    assert!(!public.replaced().any(|n| n == "connection" || n == "host"));
    assert!(localhost.replaced().any(|n| n == "host"));
}
