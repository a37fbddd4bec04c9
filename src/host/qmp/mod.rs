//! Async QMP (QEMU Machine Protocol) client.
//!
//! One connection is shared by every caller: commands carry a unique `id`, a reader task routes
//! replies back by id and fans events out on a broadcast channel, and a writer task sends whole
//! lines one at a time. This is what lets the runner multiplex many IPC clients over the single
//! monitor QEMU offers.

mod client;
mod error;
pub mod event;
pub mod keys;
mod message;

#[cfg(test)]
mod qemu_tests;
#[cfg(test)]
mod tests;

pub use client::QmpClient;
pub use error::QmpError;
pub use event::{EventKind, ShutdownCause};
pub use message::{parse_message, QemuVersion, QmpEvent, QmpMessage};
