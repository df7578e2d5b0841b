//! Harness: the agent as a child process, clients, stream helpers, test users.

mod agent;
mod events;
mod users;

pub use agent::*;
pub use events::*;
pub use users::*;
