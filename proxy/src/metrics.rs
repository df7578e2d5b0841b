//! Prometheus metrics of one proxy instance, on its own registry (so several
//! instances — tests — can live in one process).
//!
//! The request path only touches pre-resolved handles: every label value is
//! looked up once at start, so recording is a few relaxed atomic adds. Values
//! that live in the route table (open connections per sandbox, route count)
//! and the pool reuse ratio are computed when `/metrics` is scraped.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::failure::Failure;
use crate::routes::RouteTable;

const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
];

/// Every metric the proxy records.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by status class: 1xx … 5xx, and `none` when no response was written.
    requests: [IntCounter; 6],
    pub duration: Histogram,
    /// Failures by [`Failure::code`].
    errors: Vec<IntCounter>,
    pub upstream_new: IntCounter,
    pub upstream_reused: IntCounter,
    pub connect_attempts: IntCounter,
    pub connect_retries: IntCounter,
    pub forced_close: IntCounter,
    pub fast_path: IntCounter,
    pub websocket_upgrades: IntCounter,
    pub request_bytes: IntCounter,
    pub response_bytes: IntCounter,
    pub client_connections: IntGauge,
    pub client_connections_total: IntCounter,
    pub header_timeouts: IntCounter,
    pub watch_synced: IntGauge,
    pub watch_reconnects: IntCounter,
    pub watch_events: IntCounter,
}

#[derive(Debug, thiserror::Error)]
#[error("registering proxy metrics")]
pub struct MetricsError(#[from] prometheus::Error);

fn counter(r: &Registry, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    pub fn new(routes: Arc<RouteTable>) -> Result<Arc<Self>, MetricsError> {
        let r = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "wrenn_proxy_requests_total",
                "Requests by response status class",
            ),
            &["class"],
        )?;
        r.register(Box::new(requests.clone()))?;
        let requests =
            ["1xx", "2xx", "3xx", "4xx", "5xx", "none"].map(|c| requests.with_label_values(&[c]));
        let errors_vec = IntCounterVec::new(
            Opts::new(
                "wrenn_proxy_errors_total",
                "Requests the proxy failed, by class",
            ),
            &["class"],
        )?;
        r.register(Box::new(errors_vec.clone()))?;
        let errors = Failure::CODES
            .iter()
            .map(|c| errors_vec.with_label_values(&[c]))
            .collect();
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "wrenn_proxy_request_duration_seconds",
                "Time from request headers to the end of the response",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        r.register(Box::new(duration.clone()))?;
        let upstream = IntCounterVec::new(
            Opts::new(
                "wrenn_proxy_upstream_connections_total",
                "Upstream connections used, by whether they came from the keep-alive pool",
            ),
            &["reused"],
        )?;
        r.register(Box::new(upstream.clone()))?;
        let m = Metrics {
            requests,
            duration,
            errors,
            upstream_new: upstream.with_label_values(&["false"]),
            upstream_reused: upstream.with_label_values(&["true"]),
            connect_attempts: counter(
                &r,
                "wrenn_proxy_connect_attempts_total",
                "Upstream connect attempts (new connections only)",
            )?,
            connect_retries: counter(
                &r,
                "wrenn_proxy_connect_retries_total",
                "Connect attempts that failed and were retried",
            )?,
            forced_close: counter(
                &r,
                "wrenn_proxy_upstream_forced_close_total",
                "Upstream requests sent with Connection: close because the upstream was at its in-flight cap",
            )?,
            fast_path: counter(
                &r,
                "wrenn_proxy_fast_path_requests_total",
                "Requests served by the plain GET/HEAD fast path instead of Pingora's HttpProxy",
            )?,
            websocket_upgrades: counter(
                &r,
                "wrenn_proxy_websocket_upgrades_total",
                "Upgrade requests passed to a sandbox",
            )?,
            request_bytes: counter(
                &r,
                "wrenn_proxy_request_body_bytes_total",
                "Request body bytes read from clients",
            )?,
            response_bytes: counter(
                &r,
                "wrenn_proxy_response_body_bytes_total",
                "Response body bytes sent to clients",
            )?,
            client_connections: gauge(
                &r,
                "wrenn_proxy_client_connections",
                "Open client connections",
            )?,
            client_connections_total: counter(
                &r,
                "wrenn_proxy_client_connections_total",
                "Accepted client connections",
            )?,
            header_timeouts: counter(
                &r,
                "wrenn_proxy_header_timeouts_total",
                "Client connections closed for not sending request headers in time",
            )?,
            watch_synced: gauge(
                &r,
                "wrenn_proxy_watch_synced",
                "1 while the route table follows a synced agent stream",
            )?,
            watch_reconnects: counter(
                &r,
                "wrenn_proxy_watch_reconnects_total",
                "Times the agent stream was lost or could not be opened",
            )?,
            watch_events: counter(
                &r,
                "wrenn_proxy_watch_events_total",
                "Sandbox events received from the agent",
            )?,
            registry: r,
        };
        let scraped = ScrapeTime::new(routes, m.upstream_new.clone(), m.upstream_reused.clone())?;
        m.registry.register(Box::new(scraped))?;
        Ok(Arc::new(m))
    }

    /// Counts a finished request by its status (0: nothing was written).
    pub fn record_status(&self, status: u16) {
        let i = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        self.requests[i].inc();
    }

    pub fn record_failure(&self, f: &Failure) {
        if let Some(i) = Failure::CODES.iter().position(|c| *c == f.code()) {
            self.errors[i].inc();
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Metrics computed at scrape time from the route table and the pool counters.
struct ScrapeTime {
    routes: Arc<RouteTable>,
    open: IntGaugeVec,
    route_count: IntGauge,
    reuse_ratio: Gauge,
    upstream_new: IntCounter,
    upstream_reused: IntCounter,
    descs: Vec<Desc>,
}

impl ScrapeTime {
    fn new(
        routes: Arc<RouteTable>,
        upstream_new: IntCounter,
        upstream_reused: IntCounter,
    ) -> Result<Self, MetricsError> {
        let open = IntGaugeVec::new(
            Opts::new(
                "wrenn_proxy_sandbox_open_connections",
                "Upstream requests (including WebSocket tunnels) open per sandbox",
            ),
            &["sandbox_id"],
        )?;
        let route_count = IntGauge::new("wrenn_proxy_routes", "Sandboxes in the route table")?;
        let reuse_ratio = Gauge::new(
            "wrenn_proxy_pool_reuse_ratio",
            "Share of upstream connections taken from the keep-alive pool",
        )?;
        let descs = [open.desc(), route_count.desc(), reuse_ratio.desc()]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        Ok(ScrapeTime {
            routes,
            open,
            route_count,
            reuse_ratio,
            upstream_new,
            upstream_reused,
            descs,
        })
    }
}

impl Collector for ScrapeTime {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let routes = self.routes.snapshot();
        self.route_count.set(routes.len() as i64);
        self.open.reset();
        for r in &routes {
            self.open
                .with_label_values(&[r.id.as_str()])
                .set(r.open_connections() as i64);
        }
        let (new, reused) = (self.upstream_new.get(), self.upstream_reused.get());
        let total = new + reused;
        self.reuse_ratio.set(if total == 0 {
            0.0
        } else {
            reused as f64 / total as f64
        });
        let mut out = self.open.collect();
        out.extend(self.route_count.collect());
        out.extend(self.reuse_ratio.collect());
        out
    }
}
