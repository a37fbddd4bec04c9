//! Making and converting a VM's NVRAM store (the per-VM copy of a
//! firmware's variable template, `maqet_base::firmware::nvram` says where it
//! lives): made once at the first start as qcow2, 0600, recorded as
//! created by maqet, never overwritten; an old raw store is converted on
//! request only.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::state::{FileKind, Store};
use crate::storage::identity::stat_path;
use crate::storage::{Created, Provisioned, QemuImg, StorageError};
use maqet_base::firmware::nvram::{current, present, QCOW2_NAME};
use maqet_base::firmware::Firmware;

/// Converts `from` (in `from_format`) into a new qcow2 image at `dest`,
/// 0600: written under a temporary name and linked into place, so a
/// concurrent start never sees half an image and a finished one is never
/// replaced. Returns false when `dest` appeared meanwhile (kept as it is).
fn make_qcow2(
    qemu_img: &QemuImg,
    from: &Path,
    from_format: &str,
    dest: &Path,
) -> Result<bool, StorageError> {
    let dir = dest.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(".{QCOW2_NAME}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let made = qemu_img
        .convert(from, from_format, &tmp, "qcow2")
        .and_then(|()| {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
                .map_err(|e| StorageError::io(&tmp, e))
        });
    let linked =
        made.and_then(|()| std::fs::hard_link(&tmp, dest).map_err(|e| StorageError::io(dest, e)));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(StorageError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::AlreadyExists =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Records `dest` as created by maqet for `vm` (listed in `done` first, so
/// a failed record still gets undone).
fn record(
    vm: &str,
    dest: &Path,
    what: String,
    store: &Store,
    done: &mut Provisioned,
) -> Result<(), StorageError> {
    let identity = stat_path(dest)
        .map_err(|e| StorageError::io(dest, e))?
        .identity;
    done.created.push(Created {
        path: dest.to_path_buf(),
        kind: FileKind::Disk,
        what,
        identity,
    });
    store.record_created_file(vm, dest, FileKind::Disk, Some(identity))?;
    Ok(())
}

/// Makes the VM's qcow2 copy of the template unless it has a store
/// already (also a dangling link: whatever is there is the user's).
pub fn provision(
    vm: &str,
    fw: &Firmware,
    vm_dir: &Path,
    qemu_img: &QemuImg,
    store: &Store,
    done: &mut Provisioned,
) -> Result<(), StorageError> {
    let dest = current(vm_dir);
    if present(&dest.path) {
        return Ok(());
    }
    let template = &fw.flash.nvram_template;
    if make_qcow2(qemu_img, template, &fw.flash.nvram_format, &dest.path)? {
        let what = format!("UEFI variable store (qcow2) from {}", template.display());
        record(vm, &dest.path, what, store, done)?;
    }
    Ok(())
}

/// What [`convert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Converted {
    /// A qcow2 copy was made of the raw store, which is kept beside it.
    Made { from: PathBuf, to: PathBuf },
    /// The VM already uses a qcow2 store.
    Already(PathBuf),
    /// The VM has no store yet: its first start makes a qcow2 one.
    NothingYet,
}

/// Converts the raw store of a stopped VM into its qcow2 store (the
/// caller holds the VM's lock and knows it does not run). The raw file is
/// left as it was: the qcow2 one wins from now on, and the raw one is the
/// way back until it is deleted (by the user, or `rm --delete-storage`).
pub fn convert(
    vm: &str,
    vm_dir: &Path,
    qemu_img: &QemuImg,
    store: &Store,
    done: &mut Provisioned,
) -> Result<Converted, StorageError> {
    let now = current(vm_dir);
    if now.format == "qcow2" {
        return Ok(if present(&now.path) {
            Converted::Already(now.path)
        } else {
            Converted::NothingYet
        });
    }
    let to = vm_dir.join(QCOW2_NAME);
    if make_qcow2(qemu_img, &now.path, "raw", &to)? {
        let what = format!("UEFI variable store (qcow2) from {}", now.path.display());
        record(vm, &to, what, store, done)?;
    }
    Ok(Converted::Made { from: now.path, to })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::NewVm;
    use maqet_base::firmware::nvram::FILE_NAME;
    use std::os::unix::fs::PermissionsExt;

    fn store(dir: &Path) -> Store {
        let store = Store::open(&dir.join("maqet.db")).unwrap();
        store
            .insert_vm(&NewVm {
                name: "vm".into(),
                config: serde_json::json!({}),
                sources: vec![],
                autostart: false,
            })
            .unwrap();
        store
    }

    fn firmware(template: &Path) -> Firmware {
        Firmware {
            descriptor: template.with_file_name("60.json"),
            flash: maqet_base::firmware::Flash {
                executable: template.with_file_name("CODE.fd"),
                executable_format: "raw".into(),
                nvram_template: template.to_path_buf(),
                nvram_format: "raw".into(),
            },
            secure_boot: false,
            requires_smm: false,
        }
    }

    /// The image's bytes as a raw file, through qemu-img.
    fn raw_bytes(img: &QemuImg, path: &Path, format: &str) -> Vec<u8> {
        let out = path.with_extension("check.raw");
        let _ = std::fs::remove_file(&out);
        img.convert(path, format, &out, "raw").unwrap();
        let b = std::fs::read(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        b
    }

    #[test]
    fn new_stores_are_qcow2_made_once_private_and_never_overwritten() {
        let t = tempfile::tempdir().unwrap();
        let img = QemuImg::find(None).unwrap();
        let store = store(t.path());
        let template = t.path().join("VARS.fd");
        let pattern: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&template, &pattern).unwrap();
        let fw = firmware(&template);
        let vm_dir = t.path().join("vm");
        std::fs::create_dir(&vm_dir).unwrap();
        let mut done = Provisioned::default();
        provision("vm", &fw, &vm_dir, &img, &store, &mut done).unwrap();
        let n = current(&vm_dir);
        assert_eq!(
            (n.path.clone(), n.format),
            (vm_dir.join(QCOW2_NAME), "qcow2")
        );
        let info = img.info(&n.path).unwrap();
        assert_eq!(info[0].format, "qcow2");
        assert_eq!(raw_bytes(&img, &n.path, "qcow2"), pattern);
        let mode = std::fs::metadata(&n.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(done.created.len(), 1);
        assert_eq!(store.created_files("vm").unwrap().len(), 1);
        // What the firmware wrote stays: a second start makes nothing.
        let inode = std::fs::metadata(&n.path).unwrap();
        let mut again = Provisioned::default();
        provision("vm", &fw, &vm_dir, &img, &store, &mut again).unwrap();
        assert!(again.created.is_empty());
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&n.path).unwrap().ino(), inode.ino());
        assert_eq!(std::fs::read(&template).unwrap(), pattern);
    }

    #[test]
    fn an_old_raw_store_is_used_until_converted_and_then_kept() {
        let t = tempfile::tempdir().unwrap();
        let img = QemuImg::find(None).unwrap();
        let store = store(t.path());
        let vm_dir = t.path().join("vm");
        std::fs::create_dir(&vm_dir).unwrap();
        let mut done = Provisioned::default();
        assert_eq!(
            convert("vm", &vm_dir, &img, &store, &mut done).unwrap(),
            Converted::NothingYet
        );
        let raw = vm_dir.join(FILE_NAME);
        let vars: Vec<u8> = (0..65536u32).map(|i| (i % 7) as u8).collect();
        std::fs::write(&raw, &vars).unwrap();
        assert_eq!(current(&vm_dir).format, "raw");
        let made = convert("vm", &vm_dir, &img, &store, &mut done).unwrap();
        let qcow2 = vm_dir.join(QCOW2_NAME);
        assert_eq!(
            made,
            Converted::Made {
                from: raw.clone(),
                to: qcow2.clone()
            }
        );
        assert_eq!(raw_bytes(&img, &qcow2, "qcow2"), vars);
        assert_eq!(std::fs::read(&raw).unwrap(), vars, "the raw store is kept");
        assert_eq!(current(&vm_dir).path, qcow2);
        assert_eq!(done.created.len(), 1);
        assert_eq!(
            convert("vm", &vm_dir, &img, &store, &mut done).unwrap(),
            Converted::Already(qcow2)
        );
    }
}
