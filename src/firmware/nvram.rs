//! The per-VM copy of a firmware's NVRAM template: made once, at the first
//! start, 0600, recorded as created by maqet (so `rm --delete-storage`
//! removes it), and never overwritten afterwards — it holds the guest's
//! boot entries and Secure Boot state. The template is only ever read.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::state::{FileKind, Store};
use crate::storage::identity::stat_path;
use crate::storage::{Created, Provisioned, StorageError};

use super::Firmware;

/// File name of the variable store inside the VM's directory.
pub const FILE_NAME: &str = "efi-vars.fd";

/// Where `vm`'s variable store lives, given its own directory.
pub fn path(vm_dir: &Path) -> PathBuf {
    vm_dir.join(FILE_NAME)
}

/// Copies the template to `dest` unless `dest` exists (also as a dangling
/// link: whatever is there is the user's). Written under a temporary name
/// and linked into place, so a concurrent start never sees half a copy
/// and never replaces a finished one.
pub fn provision(
    vm: &str,
    fw: &Firmware,
    dest: &Path,
    store: &Store,
    done: &mut Provisioned,
) -> Result<(), StorageError> {
    if dest.exists() || dest.is_symlink() {
        return Ok(());
    }
    let template = &fw.flash.nvram_template;
    let data = std::fs::read(template).map_err(|e| StorageError::io(template, e))?;
    let dir = dest.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()
    })();
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, dest));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(StorageError::io(dest, e)),
    }
    let identity = stat_path(dest)
        .map_err(|e| StorageError::io(dest, e))?
        .identity;
    // Listed before it is recorded, so a failed record still gets undone.
    done.created.push(Created {
        path: dest.to_path_buf(),
        kind: FileKind::Disk,
        what: format!("UEFI variable store from {}", template.display()),
        identity,
    });
    store.record_created_file(vm, dest, FileKind::Disk, Some(identity))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::NewVm;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_once_private_and_never_overwrites() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(&t.path().join("maqet.db")).unwrap();
        store
            .insert_vm(&NewVm {
                name: "vm".into(),
                config: serde_json::json!({}),
                sources: vec![],
                autostart: false,
            })
            .unwrap();
        let template = t.path().join("VARS.fd");
        std::fs::write(&template, b"template").unwrap();
        let fw = Firmware {
            descriptor: t.path().join("60.json"),
            flash: super::super::Flash {
                executable: t.path().join("CODE.fd"),
                executable_format: "raw".into(),
                nvram_template: template.clone(),
                nvram_format: "raw".into(),
            },
            secure_boot: false,
            requires_smm: false,
        };
        let dest = path(t.path());
        let mut done = Provisioned::default();
        provision("vm", &fw, &dest, &store, &mut done).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"template");
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(done.created.len(), 1);
        assert_eq!(store.created_files("vm").unwrap().len(), 1);
        // What the firmware wrote stays.
        std::fs::write(&dest, b"guest state").unwrap();
        let mut again = Provisioned::default();
        provision("vm", &fw, &dest, &store, &mut again).unwrap();
        assert!(again.created.is_empty());
        assert_eq!(std::fs::read(&dest).unwrap(), b"guest state");
        assert_eq!(std::fs::read(&template).unwrap(), b"template");
    }
}
