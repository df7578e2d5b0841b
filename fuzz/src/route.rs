//! Target `route`: how the proxy reads which sandbox port a request is for
//! ([`wrenn_proxy::target::parse`]).
//!
//! Input: the configured domain on the first line, then `target:`, `host:`,
//! `id:` and `port:` lines (the request target, the `Host` header and the
//! sandbox id and port headers). A missing line is a missing header; a
//! missing `target:` is an empty target.
//!
//! Checks:
//! - a target names a valid sandbox id and a port from 1 to 65535;
//! - each form routes the same way when rebuilt from what was parsed: path
//!   form as `/proxy/<id>/<port><upstream path>` (the upstream path starts
//!   with `/` and is the tail of the request target, byte for byte),
//!   subdomain form as `Host: <port>-<id>.<domain>`, header form as the same
//!   two headers without a `Host`;
//! - a redirect's `Location` is under `/proxy/` and routes to a path-form
//!   target, so a redirect never loops.

use wrenn_proxy::target::{self, Form, Parsed, RequestView, Target};
use wrenn_types::SandboxId;

use crate::input::Lines;

pub fn route(data: &[u8]) {
    let lines = Lines::parse(data);
    let domain = String::from_utf8_lossy(lines.first);
    let req = RequestView {
        host: lines.get("host"),
        target: lines.get("target").unwrap_or_default(),
        id_header: lines.get("id"),
        port_header: lines.get("port"),
        repeated: None,
    };
    match target::parse(&domain, req) {
        Parsed::Target(t) => check_target(&domain, &req, &t),
        Parsed::Redirect(location) => check_redirect(&domain, &location),
        Parsed::Bad(bad) => assert!(!bad.message.is_empty(), "a bad request says why"),
        Parsed::NoRoute => {}
    }
}

fn check_target(domain: &str, req: &RequestView<'_>, t: &Target<'_>) {
    assert!(SandboxId::is_valid(&t.id), "invalid id routed: {t:?}");
    assert!(t.port > 0, "port 0 routed: {t:?}");
    let again = match t.form {
        Form::Path => {
            let up = t.upstream_path.expect("path form has an upstream path");
            assert_eq!(up.first(), Some(&b'/'), "{t:?}");
            assert!(
                req.target.ends_with(up),
                "upstream path is not the target's tail: {t:?}"
            );
            let mut rebuilt = Vec::new();
            target::push_path_prefix(&mut rebuilt, &t.id, t.port);
            rebuilt.extend_from_slice(up);
            parse_owned(domain, None, &rebuilt, None, None)
        }
        Form::Subdomain => {
            assert_eq!(t.upstream_path, None);
            let host = format!("{}-{}.{domain}", t.port, t.id);
            parse_owned(domain, Some(host.as_bytes()), b"/", None, None)
        }
        Form::Header => {
            assert_eq!(t.upstream_path, None);
            parse_owned(domain, None, b"/", req.id_header, req.port_header)
        }
    };
    let want = (
        t.form,
        t.id.to_string(),
        t.port,
        t.upstream_path.map(<[u8]>::to_vec),
    );
    assert_eq!(again, Some(want), "rebuilt request routes elsewhere: {t:?}");
}

fn check_redirect(domain: &str, location: &[u8]) {
    assert!(
        location.starts_with(target::PATH_PREFIX),
        "redirect out of /proxy/: {:?}",
        String::from_utf8_lossy(location)
    );
    let again = parse_owned(domain, None, location, None, None);
    assert!(
        matches!(again, Some((Form::Path, ..))),
        "redirect to {:?} does not route: {again:?}",
        String::from_utf8_lossy(location)
    );
}

type Owned = (Form, String, u16, Option<Vec<u8>>);

/// Parses a request and keeps a target's parts (anything else is `None`).
fn parse_owned(
    domain: &str,
    host: Option<&[u8]>,
    target: &[u8],
    id_header: Option<&[u8]>,
    port_header: Option<&[u8]>,
) -> Option<Owned> {
    let req = RequestView {
        host,
        target,
        id_header,
        port_header,
        repeated: None,
    };
    match target::parse(domain, req) {
        Parsed::Target(t) => Some((
            t.form,
            t.id.into_owned(),
            t.port,
            t.upstream_path.map(<[u8]>::to_vec),
        )),
        _ => None,
    }
}
