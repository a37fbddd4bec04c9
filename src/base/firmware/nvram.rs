//! Where a VM's copy of a firmware's NVRAM template lives (making it is
//! `maqet_host::storage::nvram`'s). The copy is made once, at the first
//! start, 0600, recorded as created by maqet (so `rm --delete-storage`
//! removes it), and never overwritten afterwards — it holds the guest's
//! boot entries and Secure Boot state. The template is only ever read.
//!
//! The copy is a qcow2 image (`efi-vars.qcow2`, QEMU ≥ 7.2 and libvirt take
//! qcow2 pflash): a raw one cannot hold internal snapshots, and a live
//! snapshot must cover every writable drive, so every UEFI VM refused
//! them. VMs made before keep their raw `efi-vars.fd` (it holds their boot
//! entries) until `maqet storage convert-nvram` converts it.

use std::path::{Path, PathBuf};

/// File name of the raw variable store of VMs made before qcow2 ones.
pub const FILE_NAME: &str = "efi-vars.fd";
/// File name of the qcow2 variable store.
pub const QCOW2_NAME: &str = "efi-vars.qcow2";

/// A VM's variable store and its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nvram {
    pub path: PathBuf,
    /// `qcow2`, or `raw` for a store made before qcow2 ones.
    pub format: &'static str,
}

/// Whether anything (a file, a dangling link) is at `p`.
pub fn present(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// The store the VM of `vm_dir` uses: its raw one while that is the only
/// one there, else the qcow2 one (made at the first start if missing).
pub fn current(vm_dir: &Path) -> Nvram {
    let raw = vm_dir.join(FILE_NAME);
    let qcow2 = vm_dir.join(QCOW2_NAME);
    if present(&raw) && !present(&qcow2) {
        Nvram {
            path: raw,
            format: "raw",
        }
    } else {
        Nvram {
            path: qcow2,
            format: "qcow2",
        }
    }
}

/// Where `vm`'s variable store lives, given its own directory.
pub fn path(vm_dir: &Path) -> PathBuf {
    current(vm_dir).path
}
