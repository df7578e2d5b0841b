//! Which sandbox a request goes to (`request_filter`) and the peer of each
//! connect attempt (`upstream_peer`, with the retry backoff).

use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_proxy::Session;

use super::{RequestCtx, WrennProxy};
use crate::failure::{self, Failure};
use crate::hosts::Listener;
use crate::routes::RouteState;
use crate::target::{self, Parsed, RoutingHeaders};

impl WrennProxy {
    /// Checks the `Host`, parses the URL form and looks the sandbox up.
    /// `Ok(true)`: the proxy answered itself (308, 400, 403, 404, 409, 421).
    pub(super) async fn route(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        // Before anything else, header-routed requests included: a `Host`
        // this proxy does not answer is 421 (DNS rebinding).
        let hosts = req.headers.get_all(http::header::HOST).iter();
        let checked = self.hosts.check(
            Listener::Proxy,
            hosts.map(|v| v.as_bytes()),
            target::authority(req.raw_path()),
        );
        if let Err(host) = checked {
            let host = String::from_utf8_lossy(host).into_owned();
            self.respond(session, ctx, Failure::HostNotAllowed { host })
                .await;
            return Ok(true);
        }
        let req = session.req_header();
        let mut routing = RoutingHeaders::default();
        for (name, value) in &req.headers {
            routing.offer(name.as_str(), value.as_bytes());
        }
        let host = req.headers.get(http::header::HOST).map(|v| v.as_bytes());
        let view = routing.view(host, req.raw_path());
        let t = match target::parse(&self.domain, view) {
            Parsed::Target(t) => t,
            Parsed::Redirect(location) => {
                match failure::redirect(&location) {
                    Some((head, body)) => super::outcome::write_own(session, head, body).await,
                    None => {
                        let message = "the request target cannot be redirected".into();
                        let f = Failure::BadRequest {
                            message,
                            sandbox_id: None,
                            port: None,
                        };
                        self.respond(session, ctx, f).await;
                    }
                }
                return Ok(true);
            }
            Parsed::NoRoute => {
                let f = Failure::NoRoute {
                    domain: self.domain.clone(),
                };
                self.respond(session, ctx, f).await;
                return Ok(true);
            }
            Parsed::Bad(b) => {
                let f = Failure::BadRequest {
                    message: b.message,
                    sandbox_id: b.sandbox_id,
                    port: b.port,
                };
                self.respond(session, ctx, f).await;
                return Ok(true);
            }
        };
        ctx.form = Some(t.form);
        ctx.port = t.port;
        // The upstream target is a tail of the raw target: keep its offset, not a copy.
        ctx.path_offset = t
            .upstream_path
            .map(|p| p.as_ptr() as usize - view.target.as_ptr() as usize);
        if self.denied_ports.contains(&t.port) {
            let f = Failure::PortDenied {
                id: t.id.into_owned(),
                port: t.port,
            };
            self.respond(session, ctx, f).await;
            return Ok(true);
        }
        let Some(route) = self.routes.get(&t.id) else {
            self.respond(
                session,
                ctx,
                Failure::NotFound {
                    id: t.id.into_owned(),
                },
            )
            .await;
            return Ok(true);
        };
        if route.state != RouteState::Running {
            let f = Failure::NotRunning {
                id: t.id.into_owned(),
                state: route.state,
            };
            ctx.route = Some(route);
            self.respond(session, ctx, f).await;
            return Ok(true);
        }
        ctx.route = Some(route);
        if session.is_upgrade_req() {
            ctx.upgrade = true;
            session.set_read_timeout(Some(self.websocket_idle));
        }
        Ok(false)
    }

    /// The peer for the next connect attempt. Before a retry it sleeps
    /// `failures × backoff` and re-reads the route: a sandbox destroyed (or
    /// paused) meanwhile is answered, not dialled; a replaced one is followed.
    pub(crate) async fn attempt_peer(&self, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let mut route = ctx
            .route
            .clone()
            .ok_or_else(|| Error::new_in(ErrorType::InternalError))?;
        if ctx.connect_failures > 0 {
            tokio::time::sleep(self.backoff * ctx.connect_failures).await;
            match self.routes.get(route.id.as_str()) {
                Some(now) if now.generation == route.generation && now.state == route.state => {}
                Some(now) if now.state == RouteState::Running => {
                    ctx.route = Some(now.clone());
                    route = now;
                }
                Some(now) => {
                    let f = Failure::NotRunning {
                        id: route.id.to_string(),
                        state: now.state,
                    };
                    ctx.failure = Some(f);
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(409),
                        "sandbox stopped running",
                    ));
                }
                None => {
                    ctx.failure = Some(Failure::NotFound {
                        id: route.id.to_string(),
                    });
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(404),
                        "sandbox went away",
                    ));
                }
            }
        }
        ctx.attempts += 1;
        match self
            .connector
            .peer(&route, ctx.port, ctx.upgrade, &self.peer)
        {
            Some(peer) => Ok(peer),
            None => {
                ctx.failure = Some(Failure::Unreachable {
                    id: route.id.to_string(),
                    port: ctx.port,
                });
                Err(Error::explain(
                    ErrorType::ConnectNoRoute,
                    "no way to reach the sandbox",
                ))
            }
        }
    }
}
