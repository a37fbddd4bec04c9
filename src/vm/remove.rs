//! `rm`: forget a VM, stopping it first when asked to, and delete the
//! storage maqet created for it (or files named one by one) unless
//! something uses them.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{canonical, normalize, StorageKind};
use crate::state::{FileKind, Store, VmRecord};
use crate::storage::{self as st, Removal};
use crate::vmname::VmName;

use super::error::RemoveFailure;
use super::owner::UnitOwner;
use super::{stored_config, Notice, Notify, Runners, UnitManager, VmError, Vms};

/// How long `rm` waits for a `start` of the same VM to finish.
const START_WAIT: Duration = Duration::from_secs(120);

/// What `rm` is asked to do besides forgetting the definition.
#[derive(Debug, Default, Clone)]
pub struct RemoveOptions {
    /// Stop a running VM first (else a running VM is refused).
    pub force: bool,
    /// Delete what maqet created for the VM (what no one else uses).
    pub delete_storage: bool,
    /// Absolute paths of the VM's own disks to delete as well.
    pub delete_files: Vec<PathBuf>,
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    pub async fn remove(
        &self,
        name: &str,
        opts: &RemoveOptions,
        notify: Notify<'_>,
    ) -> Result<(), VmError> {
        // Exclusive with `start` of this VM from the checks to the delete,
        // so no start can slip in between and leave a VM nobody knows running.
        self.record(name)?;
        let lock = self.lock(name, START_WAIT)?;
        let (vm, rec) = self.record(name)?;
        let named = self.check_delete_files(&vm, &rec, &opts.delete_files)?;
        let unit = UnitOwner::of(&self.units, &vm, self.data_dir.path()).await?;
        // Another data directory's unit is neither stopped nor reset from here.
        let ours_or_absent = unit.ours_or_absent();
        let live = unit
            .refuse_other_live(&vm, self.data_dir.path())?
            .is_some_and(|s| s.vm_state().is_live());
        if live {
            if !opts.force {
                return Err(VmError::RunningNeedsForce { vm });
            }
            self.stop(&vm, None, true).await?;
        }
        if ours_or_absent {
            // A failed unit would otherwise outlive its definition.
            self.reset_failed(&vm).await;
        }
        if opts.delete_storage || !named.is_empty() {
            self.delete_storage(&vm, &rec, opts.delete_storage, &named, notify)
                .await?;
        }
        let store = self.store()?;
        if !opts.delete_storage {
            note_kept(&store, &vm, notify)?;
        }
        store.delete_vm(vm.as_str())?;
        // The cloud-init seed and known_hosts go with it.
        for message in crate::provision::forget(&self.data_dir, &vm) {
            notify(Notice::Warning { message });
        }
        // So does whatever a run could not clean up in its runtime
        // directory — unless another data directory's VM of the name owns it.
        if ours_or_absent {
            if let Err(e) = self.runtime(&vm)?.clear() {
                notify(Notice::Warning {
                    message: format!("cannot clear the runtime directory of '{vm}': {e}"),
                });
            }
        }
        lock.remove_file();
        Ok(())
    }

    /// `rm --all`: removes each of `names` in turn exactly as
    /// [`Vms::remove`] would; one result per name, in order. A failure
    /// stops nothing but that VM's removal.
    pub async fn remove_each(
        &self,
        names: &[VmName],
        opts: &RemoveOptions,
        notify: Notify<'_>,
    ) -> Vec<Result<(), VmError>> {
        let mut results = Vec::with_capacity(names.len());
        for vm in names {
            results.push(self.remove(vm.as_str(), opts, notify).await);
        }
        results
    }

    /// Resolves `--delete-file` paths to disks of this VM (checked before
    /// anything is stopped or removed).
    fn check_delete_files(
        &self,
        vm: &VmName,
        rec: &VmRecord,
        files: &[PathBuf],
    ) -> Result<Vec<PathBuf>, VmError> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let cfg = stored_config(rec)?;
        let disk_dir = self.disk_dir(vm);
        let disks: Vec<PathBuf> = cfg
            .storage()
            .iter()
            .filter(|e| e.kind != StorageKind::Virtfs)
            .map(|e| e.path(&disk_dir))
            .collect();
        files
            .iter()
            .map(|f| {
                let p = normalize(f);
                if disks.iter().any(|d| canonical(d) == canonical(&p)) {
                    Ok(p)
                } else {
                    Err(VmError::NotADisk {
                        vm: vm.clone(),
                        path: p,
                        disks: disks.clone(),
                    })
                }
            })
            .collect()
    }

    /// `rm --delete-storage` / `--delete-file`: deletes, announces each
    /// file, and lists the VM's files that are kept (and why).
    async fn delete_storage(
        &self,
        vm: &VmName,
        rec: &VmRecord,
        delete_created: bool,
        named: &[PathBuf],
        notify: Notify<'_>,
    ) -> Result<(), VmError> {
        let store = self.store()?;
        // No file another VM uses is deleted, whoever created it.
        let refs = self.references(&store, Some(vm)).await?;
        let created: Vec<PathBuf> = store
            .created_files(vm.as_str())?
            .into_iter()
            .map(|f| canonical(&f.path))
            .collect();
        let mut failed = Vec::new();
        // swtpm's files in the TPM state directory maqet made go first, so
        // the directory itself can go with the VM's other files.
        let tpm_dir = crate::companion::tpm::state_dir(&self.disk_dir(vm));
        if delete_created && created.contains(&canonical(&tpm_dir)) {
            for r in crate::companion::tpm::clear_state(&tpm_dir) {
                match r {
                    Ok(path) => notify(Notice::DeletedTpmState { path }),
                    Err((path, error)) => failed.push(RemoveFailure::Delete { path, error }),
                }
            }
        }
        if delete_created {
            for (path, kind, outcome) in
                st::delete_created(vm.as_str(), &store, &|id| refs.user_of(id))?
            {
                match outcome {
                    Removal::Deleted => notify(Notice::Deleted { path, kind }),
                    Removal::AlreadyGone => notify(Notice::AlreadyGone { path }),
                    Removal::KeptNotEmpty => notify(Notice::KeptNotEmpty { path }),
                    Removal::KeptInUse(why) | Removal::KeptUnproven(why) => {
                        notify(Notice::Kept { path, why })
                    }
                    Removal::Failed(error) => failed.push(RemoveFailure::Delete { path, error }),
                }
            }
        }
        for p in named {
            if let Some(user) = refs.user_of_path(p) {
                failed.push(RemoveFailure::InUse {
                    path: p.clone(),
                    user,
                });
                continue;
            }
            match std::fs::remove_file(p) {
                Ok(()) => notify(Notice::DeletedNamed { path: p.clone() }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    notify(Notice::AlreadyGone { path: p.clone() })
                }
                Err(e) => failed.push(RemoveFailure::Delete {
                    path: p.clone(),
                    error: e.to_string(),
                }),
            }
        }
        // Say which of the VM's disks stay, and why.
        if let Ok(cfg) = stored_config(rec) {
            let disk_dir = self.disk_dir(vm);
            for e in cfg
                .storage()
                .iter()
                .filter(|e| e.kind != StorageKind::Virtfs)
            {
                let p = e.path(&disk_dir);
                if p.exists()
                    && !created.contains(&canonical(&p))
                    && !named.iter().any(|n| canonical(n) == canonical(&p))
                {
                    notify(Notice::KeptBrought { path: p });
                }
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(VmError::NotRemoved {
                vm: vm.clone(),
                failures: failed,
            })
        }
    }
}

/// After `rm` without `--delete-storage`: which created files stay.
fn note_kept(store: &Store, vm: &VmName, notify: Notify) -> Result<(), VmError> {
    let kept: Vec<PathBuf> = store
        .created_files(vm.as_str())?
        .into_iter()
        .filter(|f| f.kind != FileKind::Directory && f.path.exists())
        .map(|f| f.path)
        .collect();
    if !kept.is_empty() {
        notify(Notice::KeptCreated {
            vm: vm.clone(),
            paths: kept,
        });
    }
    Ok(())
}
