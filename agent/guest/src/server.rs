//! Wiring: init, reaper, template defaults, services, health (held back by
//! the template's READY), START, the listener, and shutdown.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use wrenn_proto::auth::RequireBearer;
use wrenn_proto::filesystem::filesystem_server::FilesystemServer;
use wrenn_proto::process::process_server::ProcessServer;
use wrenn_proto::wrenn::v1::guest_server::GuestServer;

use crate::assign::GuestService;
use crate::config::Config;
use crate::env::BaseEnv;
use crate::envd::{AccessToken, Envd};
use crate::fs::FilesystemService;
use crate::process::{END_RETENTION, ProcessService, ProcessTable};
use crate::reaper::Reaper;
use crate::shutdown::{StopSignals, stop_processes};
use crate::template::Launcher;
use crate::users::UserDb;
use crate::{init, shutdown, template};

/// HTTP/2 flow-control windows: large enough that a file transfer is not
/// throttled by round trips, small enough to bound memory per stream.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 8 << 20;
/// One channel per sandbox carries every stream; do not make streams queue.
const MAX_CONCURRENT_STREAMS: u32 = 4096;
/// HTTP/2 pings that detect vanished clients (their streams then end).
const HTTP2_KEEPALIVE: Duration = Duration::from_secs(30);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Reads the credential calls must present.
fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = token.trim().to_owned();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        path.display()
    );
    Ok(token)
}

/// Whether a connection's peer may talk to the agent (`allowed` empty: all).
fn peer_allowed(stream: &tokio::net::TcpStream, allowed: &[std::net::IpAddr]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match stream.peer_addr() {
        Ok(peer) if allowed.contains(&peer.ip()) => true,
        Ok(peer) => {
            tracing::debug!(%peer, "refused a connection from outside the host");
            false
        }
        Err(_) => false,
    }
}

/// Runs the agent until a stop signal; returns after stopping its processes.
pub async fn run(config: Config, base_env: BaseEnv) -> anyhow::Result<()> {
    // READY's timeout counts from here.
    let started = tokio::time::Instant::now();
    let pid1 = std::process::id() == 1;
    init::prepare(pid1);
    let reaper = Reaper::start()?;
    let mut stop = StopSignals::install().context("installing the SIGTERM/SIGINT handlers")?;
    let users = Arc::new(UserDb::system());
    let table = ProcessTable::new(reaper.clone(), END_RETENTION);
    let keepalive = config.keepalive();
    let template = Arc::new(if config.no_template {
        tracing::info!("template defaults ignored (a template build's sandbox)");
        template::Template::default()
    } else {
        template::load_or_none(&config.template_file)
    });
    let base_env = Arc::new(base_env.with_template(&template.env));
    let token = AccessToken::new(config.envd_access_token.clone());
    let guest = GuestService::new(base_env.clone(), "/etc/hosts".into(), token.clone());
    let process = ProcessService::new(
        table.clone(),
        users.clone(),
        base_env.clone(),
        template.clone(),
        keepalive,
    );
    let launcher = Launcher::new(
        table.clone(),
        reaper.clone(),
        users.clone(),
        base_env,
        template.clone(),
    );
    let filesystem = FilesystemService::new(users.clone(), keepalive);
    let envd = Envd::new(process.clone(), filesystem.clone(), users, template, token);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let auth = match &config.token_file {
        Some(path) => Some(RequireBearer::new(&read_token(path)?)),
        None => None,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let allowed = config.allow_peer.clone();
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .filter(move |conn| match conn {
            Ok(stream) => peer_allowed(stream, &allowed),
            Err(_) => true,
        });
    // envd's HTTP interface first: its calls carry the access token, not
    // the host's bearer credential, and may be HTTP/1.1.
    let router = Server::builder()
        .accept_http1(true)
        .layer(envd)
        .layer(tower::util::option_layer(auth))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .add_service(health_service)
        .add_service(ProcessServer::new(process))
        .add_service(FilesystemServer::new(filesystem))
        .add_service(GuestServer::new(guest));
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = server_stopped.await;
    }));

    health.set_serving::<ProcessServer<ProcessService>>().await;
    health
        .set_serving::<FilesystemServer<FilesystemService>>()
        .await;
    launcher.start();
    // With READY, `""` turns SERVING when it passes; the services above
    // serve meanwhile (the host may exec into a sandbox not yet ready).
    let ready_gate = launcher.gate_ready(health.clone(), started);
    if ready_gate.is_none() {
        health.set_service_status("", ServingStatus::Serving).await;
    }
    if config.print_addr {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{addr}")
            .and_then(|()| stdout.flush())
            .context("printing the address")?;
    }
    tracing::info!(%addr, pid1, keepalive_secs = config.keepalive_secs, "serving");
    let forwarder = config.forward_localhost.then(|| {
        crate::forward::Forwarder::spawn(crate::forward::Settings {
            scan: config.forward_scan(),
            excluded: vec![addr.port(), wrenn_proto::GUEST_PORT],
        })
    });

    let signal = tokio::select! {
        signal = stop.recv() => signal,
        result = &mut server => {
            result.context("the gRPC server task failed")?.context("the gRPC server failed")?;
            anyhow::bail!("the gRPC server stopped unexpectedly");
        }
    };
    tracing::info!(
        signal,
        grace_secs = shutdown::GRACE.as_secs(),
        "shutting down"
    );
    if let Some(gate) = ready_gate {
        gate.abort();
    }
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_not_serving::<ProcessServer<ProcessService>>()
        .await;
    health
        .set_not_serving::<FilesystemServer<FilesystemService>>()
        .await;
    if let Some(f) = forwarder {
        f.stop().await;
    }
    stop_processes(&table, &reaper, pid1).await;
    let _ = stop_server.send(());
    tracing::info!("stopped");
    Ok(())
}
