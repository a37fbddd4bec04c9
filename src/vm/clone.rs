//! `clone`: a new VM from a stored one — same config under a new name,
//! its own disks (fresh overlays on the same `base:`, or copies with
//! `full`), its own UEFI variable store, and a fresh identity (its name is
//! the one thing the runner derives MAC, ports and sockets from).

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::config::VmConfig;
use crate::state::{FileKind, NewVm, StateError, Store};
use crate::vmname::VmName;

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
    #[error("storage '{disk}' ({}) has no base image to start the clone from; use --full to copy it", path.display())]
    NoBase { disk: String, path: PathBuf },
    /// QEMU writes the disks while the VM runs: a copy could be torn.
    #[error("VM '{vm}' is running; stop it before copying its disks (`maqet stop {vm}`)")]
    Running { vm: VmName },
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
}

/// Each of `cfg`'s disks' fate in a clone from `src_dir` to `dst_dir`.
pub fn plan_disks(
    cfg: &VmConfig,
    src_dir: &Path,
    dst_dir: &Path,
    full: bool,
) -> Result<Vec<DiskPlan>, CloneError> {
    let mut out = Vec::new();
    for e in cfg.storage() {
        if e.virtfs.is_some() {
            continue; // a shared host directory stays shared
        }
        if let Some(f) = &e.file {
            return Err(CloneError::SharedFile {
                disk: e.name.clone(),
                file: f.clone(),
                source_vm: cfg.name.as_deref().unwrap_or("the source").to_string(),
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
    /// `maqet clone NAME NEW_NAME [--full]`: stores `new_name` with
    /// `name`'s config (never autostarted) and copies what must be copied.
    pub async fn clone_vm(
        &self,
        name: &str,
        new_name: &str,
        full: bool,
    ) -> Result<Cloned, VmError> {
        let (src, record) = self.record(name)?;
        let dst = VmName::new(new_name)?;
        if self.record(dst.as_str()).is_ok() {
            return Err(CloneError::Exists(dst).into());
        }
        let cfg = stored_config(&record)?;
        let src_dir = self.disk_dir(&src);
        let dst_dir = self.disk_dir(&dst);
        let mut copies: Vec<(PathBuf, PathBuf)> = plan_disks(&cfg, &src_dir, &dst_dir, full)?
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
            .map(|_| crate::firmware::nvram::path(&src_dir))
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
        let _lock = self.lock(dst.as_str(), super::LOCK_WAIT)?;
        let store = self.store()?;
        store
            .insert_vm(&NewVm {
                name: dst.to_string(),
                config: record.config.clone(),
                sources: record.sources.clone(),
                autostart: false,
            })
            .map_err(|e| match e {
                StateError::Exists(_) => VmError::from(CloneError::Exists(dst.clone())),
                other => other.into(),
            })?;
        if let Err(e) = copy_disks(&store, &dst, &dst_dir, &copies) {
            // Undo: what was copied so far, then the record.
            let _ = crate::storage::delete_created(dst.as_str(), &store, &|_| None);
            let _ = store.delete_vm(dst.as_str());
            return Err(e);
        }
        Ok(Cloned {
            vm: dst,
            nvram_skipped,
        })
    }
}

/// Copies (0600, never over an existing file) and records each copy as the
/// clone's, so `rm --delete-storage` removes exactly those.
fn copy_disks(
    store: &Store,
    dst: &VmName,
    dst_dir: &Path,
    copies: &[(PathBuf, PathBuf)],
) -> Result<(), VmError> {
    if copies.is_empty() {
        return Ok(());
    }
    let io = |p: &Path, source: std::io::Error| CloneError::Io {
        path: p.to_path_buf(),
        source,
    };
    if !dst_dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dst_dir)
            .map_err(|e| io(dst_dir, e))?;
        let id = crate::storage::identity::stat_path(dst_dir).map_err(|e| io(dst_dir, e))?;
        store.record_created_file(
            dst.as_str(),
            dst_dir,
            FileKind::Directory,
            Some(id.identity),
        )?;
    }
    for (from, to) in copies {
        let mut r = std::fs::File::open(from).map_err(|e| io(from, e))?;
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
            .map_err(|e| io(to, e))?;
        let id = crate::storage::identity::stat_path(to).map_err(|e| io(to, e))?;
        store.record_created_file(dst.as_str(), to, FileKind::Disk, Some(id.identity))?;
        std::io::copy(&mut r, &mut w).map_err(|e| io(to, e))?;
        w.sync_all().map_err(|e| io(to, e))?;
    }
    Ok(())
}
