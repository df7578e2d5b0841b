//! PTY sessions: one bidirectional stream per terminal.
//!
//! The first request starts a process on a terminal (`start`) or attaches to
//! a running one (`attach`). Output flows guest → caller through a relay;
//! input flows caller → guest over one `StreamInput` call (opened at the first
//! keystroke, so order is kept without a round trip per keystroke); resizes
//! and signals are single calls. A caller that goes away leaves the process
//! running: it can be attached to again.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, Streaming};
use tracing::debug;
use wrenn_proto::process::{
    self as pp, ConnectRequest, ConnectResponse, ProcessEvent, ProcessInput, ProcessSelector,
    StartResponse, StreamInputRequest, process_event::Event, process_input::Input,
    process_selector::Selector, stream_input_request as si,
};
use wrenn_proto::wrenn::v1::{self as pb, pty_request};

use super::exec::{check_start, start_process};
use super::relay::{self, RELAY_CAPACITY, RelayStream};
use super::{AgentService, guest_err, invalid, selector};
use crate::guest::Guest;
use crate::manager::Sandbox;

type Out = mpsc::Sender<Result<pb::PtyResponse, Status>>;

pub async fn pty(
    svc: &AgentService,
    mut inbound: Streaming<pb::PtyRequest>,
) -> Result<RelayStream<pb::PtyResponse>, Status> {
    let first = inbound
        .message()
        .await?
        .and_then(|m| m.event)
        .ok_or_else(|| invalid("event", "the first message must be start or attach"))?;
    let (tx, rx) = relay::channel();
    // Cancelled when the output relay ends, which ends the input side too.
    let output_done = CancellationToken::new();
    let (sb, guest, process) = match first {
        pty_request::Event::Start(s) => {
            let (sb, guest) = svc.running(&s.sandbox_id)?;
            let start = check_start("start.start", s.start, true)?;
            let (pid, events) = start_process(&sb, &guest, start).await?;
            let first = ProcessEvent {
                event: Some(Event::Start(pp::process_event::StartEvent { pid })),
            };
            let upstream =
                futures::stream::iter([Ok(StartResponse { event: Some(first) })]).chain(events);
            let map = |r: StartResponse| Some(pb::PtyResponse { event: r.event });
            spawn_output(
                relay::forward(sb.clone(), upstream, map, tx.clone()),
                &output_done,
            );
            let process = ProcessSelector {
                selector: Some(Selector::Pid(pid)),
            };
            (sb, guest, process)
        }
        pty_request::Event::Attach(a) => {
            let (sb, guest) = svc.running(&a.sandbox_id)?;
            let process = selector("attach.process", a.process)?;
            let events = guest
                .process()
                .connect(ConnectRequest {
                    process: Some(process.clone()),
                })
                .await
                .map_err(|s| guest_err(&sb, s))?
                .into_inner();
            let map = |r: ConnectResponse| Some(pb::PtyResponse { event: r.event });
            spawn_output(
                relay::forward(sb.clone(), events, map, tx.clone()),
                &output_done,
            );
            (sb, guest, process)
        }
        _ => {
            return Err(invalid(
                "event",
                "the first message must be start or attach",
            ));
        }
    };
    tokio::spawn(input_loop(sb, guest, process, inbound, tx, output_done));
    Ok(rx)
}

fn spawn_output(relay: impl Future<Output = ()> + Send + 'static, done: &CancellationToken) {
    let guard = done.clone().drop_guard();
    tokio::spawn(async move {
        relay.await;
        drop(guard);
    });
}

/// Carries the caller's input, resizes and signals to the guest until the
/// caller stops sending, the session's output ends, or the sandbox goes.
async fn input_loop(
    sb: Arc<Sandbox>,
    guest: Guest,
    process: ProcessSelector,
    mut inbound: Streaming<pb::PtyRequest>,
    out: Out,
    output_done: CancellationToken,
) {
    let mut input: Option<mpsc::Sender<StreamInputRequest>> = None;
    loop {
        let msg = tokio::select! {
            _ = sb.cancel.cancelled() => return,
            _ = output_done.cancelled() => return,
            _ = out.closed() => return,
            m = inbound.message() => m,
        };
        let ev = match msg {
            Ok(Some(m)) => m.event,
            Ok(None) => return,
            Err(s) => {
                debug!(sandbox_id = %sb.id, status = %s.message(), "pty caller stream failed");
                return;
            }
        };
        let res = match ev {
            Some(pty_request::Event::Input(bytes)) => {
                let tx = input
                    .get_or_insert_with(|| open_input(&sb, &guest, &process, &out, &output_done));
                let data = StreamInputRequest {
                    event: Some(si::Event::Data(si::DataEvent {
                        input: Some(ProcessInput {
                            input: Some(Input::Pty(bytes)),
                        }),
                    })),
                };
                tokio::select! {
                    _ = sb.cancel.cancelled() => return,
                    sent = tx.send(data) => if sent.is_err() { return },
                }
                Ok(())
            }
            Some(pty_request::Event::Resize(size)) => resize(&guest, &process, size).await,
            Some(pty_request::Event::Signal(n)) => match pp::Signal::try_from(n) {
                Ok(sig) if sig != pp::Signal::Unspecified => guest
                    .process()
                    .send_signal(pp::SendSignalRequest {
                        process: Some(process.clone()),
                        signal: sig as i32,
                    })
                    .await
                    .map(drop)
                    .map_err(Fail::Guest),
                _ => Err(Fail::Caller(invalid(
                    "signal",
                    format!("{n} is not a known signal"),
                ))),
            },
            Some(pty_request::Event::Start(_) | pty_request::Event::Attach(_)) => {
                Err(Fail::Caller(invalid(
                    "event",
                    "start and attach are only allowed as the first message",
                )))
            }
            None => Err(Fail::Caller(invalid("event", "empty message"))),
        };
        match res {
            Ok(()) => {}
            // A caller mistake ends the session with its error.
            Err(Fail::Caller(s)) => {
                let _ = out.send(Err(s)).await;
                return;
            }
            // The guest refusing a resize or signal (say, the process just
            // exited) does not: the output stream tells how the process ended.
            Err(Fail::Guest(s)) => {
                debug!(sandbox_id = %sb.id, status = %s.message(), "pty control message refused by the guest");
            }
        }
    }
}

/// Why a control message failed: the caller's fault or the guest's answer.
enum Fail {
    Caller(Status),
    Guest(Status),
}

async fn resize(guest: &Guest, process: &ProcessSelector, size: pp::pty::Size) -> Result<(), Fail> {
    if size.cols == 0 || size.rows == 0 {
        return Err(Fail::Caller(invalid(
            "resize",
            "cols and rows must both be above 0",
        )));
    }
    guest
        .process()
        .update(pp::UpdateRequest {
            process: Some(process.clone()),
            pty: Some(pp::Pty { size: Some(size) }),
        })
        .await
        .map(drop)
        .map_err(Fail::Guest)
}

/// Opens the guest's `StreamInput` for `process`; returns where to send input.
fn open_input(
    sb: &Arc<Sandbox>,
    guest: &Guest,
    process: &ProcessSelector,
    out: &Out,
    output_done: &CancellationToken,
) -> mpsc::Sender<StreamInputRequest> {
    let (tx, rx) = mpsc::channel(RELAY_CAPACITY);
    let start = StreamInputRequest {
        event: Some(si::Event::Start(si::StartEvent {
            process: Some(process.clone()),
        })),
    };
    tx.try_send(start).expect("a new channel has room");
    let (sb, mut client, out) = (sb.clone(), guest.process(), out.clone());
    let output_done = output_done.clone();
    tokio::spawn(async move {
        let call = client.stream_input(ReceiverStream::new(rx));
        let res = tokio::select! {
            _ = sb.cancel.cancelled() => return,
            r = call => r,
        };
        match res {
            Ok(_) => {}
            // The process ended or closed its input: the output stream says
            // how it ended; an error here would only race with that.
            Err(s) if matches!(s.code(), Code::FailedPrecondition | Code::NotFound) => {
                debug!(sandbox_id = %sb.id, status = %s.message(), "pty input closed by the guest");
            }
            // Otherwise input that cannot reach the process ends the session
            // visibly (unless it is over anyway).
            Err(s) if !output_done.is_cancelled() => {
                let _ = out.send(Err(guest_err(&sb, s))).await;
            }
            Err(_) => {}
        }
    });
    tx
}
