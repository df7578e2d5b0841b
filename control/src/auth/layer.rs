//! The tower layer that puts every request behind an API key, except paths
//! declared public (gRPC health, and whatever an extension opts out).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use http::{HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service};

use super::{Authenticator, UNAUTHENTICATED_MESSAGE};

/// Which key a request was made with; inserted into the request's extensions
/// for the handlers behind the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedKey {
    pub id: String,
    pub name: String,
}

/// Wraps a service so that requests need a valid key unless their path starts
/// with one of the public prefixes.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
    public_prefixes: Arc<[String]>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>, public_prefixes: Vec<String>) -> Self {
        AuthLayer {
            auth,
            public_prefixes: public_prefixes.into(),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
            public_prefixes: self.public_prefixes.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
    public_prefixes: Arc<[String]>,
}

impl<S, B> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The clone is the one that was not made ready; swap so the ready one runs.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = req.uri().path();
        if self
            .public_prefixes
            .iter()
            .any(|p| path.starts_with(p.as_str()))
        {
            return Box::pin(inner.call(req));
        }
        let auth = self.auth.clone();
        Box::pin(async move {
            let header = req
                .headers()
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes);
            match auth.authenticate(header).await {
                Some(key) => {
                    req.extensions_mut().insert(key);
                    inner.call(req).await
                }
                None => {
                    tracing::debug!(path = %req.uri().path(), "refused: missing or invalid API key");
                    Ok(refusal(&req))
                }
            }
        })
    }
}

/// `UNAUTHENTICATED` for gRPC callers, `401` for plain HTTP ones.
fn refusal<B>(req: &Request<B>) -> Response<Body> {
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        tonic::Status::unauthenticated(UNAUTHENTICATED_MESSAGE).into_http()
    } else {
        let mut res = Response::new(Body::from(format!("{UNAUTHENTICATED_MESSAGE}\n")));
        *res.status_mut() = StatusCode::UNAUTHORIZED;
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        res
    }
}
