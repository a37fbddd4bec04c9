//! `maqet storage convert-nvram`: makes a stopped UEFI VM's raw variable
//! store (VMs made before qcow2 stores) into the qcow2 one, so the VM can
//! take live snapshots. The raw file is kept; the qcow2 one wins.

use maqet_base::vmname::VmName;
use maqet_host::storage::nvram::{self, Converted};
use maqet_host::storage::{Provisioned, QemuImg};

use super::{stored_config, Notice, Notify, Runners, UnitManager, VmError, Vms};

/// Why a VM's variable store cannot be converted.
#[derive(Debug, thiserror::Error)]
pub enum NvramError {
    #[error(
        "VM '{vm}' does not boot UEFI firmware (`firmware: uefi`), so it has no variable store"
    )]
    NotUefi { vm: VmName },
    #[error("VM '{vm}' is running and QEMU writes its variable store; stop it first (`maqet stop {vm}`)")]
    Running { vm: VmName },
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// Converts `name`'s raw variable store to qcow2, under the VM's lock
    /// (no start slips in) and only while it does not run.
    pub async fn convert_nvram(
        &self,
        vm: &VmName,
        notify: Notify<'_>,
    ) -> Result<Converted, VmError> {
        self.record(vm)?;
        let _lock = self.lock(vm, super::LOCK_WAIT)?;
        let rec = self.record(vm)?;
        let cfg = stored_config(&rec)?;
        if cfg.desktop.firmware.is_none() {
            return Err(NvramError::NotUefi { vm: vm.clone() }.into());
        }
        if self.is_running(vm).await? {
            return Err(NvramError::Running { vm: vm.clone() }.into());
        }
        self.refuse_saved(vm, "`storage convert-nvram` (another variable store)")?;
        let qemu_img = QemuImg::find(Some(&cfg.binary))?;
        let store = self.store()?;
        let mut done = Provisioned::default();
        match nvram::convert(
            vm.as_str(),
            &self.disk_dir(vm),
            &qemu_img,
            &store,
            &mut done,
        ) {
            Ok(c) => {
                for made in &done.created {
                    notify(Notice::Created {
                        path: made.path.clone(),
                        what: made.what.clone(),
                    });
                }
                Ok(c)
            }
            // Made but not recorded: undone like a failed start's files.
            Err(e) => Err(self.undone(vm, done, store, e.into()).await),
        }
    }
}
