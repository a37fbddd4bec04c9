//! `maqet storage ls`: every disk the definitions of a data directory name
//! (with what qemu-img says of it and whether maqet created it), and the
//! files in its disk directories that no VM uses, backing chains counted
//! as used. Reads the definitions only: no user session is needed.

use std::path::PathBuf;

use maqet_base::paths::DataDir;
use maqet_base::vmname::VmName;
use maqet_config::{canonical, VmConfig};
use maqet_host::state::Store;
use maqet_host::storage::inventory::{self, DiskReport};
use maqet_host::storage::QemuImg;

use super::{stored_config, Notice, Notify, VmError};

/// The disks of every VM of `data_dir` (of `only`, when given) and the
/// unreferenced files beside them. A VM whose config no longer validates
/// is left out with a [`Notice::SkippedInvalid`].
pub fn disk_inventory(
    data_dir: &DataDir,
    only: Option<&VmName>,
    notify: Notify,
) -> Result<Vec<DiskReport>, VmError> {
    if let Some(vm) = only {
        super::record(data_dir, vm)?;
    }
    let Some(store) = Store::open_read_only(&data_dir.db_path())? else {
        return Ok(Vec::new());
    };
    let vms = all_configs(data_dir, &store, notify)?;
    let img = QemuImg::find(vms.first().map(|v| v.1.binary.as_path())).ok();
    let mut reports: Vec<DiskReport> = Vec::new();
    for (name, cfg, disk_dir) in &vms {
        if only.is_some_and(|vm| vm.as_str() != name) {
            continue;
        }
        let created: Vec<PathBuf> = store
            .created_files(name)?
            .into_iter()
            .map(|f| canonical(&f.path))
            .collect();
        let mut disks = inventory::vm_disks(name, cfg, disk_dir, &[]);
        for d in disks.iter_mut() {
            d.created_by_maqet = created.contains(&canonical(&d.path));
        }
        reports.extend(disks);
    }
    for r in reports.iter_mut() {
        r.describe(img.as_ref());
    }
    // Files in the disk directory no VM uses (backing chains count as used).
    let mut used: Vec<PathBuf> = inventory::references(&vms).into_keys().collect();
    used.extend(reports.iter().flat_map(|r| r.backing_chain.iter().cloned()));
    let used: Vec<PathBuf> = used.iter().map(|p| canonical(p)).collect();
    let root = match only {
        Some(vm) => data_dir.disk_dir(vm),
        None => data_dir.path().join("disks"),
    };
    let mut orphans = inventory::orphan_reports(inventory::unreferenced(&root, &|p| {
        used.contains(&canonical(p))
    }));
    for r in orphans.iter_mut() {
        r.describe(img.as_ref());
    }
    reports.extend(orphans);
    Ok(reports)
}

/// Every VM's validated config with its disk directory.
fn all_configs(
    data_dir: &DataDir,
    store: &Store,
    notify: Notify,
) -> Result<Vec<(String, VmConfig, PathBuf)>, VmError> {
    let mut out = Vec::new();
    for rec in store.list_vms()? {
        let Ok(vm) = VmName::new(&rec.name) else {
            continue;
        };
        match stored_config(&rec) {
            Ok(cfg) => out.push((rec.name.clone(), cfg, data_dir.disk_dir(&vm))),
            Err(VmError::StoredConfig { vm, source }) => notify(Notice::SkippedInvalid {
                vm,
                error: source.to_string(),
            }),
            Err(e) => notify(Notice::Warning {
                message: e.to_string(),
            }),
        }
    }
    Ok(out)
}
