//! Response header rewriting, so apps keep working behind a prefix or a
//! subdomain (nginx's `proxy_redirect` and `proxy_cookie_path`).
//!
//! Path form (`/proxy/<id>/<port>` is "the prefix"):
//! - `Location`, `Content-Location` and the URL in `Refresh`: root-relative
//!   `/x` → `<prefix>/x`; absolute URLs pointing at the upstream itself (the
//!   sandbox address, `127.0.0.1`, `localhost`, `0.0.0.0` or `[::1]` with the
//!   upstream port) or at the browser's own Host → `<prefix>/path?query`
//!   (`/` when the path is empty). Protocol-relative `//host/x`, relative `x`,
//!   foreign absolute URLs and URLs already under the prefix are untouched.
//! - `Set-Cookie`: every root-relative `Path=/x` → `Path=<prefix>/x`, and
//!   every `Domain` attribute dropped (a host-only cookie on the proxy's
//!   shared host), so one sandbox port cannot set cookies for another.
//!
//! Subdomain and header forms: a leading prefix is stripped (the app emitted
//! one although it is served at `/`), and upstream-absolute URLs become
//! root-relative.
//!
//! Every function returns `None` when the value stays as it is, so the common
//! case allocates nothing.

use std::net::IpAddr;

use crate::target::Form;

/// What a rewrite needs to know about the request.
#[derive(Debug, Clone, Copy)]
pub struct RewriteCtx<'a> {
    pub form: Form,
    pub id: &'a str,
    pub port: u16,
    pub sandbox_addr: Option<IpAddr>,
    /// The browser's `Host` header (with its port), if any.
    pub public_host: Option<&'a [u8]>,
}

impl RewriteCtx<'_> {
    /// `/proxy/<id>/<port>`.
    pub fn prefix(&self) -> Vec<u8> {
        let mut out = Vec::new();
        crate::target::push_path_prefix(&mut out, self.id, self.port);
        out
    }

    /// The new value of the response header `name` (any case), when
    /// rewriting changes it: `Location`, `Content-Location`, `Refresh` and
    /// `Set-Cookie`; every other header stays as it is.
    pub fn header(&self, name: &str, v: &[u8]) -> Option<Vec<u8>> {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("location") || is("content-location") {
            self.location(v)
        } else if is("refresh") {
            self.refresh(v)
        } else if is("set-cookie") {
            self.set_cookie(v)
        } else {
            None
        }
    }

    /// Rewrites a `Location` or `Content-Location` value.
    pub fn location(&self, v: &[u8]) -> Option<Vec<u8>> {
        if v.starts_with(b"//") {
            return None;
        }
        if v.first() == Some(&b'/') {
            return self.root_relative(v);
        }
        let (scheme_default_port, rest) = if starts_with_ignore_case(v, b"http://") {
            (80, &v[7..])
        } else if starts_with_ignore_case(v, b"https://") {
            (443, &v[8..])
        } else {
            return None;
        };
        let end = rest
            .iter()
            .position(|b| matches!(b, b'/' | b'?' | b'#'))
            .unwrap_or(rest.len());
        let (authority, path) = (&rest[..end], &rest[end..]);
        let is_upstream = self.is_upstream(authority, scheme_default_port);
        let is_public = self.form == Form::Path
            && self
                .public_host
                .is_some_and(|h| h.eq_ignore_ascii_case(authority));
        if !is_upstream && !is_public {
            return None;
        }
        let mut path = path.to_vec();
        if path.first() != Some(&b'/') {
            path.insert(0, b'/');
        }
        Some(path_reference(self.root_relative(&path).unwrap_or(path)))
    }

    /// A root-relative URL, per form; `None` when it stays.
    fn root_relative(&self, v: &[u8]) -> Option<Vec<u8>> {
        let prefix = self.prefix();
        let prefix = &prefix[..];
        let rest = strip_prefix(v, prefix);
        match self.form {
            Form::Path if rest.is_some() => None,
            Form::Path => Some([prefix, v].concat()),
            Form::Subdomain | Form::Header => rest.map(|rest| {
                path_reference(if rest.first() == Some(&b'/') {
                    rest.to_vec()
                } else {
                    [b"/", rest].concat()
                })
            }),
        }
    }

    /// Whether `authority` (`[user@]host[:port]`) names the upstream itself.
    fn is_upstream(&self, authority: &[u8], default_port: u16) -> bool {
        let hostport = match authority.iter().rposition(|&b| b == b'@') {
            Some(at) => &authority[at + 1..],
            None => authority,
        };
        let (host, port) = split_host_port(hostport);
        let port = match port {
            None => default_port,
            Some(p) => match std::str::from_utf8(p)
                .ok()
                .and_then(|p| p.parse::<u16>().ok())
            {
                Some(p) => p,
                None => return false,
            },
        };
        if port != self.port {
            return false;
        }
        if host.eq_ignore_ascii_case(b"localhost") {
            return true;
        }
        let inner = host
            .strip_prefix(b"[")
            .and_then(|h| h.strip_suffix(b"]"))
            .unwrap_or(host);
        let Some(ip) = std::str::from_utf8(inner)
            .ok()
            .and_then(|s| s.parse::<IpAddr>().ok())
        else {
            return false;
        };
        ip.is_loopback() || ip.is_unspecified() || Some(ip) == self.sandbox_addr
    }

    /// Rewrites the URL inside a `Refresh` value (`5; url=/x`).
    pub fn refresh(&self, v: &[u8]) -> Option<Vec<u8>> {
        let lower = v.to_ascii_lowercase();
        let url_at = find(&lower, b"url")?;
        let mut i = url_at + 3;
        while v.get(i) == Some(&b' ') {
            i += 1;
        }
        if v.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        while v.get(i) == Some(&b' ') {
            i += 1;
        }
        let quote = v.get(i).copied().filter(|q| *q == b'\'' || *q == b'"');
        let start = i + usize::from(quote.is_some());
        let end = match quote {
            Some(q) => v[start..]
                .iter()
                .position(|&b| b == q)
                .map_or(v.len(), |e| start + e),
            None => v.len(),
        };
        let new = self.location(&v[start..end])?;
        Some([&v[..start], &new[..], &v[end..]].concat())
    }

    /// Rewrites a `Set-Cookie` value (path form only): every `Path`
    /// attribute whose value is root-relative moves under the prefix, and
    /// every `Domain` attribute is dropped, so the cookie stays with this
    /// sandbox port on the proxy's shared host. Attributes are split at each
    /// `;` and their names compared case-insensitively with surrounding
    /// whitespace ignored, as browsers parse them (RFC 6265 §5.2); browsers
    /// use the last `Path`, so all of them are rewritten. A `Path` that is
    /// not root-relative (empty, quoted, relative) is left: browsers ignore
    /// it and use the request's directory, which is under the prefix already.
    pub fn set_cookie(&self, v: &[u8]) -> Option<Vec<u8>> {
        if self.form != Form::Path {
            return None;
        }
        let prefix = self.prefix();
        // The first part is the cookie's own name=value, never an attribute.
        let attrs = || v.split(|&b| b == b';').skip(1);
        if attrs().all(|a| cookie_attr(a, &prefix) == CookieAttr::Keep) {
            return None;
        }
        let mut out = Vec::with_capacity(v.len() + 2 * prefix.len());
        out.extend_from_slice(v.split(|&b| b == b';').next().unwrap_or_default());
        for a in attrs() {
            match cookie_attr(a, &prefix) {
                CookieAttr::Keep => {
                    out.push(b';');
                    out.extend_from_slice(a);
                }
                CookieAttr::Drop => {}
                CookieAttr::PrefixAt(at) => {
                    out.push(b';');
                    out.extend_from_slice(&a[..at]);
                    out.extend_from_slice(&prefix);
                    out.extend_from_slice(&a[at..]);
                }
            }
        }
        Some(out)
    }
}

/// What the path form does with one `Set-Cookie` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CookieAttr {
    Keep,
    /// A `Domain` attribute.
    Drop,
    /// A root-relative `Path` outside the prefix: the prefix goes in at this
    /// offset of the attribute (where its value starts).
    PrefixAt(usize),
}

fn cookie_attr(attr: &[u8], prefix: &[u8]) -> CookieAttr {
    let (name, value_at) = match attr.iter().position(|&b| b == b'=') {
        Some(eq) => (&attr[..eq], Some(eq + 1)),
        None => (attr, None),
    };
    let name = trim(name);
    if name.eq_ignore_ascii_case(b"domain") {
        return CookieAttr::Drop;
    }
    let Some(at) = value_at.filter(|_| name.eq_ignore_ascii_case(b"path")) else {
        return CookieAttr::Keep;
    };
    let raw = &attr[at..];
    let value = trim(raw);
    if value.first() != Some(&b'/') || strip_prefix(value, prefix).is_some() {
        return CookieAttr::Keep;
    }
    CookieAttr::PrefixAt(at + (raw.len() - trim_start(raw).len()))
}

/// `v` without a leading `prefix` when `prefix` is followed by the end, `/`, `?` or `#`.
/// A root-relative reference for path `p`: a path starting with `//` would
/// read as a protocol-relative URL (host `x` for `//x`), so it is written
/// `/.//x`, which resolves to the same path on the same host.
fn path_reference(p: Vec<u8>) -> Vec<u8> {
    if p.starts_with(b"//") {
        [&b"/."[..], &p].concat()
    } else {
        p
    }
}

fn strip_prefix<'v>(v: &'v [u8], prefix: &[u8]) -> Option<&'v [u8]> {
    let rest = v.strip_prefix(prefix)?;
    match rest.first() {
        None | Some(b'/' | b'?' | b'#') => Some(rest),
        Some(_) => None,
    }
}

fn split_host_port(hostport: &[u8]) -> (&[u8], Option<&[u8]>) {
    if hostport.first() == Some(&b'[') {
        if let Some(end) = hostport.iter().position(|&b| b == b']') {
            let port = hostport[end + 1..].strip_prefix(b":");
            return (&hostport[..=end], port);
        }
        return (hostport, None);
    }
    match hostport.iter().position(|&b| b == b':') {
        Some(c) => (&hostport[..c], Some(&hostport[c + 1..])),
        None => (hostport, None),
    }
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim_start(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    &s[start..]
}

fn trim(s: &[u8]) -> &[u8] {
    let s = trim_start(s);
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |e| e + 1);
    &s[..end]
}

#[cfg(test)]
mod tests;
