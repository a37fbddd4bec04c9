//! `maqet rm`: forget a VM; a running one only with --force.

use crate::cli::args::RmArgs;
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::cli::output::print_notice;
use crate::vm::remove::RemoveOptions;

pub async fn run(ctx: &Ctx, a: &RmArgs) -> Result<(), CliError> {
    ctx.vm(&a.name)?;
    let cwd = std::env::current_dir()?;
    let opts = RemoveOptions {
        force: a.force,
        delete_storage: a.delete_storage,
        delete_files: a.delete_files.iter().map(|f| cwd.join(f)).collect(),
    };
    let vms = ctx.vms().await?;
    vms.remove(&a.name, &opts, &print_notice).await?;
    eprintln!("removed VM '{}'", a.name);
    Ok(())
}
