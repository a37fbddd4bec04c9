//! What a start prepares before its unit exists, in one place: the
//! storage it creates and its undo (what a failed or lost start deletes
//! again, here), and the guest's side — cloud-init seed, port plan, the
//! QEMU command line the runner runs ([`guest`]).

pub mod guest;

pub use guest::{Prepared, ProvisionError};

use std::path::PathBuf;

use maqet_base::vmname::VmName;
use maqet_config::VmConfig;
use maqet_host::state::Store;
use maqet_host::storage::{self as st, Provisioned, Undone};

use super::{Notice, Notify, Runners, UnitManager, VmError, Vms};

/// What undoing a start did, for the end of its error message.
#[derive(Debug, Default)]
pub enum UndoNote {
    /// The start had created nothing.
    #[default]
    Nothing,
    Done(Undone),
    /// Nothing deleted: who uses the files is unknown, so their records
    /// stay for a later `rm --delete-storage` to decide.
    KeptAll {
        paths: Vec<PathBuf>,
        why: Box<VmError>,
    },
}

/// One line, after the error it follows; a front end words it from the
/// fields (the CLI: one parenthesised line per fact, `cli/exit.rs`).
impl std::fmt::Display for UndoNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |ps: &mut dyn Iterator<Item = &PathBuf>| {
            ps.map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            UndoNote::Nothing => Ok(()),
            UndoNote::KeptAll { paths, why } => write!(
                f,
                "; kept what this start created: {} ({why})",
                list(&mut paths.iter())
            ),
            UndoNote::Done(u) => {
                if !u.removed.is_empty() {
                    write!(
                        f,
                        "; removed what this start created: {}",
                        list(&mut u.removed.iter())
                    )?;
                }
                for (p, why) in &u.kept {
                    write!(f, "; kept {}, which this start created: {why}", p.display())?;
                }
                for p in &u.problems {
                    write!(f, "; {p}")?;
                }
                Ok(())
            }
        }
    }
}

/// Creates the per-VM files the desktop keys need before a start: the
/// UEFI variable store (a copy of the firmware's template) and the TPM
/// state directory, each recorded as created by maqet; existing ones are
/// never touched.
fn desktop_files(
    vm: &str,
    cfg: &maqet_config::VmConfig,
    vm_dir: &std::path::Path,
    store: &Store,
    done: &mut Provisioned,
) -> Result<(), st::StorageError> {
    let needs_dir = cfg.desktop.firmware.is_some() || cfg.desktop.tpm.is_some();
    if needs_dir {
        st::disks::ensure_private_dir(vm, vm_dir, vm_dir, store, done)?;
    }
    if let Some(fw) = &cfg.desktop.firmware {
        let qemu_img = st::QemuImg::find(Some(&cfg.binary))?;
        st::nvram::provision(vm, fw, vm_dir, &qemu_img, store, done)?;
    }
    if cfg.desktop.tpm.is_some() {
        maqet_host::companion::tpm::provision_state(vm, vm_dir, store, done)?;
    }
    Ok(())
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// Creates what the VM's storage needs, announcing each file; `done`
    /// collects it for an undo.
    pub fn provision(
        &self,
        vm: &VmName,
        cfg: &VmConfig,
        store: &Store,
        done: &mut Provisioned,
        notify: Notify,
    ) -> Result<(), VmError> {
        let before = done.created.len();
        let disk_dir = self.disk_dir(vm);
        let mut r = st::provision(vm.as_str(), cfg, &disk_dir, store, done);
        // The VM's NVRAM copy and TPM state directory.
        if r.is_ok() {
            r = desktop_files(vm.as_str(), cfg, &disk_dir, store, done);
        }
        for c in &done.created[before..] {
            notify(Notice::Created {
                path: c.path.clone(),
                what: c.what.clone(),
            });
        }
        Ok(r?)
    }

    /// Undoes what a failed (or lost) start created: deletes what no VM
    /// uses (running VMs of any data directory included) and forgets every
    /// record.
    /// The store is taken by value: a borrowed one (not `Sync`) held across
    /// the wait for systemd would make the caller's future `!Send`.
    pub async fn undo(&self, vm: &VmName, done: Provisioned, store: Store) -> UndoNote {
        if done.created.is_empty() {
            return UndoNote::Nothing;
        }
        match self.references(&store, Some(vm)).await {
            Ok(refs) => UndoNote::Done(done.undo(vm.as_str(), &store, &refs)),
            Err(why) => UndoNote::KeptAll {
                paths: done.created.into_iter().map(|c| c.path).collect(),
                why: Box::new(why),
            },
        }
    }

    /// `error`, with the undo of `done` said after it.
    pub async fn undone(
        &self,
        vm: &VmName,
        done: Provisioned,
        store: Store,
        error: VmError,
    ) -> VmError {
        match self.undo(vm, done, store).await {
            UndoNote::Nothing => error,
            undo => VmError::Undone {
                error: Box::new(error),
                undo,
            },
        }
    }

    /// `maqet storage create`: what a start would create, made now; the
    /// drives whose image exists already are listed as such.
    pub async fn create_storage(&self, vm: &VmName) -> Result<StorageMade, VmError> {
        let rec = self.record(vm)?;
        VmError::refuse_incomplete(vm, &rec)?;
        let cfg = super::stored_config(&rec)?;
        let store = self.store()?;
        let mut done = Provisioned::default();
        let disk_dir = self.disk_dir(vm);
        if let Err(e) = st::provision(vm.as_str(), &cfg, &disk_dir, &store, &mut done) {
            return Err(self.undone(vm, done, store, e.into()).await);
        }
        let existing = cfg
            .storage()
            .iter()
            .map(|e| (e.name.clone(), e.path(&disk_dir)))
            .filter(|(_, p)| !done.created.iter().any(|c| same_path(&c.path, p)))
            .collect();
        Ok(StorageMade {
            created: done.created,
            existing,
        })
    }
}

/// What `storage create` made, and which drives existed already.
#[derive(Debug)]
pub struct StorageMade {
    pub created: Vec<st::Created>,
    /// `(drive, path)` of each image that was there before.
    pub existing: Vec<(String, PathBuf)>,
}

/// Whether two spellings name the same place (records are canonical).
fn same_path(a: &std::path::Path, b: &std::path::Path) -> bool {
    a == b || maqet_config::canonical(a) == maqet_config::canonical(b)
}
