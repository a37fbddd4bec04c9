//! `maqet rm`: forget a VM; a running one only with --force.

use std::time::Duration;

use crate::cli::args::RmArgs;
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;

use super::lifecycle::stop_vm;
use crate::vm::UnitOwner;

/// How long `rm` waits for a `start` of the same VM to finish.
const START_WAIT: Duration = Duration::from_secs(120);

pub async fn run(ctx: &Ctx, a: &RmArgs) -> Result<(), CliError> {
    // Exclusive with `start` of this VM from the checks to the delete, so
    // no start can slip in between and leave a VM nobody knows running.
    ctx.vm(&a.name)?;
    let lock = ctx.lock_vm(&a.name, START_WAIT)?;
    let (vm, rec) = ctx.vm(&a.name)?;
    let named = super::storage::check_delete_files(ctx, &vm, &rec, &a.delete_files)?;
    let sd = ctx.systemd().await?;
    let unit = UnitOwner::of(&sd, &vm, ctx.data_dir.path()).await?;
    // Another data directory's unit is neither stopped nor reset from here.
    let ours_or_absent = unit.ours_or_absent();
    let live = unit
        .refuse_other_live(&vm, ctx.data_dir.path())?
        .is_some_and(|s| s.vm_state().is_live());
    if live {
        if !a.force {
            return Err(CliError::conflict(format!(
                "VM '{vm}' is running; stop it first (`maqet stop {vm}`) or use `maqet rm --force {vm}`"
            )));
        }
        stop_vm(ctx, &sd, &vm, None, true).await?;
    }
    if ours_or_absent {
        // A failed unit would otherwise outlive its definition.
        sd.reset_failed(&vm.service_unit()).await;
        sd.reset_failed(&vm.socket_unit()).await;
    }
    if a.delete_storage || !named.is_empty() {
        super::storage::delete_for_rm(ctx, &vm, &rec, a.delete_storage, &named).await?;
    }
    let store = ctx.store()?;
    if !a.delete_storage {
        super::storage::note_kept(&store, &vm)?;
    }
    store.delete_vm(vm.as_str())?;
    // hook: issue 11 (seed, known_hosts, port plan)
    for p in crate::provision::forget(&ctx.data_dir, &vm) {
        eprintln!("warning: {p}");
    }
    lock.remove_file();
    eprintln!("removed VM '{vm}'");
    Ok(())
}
