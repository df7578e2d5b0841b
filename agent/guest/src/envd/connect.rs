//! The Connect protocol (<https://connectrpc.com/docs/protocol>), server
//! side, over whatever HTTP version the connection speaks: unary calls
//! (`application/json` or `application/proto`), server and client streams
//! (`application/connect+json` / `+proto`, messages in 5-byte envelopes and a
//! final end-stream envelope), Connect's error format, and
//! `Connect-Timeout-Ms`.
//!
//! JSON is proto3's canonical mapping, done by reflection over the
//! descriptors the proto crate embeds ([`wrenn_proto::FILE_DESCRIPTOR_SET`]):
//! a JSON request becomes a `DynamicMessage`, its protobuf encoding the
//! generated type; a response goes the other way. Both field name forms are
//! accepted and unknown fields ignored (clients newer than this agent send
//! fields it does not know). Compression is not offered: a compressed
//! message is refused with `unimplemented`.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use futures::{Stream, StreamExt as _};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt as _, StreamBody};
use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, MethodDescriptor,
    SerializeOptions,
};
use tonic::body::Body;
use tonic::{Code, Status};

/// Largest request message (and unary request body) accepted.
pub const MAX_MESSAGE: usize = 16 << 20;

/// End-stream flag of an envelope.
const END_STREAM: u8 = 0x02;
/// Compressed flag of an envelope.
const COMPRESSED: u8 = 0x01;

/// Every service of the proto crate, for reflection.
pub static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(wrenn_proto::FILE_DESCRIPTOR_SET)
        .expect("the proto crate embeds a valid descriptor set")
});

/// How messages are written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    Proto,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::Proto => "proto",
        }
    }

    /// Decodes a request message of type `desc` into `T`.
    pub fn decode<T: Message + Default>(
        self,
        desc: &MessageDescriptor,
        bytes: &[u8],
    ) -> Result<T, Status> {
        let bad = |e: &dyn std::fmt::Display| {
            Status::invalid_argument(format!(
                "the request is not a valid {} message ({}): {e}",
                desc.full_name(),
                self.name()
            ))
        };
        match self {
            Codec::Proto => T::decode(bytes).map_err(|e| bad(&e)),
            Codec::Json => {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    return Ok(T::default());
                }
                let mut de = serde_json::Deserializer::from_slice(bytes);
                let options = DeserializeOptions::new().deny_unknown_fields(false);
                let dynamic =
                    DynamicMessage::deserialize_with_options(desc.clone(), &mut de, &options)
                        .map_err(|e| bad(&e))?;
                de.end().map_err(|e| bad(&e))?;
                T::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| bad(&e))
            }
        }
    }

    /// Encodes a response message of type `desc`.
    pub fn encode<T: Message>(self, desc: &MessageDescriptor, msg: &T) -> Result<Bytes, Status> {
        let bytes = msg.encode_to_vec();
        match self {
            Codec::Proto => Ok(bytes.into()),
            Codec::Json => {
                let internal = |e: &dyn std::fmt::Display| {
                    Status::internal(format!("encoding {} as JSON: {e}", desc.full_name()))
                };
                let dynamic = DynamicMessage::decode(desc.clone(), bytes.as_slice())
                    .map_err(|e| internal(&e))?;
                let mut out = serde_json::Serializer::new(Vec::with_capacity(bytes.len() * 2));
                dynamic
                    .serialize_with_options(&mut out, &SerializeOptions::new())
                    .map_err(|e| internal(&e))?;
                Ok(out.into_inner().into())
            }
        }
    }
}

/// One Connect call, as its request headers describe it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: MethodDescriptor,
    pub codec: Codec,
    /// The request used a streaming content type.
    pub streaming: bool,
    /// `Connect-Timeout-Ms`.
    pub timeout: Option<Duration>,
}

impl Call {
    /// Reads a Connect request's path and headers; an error is the response
    /// to send (with the shape a unary call expects: nothing else is known).
    pub fn parse(method: &http::Method, path: &str, headers: &HeaderMap) -> Result<Call, Status> {
        let (service, name) = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .ok_or_else(|| Status::not_found(format!("no procedure {path}")))?;
        let method_desc = POOL
            .get_service_by_name(service)
            .and_then(|s| s.methods().find(|m| m.name() == name))
            .ok_or_else(|| Status::unimplemented(format!("no procedure {path}")))?;
        if method != http::Method::POST {
            return Err(Status::unimplemented(format!(
                "{path}: Connect calls are POST requests here, not {method}"
            )));
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let (streaming, codec) = match mime.as_str() {
            "application/json" => (false, Codec::Json),
            "application/proto" => (false, Codec::Proto),
            "application/connect+json" => (true, Codec::Json),
            "application/connect+proto" => (true, Codec::Proto),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "{path}: content type {content_type:?} is not a Connect codec here \
                     (application/json, application/proto, application/connect+json, \
                     application/connect+proto)"
                )));
            }
        };
        let stream_method = method_desc.is_client_streaming() || method_desc.is_server_streaming();
        if streaming != stream_method {
            return Err(Status::invalid_argument(format!(
                "{path} is a {} procedure; send it as {}",
                if stream_method { "streaming" } else { "unary" },
                if stream_method {
                    "application/connect+json"
                } else {
                    "application/json"
                }
            )));
        }
        if let Some(v) = headers.get("connect-protocol-version")
            && v.as_bytes() != b"1"
        {
            return Err(Status::invalid_argument(format!(
                "connect-protocol-version {v:?} is not supported (1 is)"
            )));
        }
        let encoding = if streaming {
            "connect-content-encoding"
        } else {
            "content-encoding"
        };
        if let Some(v) = headers.get(encoding)
            && !v.as_bytes().eq_ignore_ascii_case(b"identity")
        {
            return Err(Status::unimplemented(format!(
                "{encoding} {v:?} is not supported: send uncompressed messages"
            )));
        }
        let timeout = match headers.get("connect-timeout-ms") {
            None => None,
            Some(v) => {
                let ms = v
                    .to_str()
                    .ok()
                    .filter(|s| (1..=10).contains(&s.len()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "connect-timeout-ms {v:?} is not 1 to 10 digits"
                        ))
                    })?;
                Some(Duration::from_millis(ms))
            }
        };
        Ok(Call {
            method: method_desc,
            codec,
            streaming,
            timeout,
        })
    }

    fn content_type(&self) -> &'static str {
        match (self.streaming, self.codec) {
            (false, Codec::Json) => "application/json",
            (false, Codec::Proto) => "application/proto",
            (true, Codec::Json) => "application/connect+json",
            (true, Codec::Proto) => "application/connect+proto",
        }
    }

    fn ok_response(&self, body: Body) -> Response<Body> {
        let mut resp = Response::new(body);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type()),
        );
        resp
    }

    fn deadline(&self) -> Status {
        Status::deadline_exceeded(format!(
            "{} did not finish within connect-timeout-ms ({} ms)",
            self.method.full_name(),
            self.timeout.unwrap_or_default().as_millis()
        ))
    }
}

/// Connect's name of a status code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status of a unary error with `code` (Connect's table).
pub fn http_status(code: Code) -> StatusCode {
    let n = match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::PermissionDenied => 403,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::Unauthenticated => 401,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    };
    StatusCode::from_u16(n).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// `{"code": "…", "message": "…"}`.
pub fn error_json(status: &Status) -> serde_json::Value {
    serde_json::json!({"code": code_name(status.code()), "message": status.message()})
}

/// A unary error response (always JSON, whatever the codec).
pub fn error_response(status: &Status) -> Response<Body> {
    let mut resp = Response::new(Body::new(http_body_util::Full::new(Bytes::from(
        error_json(status).to_string(),
    ))));
    *resp.status_mut() = http_status(status.code());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// One envelope: flags, big-endian length, payload.
pub fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(flags);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// The end-stream envelope: `{}` or `{"error": …}`.
pub fn end_stream(error: Option<&Status>) -> Bytes {
    let json = match error {
        None => serde_json::json!({}),
        Some(status) => serde_json::json!({"error": error_json(status)}),
    };
    envelope(END_STREAM, json.to_string().as_bytes())
}

/// The whole request body, at most [`MAX_MESSAGE`] (+ one envelope header).
async fn read_all(mut body: Body) -> Result<Bytes, Status> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Status::cancelled(format!("reading the request: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_MESSAGE + 5 {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

fn too_large() -> Status {
    Status::resource_exhausted(format!(
        "the request message is larger than {MAX_MESSAGE} bytes"
    ))
}

/// Splits one envelope off the front of `buf` when it is complete.
fn take_envelope(buf: &mut BytesMut) -> Result<Option<(u8, Bytes)>, Status> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let flags = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_MESSAGE {
        return Err(too_large());
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    let payload = buf.split_to(len).freeze();
    if flags & COMPRESSED != 0 {
        return Err(Status::unimplemented(
            "a compressed message was sent, but no compression was negotiated",
        ));
    }
    Ok(Some((flags, payload)))
}

/// The request envelopes' payloads, in order, as the body arrives; stops at
/// an end-stream envelope or the end of the body.
pub(super) fn envelopes(body: Body) -> impl Stream<Item = Result<Bytes, Status>> + Send {
    futures::stream::unfold(Some((body, BytesMut::new())), |state| async move {
        let (mut body, mut buf) = state?;
        loop {
            match take_envelope(&mut buf) {
                Err(e) => return Some((Err(e), None)),
                Ok(Some((flags, _))) if flags & END_STREAM != 0 => return None,
                Ok(Some((_, payload))) => return Some((Ok(payload), Some((body, buf)))),
                Ok(None) => {}
            }
            match body.frame().await {
                None if buf.is_empty() => return None,
                None => {
                    return Some((
                        Err(Status::invalid_argument(format!(
                            "the request ended inside an envelope ({} bytes left over)",
                            buf.len()
                        ))),
                        None,
                    ));
                }
                Some(Err(e)) => {
                    return Some((
                        Err(Status::cancelled(format!("reading the request: {e}"))),
                        None,
                    ));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
            }
        }
    })
}

/// The single request message of a unary call or a server stream.
async fn single<Req: Message + Default>(call: &Call, body: Body) -> Result<Req, Status> {
    let input = call.method.input();
    if !call.streaming {
        let bytes = read_all(body).await?;
        return call.codec.decode(&input, &bytes);
    }
    // Read to the end of the body, not just the envelope: a request body
    // left unread (a chunked one's last chunk) makes the server close the
    // connection after the response, under a client (the proxy) that
    // already took it back for its pool.
    let mut buf = BytesMut::from(&read_all(body).await?[..]);
    let (_, first) = take_envelope(&mut buf)?
        .filter(|(flags, _)| flags & END_STREAM == 0)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "{} needs one request message; none was sent",
                call.method.full_name()
            ))
        })?;
    call.codec.decode(&input, &first)
}

/// Serves a unary call with `f`.
pub async fn unary<Req, Resp, F, Fut>(call: Call, body: Body, f: F) -> Response<Body>
where
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<Resp, Status>>,
{
    let result = async {
        let req = single::<Req>(&call, body).await?;
        let resp = match call.timeout {
            Some(t) => tokio::time::timeout(t, f(req))
                .await
                .map_err(|_| call.deadline())??,
            None => f(req).await?,
        };
        call.codec.encode(&call.method.output(), &resp)
    }
    .await;
    match result {
        Ok(bytes) => call.ok_response(Body::new(http_body_util::Full::new(bytes))),
        Err(status) => error_response(&status),
    }
}

/// Serves a server stream with `f`: its messages, then the end-stream
/// envelope (with the error that ended it, if one did, or
/// `deadline_exceeded` at `Connect-Timeout-Ms`).
pub async fn server_stream<Req, Resp, S, F, Fut>(call: Call, body: Body, f: F) -> Response<Body>
where
    Req: Message + Default,
    Resp: Message + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<S, Status>>,
{
    let started = async {
        let req = single::<Req>(&call, body).await?;
        f(req).await
    }
    .await;
    let output = call.method.output();
    let codec = call.codec;
    let frames: std::pin::Pin<Box<dyn Stream<Item = Bytes> + Send>> = match started {
        Err(status) => Box::pin(futures::stream::once(
            async move { end_stream(Some(&status)) },
        )),
        Ok(messages) => {
            let deadline = call.timeout.map(|t| tokio::time::Instant::now() + t);
            // The stream's state travels from message to message: nothing is
            // cloned per message (a PTY's output is many small ones).
            let state = (Box::pin(messages), output, call.deadline());
            Box::pin(futures::stream::unfold(
                Some(state),
                move |state| async move {
                    let (mut messages, output, late) = state?;
                    let next = match deadline {
                        Some(d) => match tokio::time::timeout_at(d, messages.next()).await {
                            Ok(next) => next,
                            Err(_) => return Some((end_stream(Some(&late)), None)),
                        },
                        None => messages.next().await,
                    };
                    match next {
                        None => Some((end_stream(None), None)),
                        Some(Err(status)) => Some((end_stream(Some(&status)), None)),
                        Some(Ok(msg)) => match codec.encode(&output, &msg) {
                            Ok(bytes) => {
                                Some((envelope(0, &bytes), Some((messages, output, late))))
                            }
                            Err(status) => Some((end_stream(Some(&status)), None)),
                        },
                    }
                },
            ))
        }
    };
    call.ok_response(Body::new(StreamBody::new(
        frames.map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b))),
    )))
}

/// Serves a client stream with `f`, which reads the request messages as they
/// arrive; answers its one message and the end-stream envelope.
pub async fn client_stream<Req, Resp, F, Fut>(call: Call, body: Body, f: F) -> Response<Body>
where
    Req: Message + Default + 'static,
    Resp: Message,
    F: FnOnce(std::pin::Pin<Box<dyn Stream<Item = Result<Req, Status>> + Send>>) -> Fut,
    Fut: Future<Output = Result<Resp, Status>>,
{
    let input = call.method.input();
    let codec = call.codec;
    let requests = envelopes(body).map(move |payload| codec.decode::<Req>(&input, &payload?));
    let result = async {
        let resp = match call.timeout {
            Some(t) => tokio::time::timeout(t, f(Box::pin(requests)))
                .await
                .map_err(|_| call.deadline())??,
            None => f(Box::pin(requests)).await?,
        };
        call.codec.encode(&call.method.output(), &resp)
    }
    .await;
    let mut out = BytesMut::new();
    match result {
        Ok(bytes) => {
            out.extend_from_slice(&envelope(0, &bytes));
            out.extend_from_slice(&end_stream(None));
        }
        Err(status) => out.extend_from_slice(&end_stream(Some(&status))),
    }
    call.ok_response(Body::new(http_body_util::Full::new(out.freeze())))
}
