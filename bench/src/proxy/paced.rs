//! Added latency at a moderate, steady load: wrk runs every door as fast as
//! it can, so its percentiles at 256 connections are queueing behind a
//! saturated CPU. Here 256 keep-alive connections each send one request per
//! period, spread evenly, so the total is [`RATE`] requests/s whatever the
//! door. Latency is taken from the write of each request to the end of its
//! response: tokio's timers fire up to a millisecond late, which taken from
//! the due time would swamp what is measured; at a tenth of capacity a send
//! is rarely held up by the previous response on its connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::pty_load::load::{connect, get};
use crate::stats::{Latencies, Summary};
use crate::testbed::{Bed, Door};

pub const CONNECTIONS: usize = 256;
/// Requests per second over all connections: about a tenth of what the
/// proxy serves flat out on this machine.
pub const RATE: u32 = 2000;

/// Paced 1 KiB GETs through `door` for `length`; the latencies' summary.
pub async fn run(bed: &Bed, door: Door, length: Duration) -> anyhow::Result<Summary> {
    let (addr, target, host) = bed.target(door, "/1k");
    let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
    let period = Duration::from_secs(CONNECTIONS as u64) / RATE;
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = JoinSet::new();
    for i in 0..CONNECTIONS {
        let request = request.clone();
        let first = start + period.mul_f64(i as f64 / CONNECTIONS as f64);
        tasks.spawn(client(addr, request, first, period, start + length));
    }
    let mut all = Latencies::new(
        door.name(),
        RATE as usize * length.as_secs().max(1) as usize,
    );
    while let Some(r) = tasks.join_next().await {
        for d in r?? {
            all.record(d);
        }
    }
    Ok(all.summary())
}

/// One keep-alive connection sending a request every `period` from `first` until `end`.
async fn client(
    addr: SocketAddr,
    request: Vec<u8>,
    first: Instant,
    period: Duration,
    end: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let mut tcp = connect(addr).await?;
    let mut buf = Vec::with_capacity(4096);
    let mut tick = tokio::time::interval_at(first, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut out = Vec::new();
    loop {
        if tick.tick().await >= end {
            return Ok(out);
        }
        let sent = Instant::now();
        get(&mut tcp, &mut buf, &request).await?;
        out.push(sent.elapsed());
    }
}
