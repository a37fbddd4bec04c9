//! The one request the lifecycle makes of a VM's runner, as a trait: the
//! real one goes over the control socket; the vm layer's tests script it.

use std::path::Path;
use std::time::Duration;

use maqet_base::paths;
use maqet_base::vmname::VmName;
use maqet_host::ipc::{ErrorKind, IpcClient, IpcError, StopOutcome};

use super::owner::{verify_runner, OwnerError};
use super::VmError;

#[allow(async_fn_in_trait)] // awaited on the caller's task; see units.rs
pub trait Runners {
    /// Asks `vm`'s runner to stop the VM; `Ok(None)` when it cannot be
    /// reached or did not complete (the caller falls back to systemd). A
    /// runner of another data directory is refused, never stopped.
    async fn stop(
        &self,
        vm: &VmName,
        data_dir: &Path,
        timeout: Option<Duration>,
        force: bool,
        agent: bool,
        wait: Duration,
    ) -> Result<Option<StopOutcome>, VmError>;
}

/// The runners behind the control sockets.
#[derive(Debug, Default, Clone, Copy)]
pub struct IpcRunners;

impl Runners for IpcRunners {
    async fn stop(
        &self,
        vm: &VmName,
        data_dir: &Path,
        timeout: Option<Duration>,
        force: bool,
        agent: bool,
        wait: Duration,
    ) -> Result<Option<StopOutcome>, VmError> {
        let socket = paths::VmRuntime::locate(vm)?.control();
        let mut c = match IpcClient::connect(&socket).await {
            Ok(c) => c,
            Err(IpcError::NotRunning { .. }) if !socket.exists() => {
                tracing::warn!(
                    "the control socket {} is missing; stopping through systemd",
                    socket.display()
                );
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!("cannot reach the runner ({e}); asking systemd");
                return Ok(None);
            }
        };
        match verify_runner(&mut c, vm, data_dir).await {
            Ok(()) => {}
            Err(e @ OwnerError::OtherDataDir { .. }) => return Err(e.into()),
            // The unit's description said ours; a runner that cannot
            // answer `status` is stopped through systemd.
            Err(e) => {
                tracing::warn!("the runner did not answer status ({e}); asking systemd");
                return Ok(None);
            }
        }
        // The runner answers once QEMU is gone; the guest may take `timeout`.
        match c.stop(timeout, force, agent, wait).await {
            Ok(r) => Ok(Some(r.outcome)),
            Err(IpcError::Closed) => Ok(None),
            // The runner is fine and said no: asking systemd instead would
            // stop the VM with a timeout the user did not ask for.
            Err(e @ IpcError::Remote(_)) if e.remote_kind() == Some(ErrorKind::BadRequest) => {
                Err(e.into())
            }
            Err(e) => {
                tracing::warn!("runner did not complete the stop ({e}); asking systemd");
                Ok(None)
            }
        }
    }
}
