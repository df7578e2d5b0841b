//! Bearer credentials between wrenn's own processes: the host agent's key
//! (the control plane and the proxy present it to the agent) and each guest
//! agent's token (the host agent presents it to the guest).
//!
//! - Client side: [`Bearer`], a tonic interceptor that adds
//!   `authorization: Bearer <secret>` to every call; [`AuthChannel`] is a
//!   channel wrapped with it.
//! - Server side: [`RequireBearer`], a tower layer that answers
//!   `UNAUTHENTICATED` to any call without the secret, the gRPC health
//!   service excepted (health says nothing but "serving"), comparing in
//!   constant time.
//! - Keys on disk: [`load_or_create_key`] creates a random key `0600` the
//!   first time (atomically: several processes may start at once) and reads
//!   it afterwards.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Paths every server answers without a credential.
pub const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";
/// What an unauthenticated call is told (nothing about why).
pub const UNAUTHENTICATED: &str = "missing or wrong credential";

/// A secret in a configuration: printed as `…` by `Debug`, never
/// serialized.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "none" } else { "…" })
    }
}

/// Adds `authorization: Bearer <secret>` to every request.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(…)"
        } else {
            "Bearer(none)"
        })
    }
}

impl Bearer {
    /// Presents `secret`; an empty secret presents nothing.
    pub fn new(secret: &str) -> Result<Bearer, io::Error> {
        if secret.is_empty() {
            return Ok(Bearer(None));
        }
        let mut v: MetadataValue<Ascii> = format!("Bearer {secret}").parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "a credential must be printable ASCII",
            )
        })?;
        v.set_sensitive(true);
        Ok(Bearer(Some(v)))
    }

    /// Presents nothing.
    pub fn none() -> Bearer {
        Bearer(None)
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel whose every call carries a [`Bearer`] credential.
pub type AuthChannel = InterceptedService<Channel, Bearer>;

/// Wraps `channel` so every call presents `bearer`.
pub fn with_bearer(channel: Channel, bearer: Bearer) -> AuthChannel {
    InterceptedService::new(channel, bearer)
}

/// Requires `authorization: Bearer <secret>` on every call but health
/// checks (see the module docs).
#[derive(Clone)]
pub struct RequireBearer {
    expected: Arc<[u8]>,
}

impl std::fmt::Debug for RequireBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequireBearer(…)")
    }
}

impl RequireBearer {
    pub fn new(secret: &str) -> RequireBearer {
        RequireBearer {
            expected: format!("Bearer {secret}").into_bytes().into(),
        }
    }

    /// Whether a request with this `authorization` header value and path
    /// may pass.
    pub fn allows(&self, path: &str, authorization: Option<&[u8]>) -> bool {
        path.starts_with(HEALTH_PREFIX)
            || authorization.is_some_and(|got| constant_time_eq(got, &self.expected))
    }
}

/// Equal bytes, in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl<S> tower::Layer<S> for RequireBearer {
    type Service = RequireBearerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireBearerService {
            inner,
            check: self.clone(),
        }
    }
}

/// See [`RequireBearer`].
#[derive(Debug, Clone)]
pub struct RequireBearerService<S> {
    inner: S,
    check: RequireBearer,
}

impl<S, B> tower::Service<http::Request<B>> for RequireBearerService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future =
        futures::future::Either<S::Future, std::future::Ready<Result<Self::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let auth = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if self.check.allows(req.uri().path(), auth) {
            return futures::future::Either::Left(self.inner.call(req));
        }
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let refusal = if grpc {
            Status::unauthenticated(UNAUTHENTICATED).into_http()
        } else {
            // A plain HTTP caller (a metrics scraper) gets plain HTTP.
            let mut r = http::Response::new(tonic::body::Body::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"missing or wrong bearer key\n"),
            )));
            *r.status_mut() = http::StatusCode::UNAUTHORIZED;
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            r
        };
        futures::future::Either::Right(std::future::ready(Ok(refusal)))
    }
}

/// Reads the key at `path`, first creating it (32 random bytes, hex, mode
/// `0600`) if there is none. Creation writes a temporary file and links it
/// into place, so a concurrent reader never sees half a key and two
/// creators agree on one.
pub fn load_or_create_key(path: &Path) -> io::Result<String> {
    match load_key(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = f
        .write_all(random_hex(32)?.as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    load_key(path)
}

/// Reads the key at `path` (surrounding whitespace ignored); refuses an
/// empty key and a key file others may read.
pub fn load_key(path: &Path) -> io::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path)?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is readable by others (mode {:o}): chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            ),
        ));
    }
    let key = fs::read_to_string(path)?.trim().to_owned();
    if key.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(key)
}

/// Creates `dir` (and its parents) if missing and makes it `0700`: wrenn's
/// state directory holds keys, tokens and sandboxes' environments.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir)?;
    let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// `n` random bytes from the kernel, hex-encoded.
pub fn random_hex(n: usize) -> io::Result<String> {
    let mut bytes = vec![0u8; n];
    fs::File::open("/dev/urandom").and_then(|mut f| io::Read::read_exact(&mut f, &mut bytes))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_wants_the_exact_secret_except_for_health() {
        let r = RequireBearer::new("s3cret");
        assert!(r.allows("/process.Process/List", Some(b"Bearer s3cret")));
        assert!(!r.allows("/process.Process/List", Some(b"Bearer s3cre")));
        assert!(!r.allows("/process.Process/List", Some(b"Bearer s3cret ")));
        assert!(!r.allows("/process.Process/List", Some(b"bearer s3cret")));
        assert!(!r.allows("/process.Process/List", None));
        assert!(r.allows("/grpc.health.v1.Health/Check", None));
        assert!(!r.allows("/grpc.health.v1.HealthX/Check", None));
    }

    #[test]
    fn a_key_is_created_once_private_and_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        let a = load_or_create_key(&path).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(load_or_create_key(&path).unwrap(), a);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_key(&path).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }
}
