//! `wrenn.v1.Keys`: a created key works for gRPC and for E2B's REST API
//! (`X-API-Key`), and both refuse it on the very next request once it is
//! revoked; list never shows a key; bad input is named.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tonic::Code;
use wrenn_control::auth::UNAUTHENTICATED_MESSAGE;
use wrenn_control::client::Client;
use wrenn_proto::wrenn::v1::{
    ApiKey, CreateKeyRequest, ListKeysRequest, ListSandboxesRequest, RevokeKeyRequest,
};

use crate::common::{FakeAgent, TestControl};

/// `GET /sandboxes` of E2B's REST API with `X-API-Key: key`: status and body.
async fn rest_list(base: &str, key: &str) -> (u16, Value) {
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = http::Request::builder()
        .method("GET")
        .uri(format!("{base}/sandboxes"))
        .header("x-api-key", key)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = client.request(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("GET /sandboxes: not JSON ({e}): {bytes:?}"));
    (status, json)
}

async fn grpc_list(c: &mut Client) -> Result<(), tonic::Status> {
    c.sandboxes
        .list(ListSandboxesRequest::default())
        .await
        .map(|_| ())
}

async fn list_keys(c: &mut Client) -> Vec<ApiKey> {
    c.keys
        .list(ListKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys
}

async fn create(c: &mut Client, name: Option<&str>) -> (ApiKey, String) {
    let res = c
        .keys
        .create(CreateKeyRequest {
            name: name.map(str::to_owned),
        })
        .await
        .unwrap()
        .into_inner();
    (res.key.unwrap(), res.secret)
}

async fn revoke(c: &mut Client, key: &str, force: bool) -> Result<ApiKey, tonic::Status> {
    c.keys
        .revoke(RevokeKeyRequest {
            key: key.to_owned(),
            force,
        })
        .await
        .map(tonic::Response::into_inner)
}

fn assert_refused(r: Result<(), tonic::Status>) {
    let e = r.expect_err("the revoked key was accepted over gRPC");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert_eq!(e.message(), UNAUTHENTICATED_MESSAGE);
}

fn assert_status(e: &tonic::Status, code: Code, text: &str) {
    assert_eq!(e.code(), code, "{e:?}");
    assert!(
        e.message().contains(text),
        "{:?} lacks {text:?}",
        e.message()
    );
}

#[tokio::test]
async fn a_created_key_works_for_grpc_and_rest_and_revocation_is_immediate() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let url = t.control.url();
    let mut admin = t.client().await;

    let (made, secret) = create(&mut admin, Some("ci")).await;
    assert!(secret.starts_with("wrn_") && secret.len() == 36, "{secret}");
    assert!(made.id.starts_with("key_"), "{made:?}");
    assert_eq!(made.name, "ci");
    assert!(made.created_at.is_some() && made.revoked_at.is_none());
    assert!(!made.current, "made by the admin key");

    // Works for gRPC and for REST.
    let mut ci = Client::connect(&url, &secret).await.unwrap();
    grpc_list(&mut ci)
        .await
        .expect("new key accepted over gRPC");
    let (status, body) = rest_list(&url, &secret).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.is_array(), "{body}");

    // Listed, with its last use (written in the background, to the minute);
    // the key and its hash appear nowhere.
    let hash = wrenn_control::auth::ApiKey::parse(&secret).unwrap().hash();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let keys = loop {
        let keys = list_keys(&mut admin).await;
        if keys
            .iter()
            .any(|k| k.id == made.id && k.last_used_at.is_some())
        {
            break keys;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ci's last use was not recorded: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let listed = format!("{keys:?}");
    assert!(
        !listed.contains(&secret[4..]) && !listed.contains(&hash),
        "{listed}"
    );
    let names: Vec<(&str, bool)> = keys.iter().map(|k| (k.name.as_str(), k.current)).collect();
    assert_eq!(names, [("admin", true), ("ci", false)]);

    // Revoke while the key is cached (it was used just now, over both paths):
    // refused on the very next request of each.
    grpc_list(&mut ci).await.unwrap();
    assert_eq!(rest_list(&url, &secret).await.0, 200);
    let gone = revoke(&mut admin, "ci", false).await.unwrap();
    assert_eq!(gone.id, made.id);
    assert!(gone.revoked_at.is_some());
    assert_refused(grpc_list(&mut ci).await);
    let (status, body) = rest_list(&url, &secret).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], 401, "{body}");
    // The revoked key cannot manage keys either.
    let e = ci.keys.list(ListKeysRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // Still listed, as revoked; the admin key still works.
    let keys = list_keys(&mut admin).await;
    let ci_now = keys.iter().find(|k| k.id == made.id).unwrap();
    assert!(ci_now.revoked_at.is_some(), "{ci_now:?}");
    grpc_list(&mut admin).await.unwrap();
    assert_eq!(rest_list(&url, &t.key).await.0, 200);

    // Revoking twice, by id or name: FAILED_PRECONDITION naming the key.
    for given in [made.id.as_str(), "ci"] {
        let e = revoke(&mut admin, given, false).await.unwrap_err();
        assert_status(&e, Code::FailedPrecondition, "already revoked");
        assert!(e.message().contains(&made.id), "{e:?}");
    }
    t.stop().await;
}

#[tokio::test]
async fn bad_input_is_named_and_changes_nothing() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let mut admin = t.client().await;

    for (name, says) in [
        (String::new(), "empty"),
        ("x".repeat(65), "at most 64"),
        ("has space".into(), "not a key name"),
        ("wrn_oops".into(), "wrn_"),
        ("key_abc".into(), "key_"),
    ] {
        let e = admin
            .keys
            .create(CreateKeyRequest {
                name: Some(name.clone()),
            })
            .await
            .unwrap_err();
        assert_status(&e, Code::InvalidArgument, says);
    }
    assert_eq!(list_keys(&mut admin).await.len(), 1, "nothing was created");

    // Unknown id, unknown name, an unknown whole key (not echoed), empty.
    let e = revoke(&mut admin, "key_doesnotexist", false)
        .await
        .unwrap_err();
    assert_status(&e, Code::NotFound, "\"key_doesnotexist\"");
    let e = revoke(&mut admin, "nosuch", false).await.unwrap_err();
    assert_status(&e, Code::NotFound, "\"nosuch\"");
    let stranger = wrenn_control::auth::ApiKey::generate();
    let e = revoke(&mut admin, stranger.expose(), false)
        .await
        .unwrap_err();
    assert_status(&e, Code::NotFound, "no API key matches");
    assert!(!e.message().contains(stranger.expose()));
    let e = revoke(&mut admin, "", false).await.unwrap_err();
    assert_status(&e, Code::InvalidArgument, "empty");

    // A name two active keys share is ambiguous: the ids are named.
    let (a, _) = create(&mut admin, Some("twin")).await;
    let (b, _) = create(&mut admin, Some("twin")).await;
    let e = revoke(&mut admin, "twin", false).await.unwrap_err();
    // (in the store's order: keys made in the same millisecond in either)
    assert_status(
        &e,
        Code::InvalidArgument,
        "2 active keys are named \"twin\"",
    );
    assert!(
        e.message().contains(&a.id) && e.message().contains(&b.id),
        "{:?} lacks {} or {}",
        e.message(),
        a.id,
        b.id
    );
    revoke(&mut admin, &b.id, false).await.unwrap();
    // …and unique again once one is revoked.
    assert_eq!(revoke(&mut admin, "twin", false).await.unwrap().id, a.id);

    // A key without a name, revoked by the key itself (the leaked-key case).
    let (anon, secret) = create(&mut admin, None).await;
    assert_eq!(anon.name, "");
    assert_eq!(
        revoke(&mut admin, &secret, false).await.unwrap().id,
        anon.id
    );

    // Only the admin key is active; nothing was harmed.
    let active: Vec<String> = list_keys(&mut admin)
        .await
        .into_iter()
        .filter(|k| k.revoked_at.is_none())
        .map(|k| k.name)
        .collect();
    assert_eq!(active, ["admin"]);
    t.stop().await;
}

/// The key making the call is refused unless forced — which also guards the
/// last active key; with none left, the next start writes a new admin key.
#[tokio::test]
async fn the_callers_own_key_needs_force_and_a_restart_recovers_from_none() {
    let agent = FakeAgent::start().await;
    let t = TestControl::start(&agent.url()).await;
    let mut admin = t.client().await;
    let (spare, spare_key) = create(&mut admin, Some("spare")).await;

    let e = revoke(&mut admin, "admin", false).await.unwrap_err();
    assert_status(&e, Code::FailedPrecondition, "the key making this call");
    assert!(!e.message().contains("last active key"), "{e:?}");
    grpc_list(&mut admin)
        .await
        .expect("the refused revoke did nothing");

    // Another key may revoke it without force; it is refused at once.
    let mut spare_client = Client::connect(&t.control.url(), &spare_key).await.unwrap();
    revoke(&mut spare_client, "admin", false).await.unwrap();
    assert_refused(grpc_list(&mut admin).await);
    let (status, _) = rest_list(&t.control.url(), &t.key).await;
    assert_eq!(status, 401);

    // The last active key: refused, saying so; forced, it goes.
    let e = revoke(&mut spare_client, "spare", false).await.unwrap_err();
    assert_status(&e, Code::FailedPrecondition, "last active key");
    assert!(e.message().contains(&spare.id), "{e:?}");
    grpc_list(&mut spare_client).await.unwrap();
    revoke(&mut spare_client, "spare", true).await.unwrap();
    assert_refused(grpc_list(&mut spare_client).await);

    // No key works now; the next start writes a new admin key.
    let dir = t.dir.keep();
    t.control.shutdown();
    t.control.wait().await.unwrap();
    let opts = wrenn_control::Options::new(&dir)
        .with_listen("127.0.0.1:0".parse().unwrap())
        .with_agent(agent.url());
    let again = wrenn_control::start(opts).await.unwrap();
    assert!(again.admin_key_created().is_some(), "a new admin key");
    let key = wrenn_control::client::read_admin_key(&dir).unwrap();
    assert_ne!(key, t.key);
    let mut c = Client::connect(&again.url(), &key).await.unwrap();
    assert_eq!(list_keys(&mut c).await.len(), 3);
    again.shutdown();
    again.wait().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
