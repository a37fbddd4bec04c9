//! `maqet enable|disable VM` (the autostart flag) and `maqet autostart`
//! (start every flagged VM that is not running; what
//! `maqet-autostart.service` runs at login): one call into
//! `vm/autostart.rs` each, rendered.

use serde_json::{json, Value};

use crate::cli::args::{AutostartArgs, EnableArgs};
use crate::cli::context::Ctx;
use crate::cli::exit::{code, CliError};
use crate::cli::output::{print_json, print_notice};
use crate::vm::autostart::{AutostartFailure, AutostartNow, AutostartResult, Autostarted};

/// `enable --now`: the default of `maqet start --timeout`.
const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn enable(ctx: &Ctx, a: &EnableArgs, on: bool) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let now = a.now.then_some(START_TIMEOUT);
    // Acting now needs a session; the flag alone does not.
    let done = if a.now {
        ctx.vms()
            .await?
            .set_autostart(&vm, on, now, &print_notice)
            .await?
    } else {
        ctx.vms_if_session()
            .await?
            .set_autostart(&vm, on, now, &print_notice)
            .await?
    };
    match done {
        None | Some(AutostartNow::Started) => {}
        Some(AutostartNow::Stopped(Some(outcome))) => println!("{vm}: {}", outcome.describe()),
        Some(AutostartNow::Stopped(None)) => eprintln!("{vm} is not running"),
    }
    Ok(())
}

pub async fn run(ctx: &Ctx, a: &AutostartArgs) -> Result<(), CliError> {
    let records = crate::vm::autostart::flagged(&ctx.data_dir)?;
    if records.is_empty() {
        if a.json {
            print_json(&Vec::<Value>::new());
        }
        eprintln!(
            "no VM is marked for autostart or was saved by a stop in {} (`maqet enable VM` marks one)",
            ctx.data_dir.path().display()
        );
        return Ok(());
    }
    let vms = ctx.vms().await?;
    let results = vms.autostart(&records, a.timeout, &print_notice).await;
    let failed = results.iter().filter(|r| r.outcome.is_err()).count();
    if a.json {
        print_json(&results.iter().map(result_json).collect::<Vec<_>>());
    } else {
        for r in &results {
            match &r.outcome {
                Ok(Autostarted::Started) => println!("{}: started", r.name),
                Ok(Autostarted::AlreadyRunning) => println!("{}: already running", r.name),
                Err(e) => println!("{}: failed: {}", r.name, failure(e)),
            }
        }
    }
    if failed > 0 {
        return Err(CliError::new(
            code::FAILURE,
            format!(
                "{failed} of {} autostart VMs failed to start",
                results.len()
            ),
        ));
    }
    Ok(())
}

fn failure(e: &AutostartFailure) -> String {
    match e {
        AutostartFailure::Vm(e) => crate::cli::exit::vm_message(e),
        e => e.to_string(),
    }
}

/// `--json`: `name`, `result` (`started`, `already_running`, `failed`)
/// and, for a failure, `error`.
fn result_json(r: &AutostartResult) -> Value {
    match &r.outcome {
        Ok(Autostarted::Started) => json!({"name": r.name, "result": "started"}),
        Ok(Autostarted::AlreadyRunning) => json!({"name": r.name, "result": "already_running"}),
        Err(e) => json!({"name": r.name, "result": "failed", "error": failure(e)}),
    }
}
