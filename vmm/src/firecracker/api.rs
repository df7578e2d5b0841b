//! A minimal HTTP/1.1 client for Firecracker's API over its Unix socket.
//!
//! One connection per request (`Connection: close`), bodies framed by
//! `Content-Length`. An answer with a status of 300 or more becomes
//! [`ApiError::Status`] carrying the method, path and response body.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::config::{
    ActionType, BootSource, Drive, InstanceAction, MachineConfig, NetworkInterface, VmState,
    VmStateValue,
};

/// Largest response accepted.
const MAX_RESPONSE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("firecracker API {method} {path}: HTTP {status}: {body}")]
    Status {
        method: &'static str,
        path: String,
        status: u16,
        body: String,
    },
    #[error("firecracker API {method} {path} over {socket}")]
    Io {
        method: &'static str,
        path: String,
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("firecracker API {method} {path}: malformed response: {reason}")]
    Malformed {
        method: &'static str,
        path: String,
        reason: String,
    },
}

/// Client of one Firecracker process's API socket.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
}

impl ApiClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        ApiClient {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Waits until the socket accepts connections.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), ApiError> {
        let start = Instant::now();
        loop {
            match UnixStream::connect(&self.socket).await {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() >= timeout => {
                    return Err(ApiError::Io {
                        method: "CONNECT",
                        path: "/".into(),
                        socket: self.socket.clone(),
                        source: e,
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    pub async fn boot_source(&self, b: &BootSource) -> Result<(), ApiError> {
        self.send("PUT", "/boot-source", b).await
    }

    pub async fn drive(&self, d: &Drive) -> Result<(), ApiError> {
        self.send("PUT", &format!("/drives/{}", d.drive_id), d)
            .await
    }

    pub async fn network_interface(&self, n: &NetworkInterface) -> Result<(), ApiError> {
        self.send("PUT", &format!("/network-interfaces/{}", n.iface_id), n)
            .await
    }

    pub async fn machine_config(&self, m: &MachineConfig) -> Result<(), ApiError> {
        self.send("PUT", "/machine-config", m).await
    }

    pub async fn action(&self, action_type: ActionType) -> Result<(), ApiError> {
        self.send("PUT", "/actions", &InstanceAction { action_type })
            .await
    }

    pub async fn vm_state(&self, state: VmStateValue) -> Result<(), ApiError> {
        self.send("PATCH", "/vm", &VmState { state }).await
    }

    /// Sends `body` as JSON; any status of 300 or more is an error.
    pub async fn send<T: Serialize>(
        &self,
        method: &'static str,
        path: &str,
        body: &T,
    ) -> Result<(), ApiError> {
        let json = serde_json::to_vec(body).map_err(|e| ApiError::Malformed {
            method,
            path: path.to_owned(),
            reason: format!("encoding the request: {e}"),
        })?;
        let (status, body) = self.request(method, path, &json).await?;
        if status >= 300 {
            return Err(ApiError::Status {
                method,
                path: path.to_owned(),
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(())
    }

    async fn request(
        &self,
        method: &'static str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), ApiError> {
        let io = |source| ApiError::Io {
            method,
            path: path.to_owned(),
            socket: self.socket.clone(),
            source,
        };
        let mut stream = UnixStream::connect(&self.socket).await.map_err(io)?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.map_err(io)?;
        stream.write_all(body).await.map_err(io)?;
        read_response(&mut stream).await.map_err(|e| match e {
            ReadError::Io(source) => io(source),
            ReadError::Malformed(reason) => ApiError::Malformed {
                method,
                path: path.to_owned(),
                reason,
            },
        })
    }
}

enum ReadError {
    Io(std::io::Error),
    Malformed(String),
}

/// Reads status line, headers and a `Content-Length` body.
async fn read_response(stream: &mut UnixStream) -> Result<(u16, Vec<u8>), ReadError> {
    let mut buf = Vec::with_capacity(512);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_RESPONSE {
            return Err(ReadError::Malformed("headers too long".into()));
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.map_err(ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Malformed(
                "connection closed before the headers ended".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ReadError::Malformed(format!("status line {status_line:?}")))?;
    let mut length: Option<usize> = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            length = Some(
                v.trim()
                    .parse()
                    .map_err(|_| ReadError::Malformed(format!("header {l:?}")))?,
            );
        }
    }
    let mut body = buf[head_end + 4..].to_vec();
    match length {
        Some(len) if len > MAX_RESPONSE => {
            return Err(ReadError::Malformed("body too long".into()));
        }
        Some(len) => {
            while body.len() < len {
                let mut chunk = vec![0u8; len - body.len()];
                let n = stream.read(&mut chunk).await.map_err(ReadError::Io)?;
                if n == 0 {
                    return Err(ReadError::Malformed(
                        "connection closed inside the body".into(),
                    ));
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
        }
        None if status == 204 || status == 304 => body.clear(),
        None => {
            stream.read_to_end(&mut body).await.map_err(ReadError::Io)?;
        }
    }
    Ok((status, body))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests;
