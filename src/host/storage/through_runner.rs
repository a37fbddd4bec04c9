//! The runner as storage's way to QEMU: a running VM's live storage
//! operations go through its runner (which owns the QMP connection and the
//! guest freeze around snapshots), so the runner's client implements
//! storage's traits.

use serde_json::Value;

use crate::ipc::protocol::{SnapshotParams, SnapshotResult};
use crate::ipc::{ErrorKind, IpcClient, IpcError};

use super::live::{QmpExec, RunnerJobs};
use super::StorageError;

/// Storage's live operations reach QEMU through the runner's `qmp`.
impl QmpExec for IpcClient {
    fn execute(
        &mut self,
        command: &str,
        arguments: Value,
    ) -> impl std::future::Future<Output = Result<Value, StorageError>> {
        let command = command.to_string();
        async move {
            // No client-side timeout: the runner bounds each QMP command and
            // says so, which keeps request and reply ids in step.
            let reply = self.qmp(&command, Some(arguments)).await;
            reply.map_err(|e| match e {
                IpcError::Remote(b) if b.kind == ErrorKind::Qmp => StorageError::Qmp {
                    command,
                    message: b.message,
                },
                IpcError::Remote(b) if b.kind == ErrorKind::Timeout => {
                    StorageError::QmpTimeout { command }
                }
                other => StorageError::Runner(other.to_string()),
            })
        }
    }
}

/// Live saves and loads run in the runner, which owns the freeze around
/// them (protocol 3); an older runner is told apart so the caller can fall
/// back to plain QMP.
impl RunnerJobs for IpcClient {
    async fn snapshot(
        &mut self,
        params: SnapshotParams,
    ) -> Result<Option<SnapshotResult>, StorageError> {
        match IpcClient::snapshot(self, params).await {
            Ok(r) => Ok(Some(r)),
            Err(IpcError::Outdated { .. }) => Ok(None),
            Err(e) => Err(StorageError::Runner(e.to_string())),
        }
    }
}
