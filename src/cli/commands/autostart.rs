//! `maqet enable|disable VM` (the autostart flag in the DB) and
//! `maqet autostart` (start every flagged VM that is not running; what
//! `maqet-autostart.service` runs at login).

use crate::cli::args::{AutostartArgs, EnableArgs};
use crate::cli::context::Ctx;
use crate::cli::exit::{code, CliError};
use crate::cli::output::print_json;
use crate::cli::output::print_notice;
use crate::doctor::AUTOSTART_UNIT;
use crate::vm::autostart::AutostartResult;

/// `enable --now`: the default of `maqet start --timeout`.
const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn enable(ctx: &Ctx, a: &EnableArgs, on: bool) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    ctx.store()?.set_autostart(vm.as_str(), on)?;
    if on {
        eprintln!("{vm} will be started by `maqet autostart`");
        // The flag alone starts nothing at login without the unit.
        if let Ok(sd) = ctx.systemd().await {
            if sd
                .unit_file_state(AUTOSTART_UNIT)
                .await
                .ok()
                .flatten()
                .as_deref()
                != Some("enabled")
            {
                eprintln!(
                    "note: {AUTOSTART_UNIT} is not enabled, so nothing runs `maqet autostart` at login; \
                     install units/{AUTOSTART_UNIT} and run `systemctl --user enable {AUTOSTART_UNIT}`"
                );
            }
        }
    } else {
        eprintln!("{vm} will no longer be started by `maqet autostart`");
    }
    if a.now {
        let vms = ctx.vms().await?;
        if on {
            vms.start(&vm, START_TIMEOUT, &print_notice).await?;
        } else {
            match vms.stop(&vm, None, false).await? {
                Some(outcome) => println!("{vm}: {}", outcome.describe()),
                None => eprintln!("{vm} is not running"),
            }
        }
    }
    Ok(())
}

pub async fn run(ctx: &Ctx, a: &AutostartArgs) -> Result<(), CliError> {
    let records = crate::vm::autostart::flagged(&ctx.data_dir)?;
    if records.is_empty() {
        if a.json {
            print_json(&Vec::<AutostartResult>::new());
        }
        eprintln!(
            "no VM is marked for autostart in {} (`maqet enable VM` marks one)",
            ctx.data_dir.path().display()
        );
        return Ok(());
    }
    let vms = ctx.vms().await?;
    let results = vms.autostart(&records, a.timeout, &print_notice).await;
    let failed = results.iter().filter(|r| r.result == "failed").count();
    if a.json {
        print_json(&results);
    } else {
        for r in &results {
            match &r.error {
                Some(e) => println!("{}: failed: {e}", r.name),
                None => println!("{}: {}", r.name, r.result.replace('_', " ")),
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
