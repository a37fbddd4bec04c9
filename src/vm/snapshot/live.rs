//! Whole-VM snapshots of a running VM (every writable disk plus RAM),
//! as jobs in its QEMU through the runner, which freezes the guest's file
//! systems around a save; a failed thaw is an error of its own.

use std::path::Path;

use maqet_base::vmname::VmName;
use maqet_config::VmConfig;
use maqet_host::ipc::protocol::FreezeReport;
use maqet_host::storage::live::{self, Progress};
use maqet_host::storage::StorageError;

use super::list::{attached, Labels};
use super::{Runners, SnapshotOp, SnapshotRequest, Snapshotted, UnitManager, VmError, Vms};

/// A raw UEFI variable store that blocks a live snapshot says how to make
/// it qcow2 (VMs made before qcow2 stores have a raw one).
fn with_nvram_hint(vm: &VmName, e: StorageError) -> StorageError {
    match e {
        StorageError::LiveUnsupported { vm: v, drives } => StorageError::LiveUnsupported {
            vm: v,
            drives: drives
                .into_iter()
                .map(|d| {
                    let nvram = d.starts_with(&format!("drive '{}'", super::list::NVRAM_LABEL));
                    match d.strip_suffix(')').filter(|_| nvram) {
                        // "drive 'L' (raw, PATH)" → "… (raw, PATH; how to fix)"
                        Some(open) => format!(
                            "{open}; `maqet storage convert-nvram {vm}`, with the VM stopped, makes it qcow2)"
                        ),
                        None => d,
                    }
                })
                .collect(),
        },
        other => other,
    }
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// `req` on the running `vm`, whose VM state goes to the image
    /// `drive_path` of the drive the request names.
    pub(super) async fn snapshot_live(
        &self,
        vm: &VmName,
        cfg: &VmConfig,
        drive_path: &Path,
        req: &SnapshotRequest,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Snapshotted, VmError> {
        let mut client = self.runner(vm).await?;
        let nodes = attached(&mut client).await?;
        let labels = Labels::new(cfg, &self.disk_dir(vm));
        let target = live::target(vm.as_str(), &nodes, &req.drive, drive_path, &|p| {
            labels.name(p)
        })
        .map_err(|e| with_nvram_hint(vm, e))?;
        // Every disk the job writes must be free to write.
        let images: Vec<(String, std::path::PathBuf)> = target
            .devices
            .iter()
            .map(|n| (n.label.clone(), n.file.clone()))
            .collect();
        self.refuse_bases(vm, &images, req.op).await?;
        let tag = req.tag.as_str();
        let (replaced, freeze) = match req.op {
            SnapshotOp::Create { overwrite, freeze } => {
                let o = live::save(&mut client, &target, tag, overwrite, freeze, progress).await;
                settle(vm, o)?
            }
            SnapshotOp::Load => {
                let o = live::load(&mut client, vm.as_str(), &target, tag, progress).await;
                let (_, f) = settle(vm, o)?;
                (false, f)
            }
            SnapshotOp::Delete => {
                live::delete(&mut client, vm.as_str(), &target, tag, progress).await?;
                (false, FreezeReport::default())
            }
        };
        Ok(Snapshotted {
            vm: vm.clone(),
            tag: req.tag.clone(),
            op: req.op,
            drives: target.devices.iter().map(|n| n.label.clone()).collect(),
            vmstate_drive: Some(target.vmstate.label.clone()),
            replaced,
            ram_not_loaded: false,
            freeze,
        })
    }
}

/// A live save's or load's result with its freeze report; a failed thaw is
/// an error even when the job succeeded (the guest may be left frozen), and
/// a failed job says whether the guest was thawed.
pub(super) fn settle<T>(
    vm: &VmName,
    o: live::Outcome<T>,
) -> Result<(T, FreezeReport), StorageError> {
    match (o.result, o.freeze.thaw_error.clone()) {
        (Ok(t), None) => Ok((t, o.freeze)),
        (Ok(_), Some(error)) => Err(StorageError::Thaw {
            vm: vm.to_string(),
            done: "the snapshot job finished".into(),
            error,
        }),
        (Err(e), Some(error)) => Err(StorageError::Thaw {
            vm: vm.to_string(),
            done: e.to_string(),
            error,
        }),
        (Err(StorageError::Job { what, message }), None) if o.freeze.frozen => {
            Err(StorageError::Job {
                what,
                message: format!("{message} (the guest's file systems were thawed again)"),
            })
        }
        (Err(e), None) => Err(e),
    }
}
