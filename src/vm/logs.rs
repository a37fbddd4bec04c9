//! `maqet logs`: which of the user's journal records about a VM name are
//! this data directory's. Unit names are per user, so another data
//! directory's VM of the same name writes to the same unit's journal; its
//! runs are left out, and while it runs the command is refused like every
//! other command on that unit.

use maqet_base::vmname::VmName;
use maqet_host::systemd::journal;

use super::{Runners, UnitManager, VmError, Vms};

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// The journalctl match terms for this data directory's records of VM
    /// `vm`. Logs outlive a definition, so `vm` need not be defined;
    /// another data directory's live VM of that name is refused.
    pub async fn log_matches(&self, vm: &VmName) -> Result<Vec<String>, VmError> {
        self.is_running(vm).await?;
        let dir = maqet_config::canonical(self.data_dir.path());
        let dir = dir.to_string_lossy();
        let runs = journal::runs_to_show(&journal::tagged_records(vm)?, &dir);
        Ok(journal::logs_matches(vm, &dir, &runs))
    }
}
