//! envd's HTTP interface (what E2B's SDKs speak) through the real binary,
//! over plain HTTP/1.1 written by hand: Connect unary calls and streams in
//! JSON and binary, a client stream sent chunked, `/files` with multipart
//! uploads and signed URLs, `/health`, the access token, and gRPC still
//! served on the same port.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use prost::Message as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use wrenn_proto::process::ListRequest;

use crate::common::*;

const TOKEN: &str = "envd-test-token-0123456789";
/// `Authorization` naming root (`base64("root:")`).
const AS_ROOT: (&str, &str) = ("authorization", "Basic cm9vdDo=");

async fn agent() -> Agent {
    Agent::builder()
        .arg("--envd-access-token")
        .arg(TOKEN)
        .start()
        .await
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The Connect envelopes of a stream: (flags, JSON).
    fn envelopes(&self) -> Vec<(u8, Value)> {
        let mut out = Vec::new();
        let mut b = &self.body[..];
        while !b.is_empty() {
            assert!(b.len() >= 5, "a truncated envelope: {b:?}");
            let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
            out.push((b[0], serde_json::from_slice(&b[5..5 + len]).unwrap()));
            b = &b[5 + len..];
        }
        out
    }
}

/// Reads an HTTP/1.1 response to the end of the connection.
async fn read_reply(mut s: TcpStream) -> Reply {
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut raw))
        .await
        .expect("the reply did not end")
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of headers");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap(), 16).unwrap();
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    Reply {
        status,
        headers,
        body,
    }
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: sandbox\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    read_reply(s).await
}

/// A unary Connect call in JSON with the token.
async fn unary(addr: SocketAddr, procedure: &str, body: Value) -> Reply {
    request(
        addr,
        "POST",
        &format!("/{procedure}"),
        &[
            ("content-type", "application/json"),
            ("connect-protocol-version", "1"),
            ("x-access-token", TOKEN),
            AS_ROOT,
        ],
        body.to_string().as_bytes(),
    )
    .await
}

fn envelope(flags: u8, json: &Value) -> Vec<u8> {
    let payload = json.to_string().into_bytes();
    let mut b = vec![flags];
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(&payload);
    b
}

/// A server-streaming Connect call in JSON with the token (and `extra`
/// headers); the whole stream once it ends.
async fn stream(addr: SocketAddr, procedure: &str, body: Value, extra: &[(&str, &str)]) -> Reply {
    let mut headers = vec![
        ("content-type", "application/connect+json"),
        ("connect-protocol-version", "1"),
        ("x-access-token", TOKEN),
        AS_ROOT,
    ];
    headers.extend_from_slice(extra);
    request(
        addr,
        "POST",
        &format!("/{procedure}"),
        &headers,
        &envelope(0, &body),
    )
    .await
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// stdout, stderr and the end event of a process stream.
fn outputs(envelopes: &[(u8, Value)]) -> (String, String, Value) {
    let (mut out, mut err, mut end) = (Vec::new(), Vec::new(), Value::Null);
    let decode = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    for (_, e) in envelopes {
        let event = &e["event"];
        if let Some(d) = event["data"].get("stdout") {
            out.extend(decode(d));
        }
        if let Some(d) = event["data"].get("stderr") {
            err.extend(decode(d));
        }
        if event.get("end").is_some() {
            end = event["end"].clone();
        }
    }
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
        end,
    )
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_command_streams_its_start_output_and_end_as_e2b_expects() {
    let agent = agent().await;
    let reply = stream(
        agent.addr,
        "process.Process/Start",
        json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "echo hi; echo oops >&2; exit 3"],
               "envs": {"GREETING": "x"}}, "stdin": false}),
        &[("connect-timeout-ms", "60000")],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("application/connect+json")
    );
    let envelopes = reply.envelopes();
    // E2B's SDKs require `start` first.
    assert!(
        envelopes[0].1["event"]["start"]["pid"].as_u64().unwrap() > 0,
        "{envelopes:?}"
    );
    let (out, err, end) = outputs(&envelopes);
    assert_eq!(out, "hi\n");
    assert_eq!(err, "oops\n");
    assert_eq!(end["exitCode"], 3, "{end}");
    let (flags, last) = envelopes.last().unwrap();
    assert_eq!((*flags, last), (2, &json!({})));

    // A command that cannot start ends the stream with Connect's error.
    let reply = stream(
        agent.addr,
        "process.Process/Start",
        json!({"process": {"cmd": "/bin/true", "cwd": "/no/such/dir"}}),
        &[],
    )
    .await;
    assert_eq!(reply.status, 200);
    let envelopes = reply.envelopes();
    assert_eq!(envelopes.len(), 1, "{envelopes:?}");
    assert_eq!(envelopes[0].0, 2);
    assert_eq!(envelopes[0].1["error"]["code"], "invalid_argument");
    assert!(
        envelopes[0].1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/no/such/dir")
    );
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn the_token_guards_every_call_but_health_and_grpc_still_works() {
    let agent = agent().await;
    let addr = agent.addr;
    let list = |token: Option<&'static str>| async move {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(t) = token {
            headers.push(("x-access-token", t));
        }
        request(addr, "POST", "/process.Process/List", &headers, b"{}").await
    };
    let missing = list(None).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json()["code"], "unauthenticated");
    let wrong = list(Some("not-the-token")).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.json()["message"].as_str().unwrap().contains("wrong"));
    let right = list(Some(TOKEN)).await;
    assert_eq!(right.status, 200, "{:?}", right.json());
    assert!(right.json().is_object());
    let files = request(agent.addr, "GET", "/files?path=/etc/hostname", &[], b"").await;
    assert_eq!(files.status, 401);

    let health = request(agent.addr, "GET", "/health", &[], b"").await;
    assert_eq!(health.status, 204);
    let nowhere = request(
        agent.addr,
        "GET",
        "/nowhere",
        &[("x-access-token", TOKEN)],
        b"",
    )
    .await;
    assert_eq!(nowhere.status, 404);
    assert_eq!(nowhere.json()["code"], 404);

    // gRPC over HTTP/1.1 (what the proxy's path carries) is refused.
    let grpc1 = request(
        agent.addr,
        "POST",
        "/process.Process/List",
        &[
            ("content-type", "application/grpc"),
            ("x-access-token", TOKEN),
        ],
        &[0, 0, 0, 0, 0],
    )
    .await;
    assert_eq!(grpc1.status, 505);

    // gRPC on the same port, unchanged.
    let reply = agent.process().list(ListRequest {}).await.unwrap();
    assert!(reply.into_inner().processes.is_empty());

    // An agent given no token refuses envd calls, saying why.
    let bare = Agent::start().await;
    let refused = request(
        bare.addr,
        "POST",
        "/process.Process/List",
        &[
            ("content-type", "application/json"),
            ("x-access-token", "x"),
        ],
        b"{}",
    )
    .await;
    assert_eq!(refused.status, 401);
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("no access token"),
        "{:?}",
        refused.json()
    );
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn binary_codec_and_bad_requests() {
    let agent = agent().await;
    let reply = request(
        agent.addr,
        "POST",
        "/process.Process/List",
        &[
            ("content-type", "application/proto"),
            ("x-access-token", TOKEN),
        ],
        &ListRequest {}.encode_to_vec(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/proto"));
    wrenn_proto::process::ListResponse::decode(&reply.body[..]).unwrap();

    let bad = unary(agent.addr, "filesystem.Filesystem/Stat", json!({"path": 7})).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["code"], "invalid_argument");
    let unknown = unary(agent.addr, "filesystem.Filesystem/Nope", json!({})).await;
    assert_eq!(unknown.status, 501);
    assert_eq!(unknown.json()["code"], "unimplemented");
    let gone = unary(
        agent.addr,
        "process.Process/SendSignal",
        json!({"process": {"pid": 999_999}, "signal": "SIGNAL_SIGKILL"}),
    )
    .await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["code"], "not_found");
    // The agent still serves.
    agent.assert_serving().await;
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn stdin_arrives_by_a_chunked_client_stream_and_by_send_input() {
    let agent = agent().await;
    let addr = agent.addr;
    // `head -c 5` ends once it has read five bytes.
    let started = tokio::spawn(async move {
        stream(
            addr,
            "process.Process/Start",
            json!({"process": {"cmd": "head", "args": ["-c", "5"]}, "stdin": true, "tag": "reader"}),
            &[],
        )
        .await
    });
    let pid = wait_for_tag(addr, "reader").await;

    // StreamInput as E2B's Python SDK sends it over HTTP/1.1: chunked.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /process.Process/StreamInput HTTP/1.1\r\nhost: sandbox\r\nconnection: close\r\n\
         content-type: application/connect+json\r\nx-access-token: {TOKEN}\r\n\
         transfer-encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let messages = [
        json!({"start": {"process": {"pid": pid}}}),
        json!({"keepalive": {}}),
        json!({"data": {"input": {"stdin": b64(b"hel")}}}),
        json!({"data": {"input": {"stdin": b64(b"lo")}}}),
    ];
    for m in &messages {
        let e = envelope(0, m);
        // Each envelope split over two chunks.
        for part in e.chunks(e.len() / 2 + 1) {
            s.write_all(format!("{:x}\r\n", part.len()).as_bytes())
                .await
                .unwrap();
            s.write_all(part).await.unwrap();
            s.write_all(b"\r\n").await.unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let reply = read_reply(s).await;
    assert_eq!(reply.status, 200);
    let envelopes = reply.envelopes();
    assert_eq!(envelopes.last().unwrap(), &(2, json!({})), "{envelopes:?}");

    let started = started.await.unwrap();
    let (out, _, end) = outputs(&started.envelopes());
    assert_eq!(out, "hello");
    assert_eq!(end["exited"], true, "{end}");

    // SendInput, then CloseStdin ends `cat`.
    let addr = agent.addr;
    let cat = tokio::spawn(async move {
        stream(
            addr,
            "process.Process/Start",
            json!({"process": {"cmd": "cat"}, "stdin": true, "tag": "cat"}),
            &[],
        )
        .await
    });
    let pid = wait_for_tag(addr, "cat").await;
    let sent = unary(
        addr,
        "process.Process/SendInput",
        json!({"process": {"pid": pid}, "input": {"stdin": b64(b"abc")}}),
    )
    .await;
    assert_eq!(sent.status, 200, "{:?}", sent.json());
    let closed = unary(
        addr,
        "process.Process/CloseStdin",
        json!({"process": {"pid": pid}}),
    )
    .await;
    assert_eq!(closed.status, 200, "{:?}", closed.json());
    let (out, _, end) = outputs(&cat.await.unwrap().envelopes());
    assert_eq!(out, "abc");
    assert!(
        end.get("exitCode").is_none(),
        "exit 0 is the default: {end}"
    );
    // An ended process is gone to envd's clients: `kill` answers false.
    let late = unary(
        addr,
        "process.Process/SendSignal",
        json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
    )
    .await;
    assert_eq!(late.status, 404, "{:?}", late.json());
    assert_eq!(late.json()["code"], "not_found");
}

/// The pid of the running process tagged `tag`, from `List`.
async fn wait_for_tag(addr: SocketAddr, tag: &str) -> u64 {
    for _ in 0..200 {
        let list = unary(addr, "process.Process/List", json!({})).await.json();
        if let Some(p) = list["processes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["tag"] == tag)
        {
            return p["pid"].as_u64().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no process tagged {tag}");
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn files_go_up_by_multipart_and_down_by_token_or_signed_url() {
    let agent = agent().await;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("sub/a.txt");
    let b = dir.path().join("b.bin");
    let boundary = "XyZ123";
    let mut body = Vec::new();
    for (path, data) in [(&a, &b"alpha"[..]), (&b, &[0u8, 1, 2, 255][..])] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n",
                path.display()
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let ct = format!("multipart/form-data; boundary={boundary}");
    let up = request(
        agent.addr,
        "POST",
        "/files?username=root",
        &[("content-type", &ct), ("x-access-token", TOKEN)],
        &body,
    )
    .await;
    assert_eq!(up.status, 200, "{:?}", String::from_utf8_lossy(&up.body));
    let written = up.json();
    assert_eq!(written.as_array().unwrap().len(), 2, "{written}");
    assert_eq!(written[0]["path"], a.to_str().unwrap());
    assert_eq!(written[0]["type"], "file");
    assert_eq!(written[1]["name"], "b.bin");
    assert_eq!(std::fs::read(&a).unwrap(), b"alpha");
    assert_eq!(std::fs::read(&b).unwrap(), [0, 1, 2, 255]);

    let path = a.to_str().unwrap();
    let down = request(
        agent.addr,
        "GET",
        &format!("/files?path={path}"),
        &[("x-access-token", TOKEN)],
        b"",
    )
    .await;
    assert_eq!(down.status, 200);
    assert_eq!(down.body, b"alpha");

    // Signed URLs (E2B's download_url): no token header needed.
    let sig = sign(path, "read", "", None);
    let signed = request(
        agent.addr,
        "GET",
        &format!("/files?path={path}&signature={}", enc(&sig)),
        &[],
        b"",
    )
    .await;
    assert_eq!(signed.status, 200);
    assert_eq!(signed.body, b"alpha");
    let forged = request(
        agent.addr,
        "GET",
        &format!("/files?path={}&signature={}", b.display(), enc(&sig)),
        &[],
        b"",
    )
    .await;
    assert_eq!(forged.status, 401, "a signature for another path");
    let expired = 1_000_000_000;
    let sig = sign(path, "read", "", Some(expired));
    let late = request(
        agent.addr,
        "GET",
        &format!(
            "/files?path={path}&signature={}&signature_expiration={expired}",
            enc(&sig)
        ),
        &[],
        b"",
    )
    .await;
    assert_eq!(late.status, 401);
    assert!(late.json()["message"].as_str().unwrap().contains("expired"));

    // A raw upload to ?path= (envd ≥ 0.5.7's form) and a missing file.
    let c = dir.path().join("c.txt");
    let raw = request(
        agent.addr,
        "POST",
        &format!("/files?path={}", c.display()),
        &[
            ("content-type", "application/octet-stream"),
            ("x-access-token", TOKEN),
        ],
        b"gamma",
    )
    .await;
    assert_eq!(raw.status, 200);
    assert_eq!(std::fs::read(&c).unwrap(), b"gamma");
    let missing = request(
        agent.addr,
        "GET",
        &format!("/files?path={}/nope", dir.path().display()),
        &[("x-access-token", TOKEN)],
        b"",
    )
    .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["code"], 404);
}

fn sign(path: &str, op: &str, user: &str, exp: Option<u64>) -> String {
    use sha2::{Digest as _, Sha256};
    let raw = match exp {
        None => format!("{path}:{op}:{user}:{TOKEN}"),
        Some(e) => format!("{path}:{op}:{user}:{TOKEN}:{e}"),
    };
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(raw.as_bytes()))
    )
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn filesystem_calls_and_both_kinds_of_watch() {
    let agent = agent().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("x/y");
    let made = unary(
        agent.addr,
        "filesystem.Filesystem/MakeDir",
        json!({"path": d}),
    )
    .await;
    assert_eq!(made.status, 200, "{:?}", made.json());
    assert_eq!(made.json()["entry"]["type"], "FILE_TYPE_DIRECTORY");
    let again = unary(
        agent.addr,
        "filesystem.Filesystem/MakeDir",
        json!({"path": d}),
    )
    .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["code"], "already_exists");

    // A polled watcher (E2B's synchronous Python SDK).
    let created = unary(
        agent.addr,
        "filesystem.Filesystem/CreateWatcher",
        json!({"path": d, "recursive": false}),
    )
    .await;
    assert_eq!(created.status, 200, "{:?}", created.json());
    let id = created.json()["watcherId"].as_str().unwrap().to_owned();
    std::fs::write(d.join("new.txt"), b"1").unwrap();
    // An upload shows as its own name, not its temporary file's.
    let up = request(
        agent.addr,
        "POST",
        &format!("/files?path={}", d.join("up.txt").display()),
        &[
            ("content-type", "application/octet-stream"),
            ("x-access-token", TOKEN),
        ],
        b"up",
    )
    .await;
    assert_eq!(up.status, 200);
    let mut events = Vec::new();
    for _ in 0..100 {
        let got = unary(
            agent.addr,
            "filesystem.Filesystem/GetWatcherEvents",
            json!({"watcherId": id}),
        )
        .await
        .json();
        events.extend(got["events"].as_array().cloned().unwrap_or_default());
        if events.iter().any(|e| e["name"] == "up.txt") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(events[0]["name"], "new.txt", "{events:?}");
    assert_eq!(events[0]["type"], "EVENT_TYPE_CREATE");
    assert!(events.iter().any(|e| e["name"] == "up.txt"), "{events:?}");
    assert!(
        !events
            .iter()
            .any(|e| e["name"].as_str().unwrap().contains("wrenn-upload")),
        "{events:?}"
    );
    let removed = unary(
        agent.addr,
        "filesystem.Filesystem/RemoveWatcher",
        json!({"watcherId": id}),
    )
    .await;
    assert_eq!(removed.status, 200);
    let stale = unary(
        agent.addr,
        "filesystem.Filesystem/GetWatcherEvents",
        json!({"watcherId": id}),
    )
    .await;
    assert_eq!(stale.status, 404);

    // A streamed watch ends at Connect-Timeout-Ms with deadline_exceeded,
    // after `start` and the events meanwhile.
    let addr = agent.addr;
    let watched = d.clone();
    let watch = tokio::spawn(async move {
        stream(
            addr,
            "filesystem.Filesystem/WatchDir",
            json!({"path": watched, "includeEntry": true}),
            &[("connect-timeout-ms", "1500")],
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(d.join("w.txt"), b"22").unwrap();
    let reply = watch.await.unwrap();
    let envelopes = reply.envelopes();
    assert_eq!(envelopes[0].1, json!({"start": {}}), "{envelopes:?}");
    let event = envelopes
        .iter()
        .find(|(_, e)| e["filesystem"]["name"] == "w.txt")
        .unwrap_or_else(|| panic!("no event for w.txt: {envelopes:?}"));
    assert_eq!(event.1["filesystem"]["entry"]["name"], "w.txt");
    let (flags, end) = envelopes.last().unwrap();
    assert_eq!(*flags, 2);
    assert_eq!(end["error"]["code"], "deadline_exceeded");

    // Stat, list, move, remove.
    let moved = unary(
        agent.addr,
        "filesystem.Filesystem/Move",
        json!({"source": d.join("w.txt"), "destination": d.join("v.txt")}),
    )
    .await;
    assert_eq!(moved.json()["entry"]["name"], "v.txt");
    let listed = unary(
        agent.addr,
        "filesystem.Filesystem/ListDir",
        json!({"path": d, "depth": 1}),
    )
    .await
    .json();
    let mut names: Vec<&str> = listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["new.txt", "up.txt", "v.txt"]);
    let stat = unary(
        agent.addr,
        "filesystem.Filesystem/Stat",
        json!({"path": d.join("v.txt")}),
    )
    .await
    .json();
    assert_eq!(stat["entry"]["size"], "2");
    let gone = unary(
        agent.addr,
        "filesystem.Filesystem/Remove",
        json!({"path": d.join("v.txt")}),
    )
    .await;
    assert_eq!(gone.status, 200);
    let missing = unary(
        agent.addr,
        "filesystem.Filesystem/Stat",
        json!({"path": d.join("v.txt")}),
    )
    .await;
    assert_eq!(missing.status, 404);
}

/// One response off a keep-alive connection: status and body (chunked or
/// with a length).
async fn read_one(r: &mut tokio::io::BufReader<TcpStream>) -> (u16, Vec<u8>) {
    use tokio::io::AsyncBufReadExt as _;
    let mut line = String::new();
    let (mut status, mut len, mut chunked) = (0, 0, false);
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if status == 0 {
            status = l.split(' ').nth(1).unwrap().parse().unwrap();
        } else if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
            if k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if !chunked {
        body.resize(len, 0);
        r.read_exact(&mut body).await.unwrap();
        return (status, body);
    }
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        let size = usize::from_str_radix(line.trim(), 16).unwrap();
        let mut chunk = vec![0; size + 2];
        r.read_exact(&mut chunk).await.unwrap();
        if size == 0 {
            return (status, body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// E2B's Python SDK sends a stream's one request message as a chunked body
/// and reuses the connection (through the proxy's pool): the connection
/// stays open for the next call.
#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_chunked_stream_request_leaves_the_connection_reusable() {
    let agent = agent().await;
    let s = TcpStream::connect(agent.addr).await.unwrap();
    let mut r = tokio::io::BufReader::new(s);
    for round in 0..3 {
        let e = envelope(0, &json!({"process": {"cmd": "true"}}));
        let head = format!(
            "POST /process.Process/Start HTTP/1.1\r\nhost: sandbox\r\n\
             content-type: application/connect+json\r\nx-access-token: {TOKEN}\r\n\
             transfer-encoding: chunked\r\n\r\n{:x}\r\n",
            e.len()
        );
        let w = r.get_mut();
        w.write_all(head.as_bytes()).await.unwrap();
        w.write_all(&e).await.unwrap();
        w.write_all(b"\r\n0\r\n\r\n").await.unwrap();
        let (status, body) = tokio::time::timeout(PATIENCE, read_one(&mut r))
            .await
            .unwrap_or_else(|_| panic!("round {round}: no answer"));
        assert_eq!(status, 200, "round {round}");
        let reply = Reply {
            status,
            headers: Vec::new(),
            body,
        };
        let envelopes = reply.envelopes();
        assert_eq!(
            envelopes.last().unwrap().0,
            2,
            "round {round}: {envelopes:?}"
        );
    }
}
