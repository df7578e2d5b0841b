//! The admin listener (default `127.0.0.1:7881`), separate from browser traffic:
//! - `GET /metrics` — Prometheus text format;
//! - `GET /healthz` — 200 while the proxy runs;
//! - `GET /readyz` — 200 while the route table is synced with the agent and
//!   following its stream; 503 (saying why) before the first snapshot and
//!   whenever the stream is lost, until a complete snapshot is in again (the
//!   last routes keep serving meanwhile);
//! - `GET /routes` — the route table as JSON, every sandbox id in it: only
//!   with the host agent's key (`authorization: Bearer <key>`, else 401),
//!   and 404 when the proxy has no key.
//!
//! Every request needs a `Host` this listener answers ([`crate::hosts`]:
//! `localhost`, loopback and the host's own addresses, `allowed_hosts`),
//! else 421; request heads above 64 KiB get 431 (hyper's answer).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::MAX_REQUEST_HEAD_BYTES;
use crate::hosts::{AllowedHosts, Listener};
use crate::metrics::Metrics;
use crate::routes::{Readiness, RouteTable};

#[derive(Clone)]
pub(crate) struct Admin {
    pub metrics: Arc<Metrics>,
    pub routes: Arc<RouteTable>,
    pub hosts: Arc<AllowedHosts>,
    /// `Bearer <agent key>`, the `authorization` value `/routes` requires;
    /// `None`: no key, `/routes` is disabled.
    pub routes_auth: Option<Arc<[u8]>>,
}

impl Admin {
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        routes: Arc<RouteTable>,
        hosts: Arc<AllowedHosts>,
        agent_key: &wrenn_proto::auth::Secret,
    ) -> Self {
        let routes_auth = (!agent_key.is_empty())
            .then(|| format!("Bearer {}", agent_key.expose()).into_bytes().into());
        Admin {
            metrics,
            routes,
            hosts,
            routes_auth,
        }
    }

    fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let hosts = req
            .headers()
            .get_all(header::HOST)
            .iter()
            .map(|v| v.as_bytes());
        let authority = req.uri().authority().map(|a| a.as_str().as_bytes());
        if let Err(host) = self.hosts.check(Listener::Admin, hosts, authority) {
            return text(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "host {:?} is not served by this admin listener: use localhost, a loopback address or an address of this host, or add it to `allowed_hosts`\n",
                    String::from_utf8_lossy(host)
                ),
            );
        }
        if req.method() != http::Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
        }
        match req.uri().path() {
            "/metrics" => {
                let mut r = text(StatusCode::OK, self.metrics.render());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => self.readyz(),
            "/routes" => self.list_routes(req),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz, /readyz, /routes\n".into(),
            ),
        }
    }

    fn readyz(&self) -> Response<Full<Bytes>> {
        let unavailable = |why: String| text(StatusCode::SERVICE_UNAVAILABLE, why);
        match self.routes.readiness() {
            Readiness::Ready => text(StatusCode::OK, "ready\n".into()),
            Readiness::NotSynced(None) => {
                unavailable("route table not synced with the agent yet\n".into())
            }
            Readiness::NotSynced(Some(why)) => unavailable(format!(
                "route table not synced with the agent yet: {why}\n"
            )),
            Readiness::Stale(why) => unavailable(format!(
                "not ready: {why}; the last {} routes keep serving meanwhile\n",
                self.routes.len()
            )),
        }
    }

    /// The route table, for the agent's key holder only.
    fn list_routes(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let Some(expected) = &self.routes_auth else {
            return text(
                StatusCode::NOT_FOUND,
                "/routes is disabled: the proxy has no agent key to check callers against\n".into(),
            );
        };
        let got = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !got.is_some_and(|got| wrenn_proto::auth::constant_time_eq(got, expected)) {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "/routes requires the host agent's key: `authorization: Bearer <agent key>`\n"
                    .into(),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
        let routes: Vec<_> = self
            .routes
            .snapshot()
            .iter()
            .map(|r| {
                serde_json::json!({
                    "sandbox_id": r.id.as_str(),
                    "state": r.state,
                    "address": r.address.map(|a| a.to_string()),
                    "generation": r.generation,
                    "open_connections": r.open_connections(),
                })
            })
            .collect();
        let body = serde_json::json!({ "synced": self.routes.is_synced(), "routes": routes });
        let mut r = text(StatusCode::OK, body.to_string());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        r
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Serves admin requests until `shutdown` turns true.
pub(crate) async fn serve_admin(
    listener: TcpListener,
    admin: Admin,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            () = crate::listener::stopped(&mut shutdown) => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an admin connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admin = admin.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let resp = admin.handle(&req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .max_buf_size(MAX_REQUEST_HEAD_BYTES)
                .serve_connection(TokioIo::new(tcp), svc);
            tokio::select! {
                _ = conn => {}
                () = crate::listener::stopped(&mut shutdown) => {}
            }
        });
    }
}
