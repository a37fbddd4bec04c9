//! `maqet rm`: forget a VM; a running one only with --force.

use crate::cli::args::RmArgs;
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;

use super::lifecycle::stop_vm;

pub async fn run(ctx: &Ctx, a: &RmArgs) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let sd = ctx.systemd().await?;
    let live = sd
        .unit_status(&vm.service_unit())
        .await?
        .is_some_and(|s| s.vm_state().is_live());
    if live {
        if !a.force {
            return Err(CliError::conflict(format!(
                "VM '{vm}' is running; stop it first (`maqet stop {vm}`) or use `maqet rm --force {vm}`"
            )));
        }
        stop_vm(&sd, &vm, None, true).await?;
    }
    // A failed unit would otherwise outlive its definition.
    sd.reset_failed(&vm.service_unit()).await;
    sd.reset_failed(&vm.socket_unit()).await;
    ctx.store()?.delete_vm(vm.as_str())?;
    eprintln!("removed VM '{vm}'");
    Ok(())
}
