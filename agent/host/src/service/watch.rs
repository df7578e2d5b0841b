//! WatchSandboxes: a snapshot (`KIND_EXISTING`…, `KIND_SYNCED`), then live
//! lifecycle events (see [`crate::manager::events`]).

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tonic::Status;
use wrenn_proto::wrenn::v1::{SandboxEvent, sandbox_event::Kind};

use super::relay::{self, RelayStream};
use crate::manager::Manager;
use crate::manager::events::event;

pub fn watch(m: &Arc<Manager>) -> RelayStream<SandboxEvent> {
    let (snapshot, mut live) = m.events.subscribe(|| m.list());
    let (tx, rx) = relay::channel();
    let stop = m.shutdown_token().clone();
    tokio::spawn(async move {
        let snapshot = snapshot
            .into_iter()
            .map(|sb| event(Kind::Existing, Some(sb)))
            .chain([event(Kind::Synced, None)]);
        for ev in snapshot {
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
        }
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => {
                    let _ = tx.try_send(Err(Status::unavailable("the host agent is shutting down")));
                    return;
                }
                _ = tx.closed() => return,
                ev = live.recv() => ev,
            };
            let item = match next {
                Ok(ev) => Ok(ev),
                Err(RecvError::Lagged(n)) => Err(Status::data_loss(format!(
                    "watcher fell {n} events behind; watch again for a fresh snapshot"
                ))),
                Err(RecvError::Closed) => return,
            };
            let last = item.is_err();
            tokio::select! {
                _ = stop.cancelled() => return,
                sent = tx.send(item) => if sent.is_err() || last { return },
            }
        }
    });
    rx
}
