//! `maqet storage ls`: every disk of the VMs with what qemu-img knows
//! about it, plus files in the disk directory that no VM uses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::qemu_img::QemuImg;
use maqet_config::{normalize, StorageKind, VmConfig};

/// One disk image (of a VM, or unreferenced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskReport {
    /// The VM whose config names it; None for an unreferenced file.
    pub vm: Option<String>,
    /// Its `storage[].name`.
    pub drive: Option<String>,
    pub path: PathBuf,
    pub exists: bool,
    /// Recorded as created by maqet (deleted by `rm --delete-storage`).
    pub created_by_maqet: bool,
    /// The format qemu-img detects.
    pub format: Option<String>,
    pub virtual_size: Option<u64>,
    /// Bytes allocated on the host.
    pub actual_size: Option<u64>,
    /// Backing files, nearest first.
    pub backing_chain: Vec<PathBuf>,
    /// Internal snapshots of this image.
    pub snapshots: usize,
    /// False when no VM's config uses it.
    pub referenced: bool,
    /// Why qemu-img could not describe it.
    pub error: Option<String>,
}

impl DiskReport {
    fn new(path: PathBuf) -> Self {
        DiskReport {
            vm: None,
            drive: None,
            exists: path.exists(),
            path,
            created_by_maqet: false,
            format: None,
            virtual_size: None,
            actual_size: None,
            backing_chain: Vec::new(),
            snapshots: 0,
            referenced: false,
            error: None,
        }
    }

    /// Fills in what `qemu-img info` says (nothing for a missing file).
    pub fn describe(&mut self, img: Option<&QemuImg>) {
        if !self.exists {
            return;
        }
        let Some(img) = img else {
            self.error = Some("qemu-img is not available".into());
            return;
        };
        match img.info(&self.path) {
            Ok(chain) => {
                if let Some(top) = chain.first() {
                    self.format = Some(top.format.clone());
                    self.virtual_size = Some(top.virtual_size);
                    self.actual_size = top.actual_size;
                    self.snapshots = top.snapshots.len();
                }
                self.backing_chain = chain
                    .iter()
                    .skip(1)
                    .map(|i| PathBuf::from(&i.filename))
                    .collect();
            }
            Err(e) => self.error = Some(e.to_string()),
        }
    }
}

/// The disks a VM's config names (virtfs shares are not disks), not yet
/// described. `created` are the paths recorded as made by maqet.
pub fn vm_disks(vm: &str, cfg: &VmConfig, disk_dir: &Path, created: &[PathBuf]) -> Vec<DiskReport> {
    cfg.storage()
        .iter()
        .filter(|e| e.kind != StorageKind::Virtfs)
        .map(|e| {
            let mut r = DiskReport::new(e.path(disk_dir));
            r.vm = Some(vm.to_string());
            r.drive = Some(e.name.clone());
            r.created_by_maqet = created.contains(&r.path);
            r.referenced = true;
            r
        })
        .collect()
}

/// Who uses which path: the disk images of every VM and the backing files
/// their configs name. Values are VM names.
pub fn references(vms: &[(String, VmConfig, PathBuf)]) -> HashMap<PathBuf, String> {
    let mut out = HashMap::new();
    for (vm, cfg, disk_dir) in vms {
        for e in cfg.storage() {
            if e.kind == StorageKind::Virtfs {
                continue;
            }
            out.entry(normalize(&e.path(disk_dir)))
                .or_insert_with(|| vm.clone());
            if let Some(b) = e.backing_path(disk_dir) {
                out.entry(b).or_insert_with(|| vm.clone());
            }
        }
    }
    out
}

/// Regular files under `root` (recursively) that are not in `used`;
/// maqet's own temporary files and saved states (`state.sav`, which
/// `maqet status` shows) are skipped.
pub fn unreferenced(root: &Path, used: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in rd.flatten() {
            let p = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                // maqet's own temporary files (storage verify lists leftovers).
                let ours = p.file_name().is_some_and(|n| {
                    super::tmp::target_of(n).is_some() || n == super::saved::FILE_NAME
                });
                if !ours && !used(&p) {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

/// Reports for unreferenced files.
pub fn orphan_reports(paths: Vec<PathBuf>) -> Vec<DiskReport> {
    paths.into_iter().map(DiskReport::new).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_unreferenced_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        for f in [
            "a/used.qcow2",
            "a/b/old.qcow2",
            "x.img",
            "a/.d.qcow2.maqet-12.tmp",
            "a/state.sav",
        ] {
            std::fs::write(root.join(f), "").unwrap();
        }
        let used = root.join("a/used.qcow2");
        let found = unreferenced(root, &|p| p == used);
        assert_eq!(found, [root.join("a/b/old.qcow2"), root.join("x.img")]);
        assert!(unreferenced(&root.join("missing"), &|_| false).is_empty());
    }
}
