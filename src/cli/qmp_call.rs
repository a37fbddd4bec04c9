//! One QMP command through the runner, for the commands that send one
//! (`qmp …`, `power …`); QEMU's errors keep its class and words.

use std::time::Duration;

use serde_json::Value;

use crate::cli::exit::{code, CliError};
use crate::ipc::{IpcClient, IpcError};

/// Bound on a single IPC round trip for these short commands.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(35);

/// QMP errors keep QEMU's class and words, marked as QEMU's.
pub fn qmp_failure(e: IpcError) -> CliError {
    let c: CliError = e.into();
    if c.code == code::QMP_ERROR {
        CliError::new(code::QMP_ERROR, format!("QMP error: {}", c.message))
    } else {
        c
    }
}

/// One QMP command through the runner.
pub async fn call(
    client: &mut IpcClient,
    execute: &str,
    arguments: Option<Value>,
) -> Result<Value, CliError> {
    client
        .qmp_within(execute, arguments, Some(CALL_TIMEOUT))
        .await
        .map_err(qmp_failure)
}
