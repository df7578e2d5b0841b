//! Header names the request path uses, parsed once: a `&str` name is parsed
//! (and, for a non-standard name, copied) on every lookup or insert.

use http::HeaderName;

pub(super) const WRENN_SANDBOX_ID: HeaderName = HeaderName::from_static("wrenn-sandbox-id");
pub(super) const WRENN_SANDBOX_PORT: HeaderName = HeaderName::from_static("wrenn-sandbox-port");
pub(super) const E2B_SANDBOX_ID: HeaderName = HeaderName::from_static("e2b-sandbox-id");
pub(super) const E2B_SANDBOX_PORT: HeaderName = HeaderName::from_static("e2b-sandbox-port");
/// The routing headers, with their names as error messages show them.
pub(super) const ROUTING: [(HeaderName, &str); 4] = [
    (WRENN_SANDBOX_ID, "Wrenn-Sandbox-Id"),
    (WRENN_SANDBOX_PORT, "Wrenn-Sandbox-Port"),
    (E2B_SANDBOX_ID, "E2b-Sandbox-Id"),
    (E2B_SANDBOX_PORT, "E2b-Sandbox-Port"),
];
pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
pub(super) const REFRESH: HeaderName = HeaderName::from_static("refresh");
pub(super) const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
