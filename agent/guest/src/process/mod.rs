//! `process.Process`: starting processes (with pipes or a PTY), streaming their
//! output, input, signals, terminal resizes, and re-attaching to them.
//!
//! # Design
//! - Every process leads its own session (`setsid`); a PTY process has the PTY as
//!   its controlling terminal. Signals go to the process group.
//! - Exit statuses come from the single [`Reaper`](crate::reaper::Reaper).
//! - One pump task per output stream reads as data arrives (no line buffering)
//!   and hands each chunk to every attached client through that client's bounded
//!   channel of 256 events. A full channel makes the pump wait, so a slow client
//!   slows only the process it watches (and other clients of that process); the
//!   pipe or PTY then fills and the process blocks on write, as with a slow
//!   terminal.
//! - A process outlives its clients. With no client attached its output is read
//!   and discarded, so an unattended server never blocks on a full pipe.
//! - `Connect` attaches a new client that receives `start{pid}` and then output
//!   *from the moment it attached* (nothing is replayed), then `end`. Several
//!   clients may be attached at once; each gets every chunk from its attach point.
//! - A request that names no user or `cwd` gets the template's (see
//!   [`crate::template`]), else `root` and the user's home (`/` when missing).
//! - After the exit, the pumps drain what is left (until end of file, or until the
//!   stream is idle for 100 ms when descendants keep it open), then `end` is sent.
//!   The entry stays for 60 s so a reconnecting client learns how it ended; `List`
//!   shows only processes that have not ended.
//!
//! # Limitations
//! Output produced while no client is attached is lost. A tag names at most one
//! running process. Descendants that outlive the process and keep writing to its
//! stdout are cut off after the drain.

mod handle;
mod output;
mod pty;
mod request;
mod run;
mod service;
mod spawn;
mod table;

pub use request::{SpawnError, SpawnSpec};
pub use run::run_bounded;
pub use service::ProcessService;
pub use table::{END_RETENTION, ProcessTable, TableError};
