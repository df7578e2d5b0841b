//! Which sandbox port a request is for: the three URL forms.
//!
//! - **Subdomain** — `Host: <port>-<id>.<domain>` (port stripped,
//!   case-insensitive, split at the first `-`); the path goes upstream unchanged.
//! - **Header** — when the Host is `localhost`, an IP literal or the bare
//!   domain: `E2b-Sandbox-Id` + `E2b-Sandbox-Port` (or `Wrenn-Sandbox-Id` +
//!   `Wrenn-Sandbox-Port`); the path goes upstream unchanged. This is how
//!   E2B's SDK reaches every sandbox through one URL.
//! - **Path** — `/proxy/<id>/<port>/<rest>` on any other request; `/<rest>`
//!   goes upstream with its query, byte for byte (nothing is percent-decoded).
//!
//! Parsing borrows from the request and allocates only for errors, redirects
//! and (rare) upper-case hosts. Whether the proxy answers the `Host` at all
//! is checked before this, on both paths ([`crate::hosts`]): an IP literal
//! here is one of the allowed ones.

use std::borrow::Cow;
use std::net::IpAddr;

use wrenn_types::SandboxId;

/// How the request named its sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Path,
    Subdomain,
    Header,
}

impl Form {
    pub fn as_str(self) -> &'static str {
        match self {
            Form::Path => "path",
            Form::Subdomain => "subdomain",
            Form::Header => "header",
        }
    }
}

/// A well-formed request for a sandbox port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    pub form: Form,
    /// A valid sandbox id (checked with [`SandboxId::is_valid`]).
    pub id: Cow<'a, str>,
    pub port: u16,
    /// Path form only: the upstream request target (`/<rest>` with its query).
    pub upstream_path: Option<&'a [u8]>,
}

/// A request that is not well-formed, with what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    pub message: String,
    pub sandbox_id: Option<String>,
    pub port: Option<u16>,
}

/// The outcome of reading a request's URL and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    Target(Target<'a>),
    /// `/proxy/<id>/<port>` without the trailing slash: answer 308 to this.
    Redirect(Vec<u8>),
    /// Not a sandbox URL in any form.
    NoRoute,
    Bad(BadRequest),
}

/// The parts of a request the router reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestView<'a> {
    /// `Host` header value, if any.
    pub host: Option<&'a [u8]>,
    /// The raw request target (origin-form or absolute-form).
    pub target: &'a [u8],
    pub id_header: Option<&'a [u8]>,
    pub port_header: Option<&'a [u8]>,
    /// A routing header (`Wrenn-Sandbox-Id`, `-Port`, `E2b-Sandbox-Id`,
    /// `-Port`) the request gives more than once: a header-routed request
    /// naming it is refused, whichever value a reader would take.
    pub repeated: Option<&'static str>,
}

/// The routing headers as error messages name them; `Wrenn-` first.
const ROUTING_HEADERS: [&str; 4] = [
    "Wrenn-Sandbox-Id",
    "Wrenn-Sandbox-Port",
    "E2b-Sandbox-Id",
    "E2b-Sandbox-Port",
];

/// A request's routing headers, read the same way by both request paths:
/// each header offered in the order it came, the first value of each kept,
/// `Wrenn-` over `E2b-`, and the first one given twice remembered.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoutingHeaders<'a> {
    /// Indexed like [`ROUTING_HEADERS`].
    first: [Option<&'a [u8]>; 4],
    repeated: Option<&'static str>,
}

impl<'a> RoutingHeaders<'a> {
    /// Takes the header if it is a routing header (any case); false if not.
    pub fn offer(&mut self, name: &str, value: &'a [u8]) -> bool {
        let Some(i) = ROUTING_HEADERS
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
        else {
            return false;
        };
        if self.first[i].is_some() {
            self.repeated = self.repeated.or(Some(ROUTING_HEADERS[i]));
        } else {
            self.first[i] = Some(value);
        }
        true
    }

    /// The view of a request with these routing headers.
    pub fn view(self, host: Option<&'a [u8]>, target: &'a [u8]) -> RequestView<'a> {
        let [wrenn_id, wrenn_port, e2b_id, e2b_port] = self.first;
        RequestView {
            host,
            target,
            id_header: wrenn_id.or(e2b_id),
            port_header: wrenn_port.or(e2b_port),
            repeated: self.repeated,
        }
    }
}

pub const PATH_PREFIX: &[u8] = b"/proxy/";

/// Appends `/proxy/<id>/<port>`: the path form's prefix of a sandbox port.
pub fn push_path_prefix(out: &mut Vec<u8>, id: &str, port: u16) {
    out.extend_from_slice(PATH_PREFIX);
    out.extend_from_slice(id.as_bytes());
    out.push(b'/');
    out.extend_from_slice(itoa::Buffer::new().format(port).as_bytes());
}

/// Reads a request. `domain` is the configured subdomain-routing domain.
pub fn parse<'a>(domain: &str, req: RequestView<'a>) -> Parsed<'a> {
    let (authority, path) = split_target(req.target);
    let host = authority.or(req.host).map(strip_port);

    if let Some(host) = host
        && let Some(label) = subdomain_label(host, domain.as_bytes())
    {
        return parse_subdomain(label, domain);
    }

    if req.id_header.is_some() || req.port_header.is_some() {
        let eligible = match host {
            None => true,
            Some(h) => {
                h.eq_ignore_ascii_case(b"localhost")
                    || h.eq_ignore_ascii_case(domain.as_bytes())
                    || is_ip_literal(h)
            }
        };
        if eligible {
            if let Some(name) = req.repeated {
                return bad_plain(format!(
                    "{name} is given more than once: a request names one sandbox and one port"
                ));
            }
            return parse_headers(req.id_header, req.port_header);
        }
    }

    if path.starts_with(PATH_PREFIX) || path == b"/proxy" {
        return parse_path(path);
    }
    Parsed::NoRoute
}

/// The authority of an absolute-form request target (`http://host:port/x`);
/// `None` for origin-form (`/x`).
pub(crate) fn authority(target: &[u8]) -> Option<&[u8]> {
    split_target(target).0
}

/// The origin-form part of a request target: an absolute-form target
/// without its scheme and authority, an origin-form target as it is.
pub(crate) fn origin(target: &[u8]) -> &[u8] {
    split_target(target).1
}

/// Splits an absolute-form target into (authority, path); origin-form has no authority.
fn split_target(target: &[u8]) -> (Option<&[u8]>, &[u8]) {
    let rest = if starts_with_ignore_case(target, b"http://") {
        &target[7..]
    } else if starts_with_ignore_case(target, b"https://") {
        &target[8..]
    } else {
        return (None, target);
    };
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    (Some(&rest[..end]), &rest[end..])
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// `host[:port]` or `[v6][:port]` → host (brackets kept for v6).
fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().position(|&b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

fn is_ip_literal(host: &[u8]) -> bool {
    let inner = host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(host);
    std::str::from_utf8(inner).is_ok_and(|s| s.parse::<IpAddr>().is_ok())
}

/// The label in front of `.<domain>`, if `host` is a name under `domain`.
fn subdomain_label<'h>(host: &'h [u8], domain: &[u8]) -> Option<&'h [u8]> {
    let n = host.len().checked_sub(domain.len() + 1)?;
    if host[n] != b'.' || !host[n + 1..].eq_ignore_ascii_case(domain) || n == 0 {
        return None;
    }
    Some(&host[..n])
}

fn parse_subdomain<'a>(label: &'a [u8], domain: &str) -> Parsed<'a> {
    let bad = |what: &str| {
        Parsed::Bad(BadRequest {
            message: format!(
                "host {:?} {what}: expected <port>-<sandbox-id>.{domain}",
                String::from_utf8_lossy(label) + "." + domain
            ),
            sandbox_id: None,
            port: None,
        })
    };
    if label.contains(&b'.') {
        return bad("has more than one label before the domain");
    }
    let Some(dash) = label.iter().position(|&b| b == b'-') else {
        return bad("has no '-' between port and sandbox id");
    };
    let (port, id) = (&label[..dash], &label[dash + 1..]);
    let port = match parse_port(port) {
        Ok(p) => p,
        Err(b) => return Parsed::Bad(b),
    };
    let id = match id_from(id, true) {
        Ok(id) => id,
        Err(mut b) => {
            b.port = Some(port);
            return Parsed::Bad(b);
        }
    };
    Parsed::Target(Target {
        form: Form::Subdomain,
        id,
        port,
        upstream_path: None,
    })
}

fn parse_headers<'a>(id: Option<&'a [u8]>, port: Option<&'a [u8]>) -> Parsed<'a> {
    let (id, port) = match (id, port) {
        (Some(id), Some(port)) => (id, port),
        (Some(_), None) => {
            return bad_plain(
                "E2b-Sandbox-Id (or Wrenn-Sandbox-Id) is set but E2b-Sandbox-Port (or Wrenn-Sandbox-Port) is not",
            );
        }
        (None, _) => {
            return bad_plain(
                "E2b-Sandbox-Port (or Wrenn-Sandbox-Port) is set but E2b-Sandbox-Id (or Wrenn-Sandbox-Id) is not",
            );
        }
    };
    let port = match parse_port(port) {
        Ok(p) => p,
        Err(b) => return Parsed::Bad(b),
    };
    match id_from(id, false) {
        Ok(id) => Parsed::Target(Target {
            form: Form::Header,
            id,
            port,
            upstream_path: None,
        }),
        Err(mut b) => {
            b.port = Some(port);
            Parsed::Bad(b)
        }
    }
}

fn parse_path(path: &[u8]) -> Parsed<'_> {
    let expected = || {
        bad_plain(format!(
            "path {:?} is not a sandbox URL: expected /proxy/<sandbox-id>/<port>/",
            String::from_utf8_lossy(path)
        ))
    };
    let Some(after) = path.strip_prefix(PATH_PREFIX) else {
        return expected();
    };
    let Some(slash) = after.iter().position(|&b| b == b'/') else {
        return expected();
    };
    let id = match id_from(&after[..slash], false) {
        Ok(id) => id,
        Err(b) => return Parsed::Bad(b),
    };
    let after_id = &after[slash + 1..];
    let end = after_id
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(after_id.len());
    if end == 0 {
        return expected();
    }
    let port = match parse_port(&after_id[..end]) {
        Ok(p) => p,
        Err(mut b) => {
            b.sandbox_id = Some(id.into_owned());
            return Parsed::Bad(b);
        }
    };
    let rest = &after_id[end..];
    if rest.first() == Some(&b'/') {
        return Parsed::Target(Target {
            form: Form::Path,
            id,
            port,
            upstream_path: Some(rest),
        });
    }
    // `/proxy/<id>/<port>` or `/proxy/<id>/<port>?q`: redirect into the prefix.
    let prefix_len = path.len() - rest.len();
    let mut location = Vec::with_capacity(path.len() + 1);
    location.extend_from_slice(&path[..prefix_len]);
    location.push(b'/');
    location.extend_from_slice(rest);
    Parsed::Redirect(location)
}

fn bad_plain(message: impl Into<String>) -> Parsed<'static> {
    Parsed::Bad(BadRequest {
        message: message.into(),
        sandbox_id: None,
        port: None,
    })
}

/// A port is 1–65535, written in decimal digits only.
fn parse_port(s: &[u8]) -> Result<u16, BadRequest> {
    let bad = || BadRequest {
        message: format!(
            "invalid port {:?}: expected a number from 1 to 65535",
            String::from_utf8_lossy(s)
        ),
        sandbox_id: None,
        port: None,
    };
    if s.is_empty() || s.len() > 5 || !s.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let n = s.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad()),
    }
}

/// A sandbox id, validated in one place ([`SandboxId`]). Host names are
/// case-insensitive, so `lowercase` folds them first.
fn id_from(s: &[u8], lowercase: bool) -> Result<Cow<'_, str>, BadRequest> {
    let as_str = std::str::from_utf8(s).ok();
    if let Some(id) = as_str
        && SandboxId::is_valid(id)
    {
        return Ok(Cow::Borrowed(id));
    }
    if lowercase {
        let lower = String::from_utf8_lossy(s).to_ascii_lowercase();
        if SandboxId::is_valid(&lower) {
            return Ok(Cow::Owned(lower));
        }
    }
    let shown = String::from_utf8_lossy(s).into_owned();
    let message = match shown.parse::<SandboxId>() {
        Err(e) => e.to_string(),
        Ok(_) => format!("invalid sandbox id {shown:?}"),
    };
    Err(BadRequest {
        message,
        sandbox_id: None,
        port: None,
    })
}

#[cfg(test)]
mod tests;
