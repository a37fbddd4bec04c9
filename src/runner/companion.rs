//! `maqet-runner --companion-stopped NAME UNIT`: the `ExecStopPost=` of a
//! VM's helper unit (swtpm). systemd runs it after the helper ended, with
//! `SERVICE_RESULT`, `EXIT_CODE` and `EXIT_STATUS` set; when the helper
//! failed it tells the VM's runner (`companion_failed`), which stops the
//! VM and exits as failed, naming the cause.
//!
//! Why this and not `BindsTo=` from the VM to the helper: a stop that
//! propagates through `BindsTo=` is a stop *job* on the VM, which ends it
//! as `success` (exit 100) and, worse, cancels the restart a killed runner
//! was to get (the helper stops with the dying VM, and the stop came back
//! as a job; see docs/architecture.md, "Restart policy"). A helper that
//! ended cleanly (its VM stopping took it along) reports nothing.

use std::time::Duration;

use maqet_base::paths::{DataDir, VmRuntime};
use maqet_base::vmname::VmName;
use maqet_host::ipc::protocol::CompanionFailure;
use maqet_host::ipc::IpcClient;

/// Bound on reaching the runner: the helper's stop waits for this.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reports the end of `unit` to `vm`'s runner if it failed; the exit code
/// is always 0 (the helper's own result is what systemd records).
pub fn report_stop(vm: &VmName, unit: &str, data_dir: Option<&DataDir>) -> i32 {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let result = env("SERVICE_RESULT");
    if result.is_empty() || result == "success" {
        return 0;
    }
    let failure = CompanionFailure {
        unit: unit.to_string(),
        result,
        exit_code: env("EXIT_CODE"),
        exit_status: env("EXIT_STATUS"),
        at_usec: maqet_base::time::now_unix_usec(),
    };
    tracing::warn!("{}; telling VM '{vm}'", failure.describe());
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!("cannot report it: {e}");
            return 0;
        }
    };
    // The timer is made inside the runtime (it needs its reactor).
    let told = rt.block_on(async {
        tokio::time::timeout(REPORT_TIMEOUT, tell(vm, data_dir, failure)).await
    });
    match told {
        Ok(Ok(())) => {}
        // The VM is already gone (it ended first, or never came up).
        Ok(Err(e)) => tracing::info!("VM '{vm}' was not told: {e}"),
        Err(_) => tracing::info!("VM '{vm}' did not answer within {REPORT_TIMEOUT:?}"),
    }
    0
}

async fn tell(
    vm: &VmName,
    data_dir: Option<&DataDir>,
    failure: CompanionFailure,
) -> Result<(), String> {
    let socket = VmRuntime::locate(vm).map_err(|e| e.to_string())?.control();
    let mut c = IpcClient::connect(&socket)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(d) = data_dir {
        maqet_vm::owner::verify_runner(&mut c, vm, d.path())
            .await
            .map_err(|e| e.to_string())?;
    }
    c.companion_failed(failure).await.map_err(|e| e.to_string())
}
