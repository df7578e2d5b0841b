//! `wrenn-bench-upstream`: the upstream the benchmarks run inside a sandbox.
//!
//! A deliberately small HTTP/1.1 server, so that it is never what limits a
//! proxy benchmark: the fixed responses are built once at start and leave in
//! one `write`; nothing is allocated per request on the hot path.
//!
//! | request | answer |
//! |---|---|
//! | `GET /1k`, `GET /64k` | a 1 KiB / 64 KiB body |
//! | `GET /bytes/<n>` | an n-byte body (n ≤ 16 MiB) |
//! | `GET /healthz` | `ok` |
//! | `GET /ws/echo` (WebSocket upgrade) | every message echoed back |
//! | `GET /ws/stream?size=S&every_ms=T` (upgrade) | an S-byte binary message every T ms |
//!
//! Usage: `wrenn-bench-upstream [--listen 0.0.0.0:8080] [--threads 2]`. It
//! prints `listening <addr>` once bound and runs until killed.
//!
//! Built for `x86_64-unknown-linux-musl` (static) by `wrenn-bench`, which
//! uploads it into the sandbox and starts it as a background process.
#![deny(unsafe_code)]

mod http;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

fn main() {
    if let Err(e) = run() {
        eprintln!("wrenn-bench-upstream: {e}");
        std::process::exit(1);
    }
}

/// Raises the open-files limit to the hard limit (a proxy benchmark holds
/// thousands of connections; sandboxes start processes with 1024); returns
/// the limit in force.
#[allow(unsafe_code)]
fn raise_fd_limit() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 0;
        }
        if l.rlim_cur < l.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: l.rlim_max,
                rlim_max: l.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                l = raised;
            }
        }
    }
    l.rlim_cur
}

fn run() -> Result<(), String> {
    let files = raise_fd_limit();
    let mut listen: SocketAddr = "0.0.0.0:8080".parse().map_err(|e| format!("{e}"))?;
    let mut threads = 2usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--listen" => {
                listen = value
                    .parse()
                    .map_err(|e| format!("--listen {value}: {e}"))?
            }
            "--threads" => {
                threads = value
                    .parse()
                    .map_err(|e| format!("--threads {value}: {e}"))?
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("building the runtime: {e}"))?;
    rt.block_on(async move {
        let socket = if listen.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|e| format!("socket: {e}"))?;
        socket
            .set_reuseaddr(true)
            .map_err(|e| format!("SO_REUSEADDR: {e}"))?;
        socket
            .bind(listen)
            .map_err(|e| format!("binding {listen}: {e}"))?;
        let listener = socket
            .listen(4096)
            .map_err(|e| format!("listening on {listen}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| format!("{e}"))?;
        println!("listening {bound} (open files limit {files})");
        let responses = Arc::new(http::Responses::new());
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => {
                    let responses = responses.clone();
                    tokio::spawn(async move {
                        let _ = http::serve(tcp, responses).await;
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
    })
}
