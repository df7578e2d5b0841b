//! The envd port: which requests to a sandbox's port 49983 pass.
//!
//! Port 49983 is the guest agent's. It serves wrenn's own gRPC (HTTP/2,
//! for the host agent only) and, beside it, an envd-compatible HTTP/1.1
//! interface that E2B's SDKs call through the proxy, each request carrying
//! the sandbox's access token. The proxy lets through only requests that
//! look like those clients' (see [`is_envd_client`]) and answers everything
//! else as a denied port (403 `port_denied`, saying that the token is
//! missing). The guest checks the token's value itself: the proxy's rule
//! keeps the rest of the port off the public path, it authenticates nobody.
//!
//! The rule is the same on every request path: both transports call it
//! from [`WrennProxy::route`](super::WrennProxy::route). A port listed in
//! `denied_ports` is refused before it, whatever the request carries.

/// The guest agent's port, where envd's interface is served.
pub(crate) const ENVD_PORT: u16 = wrenn_types::GUEST_PORT;

/// The header envd's clients send the sandbox's access token in.
pub(crate) const ACCESS_TOKEN: &str = "x-access-token";

/// Whether header `name: value` is a non-empty access token.
pub(crate) fn is_access_token(name: &str, value: &[u8]) -> bool {
    name.eq_ignore_ascii_case(ACCESS_TOKEN) && !value.trim_ascii().is_empty()
}

/// Whether a request looks like an envd client's: it carries a non-empty
/// `X-Access-Token` (`access_token`), or is `GET /health` (the SDK's
/// liveness check, no token), or asks for `/files` with a `signature` query
/// parameter (E2B's signed download and upload URLs, no token). `target` is
/// the request target the sandbox gets (origin-form, query included).
pub(crate) fn is_envd_client(method: &str, access_token: bool, target: &[u8]) -> bool {
    if access_token {
        return true;
    }
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    };
    match path {
        b"/health" => method == "GET",
        b"/files" => query.is_some_and(has_signature),
        _ => false,
    }
}

/// Whether a query string has a non-empty `signature` parameter.
fn has_signature(query: &[u8]) -> bool {
    query
        .split(|&b| b == b'&')
        .filter_map(|pair| pair.strip_prefix(b"signature="))
        .any(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envd_clients_show_a_token_a_health_check_or_a_signed_file_url() {
        for (method, token, target) in [
            ("POST", true, &b"/process.Process/Start"[..]),
            ("GET", true, b"/files?path=/etc/hosts"),
            ("GET", true, b"/"),
            ("GET", false, b"/health"),
            (
                "GET",
                false,
                b"/files?path=a&signature=v1_abc&signature_expiration=9",
            ),
            ("POST", false, b"/files?signature=v1_abc"),
        ] {
            assert!(
                is_envd_client(method, token, target),
                "{method} {} token={token}",
                String::from_utf8_lossy(target)
            );
        }
        for (method, target) in [
            ("GET", &b"/"[..]),
            ("POST", b"/process.Process/Start"),
            ("POST", b"/wrenn.v1.Guest/Assign"),
            ("POST", b"/health"),
            ("HEAD", b"/health"),
            ("GET", b"/health/x"),
            ("GET", b"/healthz"),
            ("GET", b"/files?path=/etc/shadow"),
            ("GET", b"/files?signature="),
            ("GET", b"/files?xsignature=v1"),
            ("GET", b"/files/x?signature=v1"),
            ("GET", b"/filesx?signature=v1"),
        ] {
            assert!(
                !is_envd_client(method, false, target),
                "{method} {}",
                String::from_utf8_lossy(target)
            );
        }
    }

    #[test]
    fn only_a_non_empty_x_access_token_counts() {
        assert!(is_access_token("X-Access-Token", b"abc"));
        assert!(is_access_token("x-access-token", b" t "));
        assert!(!is_access_token("x-access-token", b""));
        assert!(!is_access_token("x-access-token", b"  "));
        assert!(!is_access_token("x-access-tokens", b"abc"));
        assert!(!is_access_token("authorization", b"abc"));
    }
}
