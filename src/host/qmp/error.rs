//! QMP client errors.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Reading or writing the socket failed (during the handshake; later failures close the
    /// connection and surface as `Disconnected`).
    #[error("QMP I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// QEMU sent something that is not valid QMP (bad JSON, an unexpected message).
    #[error("QMP protocol error: {0}")]
    Protocol(String),

    /// QEMU answered the command with an error.
    #[error("QEMU rejected the command: {desc} ({class})")]
    Command { class: String, desc: String },

    /// The connection is gone: QEMU exited or closed its monitor.
    #[error("QMP connection closed (QEMU exited or closed its monitor)")]
    Disconnected,

    /// No reply (or no greeting) within the given time.
    #[error("no answer from QEMU's QMP monitor within {0:?}")]
    Timeout(Duration),
}
