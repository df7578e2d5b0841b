//! Target `rewrite`: the response headers the proxy rewrites
//! ([`wrenn_proxy::rewrite::RewriteCtx::header`]).
//!
//! Input: a first line `<form> <id> <port> [<sandbox address>|- [<public host>]]`
//! (`form` is `path`, `subdomain` or `header`), then one `name: value` line
//! per response header. A first line with an invalid id or port is skipped
//! (routes only carry valid ones).
//!
//! Checks, for every header:
//! - a rewrite changes the value (`None` means "unchanged");
//! - path form: rewriting a rewritten value changes nothing (no doubled
//!   prefix); a root-relative or upstream-absolute `Location` /
//!   `Content-Location` ends up routing back to the same sandbox port
//!   (through [`wrenn_proxy::target::parse`]); a `Set-Cookie` whose
//!   effective `Path` (the last one, RFC 6265 §5.3) is root-relative ends
//!   up with that path under the prefix (or one no request path matches);
//! - subdomain and header forms: a URL that was not protocol-relative does
//!   not become protocol-relative (`//host/…` names another host).

use std::net::IpAddr;

use wrenn_proxy::rewrite::RewriteCtx;
use wrenn_proxy::target::{self, Form, Parsed, RequestView};
use wrenn_types::SandboxId;

use crate::input::Lines;

// Issues of `rewrite.rs` that this target found and that are reported but
// not fixed yet (fuzz/README.md, "Findings"). While one is open, the target
// skips what it breaks, so the fuzzer keeps looking for new issues; set it
// to `false` with the fix, and the seeds `corpus/rewrite/open-*` become
// regression tests.

/// Only the first `Path` of a `Set-Cookie` is rewritten, but browsers keep
/// the last: `a=b; Path=/; Path=/x` keeps `Path=/x`, outside the prefix.
const OPEN_LAST_COOKIE_PATH: bool = false;

/// Subdomain and header forms: an upstream path starting with `//`
/// (`http://localhost:8000//x`, `/proxy/<id>/<port>//x`) becomes the
/// protocol-relative `//x`, which browsers read as host `x`.
const OPEN_PROTOCOL_RELATIVE: bool = false;

pub fn rewrite(data: &[u8]) {
    let lines = Lines::parse(data);
    let first = String::from_utf8_lossy(lines.first);
    let mut words = first.split(' ');
    let form = match words.next() {
        Some("path") => Form::Path,
        Some("subdomain") => Form::Subdomain,
        Some("header") => Form::Header,
        _ => return,
    };
    let Some(id) = words.next().filter(|id| SandboxId::is_valid(id)) else {
        return;
    };
    let Some(port) = words
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|&p| p > 0)
    else {
        return;
    };
    let sandbox_addr = words.next().and_then(|a| a.parse::<IpAddr>().ok());
    let public_host = words.next().map(str::as_bytes);
    let ctx = RewriteCtx {
        form,
        id,
        port,
        sandbox_addr,
        public_host,
    };
    for (name, value) in lines.all() {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        check_header(&ctx, name, value);
    }
}

fn check_header(ctx: &RewriteCtx<'_>, name: &str, v: &[u8]) {
    let new = ctx.header(name, v);
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    if OPEN_LAST_COOKIE_PATH && is("set-cookie") && path_attributes(v) > 1 {
        return;
    }
    let shown = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if let Some(new) = &new {
        assert_ne!(new, v, "{name}: a rewrite that changes nothing");
    }
    let out = new.as_deref().unwrap_or(v);
    match ctx.form {
        Form::Path => {
            if new.is_some() {
                let twice = ctx.header(name, out);
                assert_eq!(
                    twice.as_deref().map(shown),
                    None,
                    "{name}: {:?} rewritten twice (first to {:?})",
                    shown(v),
                    shown(out)
                );
            }
            if (is("location") || is("content-location")) && (new.is_some() || is_root_relative(v))
            {
                assert!(
                    routes_to(ctx, out),
                    "{name}: {:?} became {:?}, which does not route to {}/{}",
                    shown(v),
                    shown(out),
                    ctx.id,
                    ctx.port
                );
            }
            if is("set-cookie")
                && let Some(path) = cookie_path(out)
            {
                let prefix = ctx.prefix();
                // Under the prefix, or a path no request path can match
                // (browsers' request paths never hold `?` or `#`).
                let under = path
                    .strip_prefix(&prefix[..])
                    .is_some_and(|rest| rest.is_empty() || rest[0] == b'/')
                    || path.contains(&b'?')
                    || path.contains(&b'#');
                assert!(
                    under,
                    "set-cookie {:?} became {:?}: its path {:?} is outside {:?}",
                    shown(v),
                    shown(out),
                    shown(path),
                    shown(&prefix)
                );
            }
        }
        Form::Subdomain | Form::Header => {
            if !OPEN_PROTOCOL_RELATIVE && new.is_some() {
                // `Refresh` carries the URL after `url=`; the check is for
                // the URL, wherever it sits in the value.
                let url_of = |x: &[u8]| -> Vec<u8> {
                    if is("refresh") {
                        refresh_url(x).to_vec()
                    } else {
                        x.to_vec()
                    }
                };
                assert!(
                    !url_of(out).starts_with(b"//") || url_of(v).starts_with(b"//"),
                    "{name}: {:?} became protocol-relative {:?}",
                    shown(v),
                    shown(out)
                );
            }
        }
    }
}

/// How many attributes of a `Set-Cookie` value are named `Path`, trimmed
/// as the rewriter trims them (a superset of what browsers trim).
fn path_attributes(v: &[u8]) -> usize {
    v.split(|&b| b == b';')
        .skip(1)
        .filter(|attr| {
            let name = attr.split(|&b| b == b'=').next().unwrap_or_default();
            name.trim_ascii().eq_ignore_ascii_case(b"path")
        })
        .count()
}

/// `/x`, not `//host/x`.
fn is_root_relative(v: &[u8]) -> bool {
    v.first() == Some(&b'/') && v.get(1) != Some(&b'/')
}

/// Whether `url`, as a browser's next request target in path form, reaches
/// the sandbox port of `ctx` (directly or through one redirect).
fn routes_to(ctx: &RewriteCtx<'_>, url: &[u8]) -> bool {
    fn parse(url: &[u8]) -> Parsed<'_> {
        let req = RequestView {
            host: Some(b"localhost:7880"),
            target: url,
            ..Default::default()
        };
        target::parse("wrenn.invalid", req)
    }
    let same = |p: &Parsed<'_>| matches!(p, Parsed::Target(t) if t.form == Form::Path && t.id == ctx.id && t.port == ctx.port);
    match parse(url) {
        Parsed::Redirect(location) => same(&parse(&location)),
        p => same(&p),
    }
}

/// The path a browser stores a cookie under when it is root-relative: the
/// value of the last `Path` attribute (RFC 6265 §5.2.4, §5.3 step 7).
fn cookie_path(set_cookie: &[u8]) -> Option<&[u8]> {
    let mut path = None;
    for attr in set_cookie.split(|&b| b == b';').skip(1) {
        let (name, value) = match attr.iter().position(|&b| b == b'=') {
            Some(eq) => (&attr[..eq], &attr[eq + 1..]),
            None => (attr, &b""[..]),
        };
        if trim_wsp(name).eq_ignore_ascii_case(b"path") {
            path = Some(trim_wsp(value));
        }
    }
    path.filter(|p| p.first() == Some(&b'/'))
}

/// Without leading and trailing spaces and tabs (RFC 6265's WSP).
fn trim_wsp(s: &[u8]) -> &[u8] {
    let wsp = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !wsp(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !wsp(b)).map_or(start, |e| e + 1);
    &s[start..end]
}

/// The URL of a `Refresh` value: what follows the first `url=`, without quotes.
fn refresh_url(v: &[u8]) -> &[u8] {
    let lower = v.to_ascii_lowercase();
    let Some(at) = lower.windows(3).position(|w| w == b"url") else {
        return &[];
    };
    let rest = &v[at + 3..];
    let rest = &rest[rest.iter().take_while(|&&b| b == b' ').count()..];
    let Some(rest) = rest.strip_prefix(b"=") else {
        return &[];
    };
    let rest = &rest[rest.iter().take_while(|&&b| b == b' ').count()..];
    rest.strip_prefix(b"\"")
        .or_else(|| rest.strip_prefix(b"'"))
        .unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_path_attribute_is_the_cookies_path() {
        assert_eq!(cookie_path(b"a=b; Path=/x"), Some(&b"/x"[..]));
        assert_eq!(
            cookie_path(b"a=b; path = /x ; Path=/y; Secure"),
            Some(&b"/y"[..])
        );
        assert_eq!(cookie_path(b"a=b; Path=/x; Path=rel"), None);
        assert_eq!(
            cookie_path(b"Path=/x"),
            None,
            "the name=value pair is no attribute"
        );
        assert_eq!(cookie_path(b"a=b; Path"), None);
        assert_eq!(path_attributes(b"a=b; Path=/; \x0cPATH=/x; Pathx=/"), 2);
    }

    #[test]
    fn the_refresh_url_follows_url_equals() {
        assert_eq!(refresh_url(b"5; url=/x"), b"/x");
        assert_eq!(refresh_url(b"0;URL = '//h/x'"), b"//h/x'");
        assert_eq!(refresh_url(b"3"), b"");
    }
}
