//! `maqet enable|disable VM` (the autostart flag in the DB) and
//! `maqet autostart` (start every flagged VM that is not running; what
//! `maqet-autostart.service` runs at login).

use futures_util::future::join_all;
use serde::Serialize;

use crate::cli::args::{AutostartArgs, EnableArgs};
use crate::cli::context::Ctx;
use crate::cli::exit::{code, CliError};
use crate::cli::output::print_json;
use crate::cli::output::print_notice;
use crate::doctor::AUTOSTART_UNIT;
use crate::state::VmRecord;
use crate::systemd::Systemd;
use crate::vm::{UnitOwner, Vms};
use crate::vmname::VmName;

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
            vms.start(&a.name, START_TIMEOUT, &print_notice).await?;
        } else {
            match vms.stop(&vm, None, false).await? {
                Some(outcome) => println!("{vm}: {}", outcome.describe()),
                None => eprintln!("{vm} is not running"),
            }
        }
    }
    Ok(())
}

/// What `maqet autostart` did with one VM (`--json`: stable keys).
#[derive(Debug, Serialize)]
pub struct AutostartResult {
    pub name: String,
    /// `started`, `already_running` or `failed`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub async fn run(ctx: &Ctx, a: &AutostartArgs) -> Result<(), CliError> {
    let timeout = a.timeout;
    let records: Vec<VmRecord> = match ctx.store_if_exists()? {
        Some(s) => s.list_vms()?.into_iter().filter(|r| r.autostart).collect(),
        None => Vec::new(),
    };
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
    // All at once: each start waits on its own VM's readiness.
    let results = join_all(records.iter().map(|r| start_one(&vms, r, timeout))).await;
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

async fn start_one(
    vms: &Vms<Systemd>,
    rec: &VmRecord,
    timeout: std::time::Duration,
) -> AutostartResult {
    let result = |result, error| AutostartResult {
        name: rec.name.clone(),
        result,
        error,
    };
    let vm = match VmName::new(&rec.name) {
        Ok(v) => v,
        Err(e) => return result("failed", Some(e.to_string())),
    };
    match UnitOwner::of(&vms.units, &vm, vms.data_dir.path()).await {
        // (A live unit of another data directory makes the start fail
        // with a message that says so.)
        Ok(UnitOwner::Ours(st)) if st.vm_state().is_live() => {
            return result("already_running", None)
        }
        Ok(_) => {}
        Err(e) => return result("failed", Some(e.to_string())),
    }
    // Under the VM's lock, with the definition as it is now (an `rm` may
    // have come since the listing).
    let _lock = match vms.lock(&rec.name, timeout) {
        Ok(l) => l,
        Err(e) => return result("failed", Some(e.to_string())),
    };
    let rec = match vms.record(&rec.name) {
        Ok((_, r)) => r,
        Err(e) => return result("failed", Some(e.to_string())),
    };
    match vms.start_record(&vm, &rec, timeout, &print_notice).await {
        Ok(()) => result("started", None),
        Err(e) => result("failed", Some(e.to_string())),
    }
}
