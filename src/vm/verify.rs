//! `maqet storage verify [VM…]`: the disks of the named VMs (or of every
//! VM), checked as storage/verify.rs says, with `-U` for VMs that run.

use std::path::PathBuf;

use crate::config::canonical;
use crate::state::{Store, VmRecord};
use crate::storage::verify::{verify_vm, DiskCheck, Role, Status};
use crate::vmname::VmName;

use super::{stored_config, Runners, UnitManager, VmError, Vms};

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// One result per disk, in VM order; an unknown name is an error
    /// before anything is checked.
    pub async fn verify(&self, names: &[String]) -> Result<Vec<DiskCheck>, VmError> {
        let mut records: Vec<VmRecord> = Vec::new();
        for n in names {
            records.push(self.record(n)?.1);
        }
        let Some(store) = Store::open_read_only(&self.data_dir.db_path())? else {
            return Ok(Vec::new());
        };
        if names.is_empty() {
            records = store.list_vms()?;
        }
        let mut out = Vec::new();
        for rec in records {
            let Ok(vm) = VmName::new(&rec.name) else {
                continue;
            };
            let cfg = match stored_config(&rec) {
                Ok(c) => c,
                Err(e) => {
                    out.push(DiskCheck {
                        vm: rec.name.clone(),
                        disk: "(definition)".into(),
                        role: Role::Config,
                        path: PathBuf::new(),
                        format: None,
                        force_share: false,
                        status: Status::Error,
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            let running = match self.is_running(&vm).await {
                Ok(r) => r,
                // Another data directory's VM of that name runs: not ours.
                Err(VmError::Owner(super::OwnerError::OtherDataDir { .. })) => false,
                Err(e) => return Err(e),
            };
            let created: Vec<PathBuf> = store
                .created_files(vm.as_str())?
                .into_iter()
                .map(|f| canonical(&f.path))
                .collect();
            out.extend(verify_vm(
                vm.as_str(),
                &cfg,
                &self.disk_dir(&vm),
                &created,
                running,
            ));
        }
        Ok(out)
    }
}
