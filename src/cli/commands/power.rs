//! `maqet reset|reboot VM`: a hard reset, or a reboot the guest is asked
//! for and awaited (`vm/control.rs` says how).

use crate::cli::args::{RebootArgs, VmArg};
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::vm::Rebooted;

pub async fn reset(ctx: &Ctx, a: &VmArg) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    Ok(ctx.vms().await?.reset(&vm).await?)
}

pub async fn reboot(ctx: &Ctx, a: &RebootArgs) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let said = match ctx.vms().await?.reboot(&vm, a.timeout).await? {
        Rebooted::Restarted => "guest rebooted",
        Rebooted::StoppedOnReboot => "guest rebooted; the VM stopped (on_reboot: stop)",
        Rebooted::VmStopped => "the VM stopped",
    };
    println!("{vm}: {said}");
    Ok(())
}
