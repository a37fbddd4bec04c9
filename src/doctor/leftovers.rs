//! What interrupted maqet commands left half made in the data directory:
//! VMs marked incomplete (a clone killed while copying) and temporary files
//! no process is writing any more (storage/tmp.rs). `--fix` removes the
//! temporary files — nothing reads them, and removing one goes through the
//! same checks as every deletion —, not the incomplete VMs, whose removal
//! is `maqet rm --delete-storage` (it also deletes the copies they hold).

use std::path::{Path, PathBuf};

use super::store::DefinedVm;
use super::{Finding, Severity};
use crate::paths::DataDir;
use crate::storage::tmp;
use crate::storage::Removal;
use crate::vm::verify::file_dirs;
use crate::vmname::VmName;

const CHECK: &str = "leftovers";

/// The directories maqet writes VM files in: every `disks/VM` and
/// `cloud-init/VM` of the data directory (also of VMs no longer defined,
/// or not yet: an interrupted clone), and each defined VM's (`file_dirs`).
fn dirs(data_dir: &DataDir, vms: &[DefinedVm]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut add = |d: &Path| {
        if !out.iter().any(|x| x == d) {
            out.push(d.to_path_buf());
        }
    };
    for top in ["disks", "cloud-init"] {
        if let Ok(entries) = std::fs::read_dir(data_dir.resolved().path().join(top)) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    add(&e.path());
                }
            }
        }
    }
    for vm in vms {
        let (Ok(cfg), Ok(name)) = (&vm.config, VmName::new(&vm.name)) else {
            continue;
        };
        for d in file_dirs(data_dir, &name, cfg) {
            add(&d);
        }
    }
    out
}

pub fn check(data_dir: &DataDir, vms: &[DefinedVm], fix: bool, f: &mut Vec<Finding>) {
    let mut found = false;
    for vm in vms {
        if let Some(what) = &vm.incomplete {
            found = true;
            f.push(
                Finding::new(
                    CHECK,
                    Severity::Error,
                    format!("VM '{}' is incomplete: {what}; maqet will not start it", vm.name),
                )
                .hint(format!(
                    "remove it with `maqet rm --delete-storage {0}` (the next `maqet clone … {0}` does that too)",
                    vm.name
                )),
            );
        }
    }
    for dir in dirs(data_dir, vms) {
        for left in tmp::leftovers(&dir) {
            found = true;
            let mut finding = Finding::new(
                CHECK,
                Severity::Warning,
                format!(
                    "{} was left half written by an interrupted maqet command (it was to become {})",
                    left.path.display(),
                    left.target.display()
                ),
            )
            .hint("`maqet doctor --fix` removes it (nothing uses it)")
            .fixable();
            if fix {
                match tmp::remove_leftover(&left.path) {
                    Removal::Deleted | Removal::AlreadyGone => {
                        finding.fixed = Some("removed".into());
                    }
                    Removal::KeptInUse(why) | Removal::KeptUnproven(why) | Removal::Failed(why) => {
                        finding.message.push_str(&format!("; not removed: {why}"));
                    }
                    Removal::KeptNotEmpty => {}
                }
            }
            f.push(finding);
        }
    }
    if !found {
        f.push(Finding::ok(
            CHECK,
            "no half-made VM or temporary file left by an interrupted command",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_vms_and_unlocked_temporary_files_are_reported_and_the_files_fixed() {
        let t = tempfile::tempdir().unwrap();
        let dd = DataDir::resolve(Some(&t.path().canonicalize().unwrap())).unwrap();
        let disks = dd.path().join("disks/web");
        std::fs::create_dir_all(&disks).unwrap();
        let left = disks.join(".hdd.qcow2.maqet-4242.tmp");
        std::fs::write(&left, b"torn").unwrap();
        let vms = vec![DefinedVm {
            name: "copy".into(),
            autostart: false,
            config: Err("not needed".into()),
            incomplete: Some("a clone of 'web' whose disk copies were not finished".into()),
            bases: Vec::new(),
        }];
        let mut f = Vec::new();
        check(&dd, &vms, false, &mut f);
        assert_eq!(f.len(), 2, "{f:#?}");
        assert_eq!(f[0].severity, Severity::Error);
        assert!(f[0].message.contains("VM 'copy' is incomplete"), "{f:#?}");
        assert!(f[1].fixable && f[1].message.contains(".hdd.qcow2.maqet-4242.tmp"));
        assert!(left.exists());
        let mut f = Vec::new();
        check(&dd, &[], true, &mut f);
        assert_eq!(f[0].fixed.as_deref(), Some("removed"), "{f:#?}");
        assert!(!left.exists());
        let mut f = Vec::new();
        check(&dd, &[], false, &mut f);
        assert_eq!(f[0].severity, Severity::Ok);
    }
}
