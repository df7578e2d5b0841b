//! envd's HTTP interface, for E2B's SDKs: the same `process.Process` and
//! `filesystem.Filesystem` services the host calls over gRPC, spoken in the
//! Connect protocol ([`connect`]) over HTTP/1.1 or h2, plus `GET /health`
//! and `GET`/`POST /files` ([`files`]), on the agent's own port (49983).
//!
//! # Routing
//! [`Envd`] is a tower layer in front of the gRPC server: an HTTP/2
//! request whose content type is `application/grpc…` goes on to gRPC (and
//! its bearer check) unchanged; gRPC over HTTP/1.1 (which only the proxy's
//! path carries) is refused; every other request is envd's. One port serves both,
//! as E2B's envd does, so the proxy reaches it on the port the SDK names.
//!
//! # Authentication
//! Every RPC and `/files` call needs the sandbox's access token
//! (`X-Access-Token`, compared in constant time), or, for `/files`, a URL
//! signed with it (`signature`, `signature_expiration`: E2B's `v1_` SHA-256
//! scheme). The token comes from the host (`--envd-access-token`, or
//! `Assign` for a pooled sandbox); until there is one, everything but
//! `/health` is refused. `/health` is open: it says only "serving".
//!
//! # Users and paths
//! The user of a call is the `Authorization: Basic base64("<user>:")`
//! header's (RPCs) or the `username` query parameter (`/files`); without
//! one it is the template's default user if the template sets one, else
//! E2B's default user `user` when the sandbox has that account, else root. Relative paths are relative to that user's
//! home. Directories and files an RPC or upload creates belong to the user.

mod connect;
mod files;
mod rpc;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use tonic::Status;
use tonic::body::Body;
use wrenn_proto::auth::constant_time_eq;

use crate::fs::FilesystemService;
use crate::process::ProcessService;
use crate::template::Template;
use crate::users::{User, UserDb};

/// E2B's default user: calls that name none run as it when it exists.
pub const E2B_USER: &str = "user";
/// The header carrying the access token.
pub const TOKEN_HEADER: &str = "x-access-token";

/// The sandbox's envd access token, set at start or by `Assign`.
#[derive(Clone, Default)]
pub struct AccessToken(Arc<RwLock<Option<Arc<str>>>>);

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.get().is_some() {
            "AccessToken(…)"
        } else {
            "AccessToken(none)"
        })
    }
}

impl AccessToken {
    pub fn new(token: Option<String>) -> Self {
        let t = AccessToken::default();
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            t.set(token);
        }
        t
    }

    pub fn set(&self, token: String) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(token.into());
    }

    fn get(&self) -> Option<Arc<str>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether `got` is the token (none set: nothing is).
    fn check(&self, got: Option<&[u8]>) -> Result<(), Status> {
        let Some(expected) = self.get() else {
            return Err(Status::unauthenticated(
                "this sandbox has no access token yet; envd calls are refused until it has",
            ));
        };
        match got {
            Some(got) if constant_time_eq(got, expected.as_bytes()) => Ok(()),
            Some(_) => Err(Status::unauthenticated(
                "wrong access token (X-Access-Token)",
            )),
            None => Err(Status::unauthenticated(
                "missing access token: send the sandbox's envdAccessToken as X-Access-Token",
            )),
        }
    }
}

struct Inner {
    process: ProcessService,
    fs: FilesystemService,
    users: Arc<UserDb>,
    template: Arc<Template>,
    token: AccessToken,
}

/// The layer (and the state its services share).
#[derive(Clone)]
pub struct Envd(Arc<Inner>);

impl Envd {
    pub fn new(
        process: ProcessService,
        fs: FilesystemService,
        users: Arc<UserDb>,
        template: Arc<Template>,
        token: AccessToken,
    ) -> Self {
        Envd(Arc::new(Inner {
            process,
            fs,
            users,
            template,
            token,
        }))
    }

    /// The user a call runs as: the one it names, else the template's
    /// default user if it sets one, else E2B's `user` if the sandbox has
    /// that account, else root.
    fn user(&self, named: Option<&str>) -> Result<Arc<User>, Status> {
        let db = &self.0.users;
        match named.filter(|n| !n.is_empty()) {
            Some(name) => db.user(name).map_err(|e| {
                let status = Status::from(e);
                Status::invalid_argument(format!("user {name:?}: {}", status.message()))
            }),
            None => match &self.0.template.user {
                Some(name) => db.user(name),
                None => db
                    .user(E2B_USER)
                    .or_else(|_| db.user(self.0.template.user(None))),
            }
            .map_err(Status::from),
        }
    }

    /// The user to name in a `StartRequest`: the call's, else E2B's `user`
    /// when the template sets none and the sandbox has that account; `None`
    /// leaves it to the process service's own default (the template's user,
    /// else root), as [`user`](Self::user) resolves it.
    fn process_user(&self, named: Option<&str>) -> Option<String> {
        match named.filter(|n| !n.is_empty()) {
            Some(name) => Some(name.to_owned()),
            None if self.0.template.user.is_none() && self.0.users.user(E2B_USER).is_ok() => {
                Some(E2B_USER.to_owned())
            }
            None => None,
        }
    }

    /// Serves one non-gRPC request.
    async fn handle(self, req: Request<Body>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        match (req.method(), path.as_str()) {
            (&Method::GET | &Method::HEAD, "/health") => {
                let mut resp = Response::new(Body::empty());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                resp
            }
            (_, "/files") => files::handle(&self, req).await,
            (_, p)
                if p.starts_with("/process.Process/")
                    || p.starts_with("/filesystem.Filesystem/") =>
            {
                let (parts, body) = req.into_parts();
                let call = match connect::Call::parse(&parts.method, &path, &parts.headers) {
                    Ok(call) => call,
                    Err(status) => return connect::error_response(&status),
                };
                let user = match self
                    .0
                    .token
                    .check(parts.headers.get(TOKEN_HEADER).map(HeaderValue::as_bytes))
                    .and_then(|()| basic_user(&parts.headers))
                {
                    Ok(user) => user,
                    Err(status) => return connect::error_response(&status),
                };
                rpc::dispatch(&self, call, user, body).await
            }
            _ => json_error(
                StatusCode::NOT_FOUND,
                &format!(
                    "{} {path}: no such endpoint (envd serves /health, /files, \
                     /process.Process/* and /filesystem.Filesystem/*)",
                    req.method()
                ),
            ),
        }
    }
}

/// The user named by `Authorization: Basic base64("<user>:")`, if any.
fn basic_user(headers: &HeaderMap) -> Result<Option<String>, Status> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || {
        Status::invalid_argument(
            "the Authorization header names the user as `Basic base64(\"<user>:\")`",
        )
    };
    let encoded = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .ok_or_else(bad)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let user = decoded.split_once(':').map_or(decoded.as_str(), |(u, _)| u);
    Ok(Some(user.to_owned()).filter(|u| !u.is_empty()))
}

/// `path` for `user`: absolute as given, relative to the user's home.
fn in_home(path: &str, user: &User) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        let mut home = PathBuf::from(&user.home);
        if !path.is_empty() {
            home.push(path);
        }
        home.to_string_lossy().into_owned()
    }
}

/// `{"code": <status>, "message": "…"}`, envd's HTTP error body.
fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({"code": status.as_u16(), "message": message}).to_string();
    let mut resp = Response::new(Body::new(http_body_util::Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

impl<S> tower::Layer<S> for Envd {
    type Service = EnvdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EnvdService {
            inner,
            envd: self.clone(),
        }
    }
}

/// gRPC to `inner`, everything else to envd.
#[derive(Clone)]
pub struct EnvdService<S> {
    inner: S,
    envd: Envd,
}

impl<S> tower::Service<Request<Body>> for EnvdService<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if is_grpc(req.headers()) {
            if req.version() != http::Version::HTTP_2 {
                // HTTP/1.1 reaches this port through the proxy: the host's
                // own gRPC stays on HTTP/2, which only the host speaks here.
                return Box::pin(async {
                    Ok(json_error(
                        StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                        "gRPC is served over HTTP/2 only; envd's HTTP interface is Connect",
                    ))
                });
            }
            // The clone that was made ready serves this call.
            let ready = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, ready);
            return Box::pin(inner.call(req));
        }
        let envd = self.envd.clone();
        Box::pin(async move { Ok(envd.handle(req).await) })
    }
}
