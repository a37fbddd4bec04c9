//! `maqet start|stop|restart`: parse, one call into the vm layer, render.

use crate::cli::args::{StartArgs, StopArgs};
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::cli::output::print_notice;

pub async fn start(ctx: &Ctx, a: &StartArgs) -> Result<(), CliError> {
    // An unknown VM is "no such VM" before anything else is asked.
    ctx.vm(&a.name)?;
    let vms = ctx.vms().await?;
    Ok(vms.start(&a.name, a.timeout, &print_notice).await?)
}

pub async fn stop(ctx: &Ctx, a: &StopArgs) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let vms = ctx.vms().await?;
    let stopped = vms.stop_via_agent(&vm, a.timeout, a.force).await?;
    let (outcome, via_agent, message) = (stopped.outcome, stopped.via_agent, stopped.message());
    if a.json {
        crate::cli::output::print_json(&serde_json::json!({
            "name": vm.to_string(),
            "was_running": outcome.is_some(),
            "outcome": outcome,
            "guest_agent": via_agent,
            "message": message,
        }));
        return Ok(());
    }
    match message {
        Some(m) => println!("{vm}: {m}"),
        None => eprintln!("{vm} is not running"),
    }
    Ok(())
}

pub async fn restart(ctx: &Ctx, a: &StartArgs) -> Result<(), CliError> {
    ctx.vm(&a.name)?;
    let vms = ctx.vms().await?;
    Ok(vms.restart(&a.name, a.timeout, &print_notice).await?)
}
