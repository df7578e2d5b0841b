//! The Connect codec, envelopes, call parsing, users and signatures; the
//! whole interface through the real binary is in `tests/it/envd.rs`.

use bytes::Bytes;
use futures::StreamExt as _;
use http::{HeaderMap, HeaderValue, Method};
use wrenn_proto::filesystem::{EntryInfo, FileType, StatRequest, WatchDirRequest};
use wrenn_proto::process::{Signal, StartRequest, process_event};

use super::connect::{Call, Codec, POOL, end_stream, envelope, envelopes};
use super::files::sign;
use super::{basic_user, in_home};

fn message(name: &str) -> prost_reflect::MessageDescriptor {
    POOL.get_message_by_name(name).unwrap()
}

#[test]
fn json_requests_take_both_field_name_forms_enum_names_and_unknown_fields() {
    let desc = message("filesystem.WatchDirRequest");
    let camel: WatchDirRequest = Codec::Json
        .decode(
            &desc,
            br#"{"path":"/a","includeEntry":true,"newerField":1}"#,
        )
        .unwrap();
    let snake: WatchDirRequest = Codec::Json
        .decode(&desc, br#"{"path":"/a","include_entry":true}"#)
        .unwrap();
    assert_eq!(camel, snake);
    assert!(camel.include_entry);
    let signal: wrenn_proto::process::SendSignalRequest = Codec::Json
        .decode(
            &message("process.SendSignalRequest"),
            br#"{"process":{"pid":7},"signal":"SIGNAL_SIGKILL"}"#,
        )
        .unwrap();
    assert_eq!(signal.signal, Signal::Sigkill as i32);
    // An empty body is the empty message.
    let empty: StatRequest = Codec::Json
        .decode(&message("filesystem.StatRequest"), b"")
        .unwrap();
    assert_eq!(empty, StatRequest::default());
}

#[test]
fn json_errors_name_the_message_type() {
    let err = Codec::Json
        .decode::<StatRequest>(&message("filesystem.StatRequest"), br#"{"path": 3}"#)
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("filesystem.StatRequest"),
        "{}",
        err.message()
    );
}

#[test]
fn json_responses_use_proto3_canonical_json() {
    let entry = EntryInfo {
        name: "a".into(),
        r#type: FileType::File as i32,
        path: "/a".into(),
        size: 5,
        is_symlink: false,
        ..EntryInfo::default()
    };
    let json = Codec::Json
        .encode(&message("filesystem.EntryInfo"), &entry)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["type"], "FILE_TYPE_FILE");
    assert_eq!(v["size"], "5", "int64 is a string in proto3 JSON");
    assert!(v.get("isSymlink").is_none(), "defaults are left out: {v}");
    // Bytes are base64; oneofs are flattened.
    let event = wrenn_proto::process::StartResponse {
        event: Some(wrenn_proto::process::ProcessEvent {
            event: Some(process_event::Event::Data(process_event::DataEvent {
                output: Some(process_event::data_event::Output::Stdout(b"hi\n".to_vec())),
            })),
        }),
    };
    let json = Codec::Json
        .encode(&message("process.StartResponse"), &event)
        .unwrap();
    assert_eq!(&json[..], br#"{"event":{"data":{"stdout":"aGkK"}}}"#);
}

#[test]
fn binary_codec_round_trips() {
    let req = StartRequest {
        process: Some(wrenn_proto::process::ProcessConfig {
            cmd: "/bin/true".into(),
            ..Default::default()
        }),
        pty: Some(wrenn_proto::process::Pty::default()),
        ..Default::default()
    };
    let desc = message("process.StartRequest");
    let bytes = Codec::Proto.encode(&desc, &req).unwrap();
    let back: StartRequest = Codec::Proto.decode(&desc, &bytes).unwrap();
    assert_eq!(back, req);
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                http::HeaderName::from_static(k),
                HeaderValue::from_static(v),
            )
        })
        .collect()
}

#[test]
fn calls_are_parsed_from_path_and_headers() {
    let call = Call::parse(
        &Method::POST,
        "/process.Process/Start",
        &headers(&[
            ("content-type", "application/connect+json"),
            ("connect-protocol-version", "1"),
            ("connect-timeout-ms", "60000"),
        ]),
    )
    .unwrap();
    assert_eq!(call.method.full_name(), "process.Process.Start");
    assert!(call.streaming);
    assert_eq!(call.codec, Codec::Json);
    assert_eq!(call.timeout, Some(std::time::Duration::from_secs(60)));

    let unary = Call::parse(
        &Method::POST,
        "/filesystem.Filesystem/Stat",
        &headers(&[("content-type", "application/proto")]),
    )
    .unwrap();
    assert!(!unary.streaming);
    assert_eq!(unary.codec, Codec::Proto);

    let refused = |path, ct, code: tonic::Code, says: &str| {
        let err = Call::parse(&Method::POST, path, &headers(&[("content-type", ct)])).unwrap_err();
        assert_eq!(err.code(), code, "{path} {ct}: {err:?}");
        assert!(err.message().contains(says), "{}", err.message());
    };
    refused(
        "/process.Process/Start",
        "application/json",
        tonic::Code::InvalidArgument,
        "streaming procedure",
    );
    refused(
        "/filesystem.Filesystem/Stat",
        "application/connect+json",
        tonic::Code::InvalidArgument,
        "unary procedure",
    );
    refused(
        "/filesystem.Filesystem/Stat",
        "text/plain",
        tonic::Code::InvalidArgument,
        "not a Connect codec",
    );
    refused(
        "/process.Process/Nope",
        "application/json",
        tonic::Code::Unimplemented,
        "no procedure",
    );
    let err = Call::parse(
        &Method::POST,
        "/filesystem.Filesystem/Stat",
        &headers(&[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ]),
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    let err = Call::parse(
        &Method::POST,
        "/filesystem.Filesystem/Stat",
        &headers(&[
            ("content-type", "application/json"),
            ("connect-timeout-ms", "soon"),
        ]),
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn envelopes_and_the_end_stream_message() {
    let e = envelope(0, b"{}");
    assert_eq!(&e[..], &[0, 0, 0, 0, 2, b'{', b'}']);
    let end = end_stream(Some(&tonic::Status::not_found("gone")));
    assert_eq!(end[0], 2);
    let v: serde_json::Value = serde_json::from_slice(&end[5..]).unwrap();
    assert_eq!(v["error"]["code"], "not_found");
    assert_eq!(v["error"]["message"], "gone");
    assert_eq!(&end_stream(None)[5..], b"{}");

    // A client stream's envelopes split across body frames arrive whole.
    let mut wire = Vec::new();
    wire.extend_from_slice(&envelope(0, br#"{"a":1}"#));
    wire.extend_from_slice(&envelope(0, br#"{"b":2}"#));
    let frames: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = wire
        .chunks(3)
        .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = tonic::body::Body::new(http_body_util::StreamBody::new(futures::stream::iter(
        frames,
    )));
    let got: Vec<Bytes> = envelopes(body).map(Result::unwrap).collect().await;
    assert_eq!(got, [&br#"{"a":1}"#[..], &br#"{"b":2}"#[..]]);

    // A body that ends inside an envelope is an error, not a short message.
    let body = tonic::body::Body::new(http_body_util::Full::new(Bytes::from_static(&[
        0, 0, 0, 0, 9, b'{',
    ])));
    let got: Vec<_> = envelopes(body).collect().await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].as_ref().unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
}

#[test]
fn the_user_comes_from_basic_authorization() {
    let with = |v: &'static str| headers(&[("authorization", v)]);
    // base64("root:") and base64("user:")
    assert_eq!(
        basic_user(&with("Basic cm9vdDo=")).unwrap().as_deref(),
        Some("root")
    );
    assert_eq!(
        basic_user(&with("Basic dXNlcjo=")).unwrap().as_deref(),
        Some("user")
    );
    assert_eq!(basic_user(&HeaderMap::new()).unwrap(), None);
    assert_eq!(
        basic_user(&with("Bearer x")).unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        basic_user(&with("Basic !!!")).unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
}

#[test]
fn relative_paths_are_in_the_users_home() {
    let user = crate::users::User {
        name: "user".into(),
        uid: 1001,
        gid: 1001,
        home: "/home/user".into(),
        shell: "/bin/bash".into(),
        groups: vec![],
    };
    assert_eq!(in_home("a/b.txt", &user), "/home/user/a/b.txt");
    assert_eq!(in_home("/etc/x", &user), "/etc/x");
    assert_eq!(in_home("", &user), "/home/user");
}

#[test]
fn file_url_signatures_match_the_sdks() {
    // Values computed by the e2b 2.64.0 Python SDK's get_signature.
    assert_eq!(
        sign("/home/user/a.txt", "read", "", "tok", None),
        "v1_Zkbb3914oLJLvMBzCAHQhm2ydBLxbSx2eQUR/kLdvIY"
    );
    assert_eq!(
        sign("a.txt", "write", "root", "tok", None),
        "v1_zTW5ewssuLRKZWMxCDnCIW4bIY2xVSWveC/tRMmSWYc"
    );
}
