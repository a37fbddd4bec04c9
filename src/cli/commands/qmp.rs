//! `maqet qmp …`: QMP through the runner.

use serde_json::Value;

use crate::cli::args::{QmpCommand, QmpRunArgs};
use crate::cli::context::Ctx;
use crate::cli::exit::{code, CliError};
use crate::cli::output::print_json;
use crate::ipc::{IpcClient, IpcError};
use crate::paths;
use crate::vmname::VmName;

use super::qmp_tools;

pub async fn run(ctx: &Ctx, c: QmpCommand) -> Result<(), CliError> {
    match c {
        QmpCommand::Run(a) => run_command(ctx, a).await,
        QmpCommand::Keys(a) => qmp_tools::keys(ctx, a).await,
        QmpCommand::Type(a) => qmp_tools::type_text(ctx, a).await,
        QmpCommand::Screendump(a) => qmp_tools::screendump(ctx, a).await,
        QmpCommand::Pause(a) => qmp_tools::pause(ctx, a).await,
        QmpCommand::Resume(a) => qmp_tools::resume(ctx, a).await,
        QmpCommand::DeviceAdd(a) => qmp_tools::device_add(ctx, a).await,
        QmpCommand::DeviceDel(a) => qmp_tools::device_del(ctx, a).await,
    }
}

/// Connects to a VM's runner, or explains that the VM is not running.
pub async fn connect(vm: &VmName) -> Result<IpcClient, CliError> {
    IpcClient::connect(&paths::socket_path(vm)?)
        .await
        .map_err(|e| match e {
            IpcError::NotRunning { .. } => CliError::conflict(format!(
                "VM '{vm}' is not running (start it with `maqet start {vm}`)"
            )),
            other => other.into(),
        })
}

async fn run_command(ctx: &Ctx, a: QmpRunArgs) -> Result<(), CliError> {
    let arguments = match &a.arguments {
        None => None,
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => Some(v),
            Ok(_) => {
                return Err(CliError::usage(
                    "ARGS_JSON must be a JSON object, e.g. '{\"id\": \"dev0\"}'",
                ))
            }
            Err(e) => return Err(CliError::usage(format!("ARGS_JSON is not valid JSON: {e}"))),
        },
    };
    let (vm, _) = ctx.vm(&a.name)?;
    let mut client = connect(&vm).await?;
    let mut params = serde_json::json!({"execute": a.command});
    if let Some(args) = arguments {
        params["arguments"] = args;
    }
    let v = client.call("qmp", params, None).await.map_err(|e| {
        let c: CliError = e.into();
        if c.code == code::QMP_ERROR {
            CliError::new(code::QMP_ERROR, format!("QMP error: {}", c.message))
        } else {
            c
        }
    })?;
    print_json(&v);
    Ok(())
}
