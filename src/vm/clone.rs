//! `clone`: a new VM from a stored one — same config under a new name,
//! its own disks (fresh overlays on the same `base:`, or copies with
//! `full`), its own UEFI variable store, and a fresh identity (its name is
//! the one thing the runner derives MAC, ports and sockets from).
//!
//! A clone never shares a writable disk with its source: a `storage:` disk
//! with `file:` and a writable disk named in `arguments`/`args` are refused
//! (read-only media such as an installer ISO stay shared). Copies run under
//! both VMs' locks, so the source cannot start while it is read (its start
//! waits), and into temporary files linked into place only when complete
//! (storage/tmp.rs). The clone's definition is stored first, marked
//! incomplete, and the mark is cleared only when every copy is in place: a
//! clone whose maker was killed is never started, `storage verify` and
//! `doctor` list it, and the next `clone` to that name (or `rm
//! --delete-storage`) removes what it had made.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use maqet_base::vmname::VmName;
use maqet_config::VmConfig;
use maqet_host::state::{FileKind, NewVm, StateError, Store, VmLock};
use maqet_host::storage::disks::canonical_parent;
use maqet_host::storage::tmp::{self, TempFile};
use maqet_host::storage::verify::argument_disks;
use maqet_host::storage::{self as st, Removal};

use super::{stored_config, Runners, UnitManager, VmError, Vms};

/// Why a clone was refused or failed; nothing of the clone is left behind.
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    #[error("a VM named '{0}' already exists")]
    Exists(VmName),
    /// A disk with `file:` lives outside the VM's disk directory: both VMs
    /// would write the one image.
    #[error("storage '{disk}' is the file {}, which a clone would share with '{source_vm}'; give disks no `file:` (they then live in the VM's disk directory) to clone them", file.display())]
    SharedFile {
        disk: String,
        file: PathBuf,
        source_vm: String,
    },
    /// A writable disk in `arguments`/`args`: both VMs would get it, and
    /// the second start would fail on QEMU's image lock (or worse).
    #[error("{label} gives the VM the disk {} (writable), which a clone would share with '{source_vm}'; make it a `storage:` disk without `file:` (then `clone --full` copies it, or give it a `base:` for an overlay), or mark it read-only (readonly=on, media=cdrom)", file.display())]
    SharedArgument {
        label: String,
        file: PathBuf,
        source_vm: String,
    },
    #[error("storage '{disk}' ({}) has no base image to start the clone from; use --full to copy it", path.display())]
    NoBase { disk: String, path: PathBuf },
    /// QEMU writes the disks while the VM runs: a copy could be torn.
    #[error("VM '{vm}' is running; stop it before copying its disks (`maqet stop {vm}`)")]
    Running { vm: VmName },
    /// The source is itself a clone whose copying was interrupted.
    #[error("VM '{vm}' is incomplete ({what}); it cannot be cloned: `maqet rm --delete-storage {vm}` removes it")]
    SourceIncomplete { vm: VmName, what: String },
    /// An earlier clone to this name was interrupted, and what it made
    /// could not all be removed.
    #[error("VM '{vm}' is what an interrupted clone left, and removing it failed: {why}; see `maqet storage verify {vm}` and remove it with `maqet rm --delete-storage {vm}`")]
    LeftoverStays { vm: VmName, why: String },
    /// A copy failed, and removing what the clone had made failed too.
    #[error("{error}; removing what the clone had made failed as well: {undo}")]
    NotUndone {
        error: Box<VmError>,
        undo: Box<VmError>,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a clone does with one source disk.
#[derive(Debug, PartialEq, Eq)]
pub enum DiskPlan {
    /// Nothing: the clone makes its own at start (a fresh overlay on the
    /// same `base:`, or a new empty disk when the source has none yet).
    Fresh,
    /// Copy the source's image into the clone's disk directory.
    Copy(PathBuf, PathBuf),
}

/// What `clone_vm` made.
#[derive(Debug)]
pub struct Cloned {
    pub vm: VmName,
    /// The source ran, so its UEFI variable store was not copied: the
    /// clone starts with a fresh one from the firmware's template.
    pub nvram_skipped: bool,
    /// What an interrupted earlier clone to this name had left, removed
    /// first.
    pub cleaned: Vec<PathBuf>,
}

/// Each of `cfg`'s disks' fate in a clone from `src_dir` to `dst_dir`;
/// `qemu_cwd` resolves relative paths in `arguments`/`args` as QEMU will.
pub fn plan_disks(
    cfg: &VmConfig,
    src_dir: &Path,
    dst_dir: &Path,
    full: bool,
    qemu_cwd: &Path,
) -> Result<Vec<DiskPlan>, CloneError> {
    let source_vm = || cfg.name.as_deref().unwrap_or("the source").to_string();
    if let Some(d) = argument_disks(cfg, qemu_cwd)
        .into_iter()
        .find(|d| !d.read_only)
    {
        return Err(CloneError::SharedArgument {
            label: d.label,
            file: d.path,
            source_vm: source_vm(),
        });
    }
    let mut out = Vec::new();
    for e in cfg.storage() {
        if e.virtfs.is_some() {
            continue; // a shared host directory stays shared
        }
        if let Some(f) = &e.file {
            return Err(CloneError::SharedFile {
                disk: e.name.clone(),
                file: f.clone(),
                source_vm: source_vm(),
            });
        }
        let src = e.path(src_dir);
        let exists = src.exists();
        match (full, exists, e.backing_file.is_some()) {
            (true, true, _) => out.push(DiskPlan::Copy(src, e.path(dst_dir))),
            (false, true, false) => {
                return Err(CloneError::NoBase {
                    disk: e.name.clone(),
                    path: src,
                })
            }
            _ => out.push(DiskPlan::Fresh),
        }
    }
    Ok(out)
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// `maqet clone NAME NEW_NAME [--full]`: stores `dst` with `src`'s
    /// config (never autostarted) and copies what must be copied (see the
    /// module doc).
    pub async fn clone_vm(
        &self,
        src: &VmName,
        dst: &VmName,
        full: bool,
    ) -> Result<Cloned, VmError> {
        self.record(src)?;
        let (src, dst) = (src.clone(), dst.clone());
        if dst == src {
            return Err(CloneError::Exists(dst).into());
        }
        // The source's lock too: a start of it waits until the copies are
        // made, and the copies wait for a start in progress. In name order,
        // so two clones in opposite directions cannot wait for each other.
        let _locks = self.lock_both(&src, &dst)?;
        let record = self.record(&src)?;
        if let Some(what) = record.incomplete.clone() {
            return Err(CloneError::SourceIncomplete { vm: src, what }.into());
        }
        if full {
            // Its disks are mid-run: they belong with its saved RAM.
            self.refuse_saved(&src, "`clone --full` (copies of its disks)")?;
        }
        let mut cleaned = Vec::new();
        if let Ok(existing) = self.record(&dst) {
            if existing.incomplete.is_none() {
                return Err(CloneError::Exists(dst).into());
            }
            // Left by a clone that was killed (we hold its lock, so its
            // maker is gone): remove it, then clone afresh.
            cleaned = self.discard_incomplete(&dst).await?;
        }
        let cfg = stored_config(&record)?;
        let src_dir = self.disk_dir(&src);
        let dst_dir = self.disk_dir(&dst);
        let plan = plan_disks(&cfg, &src_dir, &dst_dir, full, self.data_dir.qemu_cwd())?;
        let mut copies: Vec<(PathBuf, PathBuf)> = plan
            .into_iter()
            .filter_map(|d| match d {
                DiskPlan::Copy(s, t) => Some((s, t)),
                DiskPlan::Fresh => None,
            })
            .collect();
        // The UEFI variable store (boot entries, Secure Boot keys) goes with
        // the clone, as its own copy.
        let nvram = cfg
            .desktop
            .firmware
            .as_ref()
            .map(|_| maqet_base::firmware::nvram::path(&src_dir))
            .filter(|p| p.is_file());
        let running = (!copies.is_empty() || nvram.is_some()) && self.is_running(&src).await?;
        if !copies.is_empty() && running {
            return Err(CloneError::Running { vm: src }.into());
        }
        let nvram_skipped = match nvram {
            // QEMU writes it while the VM runs: a copy could be torn.
            Some(_) if running => true,
            Some(from) => {
                // Same file name, so the clone keeps the source's format.
                let to = dst_dir.join(from.file_name().unwrap_or_default());
                copies.push((from, to));
                false
            }
            None => false,
        };
        let store = self.store()?;
        let new = NewVm {
            name: dst.to_string(),
            config: record.config.clone(),
            sources: record.sources.clone(),
            autostart: false,
        };
        let exists = |e| match e {
            StateError::Exists(_) => VmError::from(CloneError::Exists(dst.clone())),
            other => other.into(),
        };
        if copies.is_empty() {
            store.insert_vm(&new).map_err(exists)?;
        } else {
            let what = format!("a clone of '{src}' whose disk copies were not finished");
            store.insert_incomplete_vm(&new, &what).map_err(exists)?;
            if let Err(e) = copy_disks(&store, &dst, &dst_dir, &copies) {
                // What was made so far goes again, with the definition.
                return Err(match self.discard_incomplete(&dst).await {
                    Ok(_) => e,
                    Err(undo) => CloneError::NotUndone {
                        error: Box::new(e),
                        undo: Box::new(undo),
                    }
                    .into(),
                });
            }
            store.mark_complete(dst.as_str())?;
        }
        Ok(Cloned {
            vm: dst,
            nvram_skipped,
            cleaned,
        })
    }

    /// Both VMs' locks, taken in name order.
    fn lock_both(&self, a: &VmName, b: &VmName) -> Result<(VmLock, VmLock), VmError> {
        let (first, second) = if a.as_str() <= b.as_str() {
            (a, b)
        } else {
            (b, a)
        };
        let one = self.lock(first, super::LOCK_WAIT)?;
        let two = self.lock(second, super::LOCK_WAIT)?;
        Ok((one, two))
    }

    /// Removes an incomplete VM (the caller holds its lock): its leftover
    /// temporary files, the files recorded as its creations (by the rules
    /// of every deletion) and its definition, in one transaction. Returns
    /// what was deleted; anything kept is an error and the VM stays.
    async fn discard_incomplete(&self, vm: &VmName) -> Result<Vec<PathBuf>, VmError> {
        let store = self.store()?;
        let refs = self.references(&store, Some(vm)).await?;
        let tx = store.begin_write()?;
        let mut deleted = Vec::new();
        let mut kept = Vec::new();
        for left in tmp::leftovers(&self.data_dir.resolved().disk_dir(vm)) {
            match tmp::remove_leftover(&left.path) {
                Removal::Deleted => deleted.push(left.path),
                Removal::AlreadyGone => {}
                r => kept.push(format!("{}: {r:?}", left.path.display())),
            }
        }
        for (path, _, r) in st::delete_created(vm.as_str(), &tx, &|id| refs.user_of(id))? {
            match r {
                Removal::Deleted => deleted.push(path),
                Removal::AlreadyGone => {}
                Removal::KeptNotEmpty => {
                    kept.push(format!("{} (directory holds other files)", path.display()))
                }
                Removal::KeptInUse(w) | Removal::KeptUnproven(w) | Removal::Failed(w) => {
                    kept.push(format!("{} ({w})", path.display()))
                }
            }
        }
        if kept.is_empty() {
            tx.delete_vm(vm.as_str())?;
        }
        tx.commit()?;
        if kept.is_empty() {
            Ok(deleted)
        } else {
            Err(CloneError::LeftoverStays {
                vm: vm.clone(),
                why: format!("kept {}", kept.join(", ")),
            }
            .into())
        }
    }
}

/// Copies each image through a temporary file (0600, never over an
/// existing file), recording each copy as the clone's — under its final
/// name, with the temporary file's identity, before it is linked into
/// place — so `rm --delete-storage` removes exactly those and a killed run
/// leaves only files the clean-up can prove.
fn copy_disks(
    store: &Store,
    dst: &VmName,
    dst_dir: &Path,
    copies: &[(PathBuf, PathBuf)],
) -> Result<(), VmError> {
    let io = |p: &Path, source: std::io::Error| CloneError::Io {
        path: p.to_path_buf(),
        source,
    };
    if !dst_dir.exists() {
        if let Some(all) = dst_dir.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(all)
                .map_err(|e| io(all, e))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dst_dir)
            .map_err(|e| io(dst_dir, e))?;
        let dir = canonical_parent(dst_dir);
        let id = maqet_host::storage::identity::stat_path(&dir).map_err(|e| io(&dir, e))?;
        store.record_created_file(dst.as_str(), &dir, FileKind::Directory, Some(id.identity))?;
    }
    for (from, to) in copies {
        let to = canonical_parent(to);
        let mut r = maqet_base::files::open_image(from).map_err(|e| io(from, e))?;
        let mut t = TempFile::create(&to).map_err(|e| io(&to, e))?;
        std::io::copy(&mut r, t.file()).map_err(|e| io(&to, e))?;
        t.file().sync_all().map_err(|e| io(&to, e))?;
        let id = t.identity().map_err(|e| io(&to, e))?;
        store.record_created_file(dst.as_str(), &to, FileKind::Disk, Some(id))?;
        if !t.link().map_err(|e| io(&to, e))? {
            return Err(io(&to, std::io::ErrorKind::AlreadyExists.into()).into());
        }
    }
    Ok(())
}
