//! E2B's REST API on the control plane, so E2B's SDKs (`e2b`,
//! `e2b-code-interpreter`) can manage wrenn sandboxes unchanged
//! (`E2B_API_URL=http://<control>`, `E2B_API_KEY=<a wrenn key>`). The
//! contract is in `docs/e2b-sdk.md`.
//!
//! # Design
//! - Plain HTTP/1.1 + JSON routes beside the gRPC services on the same port;
//!   one middleware authenticates every request by its `X-API-Key` header (or a bearer
//!   token) with the same keys and cache as gRPC.
//! - Every call goes through the `Sandboxes` service's own methods, so
//!   validation, placement, records and the hosts behave as for the CLI.
//! - E2B's field names and status codes; every error is JSON
//!   `{"code": <status>, "message": …}` with `code` equal to the HTTP
//!   status (the JS SDK reads the body's `code`).
//! - `envdVersion` is [`ENVD_VERSION`]: high enough for the SDKs' current
//!   code paths, below the versions whose features wrenn lacks.
//! - `envdAccessToken` (create, connect, resume, detail) is the sandbox's
//!   `spec.envd_access_token`, chosen by its host agent: the SDK presents it
//!   as `X-Access-Token` to envd's interface in the sandbox (port 49983,
//!   through the proxy). The store keeps no token: create takes it from the
//!   agent's answer, resume and set-timeout from theirs, detail and connect
//!   to a running sandbox ask the host (`Sandboxes.Get`).
//!
//! # Limitations
//! - `domain` is null: the control plane does not know the proxy's public
//!   domain, so the SDK falls back to `E2B_DOMAIN` (or `E2B_SANDBOX_URL`).
//! - Network rules other than `allowOut`/`denyOut`, volumes, MCP, fork and
//!   snapshots answer 501.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::{Code, Request};
use wrenn_proto::wrenn::v1::sandboxes_server::Sandboxes;
use wrenn_proto::wrenn::v1::{
    CreateSandboxRequest, ListSandboxesRequest, Sandbox, SandboxRef, SandboxSpec, SandboxState,
    SetTimeoutRequest,
};

use crate::auth::Authenticator;
use crate::service::SandboxesService;
use crate::state::ControlState;

/// What wrenn reports as `envdVersion` (see `docs/e2b-sdk.md`, envd gates).
pub const ENVD_VERSION: &str = "0.5.6";
/// Path prefixes of this API (public to the bearer layer: it checks
/// `X-API-Key` itself).
pub const PREFIXES: [&str; 2] = ["/sandboxes", "/v2/sandboxes"];
/// Most sandboxes one list page holds.
const MAX_PAGE: usize = 1000;

#[derive(Clone)]
struct Api {
    sandboxes: SandboxesService,
    auth: Arc<Authenticator>,
}

/// The routes, to merge into the control plane's router.
pub fn router(state: Arc<ControlState>, auth: Arc<Authenticator>) -> axum::Router {
    let api = Api {
        sandboxes: SandboxesService::new(state),
        auth,
    };
    axum::Router::new()
        .route("/sandboxes", post(create).get(list_v1))
        .route("/v2/sandboxes", post(create).get(list_v2))
        .route("/sandboxes/{id}", get(info).delete(kill))
        .route("/sandboxes/{id}/timeout", post(timeout))
        .route("/sandboxes/{id}/refreshes", post(refresh))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            api.auth.clone(),
            authenticate,
        ))
        .with_state(api)
}

/// Every route: `X-API-Key` (or `Authorization: Bearer`) must hold a wrenn
/// key, checked with the same keys and cache as gRPC.
async fn authenticate(
    State(auth): State<Arc<Authenticator>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = req.headers();
    let value = match headers.get("x-api-key") {
        Some(k) => format!("Bearer {}", String::from_utf8_lossy(k.as_bytes())),
        None => headers
            .get(header::AUTHORIZATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default(),
    };
    match auth.authenticate(Some(value.as_bytes())).await {
        Some(_) => next.run(req).await,
        None => ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or invalid API key: send a wrenn API key in X-API-Key".into(),
        )
        .into_response(),
    }
}

/// An E2B error response.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"code": self.0.as_u16(), "message": self.1});
        (self.0, Json(body)).into_response()
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        let status = match s.code() {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, s.message().to_owned())
    }
}

type ApiResult = Result<Response, ApiError>;

impl Api {
    /// The live sandbox `id` as the store has it (no envd access token).
    async fn get(&self, id: &str) -> Result<Sandbox, ApiError> {
        let sb = self
            .sandboxes
            .get_stored(SandboxRef {
                sandbox_id: id.to_owned(),
            })
            .await?;
        live(id, sb)
    }

    /// The live sandbox `id` with the envd access token its host reports.
    async fn get_with_token(&self, id: &str) -> Result<Sandbox, ApiError> {
        let sb = self
            .sandboxes
            .get(Request::new(SandboxRef {
                sandbox_id: id.to_owned(),
            }))
            .await?
            .into_inner();
        live(id, sb)
    }
}

/// `sb`, unless it stopped: E2B knows no stopped sandboxes (404).
fn live(id: &str, sb: Sandbox) -> Result<Sandbox, ApiError> {
    if sb.state == SandboxState::Stopped as i32 {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "sandbox {id} was not found: it stopped ({})",
                sb.stop_reason
            ),
        ));
    }
    Ok(sb)
}

/// A body that must be JSON of type `T` (an empty body is `T::default()`).
fn body<T: for<'de> Deserialize<'de> + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("request body: {e}")))
}

fn time(ts: Option<&prost_types::Timestamp>) -> Value {
    ts.and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map_or(Value::Null, |t| Value::from(t.to_rfc3339()))
}

fn state_name(s: i32) -> &'static str {
    if s == SandboxState::Paused as i32 {
        "paused"
    } else {
        "running"
    }
}

/// `Sandbox` (create, connect, resume).
fn sandbox_json(sb: &Sandbox) -> Value {
    let spec = sb.spec.clone().unwrap_or_default();
    let mut out = json!({
        "templateID": spec.template,
        "sandboxID": sb.id,
        "clientID": sb.host_id,
        "envdVersion": ENVD_VERSION,
        "domain": null,
        "alias": spec.template,
    });
    with_token(&mut out, &spec.envd_access_token);
    out
}

/// `envdAccessToken`, when the sandbox's host reported one (absent, not
/// null, otherwise: the SDK then sends no `X-Access-Token`).
fn with_token(out: &mut Value, token: &str) {
    if !token.is_empty() {
        out["envdAccessToken"] = Value::from(token);
    }
}

/// `SandboxDetail` (GET /sandboxes/{id}): `ListedSandbox` and the token.
fn detail_json(sb: &Sandbox) -> Value {
    let mut out = listed_json(sb);
    if let Some(spec) = &sb.spec {
        with_token(&mut out, &spec.envd_access_token);
    }
    out
}

/// `ListedSandbox` (and the base of `SandboxDetail`).
fn listed_json(sb: &Sandbox) -> Value {
    let spec = sb.spec.clone().unwrap_or_default();
    json!({
        "templateID": spec.template,
        "alias": spec.template,
        "sandboxID": sb.id,
        "clientID": sb.host_id,
        "startedAt": time(sb.created_at.as_ref()),
        "endAt": time(sb.expires_at.as_ref()),
        "cpuCount": spec.vcpus,
        "memoryMB": spec.memory_mb,
        "diskSizeMB": spec.disk_mb,
        "state": state_name(sb.state),
        "envdVersion": ENVD_VERSION,
        "metadata": spec.metadata,
        "allowInternetAccess": spec.internet.unwrap_or(true),
        "domain": null,
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: Option<String>,
    timeout: Option<u32>,
    #[serde(default)]
    metadata: HashMap<String, String>,
    #[serde(default)]
    env_vars: HashMap<String, String>,
    allow_internet_access: Option<bool>,
    #[serde(rename = "allow_internet_access")]
    allow_internet_access_snake: Option<bool>,
    network: Option<Network>,
    cpu_count: Option<u32>,
    #[serde(rename = "memoryMB")]
    memory_mb: Option<u32>,
    auto_pause: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Network {
    #[serde(default)]
    allow_out: Vec<String>,
    #[serde(default)]
    deny_out: Vec<String>,
}

async fn create(State(api): State<Api>, raw: axum::body::Bytes) -> ApiResult {
    let req: NewSandbox = body(&raw)?;
    if req.auto_pause == Some(true) {
        return Err(ApiError(
            StatusCode::NOT_IMPLEMENTED,
            "autoPause: sandboxes that pause at their timeout are not supported yet".into(),
        ));
    }
    let template = req.template_id.unwrap_or_default();
    let network = req.network.unwrap_or_default();
    let spec = SandboxSpec {
        template: if template.is_empty() {
            wrenn_types::spec::DEFAULT_TEMPLATE.to_owned()
        } else {
            template
        },
        vcpus: req.cpu_count.unwrap_or(0),
        memory_mb: req.memory_mb.unwrap_or(0),
        env: req.env_vars,
        metadata: req.metadata,
        internet: req
            .allow_internet_access_snake
            .or(req.allow_internet_access),
        timeout_secs: req.timeout.unwrap_or(0),
        allow_out: network.allow_out,
        deny_out: network.deny_out,
        ..Default::default()
    };
    let sb = api
        .sandboxes
        .create(Request::new(CreateSandboxRequest {
            sandbox_id: String::new(),
            spec: Some(spec),
        }))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(sandbox_json(&sb))).into_response())
}

/// The list query: `metadata` is one parameter holding `k=v&k2=v2`
/// (each part percent-encoded), `state` is comma-separated.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    metadata: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
    next_token: Option<String>,
}

fn metadata_filter(raw: Option<&str>) -> Result<HashMap<String, String>, ApiError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(HashMap::new());
    };
    let mut out = HashMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_decode(s).ok_or_else(|| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("metadata: {s:?} is not percent-encoded UTF-8"),
                )
            })
        };
        out.insert(dec(k)?, dec(v)?);
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

async fn listed(api: &Api, q: &ListQuery) -> Result<Vec<Sandbox>, ApiError> {
    let metadata = metadata_filter(q.metadata.as_deref())?;
    let states: Vec<&str> = q
        .state
        .as_deref()
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    for s in &states {
        if *s != "running" && *s != "paused" {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("state: {s:?} is not running or paused"),
            ));
        }
    }
    let mut list = api
        .sandboxes
        .list(Request::new(ListSandboxesRequest {
            metadata,
            include_stopped: false,
        }))
        .await?
        .into_inner()
        .sandboxes;
    list.retain(|sb| states.is_empty() || states.contains(&state_name(sb.state)));
    list.sort_by(|a, b| {
        let key = |s: &Sandbox| s.created_at.as_ref().map(|t| (t.seconds, t.nanos));
        key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
    });
    Ok(list)
}

async fn list_v1(State(api): State<Api>, Query(q): Query<ListQuery>) -> ApiResult {
    let list = listed(&api, &q).await?;
    Ok(Json(Value::Array(list.iter().map(listed_json).collect())).into_response())
}

/// Pages of at most `limit`; `x-next-token` names the next page's first
/// sandbox (empty on the last page).
async fn list_v2(State(api): State<Api>, Query(q): Query<ListQuery>) -> ApiResult {
    let list = listed(&api, &q).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let start = match q.next_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => list.iter().position(|s| s.id == t).ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("nextToken: {t:?} is not a token this list gave"),
            )
        })?,
    };
    let page = &list[start..(start + limit).min(list.len())];
    let next = list
        .get(start + limit)
        .map(|s| s.id.clone())
        .unwrap_or_default();
    let mut res = Json(Value::Array(page.iter().map(listed_json).collect())).into_response();
    if let Ok(v) = next.parse() {
        res.headers_mut().insert("x-next-token", v);
    }
    Ok(res)
}

async fn info(State(api): State<Api>, Path(id): Path<String>) -> ApiResult {
    let sb = api.get_with_token(&id).await?;
    Ok(Json(detail_json(&sb)).into_response())
}

async fn kill(State(api): State<Api>, Path(id): Path<String>) -> ApiResult {
    api.get(&id).await?;
    api.sandboxes
        .destroy(Request::new(SandboxRef { sandbox_id: id }))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
struct Timeout {
    timeout: Option<u32>,
    duration: Option<u32>,
}

async fn set_timeout(api: &Api, id: String, secs: Option<u32>) -> Result<Sandbox, ApiError> {
    let secs = secs.ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "timeout: missing".into()))?;
    Ok(api
        .sandboxes
        .set_timeout(Request::new(SetTimeoutRequest {
            sandbox_id: id,
            timeout_secs: secs,
        }))
        .await?
        .into_inner())
}

async fn timeout(
    State(api): State<Api>,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> ApiResult {
    let t: Timeout = body(&raw)?;
    api.get(&id).await?;
    set_timeout(&api, id, t.timeout).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn refresh(
    State(api): State<Api>,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> ApiResult {
    let t: Timeout = body(&raw)?;
    api.get(&id).await?;
    set_timeout(&api, id, Some(t.duration.unwrap_or(60))).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn pause(State(api): State<Api>, Path(id): Path<String>) -> ApiResult {
    let sb = api.get(&id).await?;
    if sb.state == SandboxState::Paused as i32 {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("sandbox {id} is already paused"),
        ));
    }
    api.sandboxes
        .pause(Request::new(SandboxRef { sandbox_id: id }))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Resume (v1) and connect (v1, v2): 201 when it was paused and resumed,
/// 200 (connect) when it already ran; the timeout, if given, restarts.
/// The answer carries the sandbox's `envdAccessToken`, from its host.
async fn resume_or_connect(api: &Api, id: String, raw: &[u8], connect: bool) -> ApiResult {
    let t: Timeout = body(raw)?;
    let sb = api.get(&id).await?;
    let paused = sb.state == SandboxState::Paused as i32;
    if !paused && !connect {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("sandbox {id} is not paused"),
        ));
    }
    // The host's answers (resume, set timeout) carry the envd access token;
    // a running sandbox whose timeout stays asks its host for it.
    let mut sb = if paused {
        api.sandboxes
            .resume(Request::new(SandboxRef {
                sandbox_id: id.clone(),
            }))
            .await?
            .into_inner()
    } else if t.timeout.is_none() {
        api.get_with_token(&id).await?
    } else {
        sb
    };
    if t.timeout.is_some() {
        sb = set_timeout(api, id, t.timeout).await?;
    }
    let status = if paused {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(sandbox_json(&sb))).into_response())
}

async fn resume(
    State(api): State<Api>,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> ApiResult {
    resume_or_connect(&api, id, &raw, false).await
}

async fn connect(
    State(api): State<Api>,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> ApiResult {
    resume_or_connect(&api, id, &raw, true).await
}

/// One sample, now (wrenn keeps no history).
async fn metrics(State(api): State<Api>, Path(id): Path<String>) -> ApiResult {
    let sb = api.get(&id).await?;
    let m = api
        .sandboxes
        .get_metrics(Request::new(SandboxRef { sandbox_id: id }))
        .await?
        .into_inner();
    let now = Utc::now();
    let vcpus = sb.spec.as_ref().map_or(1, |s| s.vcpus.max(1));
    Ok(Json(json!([{
        "timestamp": now.to_rfc3339(),
        "timestampUnix": now.timestamp(),
        "cpuCount": vcpus,
        "cpuUsedPct": 0.0,
        "memUsed": m.memory_bytes,
        "memTotal": m.memory_limit_bytes,
        "memCache": 0,
        "diskUsed": m.disk_used_bytes,
        "diskTotal": m.disk_limit_bytes,
    }]))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_filters_are_one_parameter_of_encoded_pairs() {
        let m = metadata_filter(Some("user%20id=a%2Fb&k=v")).unwrap();
        assert_eq!(m.get("user id").map(String::as_str), Some("a/b"));
        assert_eq!(m.get("k").map(String::as_str), Some("v"));
        assert!(metadata_filter(Some("k=%zz")).is_err());
        assert!(metadata_filter(None).unwrap().is_empty());
    }

    #[test]
    fn the_envd_access_token_is_in_sandbox_and_detail_not_in_list_entries() {
        let mut sb = Sandbox {
            id: "sb1".into(),
            spec: Some(SandboxSpec {
                template: "base".into(),
                envd_access_token: "t0k3n-0123456789abcdef".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            sandbox_json(&sb)["envdAccessToken"],
            "t0k3n-0123456789abcdef"
        );
        assert_eq!(
            detail_json(&sb)["envdAccessToken"],
            "t0k3n-0123456789abcdef"
        );
        assert!(listed_json(&sb).get("envdAccessToken").is_none());
        assert!(sandbox_json(&sb)["domain"].is_null());
        sb.spec.as_mut().unwrap().envd_access_token.clear();
        assert!(sandbox_json(&sb).get("envdAccessToken").is_none());
        assert!(detail_json(&sb).get("envdAccessToken").is_none());
    }

    #[test]
    fn grpc_codes_become_e2b_statuses() {
        let e: ApiError = tonic::Status::not_found("gone").into();
        assert_eq!(e.0, StatusCode::NOT_FOUND);
        let e: ApiError = tonic::Status::invalid_argument("bad").into();
        assert_eq!(e.0, StatusCode::BAD_REQUEST);
        let e: ApiError = tonic::Status::unavailable("down").into();
        assert_eq!(e.0, StatusCode::SERVICE_UNAVAILABLE);
    }
}
