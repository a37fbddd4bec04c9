//! SQLite store of VM *definitions*: what the user added (merged config, source files,
//! autostart) and which files maqet created for each VM.
//!
//! Runtime state (running, PIDs, uptime) deliberately lives in systemd, never here, so the
//! database can never drift from reality.

mod error;
mod schema;
mod store;
mod types;
pub mod vmlock;

#[cfg(test)]
mod tests;

pub use error::StateError;
pub use schema::SCHEMA_VERSION;
pub use store::{Store, WriteTx};
pub use types::{CreatedFile, FileIdentity, FileKind, NewVm, SaveReason, SavedState, VmRecord};
pub use vmlock::{LockError, VmLock};
