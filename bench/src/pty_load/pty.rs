//! One interactive PTY session through the control plane (`Sandboxes.Pty`):
//! a raw-mode `cat` that echoes each keystroke, as a shell does.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use wrenn_proto::process::process_event::{Event, data_event};
use wrenn_proto::process::{ProcessConfig, Pty, Signal, StartRequest, pty};
use wrenn_proto::wrenn::v1::{PtyRequest, PtyResponse, PtyStart, pty_request};

use crate::platform::Client;

const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PtyEcho {
    input: mpsc::Sender<PtyRequest>,
    output: tonic::Streaming<PtyResponse>,
}

impl PtyEcho {
    /// Starts `cat` on a PTY in raw mode and waits until it is ready.
    pub async fn start(client: &mut Client, id: &str) -> anyhow::Result<Self> {
        let (input, rx) = mpsc::channel(16);
        let start = PtyStart {
            sandbox_id: id.to_owned(),
            start: Some(StartRequest {
                process: Some(ProcessConfig {
                    cmd: "/bin/sh".into(),
                    args: vec!["-c".into(), "stty raw -echo; echo ready; exec cat".into()],
                    ..Default::default()
                }),
                pty: Some(Pty {
                    size: Some(pty::Size { cols: 80, rows: 24 }),
                }),
                ..Default::default()
            }),
        };
        input
            .send(PtyRequest {
                event: Some(pty_request::Event::Start(start)),
            })
            .await?;
        let output = client
            .pty(ReceiverStream::new(rx))
            .await
            .context("opening a PTY")?
            .into_inner();
        let mut p = PtyEcho { input, output };
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("ready") {
            seen.extend(p.next_output().await?);
        }
        Ok(p)
    }

    async fn next_output(&mut self) -> anyhow::Result<Vec<u8>> {
        loop {
            let m = tokio::time::timeout(ECHO_TIMEOUT, self.output.next())
                .await
                .context("no PTY output within 10 s")?
                .context("the PTY stream ended")??;
            match m.event.and_then(|e| e.event) {
                Some(Event::Data(d)) => {
                    if let Some(data_event::Output::Pty(b)) = d.output {
                        return Ok(b);
                    }
                }
                Some(Event::End(end)) => bail!("the PTY process ended: {}", end.status),
                _ => {}
            }
        }
    }

    /// Types `key` and waits until it comes back, for at most `limit`
    /// (`None`: it did not come back in time).
    pub async fn echo(&mut self, key: u8, limit: Duration) -> anyhow::Result<Option<Duration>> {
        let t = Instant::now();
        self.input
            .send(PtyRequest {
                event: Some(pty_request::Event::Input(vec![key])),
            })
            .await
            .context("the PTY input stream closed")?;
        let wait = async {
            loop {
                if self.next_output().await?.contains(&key) {
                    return anyhow::Ok(t.elapsed());
                }
            }
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Ends the session: the process is killed (best effort; the sandbox
    /// goes away at the end of the run anyway).
    pub async fn close(self) {
        let kill = PtyRequest {
            event: Some(pty_request::Event::Signal(Signal::Sigkill as i32)),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), self.input.send(kill)).await;
    }
}
