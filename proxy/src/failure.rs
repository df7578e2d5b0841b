//! Every response the proxy writes itself, in one place: failure class →
//! status, machine code, message, hint, and the HTML or JSON body.
//!
//! Browser navigations (`Sec-Fetch-Mode: navigate` or an `Accept` naming
//! `text/html`) get a small self-contained page; everything else gets
//! `{"error": {"code", "message", "sandbox_id", "port"}}`. Each response has a
//! `Content-Type`, `Cache-Control: no-store`, CORS headers (so a browser
//! `fetch` sees the real error, not "Failed to fetch") and `Wrenn-Error:
//! <code>` so clients can tell a proxy error from the app's own.

use bytes::Bytes;
use pingora_http::ResponseHeader;

use crate::routes::RouteState;

/// Why the proxy answered instead of the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Malformed sandbox URL or headers.
    BadRequest {
        message: String,
        sandbox_id: Option<String>,
        port: Option<u16>,
    },
    /// The URL names no sandbox in any form.
    NoRoute { domain: String },
    /// No sandbox with this id on this host. On the guest agent's port
    /// (`envd`: E2B's SDKs) it is a 502 whose message says "was not found",
    /// which those SDKs read as a sandbox that is gone (`is_running()`
    /// false, "sandbox … was not found").
    NotFound { id: String, envd: bool },
    /// The port is on the proxy's deny list, or is the guest agent's port
    /// and the request is not an envd client's (see `why`).
    PortDenied {
        id: String,
        port: u16,
        why: PortDenial,
    },
    /// The sandbox exists but is paused or starting.
    NotRunning { id: String, state: RouteState },
    /// Connection refused on every attempt.
    PortClosed { id: String, port: u16 },
    /// Connect attempts timed out or had no route (the sandbox vanished).
    Unreachable { id: String, port: u16 },
    /// The app broke the connection or sent an invalid response.
    UpstreamBroke { id: String, port: u16 },
    /// The app did not answer within the upstream read timeout.
    UpstreamTimeout { id: String, port: u16 },
    /// A bug or resource problem in the proxy itself.
    Internal,
    /// The `Host` (or an absolute-form target's authority) is not one this
    /// listener answers ([`crate::hosts`]): DNS rebinding, or a name the
    /// operator has not listed in `allowed_hosts`.
    HostNotAllowed { host: String },
    /// The request head is over a limit.
    HeadersTooLarge { limit: HeadLimit },
}

/// Why a port was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortDenial {
    /// It is in `denied_ports`.
    Listed,
    /// It is the guest agent's port (49983), which passes only requests of
    /// envd's clients: this one carries no `X-Access-Token` (and is not one
    /// of the few envd calls made without it).
    NoAccessToken,
}

/// Which request-head limit a request broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadLimit {
    /// [`crate::config::MAX_REQUEST_HEAD_BYTES`].
    Bytes,
    /// [`crate::config::MAX_REQUEST_HEADER_FIELDS`].
    Fields,
}

impl Failure {
    pub fn status(&self) -> u16 {
        match self {
            Failure::BadRequest { .. } => 400,
            Failure::PortDenied { .. } => 403,
            Failure::NotFound { envd: true, .. } => 502,
            Failure::NoRoute { .. } | Failure::NotFound { .. } => 404,
            Failure::NotRunning { .. } => 409,
            Failure::PortClosed { .. } | Failure::UpstreamBroke { .. } => 502,
            Failure::Unreachable { .. } | Failure::UpstreamTimeout { .. } => 504,
            Failure::Internal => 500,
            Failure::HostNotAllowed { .. } => 421,
            Failure::HeadersTooLarge { .. } => 431,
        }
    }

    /// Stable machine-readable class; also the `class` label of the error metric.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::BadRequest { .. } => "bad_request",
            Failure::PortDenied { .. } => "port_denied",
            Failure::NoRoute { .. } => "no_route",
            Failure::NotFound { .. } => "sandbox_not_found",
            Failure::NotRunning { .. } => "sandbox_not_running",
            Failure::PortClosed { .. } => "port_closed",
            Failure::Unreachable { .. } => "sandbox_unreachable",
            Failure::UpstreamBroke { .. } => "upstream_error",
            Failure::UpstreamTimeout { .. } => "upstream_timeout",
            Failure::Internal => "internal",
            Failure::HostNotAllowed { .. } => "host_not_allowed",
            Failure::HeadersTooLarge { .. } => "headers_too_large",
        }
    }

    pub const CODES: [&'static str; 12] = [
        "bad_request",
        "port_denied",
        "no_route",
        "sandbox_not_found",
        "sandbox_not_running",
        "port_closed",
        "sandbox_unreachable",
        "upstream_error",
        "upstream_timeout",
        "internal",
        "host_not_allowed",
        "headers_too_large",
    ];

    fn sandbox_id(&self) -> Option<&str> {
        match self {
            Failure::BadRequest { sandbox_id, .. } => sandbox_id.as_deref(),
            Failure::NotFound { id, .. }
            | Failure::PortDenied { id, .. }
            | Failure::NotRunning { id, .. }
            | Failure::PortClosed { id, .. }
            | Failure::Unreachable { id, .. }
            | Failure::UpstreamBroke { id, .. }
            | Failure::UpstreamTimeout { id, .. } => Some(id),
            Failure::NoRoute { .. }
            | Failure::Internal
            | Failure::HostNotAllowed { .. }
            | Failure::HeadersTooLarge { .. } => None,
        }
    }

    fn port(&self) -> Option<u16> {
        match self {
            Failure::BadRequest { port, .. } => *port,
            Failure::PortDenied { port, .. }
            | Failure::PortClosed { port, .. }
            | Failure::Unreachable { port, .. }
            | Failure::UpstreamBroke { port, .. }
            | Failure::UpstreamTimeout { port, .. } => Some(*port),
            _ => None,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Failure::BadRequest { message, .. } => message.clone(),
            Failure::NoRoute { domain } => format!(
                "this URL names no sandbox: use http://<port>-<sandbox-id>.{domain}/ or /proxy/<sandbox-id>/<port>/"
            ),
            Failure::NotFound { id, envd: true } => {
                format!("sandbox {id} was not found on this host")
            }
            Failure::NotFound { id, .. } => format!("sandbox {id} does not exist on this host"),
            Failure::PortDenied {
                id,
                port,
                why: PortDenial::Listed,
            } => {
                format!("port {port} of sandbox {id} is not served through the proxy")
            }
            Failure::PortDenied {
                id,
                port,
                why: PortDenial::NoAccessToken,
            } => format!(
                "port {port} of sandbox {id} is the sandbox agent's: it needs the sandbox's access token (X-Access-Token)"
            ),
            Failure::NotRunning { id, state } => format!("sandbox {id} is {}", state.as_str()),
            Failure::PortClosed { id, port } => {
                format!("sandbox {id} is running but nothing listens on port {port}")
            }
            Failure::Unreachable { id, port } => {
                format!("sandbox {id} did not answer on port {port}")
            }
            Failure::UpstreamBroke { id, port } => format!(
                "the app on port {port} in sandbox {id} closed the connection or sent an invalid response"
            ),
            Failure::UpstreamTimeout { id, port } => {
                format!("the app on port {port} in sandbox {id} did not respond in time")
            }
            Failure::Internal => "the proxy failed to handle this request".to_owned(),
            Failure::HostNotAllowed { host } => {
                format!("host {host:?} is not served by this proxy")
            }
            Failure::HeadersTooLarge {
                limit: HeadLimit::Bytes,
            } => format!(
                "the request line and headers are larger than 64 KiB ({} bytes), the most this proxy accepts",
                crate::config::MAX_REQUEST_HEAD_BYTES
            ),
            Failure::HeadersTooLarge {
                limit: HeadLimit::Fields,
            } => format!(
                "the request has more than {} header fields, the most this proxy accepts",
                crate::config::MAX_REQUEST_HEADER_FIELDS
            ),
        }
    }

    /// What the user can do about it (shown on the HTML page).
    pub fn hint(&self) -> String {
        match self {
            Failure::BadRequest { .. } | Failure::NoRoute { .. } => {
                "Check the URL; `wrenn url <sandbox-id> <port>` prints both forms.".to_owned()
            }
            Failure::NotFound { .. } => {
                "Check the id with `wrenn sandbox list`; a sandbox is destroyed when its timeout expires.".to_owned()
            }
            Failure::PortDenied {
                why: PortDenial::Listed,
                ..
            } => "It belongs to the sandbox's own agent; use the wrenn CLI or API for it.".to_owned(),
            Failure::PortDenied {
                why: PortDenial::NoAccessToken,
                ..
            } => "E2B's SDKs send the envdAccessToken of the create or connect answer; otherwise use the wrenn CLI or API.".to_owned(),
            Failure::NotRunning { id, state: RouteState::Paused } => {
                format!("Resume it with `wrenn sandbox resume {id}`, then reload.")
            }
            Failure::NotRunning { .. } => "It is still starting; reload in a moment.".to_owned(),
            Failure::PortClosed { port, .. } => format!(
                "Start your server inside the sandbox and bind it to 0.0.0.0, for example `python3 -m http.server {port} --bind 0.0.0.0`."
            ),
            Failure::Unreachable { .. } => {
                "The sandbox may be shutting down or overloaded; check `wrenn sandbox list`.".to_owned()
            }
            Failure::UpstreamBroke { .. } | Failure::UpstreamTimeout { .. } => {
                "Check the app's own logs inside the sandbox.".to_owned()
            }
            Failure::Internal => "Check the proxy's log.".to_owned(),
            Failure::HostNotAllowed { .. } => {
                "Use `localhost`, the proxy's domain or an address of this host (`wrenn url <sandbox-id> <port>` prints both URL forms), or add the name to the proxy's `allowed_hosts`.".to_owned()
            }
            Failure::HeadersTooLarge { .. } => {
                "Large cookies are the usual cause: clear this site's cookies, or send fewer or smaller headers.".to_owned()
            }
        }
    }

    /// The JSON body.
    pub fn json(&self) -> String {
        serde_json::json!({
            "error": {
                "code": self.code(),
                "message": self.message(),
                "sandbox_id": self.sandbox_id(),
                "port": self.port(),
            }
        })
        .to_string()
    }

    /// The HTML page.
    pub fn html(&self) -> String {
        let status = self.status();
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width\">\
             <title>{status} {reason} · wrenn</title>\
             <style>body{{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:4rem auto;padding:0 1rem;color:#222}}\
             code{{background:#f3f3f3;padding:.1em .3em;border-radius:3px}}small{{color:#777}}</style></head>\
             <body><h1>{status} {reason}</h1><p>{}</p><p>{}</p><p><small>wrenn proxy · {}</small></p></body></html>\n",
            with_code_spans(&escape_html(&self.message())),
            with_code_spans(&escape_html(&self.hint())),
            self.code(),
        )
    }

    /// Header and body of the response for this failure.
    pub fn response(&self, html: bool) -> (ResponseHeader, Bytes) {
        let (body, content_type) = if html {
            (self.html(), "text/html; charset=utf-8")
        } else {
            (self.json(), "application/json")
        };
        let mut h = own_response(self.status(), content_type, body.len());
        let _ = h.insert_header("wrenn-error", self.code());
        (h, Bytes::from(body))
    }
}

impl Failure {
    /// The whole HTTP/1.1 response for this failure, for code that writes
    /// to the client socket itself; it ends the connection (`connection:
    /// close`). No body for `HEAD` (`head_only`).
    pub(crate) fn to_wire(&self, html: bool, head_only: bool) -> Vec<u8> {
        let (head, body) = self.response(html);
        let mut out = Vec::with_capacity(512 + body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(itoa::Buffer::new().format(self.status()).as_bytes());
        out.push(b' ');
        out.extend_from_slice(head.get_reason_phrase().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        head.header_to_h1_wire(&mut out);
        out.extend_from_slice(b"connection: close\r\n\r\n");
        if !head_only {
            out.extend_from_slice(&body);
        }
        out
    }
}

/// The 308 the proxy sends for `/proxy/<id>/<port>` without a trailing slash.
pub fn redirect(location: http::HeaderValue) -> (ResponseHeader, Bytes) {
    let body = "redirecting into the sandbox prefix\n";
    let mut h = own_response(308, "text/plain; charset=utf-8", body.len());
    let _ = h.insert_header(http::header::LOCATION, location);
    (h, Bytes::from_static(body.as_bytes()))
}

/// The headers every response written by the proxy carries.
fn own_response(status: u16, content_type: &'static str, len: usize) -> ResponseHeader {
    use http::header;
    let mut h = ResponseHeader::build(status, Some(8)).expect("valid status");
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-store"),
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        (header::ACCESS_CONTROL_ALLOW_METHODS, "*"),
        (header::ACCESS_CONTROL_ALLOW_HEADERS, "*"),
        (header::ACCESS_CONTROL_EXPOSE_HEADERS, "wrenn-error"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        let _ = h.insert_header(name, value);
    }
    let _ = h.set_content_length(len);
    h
}

/// Whether the client is a browser navigation that should get HTML.
pub fn wants_html(accept: Option<&[u8]>, fetch_mode: Option<&[u8]>) -> bool {
    if fetch_mode.is_some_and(|m| m.eq_ignore_ascii_case(b"navigate")) {
        return true;
    }
    accept.is_some_and(|a| a.windows(9).any(|w| w.eq_ignore_ascii_case(b"text/html")))
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Turns `` `x` `` spans of already-escaped text into `<code>x</code>`.
fn with_code_spans(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for (i, part) in s.split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str("<code>");
            out.push_str(part);
            out.push_str("</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests;
