//! `rm`: forget a VM, stopping it first when asked to, and delete the
//! storage maqet created for it (or files named one by one) unless
//! something uses them.

use std::path::PathBuf;
use std::time::Duration;

use maqet_base::vmname::VmName;
use maqet_config::{canonical, normalize, StorageKind};
use maqet_host::state::{CreatedFile, FileIdentity, FileKind, VmRecord};
use maqet_host::storage::remove::{remove_empty_dir, remove_inside};
use maqet_host::storage::{self as st, tmp, Removal};

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
        vm: &VmName,
        opts: &RemoveOptions,
        notify: Notify<'_>,
    ) -> Result<(), VmError> {
        // Exclusive with `start` of this VM from the checks to the delete,
        // so no start can slip in between and leave a VM nobody knows running.
        self.record(vm)?;
        let lock = self.lock(vm, START_WAIT)?;
        let rec = self.record(vm)?;
        let named = self.check_delete_files(vm, &rec, &opts.delete_files)?;
        let unit = UnitOwner::of(&self.units, vm, self.data_dir.path()).await?;
        // Another data directory's unit is neither stopped nor reset from here.
        let ours_or_absent = unit.ours_or_absent();
        let live = unit
            .refuse_other_live(vm, self.data_dir.path())?
            .is_some_and(|s| s.vm_state().is_live());
        if live {
            if !opts.force {
                return Err(VmError::RunningNeedsForce { vm: vm.clone() });
            }
            self.stop(vm, None, true).await?;
        }
        if ours_or_absent {
            // A failed unit would otherwise outlive its definition.
            self.reset_failed(vm).await;
        }
        if opts.delete_storage || !named.is_empty() {
            // Deletes the definition too, in the same transaction.
            self.delete_storage(vm, &rec, opts.delete_storage, &named, notify)
                .await?;
        } else {
            let store = self.store()?;
            note_kept(&store.created_files(vm.as_str())?, vm, notify);
            store.delete_vm(vm.as_str())?;
        }
        // known_hosts and the port plan go with it (the seed is storage).
        for message in crate::provision::guest::forget(vm, &self.data_dir) {
            notify(Notice::Warning { message });
        }
        // So does whatever a run could not clean up in its runtime
        // directory — unless another data directory's VM of the name owns it.
        if ours_or_absent {
            if let Err(e) = self.runtime(vm)?.clear() {
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
            results.push(self.remove(vm, opts, notify).await);
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
    /// file, lists the VM's files that are kept (and why), and deletes the
    /// definition when every deletion worked. The database's write lock is
    /// taken before the first file is deleted and held to the end, so a
    /// busy database stops `rm` while nothing is deleted yet, and the
    /// records of what was deleted go in the same transaction; if that
    /// transaction cannot be committed, the error names every file that
    /// was deleted.
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
        let in_use = |id: &FileIdentity| refs.user_of(id);
        let tx = store.begin_write()?;
        let records = tx.created_files(vm.as_str())?;
        let created: Vec<PathBuf> = records.iter().map(|f| canonical(&f.path)).collect();
        let deleted = std::sync::Mutex::new(Vec::new());
        let say = |n: Notice| {
            if let Notice::Deleted { path, .. }
            | Notice::DeletedNamed { path }
            | Notice::DeletedTpmState { path }
            | Notice::DeletedLeftover { path }
            | Notice::DeletedEmptyDir { path } = &n
            {
                deleted.lock().unwrap().push(path.clone());
            }
            notify(n)
        };
        let mut failed = Vec::new();
        if delete_created {
            self.delete_tpm_state(vm, &records, &in_use, &say, &mut failed);
            let mut dirs = record_dirs(&records);
            if let Ok(cfg) = stored_config(rec) {
                for d in super::verify::file_dirs(&self.data_dir, vm, &cfg) {
                    if !dirs.contains(&d) {
                        dirs.push(d);
                    }
                }
            }
            delete_leftovers(&dirs, &say, &mut failed);
            for (path, kind, outcome) in st::delete_created(vm.as_str(), &tx, &in_use)? {
                match outcome {
                    Removal::Deleted => say(Notice::Deleted { path, kind }),
                    Removal::AlreadyGone => say(Notice::AlreadyGone { path }),
                    Removal::KeptNotEmpty => say(Notice::KeptNotEmpty { path }),
                    Removal::KeptInUse(why) | Removal::KeptUnproven(why) => {
                        say(Notice::Kept { path, why })
                    }
                    Removal::Failed(error) => failed.push(RemoveFailure::Delete { path, error }),
                }
            }
            // The VM's own directories in the data directory, made by an
            // earlier VM of the name (so not recorded), go when empty.
            let real = self.data_dir.resolved();
            for dir in [
                real.disk_dir(vm),
                maqet_host::cloudinit::seed_dir(real.path(), vm.as_str()),
            ] {
                if created.contains(&canonical(&dir)) {
                    continue;
                }
                if remove_empty_dir(&dir) == Removal::Deleted {
                    say(Notice::DeletedEmptyDir { path: dir });
                }
            }
        } else {
            note_kept(&records, vm, notify);
        }
        for p in named {
            if let Some(user) = refs
                .user_of_path(p)
                .or_else(|| maqet_host::storage::locks::held_at(p))
            {
                failed.push(RemoveFailure::InUse {
                    path: p.clone(),
                    user,
                });
                continue;
            }
            match std::fs::remove_file(p) {
                Ok(()) => say(Notice::DeletedNamed { path: p.clone() }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    say(Notice::AlreadyGone { path: p.clone() })
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
                    say(Notice::KeptBrought { path: p });
                }
            }
        }
        if failed.is_empty() {
            tx.delete_vm(vm.as_str())?;
        }
        if let Err(error) = tx.commit() {
            let deleted = deleted.into_inner().unwrap_or_else(|e| e.into_inner());
            if deleted.is_empty() {
                return Err(error.into());
            }
            return Err(VmError::DeletedUnrecorded {
                vm: vm.clone(),
                deleted,
                error: Box::new(error),
            });
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

    /// swtpm's files in the TPM state directory maqet made, so the
    /// directory itself can go with the VM's other files: reached like any
    /// deletion, only while the directory is still the recorded one.
    fn delete_tpm_state(
        &self,
        vm: &VmName,
        records: &[CreatedFile],
        in_use: &dyn Fn(&FileIdentity) -> Option<String>,
        say: Notify,
        failed: &mut Vec<RemoveFailure>,
    ) {
        let tpm_dir = canonical(&maqet_host::companion::tpm::state_dir(&self.disk_dir(vm)));
        let Some(rec) = records
            .iter()
            .find(|f| f.kind == FileKind::Directory && canonical(&f.path) == tpm_dir)
        else {
            return;
        };
        let names = maqet_host::companion::tpm::STATE_FILES;
        match remove_inside(&rec.path, rec.identity.as_ref(), names, in_use) {
            Err(Removal::AlreadyGone) => {}
            Err(Removal::Failed(error)) => failed.push(RemoveFailure::Delete {
                path: rec.path.clone(),
                error,
            }),
            Err(r) => say(Notice::Kept {
                path: rec.path.clone(),
                why: format!("the TPM state in it stays: {}", removal_reason(&r)),
            }),
            Ok(outcomes) => {
                for (path, r) in outcomes {
                    match r {
                        Removal::Deleted => say(Notice::DeletedTpmState { path }),
                        Removal::AlreadyGone => {}
                        Removal::Failed(error) => {
                            failed.push(RemoveFailure::Delete { path, error })
                        }
                        r => say(Notice::Kept {
                            path,
                            why: removal_reason(&r),
                        }),
                    }
                }
            }
        }
    }
}

/// The directories of the VM's created files (and the created directories).
fn record_dirs(records: &[CreatedFile]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for f in records {
        let dir = match f.kind {
            FileKind::Directory => f.path.clone(),
            _ => f.path.parent().map(PathBuf::from).unwrap_or_default(),
        };
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// Temporary files a killed maqet left in `dirs`, the VM's directories
/// (storage/tmp.rs): they would keep those directories, and nobody else
/// would ever remove them.
fn delete_leftovers(dirs: &[PathBuf], say: Notify, failed: &mut Vec<RemoveFailure>) {
    for dir in dirs {
        for left in tmp::leftovers(dir) {
            match tmp::remove_leftover(&left.path) {
                Removal::Deleted => say(Notice::DeletedLeftover { path: left.path }),
                Removal::AlreadyGone => {}
                Removal::Failed(error) => failed.push(RemoveFailure::Delete {
                    path: left.path,
                    error,
                }),
                r => say(Notice::Kept {
                    path: left.path,
                    why: removal_reason(&r),
                }),
            }
        }
    }
}

/// The text of a keeping [`Removal`].
fn removal_reason(r: &Removal) -> String {
    match r {
        Removal::KeptInUse(why) | Removal::KeptUnproven(why) | Removal::Failed(why) => why.clone(),
        Removal::KeptNotEmpty => "directory holds other files".into(),
        Removal::Deleted | Removal::AlreadyGone => String::new(),
    }
}

/// After `rm` without `--delete-storage`: which created files stay.
fn note_kept(records: &[CreatedFile], vm: &VmName, notify: Notify) {
    let kept: Vec<PathBuf> = records
        .iter()
        .filter(|f| f.kind != FileKind::Directory && f.path.exists())
        .map(|f| f.path.clone())
        .collect();
    if !kept.is_empty() {
        notify(Notice::KeptCreated {
            vm: vm.clone(),
            paths: kept,
        });
    }
}
