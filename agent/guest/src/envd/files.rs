//! `GET /files?path=…` (download) and `POST /files` (upload: one or more
//! `multipart/form-data` parts named `file` whose filename is the
//! destination, or a raw `application/octet-stream` body to `?path=`), as
//! E2B's envd serves them. Uploads create missing parent directories and
//! belong to the call's user; the answer lists what was written:
//! `[{"name", "type": "file", "path"}]`.
//!
//! Authorized by `X-Access-Token`, or by a URL signed with the token:
//! `signature=v1_<base64(sha256("<path>:<read|write>:<user>:<token>[:<exp>]"))>`
//! (unpadded standard base64; `<user>` empty when the URL names none) and,
//! when it expires, `signature_expiration=<unix seconds>`.

use std::collections::HashMap;

use base64::Engine as _;
use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt as _, StreamBody};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::{Code, Status};
use wrenn_proto::filesystem::{EntryInfo, WriteRequest, write_request};

use super::{Envd, TOKEN_HEADER, in_home, json_error};
use crate::users::User;

/// Chunks queued between the request body and the file writer.
const QUEUE: usize = 8;

pub async fn handle(envd: &Envd, req: Request<Body>) -> Response<Body> {
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let op = match *req.method() {
        Method::GET | Method::HEAD => "read",
        Method::POST => "write",
        ref m => {
            return json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{m} /files: use GET to download or POST to upload"),
            );
        }
    };
    if let Err(status) = authorize(envd, &req, &query, op) {
        return error(&status);
    }
    let named = query.get("username").map(String::as_str);
    let user = match envd.user(named) {
        Ok(u) => u,
        Err(status) => return error(&status),
    };
    let path = query
        .get("path")
        .filter(|p| !p.is_empty())
        .map(|p| in_home(p, &user));
    let result = if op == "read" {
        download(path).await
    } else {
        upload(envd, req, path, &user).await
    };
    result.unwrap_or_else(|status| error(&status))
}

/// The token in the header, or a valid signature for `op` on this path.
fn authorize(
    envd: &Envd,
    req: &Request<Body>,
    query: &HashMap<String, String>,
    op: &str,
) -> Result<(), Status> {
    let header = req.headers().get(TOKEN_HEADER).map(HeaderValue::as_bytes);
    let Some(signature) = query.get("signature").filter(|_| header.is_none()) else {
        return envd.0.token.check(header);
    };
    let Some(token) = envd.0.token.get() else {
        return envd.0.token.check(None);
    };
    let path = query.get("path").map(String::as_str).unwrap_or("");
    let user = query.get("username").map(String::as_str).unwrap_or("");
    let expiration = match query.get("signature_expiration") {
        None => None,
        Some(raw) => {
            let exp: u64 = raw.parse().map_err(|_| {
                Status::invalid_argument(format!(
                    "signature_expiration {raw:?} is not unix seconds"
                ))
            })?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if exp < now {
                return Err(Status::unauthenticated(
                    "the signed URL has expired (signature_expiration)",
                ));
            }
            Some(exp)
        }
    };
    let expected = sign(path, op, user, &token, expiration);
    if wrenn_proto::auth::constant_time_eq(signature.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(Status::unauthenticated(format!(
            "the URL's signature does not match (a {op} URL for this path and user)"
        )))
    }
}

/// E2B's `v1_` file URL signature.
pub fn sign(path: &str, op: &str, user: &str, token: &str, expiration: Option<u64>) -> String {
    let raw = match expiration {
        None => format!("{path}:{op}:{user}:{token}"),
        Some(exp) => format!("{path}:{op}:{user}:{token}:{exp}"),
    };
    let digest = Sha256::digest(raw.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// envd's HTTP error: `{"code", "message"}` with the status of `status`.
fn error(status: &Status) -> Response<Body> {
    let http = match status.code() {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::INSUFFICIENT_STORAGE,
        Code::Cancelled => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_error(http, status.message())
}

fn need_path() -> Status {
    Status::invalid_argument("the query needs path=<file>")
}

async fn download(path: Option<String>) -> Result<Response<Body>, Status> {
    let path = path.ok_or_else(need_path)?;
    let path = crate::paths::absolute("path", &path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let chunks = crate::fs::read_file(path).await?;
    let frames = ReceiverStream::new(chunks).map(|chunk| {
        chunk
            .map(|c| Frame::data(Bytes::from(c.data)))
            .map_err(|s| std::io::Error::other(s.message().to_owned()))
    });
    let mut resp = Response::new(Body::new(StreamBody::new(frames)));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let disposition = format!(
        "attachment; filename*=UTF-8''{}",
        form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

async fn upload(
    envd: &Envd,
    req: Request<Body>,
    path: Option<String>,
    user: &User,
) -> Result<Response<Body>, Status> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = req.into_body().into_data_stream();
    let mut written = Vec::new();
    if content_type.starts_with("multipart/form-data") {
        let boundary = multer::parse_boundary(&content_type)
            .map_err(|e| Status::invalid_argument(format!("content type {content_type:?}: {e}")))?;
        let mut multipart = multer::Multipart::new(body, boundary);
        let mut first = true;
        while let Some(field) = multipart.next_field().await.map_err(bad_multipart)? {
            if field.name() != Some("file") {
                continue;
            }
            // `?path=` names the destination of a single file; otherwise
            // each part's filename does.
            let dest = match (&path, first) {
                (Some(p), true) => p.clone(),
                _ => match field.file_name().filter(|f| !f.is_empty()) {
                    Some(f) => in_home(f, user),
                    None => {
                        return Err(Status::invalid_argument(
                            "a `file` part has no filename (the destination path) and the query no path",
                        ));
                    }
                },
            };
            first = false;
            let chunks = field.map(|c| c.map_err(bad_multipart));
            written.push(write(envd, dest, user, chunks).await?);
        }
        if written.is_empty() {
            return Err(Status::invalid_argument(
                "the multipart body has no part named `file`",
            ));
        }
    } else {
        let dest = path.ok_or_else(need_path)?;
        let chunks =
            body.map(|c| c.map_err(|e| Status::cancelled(format!("reading the upload: {e}"))));
        written.push(write(envd, dest, user, chunks).await?);
    }
    let list: Vec<serde_json::Value> = written
        .iter()
        .map(|e| serde_json::json!({"name": e.name, "type": "file", "path": e.path}))
        .collect();
    let mut resp = Response::new(Body::new(http_body_util::Full::new(Bytes::from(
        serde_json::Value::Array(list).to_string(),
    ))));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

fn bad_multipart(e: multer::Error) -> Status {
    Status::invalid_argument(format!("reading the multipart body: {e}"))
}

/// Writes `chunks` to `dest` as `user`, through the same writer as
/// `filesystem.Filesystem/Write` (temporary file, then rename).
async fn write(
    envd: &Envd,
    dest: String,
    user: &User,
    mut chunks: impl Stream<Item = Result<Bytes, Status>> + Unpin,
) -> Result<EntryInfo, Status> {
    let (tx, rx) = mpsc::channel::<Result<WriteRequest, Status>>(QUEUE);
    let start = WriteRequest {
        event: Some(write_request::Event::Start(write_request::StartEvent {
            path: dest,
            mode: None,
            owner: Some(user.name.clone()),
            size: None,
        })),
    };
    let _ = tx.send(Ok(start)).await;
    let writer = tokio::spawn(crate::fs::write_file(
        ReceiverStream::new(rx),
        envd.0.fs.users().clone(),
    ));
    while let Some(chunk) = chunks.next().await {
        let message = chunk.map(|data| WriteRequest {
            event: Some(write_request::Event::Data(data.to_vec())),
        });
        let failed = message.is_err();
        if tx.send(message).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    writer
        .await
        .map_err(|e| Status::internal(format!("the upload task failed: {e}")))?
}
