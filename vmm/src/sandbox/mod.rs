//! What every backend keeps of a sandbox, whatever runs it: its directory
//! and record on disk ([`record`]), its first process ([`proc`]), and the
//! table of a runtime's sandboxes and slots ([`table`]).
//! Backends build on this module; it imports none of them.

pub(crate) mod proc;
pub mod record;
pub mod table;
