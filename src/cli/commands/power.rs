//! `maqet reset|reboot VM`.
//!
//! `reset` is QMP `system_reset`: immediate, like a reset button — the
//! guest gets no chance to sync its disks. `reboot` asks the guest instead:
//! it presses Ctrl-Alt-Delete (the one reboot request every PC guest
//! understands without an agent: Linux inits reboot cleanly, the kernel
//! alone restarts at once) and waits until the guest actually resets, so a
//! guest that ignores the request is reported rather than assumed rebooted.
//! ACPI has no reboot button to press.

use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::args::{RebootArgs, VmArg};
use crate::cli::context::Ctx;
use crate::cli::exit::{code, CliError};
use crate::ipc::IpcError;

use crate::cli::qmp_call::call;

pub async fn reset(ctx: &Ctx, a: &VmArg) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let mut client = ctx.runner(&vm).await?;
    call(&mut client, "system_reset", None).await.map(drop)
}

/// How a reboot request ended.
#[derive(Debug, PartialEq, Eq)]
enum Rebooted {
    /// RESET: the guest restarted and runs on.
    Restarted,
    /// The guest reset and `on_reboot: stop` ended the VM.
    Stopped,
}

/// Whether an event tells that the guest rebooted.
fn reboot_seen(ev: &Value) -> Option<Rebooted> {
    match ev["event"].as_str() {
        Some("RESET") => Some(Rebooted::Restarted),
        // With -no-reboot a guest reset is a shutdown for the reason "guest-reset".
        Some("SHUTDOWN") if ev["data"]["reason"] == "guest-reset" => Some(Rebooted::Stopped),
        _ => None,
    }
}

pub async fn reboot(ctx: &Ctx, a: &RebootArgs) -> Result<(), CliError> {
    let timeout = a.timeout;
    let (vm, _) = ctx.vm(&a.name)?;
    let mut events = ctx.runner(&vm).await?;
    events.events(Duration::from_secs(10)).await?;
    let mut client = ctx.runner(&vm).await?;
    let st = call(&mut client, "query-status", None).await?;
    if st["status"] != "running" {
        return Err(CliError::conflict(format!(
            "VM '{vm}' is {}, so its guest cannot take a reboot request; resume it first, or use `maqet reset {vm}`",
            st["status"].as_str().unwrap_or("not running")
        )));
    }
    let keys: Vec<Value> = ["ctrl", "alt", "delete"]
        .iter()
        .map(|k| json!({"type": "qcode", "data": k}))
        .collect();
    call(&mut client, "send-key", Some(json!({"keys": keys}))).await?;
    let wait = async {
        loop {
            match events.next_event().await? {
                Some(ev) => {
                    if let Some(r) = reboot_seen(&ev) {
                        return Ok(Some(r));
                    }
                }
                None => return Ok::<_, IpcError>(None),
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(Ok(Some(Rebooted::Restarted))) => {
            println!("{vm}: guest rebooted");
            Ok(())
        }
        Ok(Ok(Some(Rebooted::Stopped))) => {
            println!("{vm}: guest rebooted; the VM stopped (on_reboot: stop)");
            Ok(())
        }
        Ok(Ok(None)) => {
            println!("{vm}: the VM stopped");
            Ok(())
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(CliError::new(
            code::TIMEOUT,
            format!(
                "the guest of VM '{vm}' did not reboot within {:.0}s of Ctrl-Alt-Delete (it may ignore it); `maqet reset {vm}` resets it at once",
                timeout.as_secs_f64()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reboot_events() {
        assert_eq!(
            reboot_seen(
                &json!({"event": "RESET", "data": {"guest": true, "reason": "guest-reset"}})
            ),
            Some(Rebooted::Restarted)
        );
        assert_eq!(
            reboot_seen(
                &json!({"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-reset"}})
            ),
            Some(Rebooted::Stopped)
        );
        assert_eq!(
            reboot_seen(
                &json!({"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}})
            ),
            None
        );
        assert_eq!(reboot_seen(&json!({"event": "STOP"})), None);
    }
}
