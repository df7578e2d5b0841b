//! A downstream crate's extension: its own gRPC service, HTTP routes and a
//! background task, served by the control plane behind the same auth.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::Request;
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use tonic::transport::Endpoint;
use tonic::{Code, Status};
use wrenn_control::auth::AuthenticatedKey;
use wrenn_control::client::bearer;
use wrenn_control::{BoxError, Extension, ExtensionContext};
use wrenn_proto::filesystem::filesystem_client::FilesystemClient;
use wrenn_proto::filesystem::filesystem_server::{Filesystem, FilesystemServer};
use wrenn_proto::filesystem::*;

use crate::common::{FakeAgent, TestControl};

/// A `filesystem.Filesystem` whose Stat answers from the extension.
struct ExtFs;

type Unused<T> = tokio_stream::wrappers::ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl Filesystem for ExtFs {
    async fn stat(
        &self,
        r: tonic::Request<StatRequest>,
    ) -> Result<tonic::Response<StatResponse>, Status> {
        let who = r
            .extensions()
            .get::<AuthenticatedKey>()
            .map(|k| k.name.clone())
            .unwrap_or_default();
        let entry = EntryInfo {
            name: format!("from-extension for {who}"),
            path: r.into_inner().path,
            ..Default::default()
        };
        Ok(tonic::Response::new(StatResponse { entry: Some(entry) }))
    }
    async fn make_dir(
        &self,
        _: tonic::Request<MakeDirRequest>,
    ) -> Result<tonic::Response<MakeDirResponse>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn r#move(
        &self,
        _: tonic::Request<MoveRequest>,
    ) -> Result<tonic::Response<MoveResponse>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn list_dir(
        &self,
        _: tonic::Request<ListDirRequest>,
    ) -> Result<tonic::Response<ListDirResponse>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn remove(
        &self,
        _: tonic::Request<RemoveRequest>,
    ) -> Result<tonic::Response<RemoveResponse>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn create_watcher(
        &self,
        _: tonic::Request<CreateWatcherRequest>,
    ) -> Result<tonic::Response<CreateWatcherResponse>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn get_watcher_events(
        &self,
        _: tonic::Request<GetWatcherEventsRequest>,
    ) -> Result<tonic::Response<GetWatcherEventsResponse>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn remove_watcher(
        &self,
        _: tonic::Request<RemoveWatcherRequest>,
    ) -> Result<tonic::Response<RemoveWatcherResponse>, Status> {
        Err(Status::unimplemented("no"))
    }
    type WatchDirStream = Unused<WatchDirResponse>;
    async fn watch_dir(
        &self,
        _: tonic::Request<WatchDirRequest>,
    ) -> Result<tonic::Response<Self::WatchDirStream>, Status> {
        Err(Status::unimplemented("no"))
    }
    type ReadStream = Unused<ReadResponse>;
    async fn read(
        &self,
        _: tonic::Request<ReadRequest>,
    ) -> Result<tonic::Response<Self::ReadStream>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn write(
        &self,
        _: tonic::Request<tonic::Streaming<WriteRequest>>,
    ) -> Result<tonic::Response<WriteResponse>, Status> {
        Err(Status::unimplemented("no"))
    }
}

#[derive(Default)]
struct Flags {
    started: AtomicBool,
    stopped: AtomicBool,
}

struct Demo(Arc<Flags>);

impl Extension for Demo {
    fn name(&self) -> &str {
        "demo"
    }

    fn install(self: Box<Self>, ctx: &mut ExtensionContext<'_>) -> Result<(), BoxError> {
        ctx.add_grpc_service(FilesystemServer::new(ExtFs));
        let hosts = ctx.hosts().iter().count();
        ctx.add_http_routes(
            axum::Router::new()
                .route(
                    "/ext/hello",
                    get(|req: Request| async move {
                        let who = req
                            .extensions()
                            .get::<AuthenticatedKey>()
                            .map(|k| k.name.clone())
                            .unwrap_or_default();
                        format!("hello {who}")
                    }),
                )
                .route(
                    "/ext/public/ping",
                    get(move || async move { format!("pong from {hosts} host(s)") }),
                ),
        );
        ctx.allow_unauthenticated("/ext/public/");
        let token = ctx.shutdown_token();
        let flags = self.0;
        ctx.spawn("demo-task", async move {
            flags.started.store(true, Ordering::SeqCst);
            token.cancelled().await;
            flags.stopped.store(true, Ordering::SeqCst);
        });
        Ok(())
    }
}

struct Broken;

impl Extension for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn install(self: Box<Self>, _: &mut ExtensionContext<'_>) -> Result<(), BoxError> {
        Err("missing configuration file /etc/demo.toml".into())
    }
}

async fn http_get(url: &str, key: Option<&str>) -> (http::StatusCode, http::HeaderMap, String) {
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = http::Request::get(url);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let res = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_11);
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn an_extension_adds_a_service_routes_and_a_task() {
    let agent = FakeAgent::start().await;
    let flags = Arc::new(Flags::default());
    let t = TestControl::start_with(&agent.url(), |o| o.with_extension(Demo(flags.clone()))).await;

    // The gRPC service, with and without a key.
    let channel = Endpoint::from_shared(t.control.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut authed = FilesystemClient::with_interceptor(channel.clone(), bearer(&t.key).unwrap());
    let res = authed
        .stat(StatRequest { path: "/x".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(res.entry.unwrap().name, "from-extension for admin");
    let err = FilesystemClient::new(channel.clone())
        .stat(StatRequest { path: "/x".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // The built-in services are still there.
    let mut c = t.client().await;
    c.sandboxes
        .list(wrenn_proto::wrenn::v1::ListSandboxesRequest::default())
        .await
        .unwrap();

    // HTTP/1.1 routes.
    let base = t.control.url();
    let (status, _, body) = http_get(&format!("{base}/ext/hello"), Some(&t.key)).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "hello admin"));
    let (status, headers, body) = http_get(&format!("{base}/ext/hello"), None).await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (401, "missing or invalid API key\n")
    );
    assert_eq!(headers.get("www-authenticate").unwrap(), "Bearer");
    let (status, _, body) = http_get(&format!("{base}/ext/public/ping"), None).await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, "pong from 1 host(s)")
    );

    assert!(
        flags.started.load(Ordering::SeqCst),
        "background task runs once listening"
    );
    assert!(!flags.stopped.load(Ordering::SeqCst));
    t.stop().await;
    assert!(
        flags.stopped.load(Ordering::SeqCst),
        "background task saw the shutdown"
    );
}

#[tokio::test]
async fn a_failing_extension_stops_the_start_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let opts = wrenn_control::Options::new(dir.path())
        .with_listen("127.0.0.1:0".parse().unwrap())
        .with_agent("http://127.0.0.1:1")
        .with_extension(Broken);
    let err = wrenn_control::start(opts).await.unwrap_err();
    assert_eq!(
        wrenn_control::Chain(&err).to_string(),
        "extension broken failed to install: missing configuration file /etc/demo.toml"
    );
}
