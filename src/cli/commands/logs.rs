//! `maqet logs`: this data directory's journal records of a VM, via
//! journalctl.

use crate::cli::args::LogsArgs;
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::systemd::journal;

pub async fn run(ctx: &Ctx, a: &LogsArgs) -> Result<(), CliError> {
    let matches = ctx
        .vms_if_session()
        .await?
        .log_matches(&crate::vmname::VmName::new(&a.name)?)
        .await?;
    let err = journal::exec_logs(&matches, a.follow, a.lines);
    Err(CliError::failure(format!("cannot run journalctl: {err}")))
}
