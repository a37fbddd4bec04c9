//! `snapshot list`: the snapshots of a VM's disks, one row each. A running
//! VM's come from its QEMU, which has the images open (every attached
//! disk, `arguments` ones included); a stopped VM's from qemu-img, over
//! its qcow2 `storage` disks and the images its `arguments` name.

use std::path::{Path, PathBuf};

use maqet_base::vmname::VmName;
use maqet_config::canonical;
use maqet_config::{RenderContext, StorageKind, VmConfig};
use maqet_host::ipc::IpcClient;
use maqet_host::storage::live::{self, BlockNode, QmpExec};
use maqet_host::storage::refs::argv_paths;
use maqet_host::storage::snapshot as snap;
use maqet_host::storage::{QemuImg, SnapshotInfo, StorageError};

use super::{stored_config, Runners, UnitManager, VmError, Vms};

/// One snapshot on one disk.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRow {
    /// maqet's drive name, or the image's path when the config has none.
    pub drive: String,
    pub tag: String,
    pub id: String,
    /// When it was taken, seconds since the epoch.
    pub date_sec: i64,
    /// Bytes of saved RAM/device state (0 = disk only).
    pub vm_state_size: u64,
    /// Part of a whole-VM snapshot (this disk's part may have no VM state:
    /// only one drive of a live snapshot holds it).
    pub live: bool,
    /// Guest clock at the snapshot, seconds.
    pub vm_clock_sec: f64,
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// The snapshots of VM `name`'s disks, or of the qcow2 drive `drive`
    /// only.
    pub async fn snapshots(
        &self,
        vm: &VmName,
        drive: Option<&str>,
    ) -> Result<Vec<SnapshotRow>, VmError> {
        let rec = self.record(vm)?;
        let cfg = stored_config(&rec)?;
        let disk_dir = self.disk_dir(vm);
        let only = match drive {
            Some(d) => {
                let e = snap::find_drive(vm.as_str(), &cfg, d)?;
                if e.kind != StorageKind::Qcow2 {
                    return Err(StorageError::NotSnapshottable {
                        drive: e.name.clone(),
                        format: e.kind.as_str().into(),
                    }
                    .into());
                }
                Some(e.name.clone())
            }
            None => None,
        };
        // Every disk is read, also for one drive: a live snapshot keeps its
        // VM state on one drive only, and the others tell what its parts are.
        let labels = Labels::new(&cfg, &disk_dir);
        let mut out: Vec<SnapshotRow> = Vec::new();
        if self.is_running(vm).await? {
            let mut client = self.runner(vm).await?;
            for n in attached(&mut client).await? {
                out.extend(rows(&labels.label(&n.file), n.snapshots));
            }
        } else {
            let img = QemuImg::find(Some(&cfg.binary))?;
            for e in cfg
                .storage()
                .iter()
                .filter(|e| e.kind == StorageKind::Qcow2)
            {
                let path = e.path(&disk_dir);
                if !path.exists() {
                    if only.as_deref() == Some(e.name.as_str()) {
                        snap::snapshot_image(vm.as_str(), e, &disk_dir)?;
                    }
                    continue;
                }
                out.extend(rows(&e.name, snap::list(&img, &path)?));
            }
            for path in argument_images(&cfg, vm, &disk_dir, &labels.paths) {
                // Not every file on the command line is an image (kernel, …).
                if let Ok(chain) = img.info(&path) {
                    if let Some(top) = chain.into_iter().next().filter(|i| i.format == "qcow2") {
                        out.extend(rows(&labels.label(&path), top.snapshots));
                    }
                }
            }
        }
        mark_live(&mut out);
        if let Some(d) = only {
            out.retain(|r| r.drive == d);
        }
        Ok(out)
    }
}

fn rows(drive: &str, snaps: Vec<SnapshotInfo>) -> impl Iterator<Item = SnapshotRow> + '_ {
    snaps.into_iter().map(move |s| SnapshotRow {
        drive: drive.to_string(),
        live: s.is_live(),
        tag: s.name,
        id: s.id,
        date_sec: s.date_sec,
        vm_state_size: s.vm_state_size,
        vm_clock_sec: s.vm_clock_sec as f64 + s.vm_clock_nsec as f64 / 1e9,
    })
}

/// A snapshot of the same tag and time as one with VM state is part of
/// that whole-VM snapshot, though its disk holds no VM state.
pub(super) fn mark_live(rows: &mut [SnapshotRow]) {
    let live: Vec<(String, i64)> = rows
        .iter()
        .filter(|r| r.vm_state_size > 0)
        .map(|r| (r.tag.clone(), r.date_sec))
        .collect();
    for r in rows.iter_mut() {
        if live.contains(&(r.tag.clone(), r.date_sec)) {
            r.live = true;
        }
    }
}

/// The disks QEMU has attached.
pub(super) async fn attached(client: &mut IpcClient) -> Result<Vec<BlockNode>, StorageError> {
    let reply = client.execute("query-block", serde_json::json!({})).await?;
    Ok(live::parse_query_block(&reply))
}

/// maqet's drive names of image paths, for messages.
/// The drive name a VM's UEFI variable store is shown as.
pub(super) const NVRAM_LABEL: &str = "UEFI variable store";

pub(super) struct Labels {
    /// Canonical path and drive name of each `storage` disk.
    paths: Vec<(PathBuf, String)>,
}

impl Labels {
    pub(super) fn new(cfg: &VmConfig, disk_dir: &Path) -> Self {
        let mut paths: Vec<(PathBuf, String)> = cfg
            .storage()
            .iter()
            .filter(|e| e.kind != StorageKind::Virtfs)
            .map(|e| (canonical(&e.path(disk_dir)), e.name.clone()))
            .collect();
        // A qcow2 variable store is in every live snapshot too.
        if cfg.desktop.firmware.is_some() {
            let vars = maqet_base::firmware::nvram::path(disk_dir);
            paths.push((canonical(&vars), NVRAM_LABEL.to_string()));
        }
        Labels { paths }
    }

    /// The drive name of image `p`, if it is a `storage` disk.
    pub(super) fn name(&self, p: &Path) -> Option<String> {
        let c = canonical(p);
        self.paths
            .iter()
            .find(|(q, _)| *q == c)
            .map(|(_, n)| n.clone())
    }

    /// The drive name of `p`, else its path.
    fn label(&self, p: &Path) -> String {
        self.name(p).unwrap_or_else(|| p.display().to_string())
    }
}

/// Existing files the rendered command line names besides the `storage`
/// disks (`arguments` drives); each once.
fn argument_images(
    cfg: &VmConfig,
    vm: &VmName,
    disk_dir: &Path,
    storage: &[(PathBuf, String)],
) -> Vec<PathBuf> {
    let argv = cfg.render_argv(&RenderContext {
        vm_name: vm.to_string(),
        qmp_fd: maqet_base::units::QMP_FD,
        console_fd: None,
        disk_dir: disk_dir.to_path_buf(),
        runtime_dir: maqet_base::paths::vm_runtime_dir_or_default(vm.as_str()),
    });
    let mut seen: Vec<PathBuf> = storage.iter().map(|(p, _)| p.clone()).collect();
    // hook: issue 10 — UEFI flash images are firmware, not disks.
    if let Some(fw) = &cfg.desktop.firmware {
        seen.push(canonical(&fw.flash.executable));
        seen.push(canonical(&maqet_base::firmware::nvram::path(disk_dir)));
    }
    let mut out = Vec::new();
    for p in argv_paths(&argv).into_iter().map(PathBuf::from) {
        let c = canonical(&p);
        if p.is_absolute() && p.is_file() && !seen.contains(&c) {
            seen.push(c);
            out.push(p);
        }
    }
    out
}
