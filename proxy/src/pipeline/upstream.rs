//! The upstream request: what differs from the client's head (one edit
//! list both transports apply), and the accounting of each upstream
//! connection (connect retry rule, pool reuse, the in-flight cap).
//!
//! The upstream head is the client's request line with the target from
//! [`UpstreamEdits::strip_from`], the client's headers in their order minus
//! [`UpstreamEdits::dropped`] ones, then the [`added`] ones in this order: `host` (when the
//! app wants `localhost:<port>`), `x-forwarded-host`, `x-forwarded-for`,
//! `x-forwarded-proto`, `x-forwarded-prefix`; last `connection: close` when
//! [`WrennProxy::force_close`] says so (known once connected).

use std::sync::atomic::Ordering;

use pingora_error::Error;

use super::{RequestCtx, WrennProxy, is_connect_error};
use crate::routes::{HostPolicy, PrefixPolicy};
use crate::target::{Form, push_path_prefix};

/// Hop-by-hop request headers (RFC 9110 §7.6.1) that the fast path
/// takes and leaves out, as Pingora's proxy strips them before its hooks
/// run. Requests with the others (`TE`, `Transfer-Encoding`, `Upgrade`, a
/// `Connection` naming more than `close` or `keep-alive`) go to Pingora.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "trailer",
    "http2-settings",
];

/// The forwarded headers wrenn sets itself: a client's claim is dropped.
const FORWARDED: [&str; 4] = [
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-prefix",
];

/// How the request sent upstream differs from the client's, decided once
/// per request from its route and form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UpstreamEdits {
    /// Path form with the prefix stripped: the upstream target starts at this
    /// offset of the raw target.
    pub strip_from: Option<usize>,
    /// `Host: localhost:<port>` instead of the public host.
    pub localhost_host: bool,
    /// `X-Forwarded-Prefix: /proxy/<id>/<port>`.
    pub prefix: bool,
}

impl UpstreamEdits {
    /// Whether the client's header `name` (any case) is left out upstream.
    pub(crate) fn dropped(&self, name: &str) -> bool {
        let is = |n: &&str| n.eq_ignore_ascii_case(name);
        HOP_BY_HOP.iter().any(is)
            || FORWARDED.iter().any(is)
            || (self.localhost_host && name.eq_ignore_ascii_case("host"))
    }

    /// What a transport whose HTTP stack strips hop-by-hop headers itself
    /// (Pingora's) still removes: the forwarded headers, and `host` when
    /// the app gets `localhost:<port>` instead.
    pub(crate) fn replaced(&self) -> impl Iterator<Item = &'static str> {
        FORWARDED
            .into_iter()
            .chain(self.localhost_host.then_some("host"))
    }
}

/// The headers wrenn adds upstream, in order, each given to `add` as its
/// name and a writer of its value (so the fast path writes the value where
/// the head is, without allocating): `host` is the client's first `Host`,
/// `client_ip` its address.
pub(crate) fn added(
    ctx: &RequestCtx,
    edits: UpstreamEdits,
    host: Option<&[u8]>,
    client_ip: Option<&str>,
    mut add: impl FnMut(&'static str, &dyn Fn(&mut Vec<u8>)),
) {
    if edits.localhost_host {
        add("host", &|out| {
            out.extend_from_slice(b"localhost:");
            out.extend_from_slice(itoa::Buffer::new().format(ctx.port).as_bytes());
        });
    }
    if let Some(host) = host {
        add("x-forwarded-host", &|out| out.extend_from_slice(host));
    }
    if let Some(ip) = client_ip {
        add("x-forwarded-for", &|out| {
            out.extend_from_slice(ip.as_bytes())
        });
    }
    add("x-forwarded-proto", &|out| out.extend_from_slice(b"http"));
    if edits.prefix
        && let Some(route) = &ctx.route
    {
        add("x-forwarded-prefix", &|out| {
            push_path_prefix(out, route.id.as_str(), ctx.port);
        });
    }
}

impl WrennProxy {
    /// The edits for this request's upstream request, from its route and form.
    pub(crate) fn upstream_edits(&self, ctx: &RequestCtx) -> Option<UpstreamEdits> {
        let route = ctx.route.as_ref()?;
        // Path form: the prefix is stripped unless the app serves under it.
        let strip = route.options.prefix_policy(ctx.port) == PrefixPolicy::Strip;
        Some(UpstreamEdits {
            strip_from: ctx.path_offset.filter(|_| strip),
            localhost_host: route.options.host_policy(ctx.port) == HostPolicy::Localhost,
            prefix: ctx.form == Some(Form::Path) && strip,
        })
    }

    /// Whether the upstream request carries `Connection: close` because its
    /// (sandbox, port) is above the in-flight cap (known once connected);
    /// counts it.
    pub(crate) fn force_close(&self, ctx: &RequestCtx) -> bool {
        let close = !ctx.upgrade && ctx.in_flight > self.max_in_flight;
        if close {
            self.metrics.forced_close.inc();
        }
        close
    }

    /// Counts a failed connect attempt; whether another attempt may follow
    /// (connect failures only: nothing was sent upstream).
    pub(crate) fn connect_failed(&self, ctx: &mut RequestCtx, e: &Error) -> bool {
        ctx.connect_failures += 1;
        self.metrics.connect_attempts.inc();
        let retry = is_connect_error(e) && ctx.connect_failures < self.connect_attempts;
        if retry {
            self.metrics.connect_retries.inc();
        }
        retry
    }

    /// Counts an upstream connection in use: pool reuse, per-sandbox open
    /// connections and the in-flight count of its (sandbox, port).
    pub(crate) fn connected(&self, ctx: &mut RequestCtx, reused: bool) {
        ctx.reused = reused;
        if reused {
            self.metrics.upstream_reused.inc();
        } else {
            self.metrics.upstream_new.inc();
            self.metrics.connect_attempts.inc();
        }
        // A retry after a stale pooled connection connects again: count once.
        self.release(ctx);
        if let Some(r) = &ctx.route {
            ctx.in_flight = r.in_flight.acquire(ctx.port);
            r.open.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes this request off its upstream's in-flight counters.
    pub(crate) fn release(&self, ctx: &mut RequestCtx) {
        if ctx.in_flight > 0
            && let Some(r) = &ctx.route
        {
            r.in_flight.release(ctx.port);
            r.open.fetch_sub(1, Ordering::Relaxed);
            ctx.in_flight = 0;
        }
    }
}
