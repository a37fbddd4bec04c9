//! Snapshots of a VM's disks, as `maqet snapshot` asks for them: the vm
//! layer decides between a disk-only snapshot with qemu-img (VM stopped)
//! and a whole-VM one through the runner's QEMU (`live`, VM running),
//! refuses the mismatches, and hands back what was done as data. The
//! storage layer does the work (storage/snapshot.rs, storage/live.rs).
//!
//! - `offline.rs`: qemu-img on a stopped VM's image, naming the running VM
//!   that holds a locked image.
//! - `live.rs`: jobs in the running VM, with their freeze report.
//! - `list.rs`: the snapshots of every disk, rows for `snapshot list`.

mod list;
mod live;
mod offline;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use maqet_base::vmname::VmName;
use maqet_host::ipc::protocol::FreezeReport;
use maqet_host::state::Store;
use maqet_host::storage::live::Progress;
use maqet_host::storage::snapshot as snap;

use super::{stored_config, Runners, UnitManager, VmError, Vms};

pub use list::SnapshotRow;

/// What to do with snapshot `tag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotOp {
    Create {
        /// Replace a snapshot of that name.
        overwrite: bool,
        /// Freeze the guest's file systems around a live save (when it has
        /// an agent).
        freeze: bool,
    },
    Load,
    Delete,
}

impl SnapshotOp {
    pub fn verb(self) -> &'static str {
        match self {
            SnapshotOp::Create { .. } => "create",
            SnapshotOp::Load => "load",
            SnapshotOp::Delete => "delete",
        }
    }

    /// What qemu-img would have done to a running VM.
    fn refusal(self) -> &'static str {
        match self {
            SnapshotOp::Create { .. } => "take a disk-only snapshot of",
            SnapshotOp::Load => "load a disk snapshot into",
            SnapshotOp::Delete => "delete a snapshot of a disk of",
        }
    }
}

/// One snapshot operation on VM `vm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRequest {
    pub vm: VmName,
    /// The disk (`storage[].name`); with `live` it holds the VM state.
    pub drive: String,
    pub tag: String,
    pub op: SnapshotOp,
    /// The whole running VM (every writable disk plus RAM), not one disk.
    pub live: bool,
}

/// What a snapshot operation did.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshotted {
    pub vm: VmName,
    pub tag: String,
    pub op: SnapshotOp,
    /// Disk only: the one drive; live: every drive it covered, the
    /// VM-state drive first.
    pub drives: Vec<String>,
    /// Live: the drive that holds the VM state.
    pub vmstate_drive: Option<String>,
    /// A create replaced a snapshot of that name.
    pub replaced: bool,
    /// A disk-only load of a snapshot that also has RAM state, which was
    /// not loaded (a stopped VM boots afresh).
    pub ram_not_loaded: bool,
    /// What happened to the guest's file systems (live save and load).
    pub freeze: FreezeReport,
}

impl Snapshotted {
    pub fn live(&self) -> bool {
        self.vmstate_drive.is_some()
    }

    /// Why a live save of a VM with an agent went unfrozen although a
    /// freeze was asked for.
    pub fn unfrozen_reason(&self) -> Option<&str> {
        let f = &self.freeze;
        match self.op {
            SnapshotOp::Create { freeze: true, .. } if self.live() && f.agent && !f.frozen => {
                f.reason.as_deref()
            }
            _ => None,
        }
    }
}

/// Refusals of a snapshot operation that does not fit the VM's state.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("VM '{vm}' is not running, so there is no live state to {verb} (without --live, `maqet snapshot {verb} {vm} {drive} {tag}` works on the stopped VM's disk)")]
    NotRunning {
        vm: VmName,
        verb: &'static str,
        drive: String,
        tag: String,
    },
    #[error("VM '{vm}' is running: maqet will not {} a running VM with qemu-img. Stop it first (`maqet stop {vm}`), or add --live to {} the whole running VM (every disk plus RAM) through QEMU", .op.refusal(), .op.verb())]
    Running { vm: VmName, op: SnapshotOp },
    /// The drive is `readonly: true`: its image must only be read.
    #[error("drive '{drive}' of VM '{vm}' is read-only (`readonly: true`), and a snapshot {} writes its image {}; nothing was changed", .op.verb(), path.display())]
    ReadOnly {
        vm: VmName,
        drive: String,
        path: PathBuf,
        op: SnapshotOp,
    },
    /// The image is the base of other images: writing it (a snapshot's
    /// metadata, or a load's old contents) changes what they read.
    #[error("{} (drive '{drive}' of VM '{vm}') is read by other images as their base: {}; a snapshot {} would write it and change what they read, so nothing was changed (snapshot the overlays instead, or give '{vm}' a copy of the image)", path.display(), users.join("; "), .op.verb())]
    BaseOfOthers {
        vm: VmName,
        drive: String,
        path: PathBuf,
        users: Vec<String>,
        op: SnapshotOp,
    },
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// Creates, loads or deletes a snapshot: disk-only while the VM is
    /// stopped, of the whole VM with `live` while it runs. `progress`
    /// hears how a live job advances.
    pub async fn snapshot(
        &self,
        req: &SnapshotRequest,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Snapshotted, VmError> {
        if let SnapshotOp::Create { .. } = req.op {
            snap::validate_tag(&req.tag)?;
        }
        let vm = req.vm.clone();
        let rec = self.record(&vm)?;
        VmError::refuse_incomplete(&vm, &rec)?;
        let cfg = stored_config(&rec)?;
        let entry = snap::find_drive(vm.as_str(), &cfg, &req.drive)?;
        let disk_dir = self.disk_dir(&vm);
        if entry.readonly {
            return Err(SnapshotError::ReadOnly {
                vm,
                drive: entry.name.clone(),
                path: entry.path(&disk_dir),
                op: req.op,
            }
            .into());
        }
        let running = self.is_running(&vm).await?;
        match (req.live, running) {
            (true, true) => {
                let path = entry.path(&disk_dir);
                self.snapshot_live(&vm, &cfg, &path, req, progress).await
            }
            (true, false) => Err(SnapshotError::NotRunning {
                verb: req.op.verb(),
                drive: req.drive.clone(),
                tag: req.tag.clone(),
                vm,
            }
            .into()),
            (false, true) => Err(SnapshotError::Running { vm, op: req.op }.into()),
            (false, false) => {
                let action = format!("a disk-only `snapshot {}`", req.op.verb());
                self.refuse_saved(&vm, &action)?;
                let path = snap::snapshot_image(vm.as_str(), entry, &disk_dir)?;
                let name = entry.name.clone();
                self.refuse_bases(&vm, &[(name.clone(), path.clone())], req.op)
                    .await?;
                self.snapshot_offline(vm, &cfg, &name, &path, req).await
            }
        }
    }

    /// A snapshot writes each of `images` (drive, path): refused when one
    /// is the base of any image a VM uses — down the backing chain of a
    /// disk of any VM of this data directory (this one included) or of a
    /// running QEMU of the user's, or a configured `base:`.
    pub(super) async fn refuse_bases(
        &self,
        vm: &VmName,
        images: &[(String, PathBuf)],
        op: SnapshotOp,
    ) -> Result<(), VmError> {
        // Read only: a snapshot works on a data directory that is full.
        let Some(store) = Store::open_read_only(&self.data_dir.db_path())? else {
            return Ok(());
        };
        let refs = self.references(&store, None).await?;
        for (drive, path) in images {
            let users = refs.backing_users_of_path(path);
            if !users.is_empty() {
                return Err(SnapshotError::BaseOfOthers {
                    vm: vm.clone(),
                    drive: drive.clone(),
                    path: path.clone(),
                    users,
                    op,
                }
                .into());
            }
        }
        Ok(())
    }
}
