//! `maqet qmp …`: QMP through the runner.

use serde_json::Value;

use crate::cli::args::{QmpCommand, QmpRunArgs};
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::cli::output::print_json;
use crate::ipc::client::started_by;
use crate::ipc::IpcError;
use crate::vm::VmError;
use crate::vmname::VmName;

mod tools;

pub async fn run(ctx: &Ctx, c: QmpCommand) -> Result<(), CliError> {
    match c {
        QmpCommand::Run(a) => run_command(ctx, a).await,
        QmpCommand::Keys(a) => tools::keys(ctx, a).await,
        QmpCommand::Type(a) => tools::type_text(ctx, a).await,
        QmpCommand::Screendump(a) => tools::screendump(ctx, a).await,
        QmpCommand::Pause(a) => tools::pause(ctx, a).await,
        QmpCommand::Resume(a) => tools::resume(ctx, a).await,
        QmpCommand::DeviceAdd(a) => tools::device_add(ctx, a).await,
        QmpCommand::DeviceDel(a) => tools::device_del(ctx, a).await,
        QmpCommand::Socket(a) => socket(ctx, &a.name).await,
        QmpCommand::Shorthand(words) => run_command(ctx, shorthand(words)?).await,
    }
}

/// The runner is the one that knows whether it serves a QMP socket: one
/// started by an older maqet (protocol 1) does not.
async fn socket(ctx: &Ctx, name: &str) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(name)?;
    match ctx.vms().await?.qmp_socket(&vm).await {
        Ok(path) => {
            println!("{}", path.display());
            Ok(())
        }
        Err(VmError::Ipc(e @ IpcError::Outdated { .. })) => {
            Err(outdated(&vm, "maqet qmp socket", e))
        }
        Err(e) => Err(e.into()),
    }
}

/// [`IpcError::Outdated`] in the user's terms: which VM, which command, and
/// the restart that brings a runner that speaks the newer protocol.
pub fn outdated(vm: &VmName, command: &str, e: IpcError) -> CliError {
    match e {
        IpcError::Outdated {
            runner,
            maqet_version,
            need,
        } => CliError::conflict(format!(
            "the runner of VM '{vm}' speaks protocol {runner} (started by {}); `{command}` needs {}: restart the VM with `maqet restart {vm}` to use it",
            started_by(&maqet_version),
            need.since()
        )),
        other => other.into(),
    }
}

/// `qmp run`'s ARGS_JSON: a JSON object or nothing.
pub fn arguments(text: Option<&str>) -> Result<Option<Value>, CliError> {
    match text {
        None => Ok(None),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => Ok(Some(v)),
            Ok(_) => Err(CliError::usage(
                "ARGS_JSON must be a JSON object, e.g. '{\"id\": \"dev0\"}'",
            )),
            Err(e) => Err(CliError::usage(format!("ARGS_JSON is not valid JSON: {e}"))),
        },
    }
}

async fn run_command(ctx: &Ctx, a: QmpRunArgs) -> Result<(), CliError> {
    let arguments = arguments(a.arguments.as_deref())?;
    let (vm, _) = ctx.vm(&a.name)?;
    let v = ctx.vms().await?.qmp(&vm, &a.command, arguments).await?;
    print_json(&v);
    Ok(())
}

/// `maqet qmp VM COMMAND [ARGS_JSON]` (the original tool's README form).
fn shorthand(words: Vec<String>) -> Result<QmpRunArgs, CliError> {
    let mut it = words.into_iter();
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(name), Some(command), arguments, None) => Ok(QmpRunArgs {
            name,
            command,
            arguments,
        }),
        _ => Err(CliError::usage(
            "usage: maqet qmp run VM COMMAND [ARGS_JSON] (or the short form maqet qmp VM COMMAND [ARGS_JSON]); see `maqet qmp --help`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{Cli, Command};
    use clap::Parser;

    fn parse(argv: &[&str]) -> QmpCommand {
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Qmp(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shorthand_is_qmp_run() {
        let QmpCommand::Shorthand(w) = parse(&["maqet", "qmp", "web", "query-status"]) else {
            panic!("not the shorthand")
        };
        let a = shorthand(w).unwrap();
        assert_eq!(
            (a.name.as_str(), a.command.as_str(), a.arguments),
            ("web", "query-status", None)
        );
        let QmpCommand::Shorthand(w) =
            parse(&["maqet", "qmp", "web", "device_del", r#"{"id":"x"}"#])
        else {
            panic!("not the shorthand")
        };
        assert_eq!(
            shorthand(w).unwrap().arguments.as_deref(),
            Some(r#"{"id":"x"}"#)
        );
        let QmpCommand::Shorthand(w) = parse(&["maqet", "qmp", "web"]) else {
            panic!()
        };
        assert_eq!(
            shorthand(w).unwrap_err().code,
            crate::cli::exit::code::USAGE
        );
        assert!(matches!(
            parse(&["maqet", "qmp", "run", "web", "quit"]),
            QmpCommand::Run(_)
        ));
    }
}
