//! Which sandbox port a request goes to ([`WrennProxy::route`]), and the
//! peer of each connect attempt ([`WrennProxy::attempt_peer`], with the
//! retry backoff and the re-check of the route).

use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};

use super::{Answer, RequestCtx, WrennProxy, envd};
use crate::failure::{Failure, PortDenial};
use crate::hosts::Listener;
use crate::routes::RouteState;
use crate::target::{self, Parsed, RoutingHeaders};

/// What routing reads of a request head, however the transport parsed it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a, H> {
    /// The request method (`GET`, `POST`, …).
    pub method: &'a str,
    /// A non-empty `X-Access-Token` came with it ([`envd::is_access_token`]).
    pub access_token: bool,
    /// The first `Host` value, if any.
    pub host: Option<&'a [u8]>,
    /// Every `Host` value: each must be one this proxy answers.
    pub all_hosts: H,
    /// The routing headers, offered in the order they came.
    pub routing: RoutingHeaders<'a>,
    /// The raw request target (origin-form or absolute-form).
    pub target: &'a [u8],
}

impl WrennProxy {
    /// Checks the `Host`, parses the URL form and looks the sandbox up,
    /// filling `ctx` (form, port, path offset, route). `Err`: what the proxy
    /// answers itself (308, 400, 403, 404, 409, 421); `ctx.route` is set
    /// when the sandbox was found, for the access log. A port in
    /// `denied_ports` is refused; so is the envd port to anything but
    /// envd's clients ([`envd`]).
    pub(crate) fn route<'a, H>(
        &self,
        req: Request<'a, H>,
        ctx: &mut RequestCtx,
    ) -> Result<(), Answer>
    where
        H: IntoIterator<Item = &'a [u8]>,
    {
        // Before anything else, header-routed requests included: a `Host`
        // this proxy does not answer is 421 (DNS rebinding).
        let authority = target::authority(req.target);
        if let Err(host) = self.hosts.check(Listener::Proxy, req.all_hosts, authority) {
            let host = String::from_utf8_lossy(host).into_owned();
            return Err(Failure::HostNotAllowed { host }.into());
        }
        let view = req.routing.view(req.host, req.target);
        let t = match target::parse(&self.domain, view) {
            Parsed::Target(t) => t,
            Parsed::Redirect(location) => return Err(Answer::redirect(location)),
            Parsed::NoRoute => {
                let domain = self.domain.clone();
                return Err(Failure::NoRoute { domain }.into());
            }
            Parsed::Bad(b) => {
                return Err(Failure::BadRequest {
                    message: b.message,
                    sandbox_id: b.sandbox_id,
                    port: b.port,
                }
                .into());
            }
        };
        ctx.form = Some(t.form);
        ctx.port = t.port;
        // The upstream target is a tail of the raw target: keep its offset, not a copy.
        ctx.path_offset = t
            .upstream_path
            .map(|p| p.as_ptr() as usize - req.target.as_ptr() as usize);
        let why = if self.denied_ports.contains(&t.port) {
            Some(PortDenial::Listed)
        } else if t.port == envd::ENVD_PORT {
            let upstream = t
                .upstream_path
                .unwrap_or_else(|| target::origin(req.target));
            (!envd::is_envd_client(req.method, req.access_token, upstream))
                .then_some(PortDenial::NoAccessToken)
        } else {
            None
        };
        if let Some(why) = why {
            let (id, port) = (t.id.into_owned(), t.port);
            return Err(Failure::PortDenied { id, port, why }.into());
        }
        let Some(route) = self.routes.get(&t.id) else {
            let (id, envd) = (t.id.into_owned(), t.port == envd::ENVD_PORT);
            return Err(Failure::NotFound { id, envd }.into());
        };
        let state = route.state;
        ctx.route = Some(route);
        if state != RouteState::Running {
            let id = t.id.into_owned();
            return Err(Failure::NotRunning { id, state }.into());
        }
        Ok(())
    }

    /// The peer for the next connect attempt. Before a retry it sleeps
    /// `failures × backoff` and re-reads the route: a sandbox destroyed (or
    /// paused) meanwhile is answered, not dialled; a replaced one is followed.
    /// `Err` carries the failure in `ctx.failure`.
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
                        envd: ctx.port == envd::ENVD_PORT,
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
