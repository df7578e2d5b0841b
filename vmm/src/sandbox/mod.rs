//! What every backend keeps of a sandbox, whatever runs it: its directory
//! and record on disk ([`record`]) and its first process ([`proc`]).
//! Backends build on this module; it imports none of them.

pub(crate) mod proc;
pub mod record;
