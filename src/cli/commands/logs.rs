//! `maqet logs`: the unit's journal via journalctl.

use crate::cli::args::LogsArgs;
use crate::cli::exit::CliError;
use crate::systemd::journal;
use crate::vmname::VmName;

pub fn run(a: &LogsArgs) -> Result<(), CliError> {
    // Logs outlive a VM's definition, so only the name is checked.
    let vm = VmName::new(&a.name)?;
    let err = journal::exec_logs(&vm, a.follow, a.lines);
    Err(CliError::failure(format!("cannot run journalctl: {err}")))
}
