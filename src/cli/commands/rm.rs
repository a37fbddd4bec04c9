//! `maqet rm NAME` / `rm --all`: forget VMs; a running one only with
//! --force. `--all` asks first on a terminal and needs --yes without one.

use std::io::IsTerminal;

use crate::cli::args::RmArgs;
use crate::cli::confirm::{cancelled, confirm};
use crate::cli::context::Ctx;
use crate::cli::exit::{worst, CliError};
use crate::cli::output::print_notice;
use crate::vm::remove::RemoveOptions;

pub async fn run(ctx: &Ctx, a: &RmArgs) -> Result<(), CliError> {
    let cwd = std::env::current_dir()?;
    let opts = RemoveOptions {
        force: a.force,
        delete_storage: a.delete_storage,
        delete_files: a.delete_files.iter().map(|f| cwd.join(f)).collect(),
    };
    let Some(name) = &a.name else {
        return all(ctx, a, &opts).await;
    };
    let (vm, _) = ctx.vm(name)?;
    let vms = ctx.vms().await?;
    vms.remove(&vm, &opts, &print_notice).await?;
    eprintln!("removed VM '{name}'");
    Ok(())
}

async fn all(ctx: &Ctx, a: &RmArgs, opts: &RemoveOptions) -> Result<(), CliError> {
    // Listed without a systemd connection: nothing to remove needs none.
    let names = crate::vm::names(&ctx.data_dir)?;
    let dir = ctx.data_dir.path().display();
    if names.is_empty() {
        eprintln!("no VMs defined in {dir}; nothing to remove");
        return Ok(());
    }
    let list: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
    let prompt = format!(
        "{} VMs defined in {dir} will be removed{}:\n  {}\nRemove them?",
        names.len(),
        match (a.force, a.delete_storage) {
            (true, true) => " (running ones stopped first, with the storage maqet created)",
            (true, false) => " (running ones stopped first)",
            (false, true) => " (with the storage maqet created)",
            (false, false) => "",
        },
        list.join("\n  ")
    );
    let refusal = format!(
        "rm --all would remove {} VMs in {dir}, and stdin is not a terminal to ask on; add --yes to remove them without asking",
        names.len()
    );
    let stdin = std::io::stdin();
    let go = confirm(
        &prompt,
        a.yes,
        stdin.is_terminal(),
        &refusal,
        &mut stdin.lock(),
        &mut std::io::stderr(),
    )?;
    if !go {
        return Err(cancelled("no VM was removed"));
    }
    let vms = ctx.vms().await?;
    let results = vms.remove_each(&names, opts, &print_notice).await;
    let mut codes = Vec::new();
    for (vm, r) in names.iter().zip(results) {
        match r {
            Ok(()) => println!("{vm}: removed"),
            Err(e) => {
                let e = CliError::from(e);
                eprintln!("{vm}: {}", e.message);
                codes.push(e.code);
            }
        }
    }
    if codes.is_empty() {
        return Ok(());
    }
    Err(CliError::new(
        worst(codes.iter().copied()),
        format!("{} of {} VMs were not removed", codes.len(), names.len()),
    ))
}
