//! `maqet network ls` (issue 19): renders the vm layer's networks.

use crate::cli::args::{JsonArg, NetworkCommand};
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::cli::output::{print_json, render_table};

pub async fn run(ctx: &Ctx, c: NetworkCommand) -> Result<(), CliError> {
    match c {
        NetworkCommand::Ls(a) => ls(ctx, &a).await,
    }
}

async fn ls(ctx: &Ctx, a: &JsonArg) -> Result<(), CliError> {
    let nets = ctx.vms().await?.networks().await?;
    if a.json {
        print_json(&nets);
        return Ok(());
    }
    if nets.is_empty() {
        eprintln!("no networks (a VM joins one with `networks: [NAME]` in its config)");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = nets
        .iter()
        .map(|n| {
            let vms: Vec<String> = n
                .vms
                .iter()
                .map(|m| match (&m.data_dir, m.running) {
                    (Some(d), _) => format!("{} (running, data {d})", m.vm),
                    (None, true) => format!("{} (running)", m.vm),
                    (None, false) => m.vm.clone(),
                })
                .collect();
            vec![n.name.clone(), n.state.clone(), vms.join(", ")]
        })
        .collect();
    print!("{}", render_table(&["NETWORK", "SWITCH", "VMS"], &rows));
    Ok(())
}
