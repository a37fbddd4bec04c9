//! The runner's IPC: newline-delimited JSON over the VM's socket.
//!
//! Request: `{"id":1,"method":"qmp","params":{"execute":"query-status"}}`
//! Reply:   `{"id":1,"result":…}` or `{"id":1,"error":{"kind":…,"message":…}}`
//! An `events` request is answered once, then streams `{"id":N,"event":…}`.
//! The requests are the typed [`protocol::Call`]; [`IpcClient`] has a
//! method for each. [`qmp_endpoint`] serves plain QMP for standard clients.

pub mod client;
pub mod protocol;
pub mod qmp_endpoint;
pub mod server;
pub mod slots;

pub use client::{IpcClient, IpcError};
pub use protocol::{ErrorBody, ErrorKind, Request, Response, StatusInfo, StopOutcome};
