//! `maqet rm`: forget a VM; a running one only with --force.

use std::time::Duration;

use crate::cli::args::RmArgs;
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::systemd::properties::data_dir_of_description;

use super::lifecycle::stop_vm;

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
    let status = sd.unit_status(&vm.service_unit()).await?;
    let live = status.as_ref().is_some_and(|s| s.vm_state().is_live());
    // A unit of the same name from another data directory is not this VM:
    // it is neither stopped nor reset here.
    let ours = status.as_ref().is_none_or(|s| {
        data_dir_of_description(&s.description)
            .is_none_or(|d| d == ctx.data_dir.path().to_string_lossy())
    });
    if live && ours {
        if !a.force {
            return Err(CliError::conflict(format!(
                "VM '{vm}' is running; stop it first (`maqet stop {vm}`) or use `maqet rm --force {vm}`"
            )));
        }
        stop_vm(&sd, &vm, None, true).await?;
    }
    if ours {
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
