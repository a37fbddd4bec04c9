//! Disk-only snapshots with qemu-img while the VM is stopped; an image
//! another process holds is explained by naming the running VM that has it
//! open.

use std::path::Path;

use maqet_base::vmname::VmName;
use maqet_config::VmConfig;
use maqet_host::ipc::protocol::FreezeReport;
use maqet_host::storage::snapshot as snap;
use maqet_host::storage::{QemuImg, References, StorageError};

use super::{Runners, SnapshotOp, SnapshotRequest, Snapshotted, UnitManager, VmError, Vms};

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// `req` on drive `drive`'s image `path` of the stopped `vm`.
    pub(super) async fn snapshot_offline(
        &self,
        vm: VmName,
        cfg: &VmConfig,
        drive: &str,
        path: &Path,
        req: &SnapshotRequest,
    ) -> Result<Snapshotted, VmError> {
        let img = QemuImg::find(Some(&cfg.binary))?;
        let (replaced, ram_not_loaded) = match offline(&img, req.op, drive, path, &req.tag) {
            Ok(r) => r,
            Err(e) => return Err(self.explain_lock(&img, e).await.into()),
        };
        Ok(Snapshotted {
            vm,
            tag: req.tag.clone(),
            op: req.op,
            drives: vec![drive.to_string()],
            vmstate_drive: None,
            replaced,
            ram_not_loaded,
            freeze: FreezeReport::default(),
        })
    }

    /// A lock conflict names the running VM (of any data directory) that
    /// has the image open, directly or down a backing chain; when none
    /// has, the lock is some other process's (e.g. a concurrent maqet
    /// command). Without a user manager no VM runs, so nobody is named.
    async fn explain_lock(&self, img: &QemuImg, e: StorageError) -> StorageError {
        let StorageError::Locked {
            command,
            stderr,
            path,
            user: None,
        } = e
        else {
            return e;
        };
        let mut refs = References::default();
        if let Ok(procs) = self.running_processes().await {
            for p in procs {
                refs.add_argv(&p.argv, p.cwd.as_deref(), &p.user);
            }
            refs.add_backing_chains(img);
        }
        StorageError::Locked {
            command,
            stderr,
            user: refs.user_of_path(&path),
            path,
        }
    }
}

/// Runs `op` with qemu-img; returns whether a snapshot was replaced and
/// whether a load left RAM state behind.
fn offline(
    img: &QemuImg,
    op: SnapshotOp,
    drive: &str,
    path: &Path,
    tag: &str,
) -> Result<(bool, bool), StorageError> {
    Ok(match op {
        SnapshotOp::Create { overwrite, .. } => {
            (snap::create(img, drive, path, tag, overwrite)?, false)
        }
        SnapshotOp::Load => (false, snap::load(img, drive, path, tag)?.is_live()),
        SnapshotOp::Delete => {
            snap::delete(img, drive, path, tag)?;
            (false, false)
        }
    })
}
