//! One module per command group.

pub mod exec;
pub mod files;
pub mod key;
pub mod ps;
pub mod pty;
pub mod sandbox;
pub mod serve;
pub mod template;
pub mod up;
pub mod url;
