//! Header names the request path uses, parsed once: a `&str` name is parsed
//! (and, for a non-standard name, copied) on every lookup or insert.

use http::HeaderName;

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
pub(super) const REFRESH: HeaderName = HeaderName::from_static("refresh");
pub(super) const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
