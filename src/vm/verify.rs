//! `maqet storage verify [VM…]`: the disks of the named VMs (or of every
//! VM), checked as storage/verify.rs says, with `-U` for VMs that run; and
//! what interrupted commands left half made: a VM marked incomplete (a
//! clone whose copies were not finished) and temporary files nobody is
//! writing any more, each a failing row.

use std::path::PathBuf;

use maqet_base::paths::DataDir;
use maqet_base::vmname::VmName;
use maqet_config::{canonical, VmConfig};
use maqet_host::state::{Store, VmRecord};
use maqet_host::storage::disks::canonical_parent;
use maqet_host::storage::verify::{leftover_checks, verify_vm, DiskCheck, Role, Status};

use super::{stored_config, Runners, UnitManager, VmError, Vms};

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// One result per disk, in VM order; an unknown name is an error
    /// before anything is checked.
    pub async fn verify(&self, names: &[VmName]) -> Result<Vec<DiskCheck>, VmError> {
        let mut records: Vec<VmRecord> = Vec::new();
        for n in names {
            records.push(self.record(n)?);
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
            let definition = |status, message: String| DiskCheck {
                vm: rec.name.clone(),
                disk: "(definition)".into(),
                role: Role::Config,
                path: PathBuf::new(),
                format: None,
                force_share: false,
                status,
                message,
            };
            if let Some(what) = &rec.incomplete {
                out.push(definition(
                    Status::Incomplete,
                    format!(
                        "{what}: maqet will not start it; `maqet rm --delete-storage {vm}` removes it (so does the next `maqet clone` to this name)"
                    ),
                ));
            }
            let cfg = match stored_config(&rec) {
                Ok(c) => c,
                // The report's messages are still worded for `maqet`
                // (see "The library states facts" in architecture.md).
                Err(e @ VmError::StoredConfig { .. }) => {
                    let fix = format!("{e} (fix it with `maqet apply`)");
                    out.push(definition(Status::Error, fix));
                    continue;
                }
                Err(e) => {
                    out.push(definition(Status::Error, e.to_string()));
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
                self.data_dir.qemu_cwd(),
                &created,
                running,
            ));
            out.extend(leftover_checks(
                vm.as_str(),
                &file_dirs(&self.data_dir, &vm, &cfg),
            ));
        }
        Ok(out)
    }
}

/// The directories where maqet writes `vm`'s files: its disk directory,
/// that of every `storage:` image, and its cloud-init seed directory.
/// Paths as maqet walks them (storage/tmp.rs): below the data directory's
/// resolved path, and images' directories resolved as at their creation.
pub fn file_dirs(data_dir: &DataDir, vm: &VmName, cfg: &VmConfig) -> Vec<PathBuf> {
    let real = data_dir.resolved();
    let disk_dir = data_dir.disk_dir(vm);
    let mut dirs = vec![
        real.disk_dir(vm),
        maqet_host::cloudinit::seed_dir(real.path(), vm.as_str()),
    ];
    for e in cfg.storage().iter().filter(|e| e.virtfs.is_none()) {
        let image = canonical_parent(&e.path(&disk_dir));
        if let Some(d) = image.parent() {
            if !dirs.iter().any(|x| x == d) {
                dirs.push(d.to_path_buf());
            }
        }
    }
    dirs
}
