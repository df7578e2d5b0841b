//! E2B's REST API (`control/src/e2b.rs`) over plain HTTP/1.1, as E2B's SDKs
//! call it: field names, status codes, `{code, message}` errors, the
//! `X-API-Key` header, v2 list pagination, pause/connect.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::common::{FakeAgent, TestControl};

struct Api {
    base: String,
    key: Option<String>,
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    json: Value,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let client = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("user-agent", "e2b-python-sdk/2.64.0");
        if let Some(k) = &self.key {
            req = req.header("x-api-key", k);
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let res = client.request(req.body(body).unwrap()).await.unwrap();
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {bytes:?}"))
        };
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            json,
        }
    }
}

/// An error is `{code, message}` with `code` equal to the status.
fn assert_error(a: &Answer, status: u16, text: &str) {
    assert_eq!(a.status, status, "{}", a.json);
    assert_eq!(a.json["code"], status, "{}", a.json);
    let msg = a.json["message"].as_str().unwrap_or_default();
    assert!(msg.contains(text), "{msg:?} lacks {text:?}");
}

#[tokio::test]
async fn the_sdk_lifecycle_over_rest() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let api = Api {
        base: t.control.url(),
        key: Some(t.key.clone()),
    };

    // No key, a wrong key: 401 in E2B's shape.
    let anon = Api {
        base: t.control.url(),
        key: None,
    };
    assert_error(
        &anon.call("GET", "/v2/sandboxes", None).await,
        401,
        "API key",
    );
    let wrong = Api {
        base: t.control.url(),
        key: Some("wrn_not_a_real_key_000000000000000000".into()),
    };
    assert_error(
        &wrong
            .call("POST", "/v2/sandboxes", Some(json!({"templateID": "base"})))
            .await,
        401,
        "API key",
    );

    // Create as the SDK sends it.
    let body = json!({"templateID": "base", "timeout": 120, "metadata": {"team": "ml"},
                      "envVars": {"A": "1"}, "allow_internet_access": true});
    let a = api.call("POST", "/v2/sandboxes", Some(body.clone())).await;
    assert_eq!(a.status, 201, "{}", a.json);
    let id = a.json["sandboxID"].as_str().unwrap().to_owned();
    for k in ["templateID", "sandboxID", "clientID", "envdVersion"] {
        assert!(a.json[k].is_string(), "{k} missing: {}", a.json);
    }
    assert_eq!(a.json["templateID"], "base");
    let b = api
        .call(
            "POST",
            "/v2/sandboxes",
            Some(json!({"templateID": "base", "metadata": {"team": "web"}})),
        )
        .await;
    assert_eq!(b.status, 201, "{}", b.json);
    let other = b.json["sandboxID"].as_str().unwrap().to_owned();

    // Detail: every field the SDK requires.
    let d = api.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(d.status, 200, "{}", d.json);
    for k in [
        "templateID",
        "sandboxID",
        "clientID",
        "startedAt",
        "endAt",
        "cpuCount",
        "memoryMB",
        "diskSizeMB",
        "state",
        "envdVersion",
    ] {
        assert!(!d.json[k].is_null(), "{k} missing: {}", d.json);
    }
    assert_eq!(d.json["state"], "running");
    assert_eq!(d.json["metadata"]["team"], "ml");

    // v2 list: the metadata filter is one encoded parameter; pages of one.
    let l = api
        .call(
            "GET",
            "/v2/sandboxes?metadata=team%3Dml&state=running",
            None,
        )
        .await;
    assert_eq!(l.status, 200);
    let listed: Vec<&str> = l
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sandboxID"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [id.as_str()]);
    let p1 = api.call("GET", "/v2/sandboxes?limit=1", None).await;
    assert_eq!(p1.json.as_array().unwrap().len(), 1);
    let token = p1.headers["x-next-token"].to_str().unwrap().to_owned();
    assert!(!token.is_empty());
    let p2 = api
        .call(
            "GET",
            &format!("/v2/sandboxes?limit=1&nextToken={token}"),
            None,
        )
        .await;
    let mut both = vec![
        p1.json[0]["sandboxID"].clone(),
        p2.json[0]["sandboxID"].clone(),
    ];
    both.sort_by_key(|v| v.as_str().unwrap().to_owned());
    let mut want = vec![json!(id), json!(other)];
    want.sort_by_key(|v| v.as_str().unwrap().to_owned());
    assert_eq!(both, want);
    assert_eq!(
        p2.headers
            .get("x-next-token")
            .map(|v| v.to_str().unwrap())
            .unwrap_or(""),
        ""
    );
    assert_error(
        &api.call("GET", "/v2/sandboxes?state=sleeping", None).await,
        400,
        "state",
    );

    // Timeout, pause (twice: 409), connect resumes (201), connect again (200).
    assert_eq!(
        api.call(
            "POST",
            &format!("/sandboxes/{id}/timeout"),
            Some(json!({"timeout": 600}))
        )
        .await
        .status,
        204
    );
    assert_eq!(
        api.call("POST", &format!("/sandboxes/{id}/pause"), Some(json!({})))
            .await
            .status,
        204
    );
    assert_error(
        &api.call("POST", &format!("/sandboxes/{id}/pause"), None)
            .await,
        409,
        "already paused",
    );
    let paused = api.call("GET", "/v2/sandboxes?state=paused", None).await;
    assert_eq!(paused.json[0]["sandboxID"], json!(id));
    let c = api
        .call(
            "POST",
            &format!("/v2/sandboxes/{id}/connect"),
            Some(json!({"timeout": 300})),
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.json);
    assert_eq!(c.json["sandboxID"], json!(id));
    let c = api
        .call(
            "POST",
            &format!("/v2/sandboxes/{id}/connect"),
            Some(json!({"timeout": 300})),
        )
        .await;
    assert_eq!(c.status, 200, "{}", c.json);

    // Metrics: one sample with the SDK's keys.
    let m = api
        .call("GET", &format!("/sandboxes/{id}/metrics"), None)
        .await;
    assert_eq!(m.status, 200, "{}", m.json);
    for k in [
        "timestamp",
        "timestampUnix",
        "cpuCount",
        "cpuUsedPct",
        "memUsed",
        "memTotal",
        "memCache",
        "diskUsed",
        "diskTotal",
    ] {
        assert!(!m.json[0][k].is_null(), "{k} missing: {}", m.json);
    }

    // Kill: 204, then 404 in E2B's shape; bad input names what was wrong.
    assert_eq!(
        api.call("DELETE", &format!("/sandboxes/{id}"), None)
            .await
            .status,
        204
    );
    assert_error(
        &api.call("DELETE", &format!("/sandboxes/{id}"), None).await,
        404,
        &id,
    );
    assert_error(
        &api.call("GET", &format!("/sandboxes/{id}"), None).await,
        404,
        &id,
    );
    assert_error(
        &api.call("GET", "/sandboxes/not-an-id", None).await,
        400,
        "not-an-id",
    );
    let bad = api
        .call(
            "POST",
            "/v2/sandboxes",
            Some(json!({"templateID": "base", "timeout": "soon"})),
        )
        .await;
    assert_error(&bad, 400, "request body");
    let bad = api
        .call(
            "POST",
            "/v2/sandboxes",
            Some(json!({"templateID": "Bad Name"})),
        )
        .await;
    assert_error(&bad, 400, "template");

    // The service still serves.
    assert_eq!(api.call("GET", "/sandboxes", None).await.status, 200);
    assert_eq!(
        api.call("DELETE", &format!("/sandboxes/{other}"), None)
            .await
            .status,
        204
    );
    t.stop().await;
}

/// `envdAccessToken`: what the sandbox's host reports as its
/// `spec.envd_access_token` (the store keeps none), on create, detail,
/// connect and resume; never in list entries.
#[tokio::test]
async fn the_sdk_gets_each_sandbox_envd_access_token() {
    use wrenn_proto::wrenn::v1::{CreateSandboxRequest, SandboxRef, SandboxSpec};

    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let api = Api {
        base: t.control.url(),
        key: Some(t.key.clone()),
    };
    let a = api
        .call("POST", "/v2/sandboxes", Some(json!({"templateID": "base"})))
        .await;
    assert_eq!(a.status, 201, "{}", a.json);
    let id = a.json["sandboxID"].as_str().unwrap().to_owned();
    // The fake reports the spec it was sent, which names no token (a real
    // agent chooses one): absent, not null, so the SDK sends none.
    assert!(a.json.get("envdAccessToken").is_none(), "{}", a.json);

    // From here on its host reports one, as a real agent does.
    let token = "0123456789abcdef0123456789abcdef";
    agent
        .sandboxes
        .lock()
        .get_mut(&id)
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .envd_access_token = token.into();
    let d = api.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(d.status, 200, "{}", d.json);
    assert_eq!(d.json["envdAccessToken"], token);
    let l = api.call("GET", "/v2/sandboxes", None).await;
    assert!(l.json[0].get("envdAccessToken").is_none(), "{}", l.json);

    // Connect to a running sandbox, with and without a new timeout.
    for body in [None, Some(json!({"timeout": 300}))] {
        let c = api
            .call("POST", &format!("/v2/sandboxes/{id}/connect"), body)
            .await;
        assert_eq!(c.status, 200, "{}", c.json);
        assert_eq!(c.json["envdAccessToken"], token, "{}", c.json);
    }
    // Connect and resume (v1) of a paused one.
    for path in ["/v2/sandboxes/{id}/connect", "/sandboxes/{id}/resume"] {
        let pause = api
            .call("POST", &format!("/sandboxes/{id}/pause"), None)
            .await;
        assert_eq!(pause.status, 204, "{}", pause.json);
        let c = api
            .call("POST", &path.replace("{id}", &id), Some(json!({})))
            .await;
        assert_eq!(c.status, 201, "{path}: {}", c.json);
        assert_eq!(c.json["envdAccessToken"], token, "{path}: {}", c.json);
    }

    // wrenn's own API: Get asks the host too; Create passes on the token
    // the agent reported.
    let mut grpc = t.client().await;
    let got = grpc
        .sandboxes
        .get(SandboxRef {
            sandbox_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.spec.unwrap().envd_access_token, token);
    let made = grpc
        .sandboxes
        .create(CreateSandboxRequest {
            sandbox_id: String::new(),
            spec: Some(SandboxSpec {
                envd_access_token: "given-token_0123456789".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        made.spec.as_ref().unwrap().envd_access_token,
        "given-token_0123456789"
    );
    let e = grpc
        .sandboxes
        .create(CreateSandboxRequest {
            sandbox_id: String::new(),
            spec: Some(SandboxSpec {
                envd_access_token: "no spaces allowed here".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().starts_with("spec.envd_access_token: "),
        "{}",
        e.message()
    );

    // Once the host no longer has it, detail still answers from the store,
    // without a token.
    agent.remove_quietly(&id);
    let d = api.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(d.status, 200, "{}", d.json);
    assert!(d.json.get("envdAccessToken").is_none(), "{}", d.json);
    t.stop().await;
}

/// `docs/e2b-openapi.json` lists what the API serves: every documented
/// operation is routed (it answers E2B's JSON error for a sandbox that does
/// not exist, or its own answer — never the router's bare 404/405).
#[tokio::test]
async fn every_operation_in_the_openapi_document_is_served() {
    let doc: Value = serde_json::from_str(include_str!("../../../docs/e2b-openapi.json")).unwrap();
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let api = Api {
        base: t.control.url(),
        key: Some(t.key.clone()),
    };
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let path = path.replace("{sandboxID}", "nosuchsandbox000000");
        for (method, _) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            operations += 1;
            let method = method.to_uppercase();
            // A body only where one is read (create: an invalid template).
            let body = (method == "POST").then(|| json!({"templateID": "no/such", "timeout": 1}));
            let a = api.call(&method, &path, body).await;
            assert!(
                a.status != 405 && (a.json.is_object() || a.json.is_array()),
                "{method} {path}: {} {}",
                a.status,
                a.json
            );
            if a.status >= 400 {
                assert_eq!(a.json["code"], a.status, "{method} {path}: {}", a.json);
            }
        }
    }
    assert_eq!(operations, 13, "the document's operations");
}
