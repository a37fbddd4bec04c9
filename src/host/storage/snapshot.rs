//! Snapshot names, drive lookup, and disk-only snapshots of a stopped VM
//! through `qemu-img snapshot`.

use std::path::{Path, PathBuf};

use super::qemu_img::{QemuImg, SnapshotInfo, SnapshotOp};
use super::StorageError;
use maqet_config::{StorageEntry, StorageKind, VmConfig};

/// Longest snapshot name maqet creates.
pub const MAX_TAG_LEN: usize = 64;

/// Names maqet creates: 1..=64 of `A-Z a-z 0-9 . _ -`, not starting with
/// `-`, and not digits only (QEMU looks snapshots up by ID first, so a
/// name like `2` could select another snapshot).
pub fn validate_tag(tag: &str) -> Result<(), StorageError> {
    let bad = |reason| StorageError::InvalidName {
        name: tag.to_string(),
        reason,
    };
    if tag.is_empty() || tag.len() > MAX_TAG_LEN {
        return Err(bad("use 1 to 64 characters"));
    }
    if !tag
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(bad("use only letters, digits, '.', '_' and '-'"));
    }
    if tag.starts_with('-') {
        return Err(bad("a name must not start with '-'"));
    }
    if tag.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            "digits alone are ambiguous with QEMU's snapshot IDs; add a letter",
        ));
    }
    Ok(())
}

/// The disk entry named `drive` (virtfs shares are not drives).
pub fn find_drive<'a>(
    vm: &str,
    cfg: &'a VmConfig,
    drive: &str,
) -> Result<&'a StorageEntry, StorageError> {
    let disks = || {
        cfg.storage()
            .iter()
            .filter(|e| e.kind != StorageKind::Virtfs)
    };
    disks()
        .find(|e| e.name == drive)
        .ok_or_else(|| StorageError::DriveNotFound {
            vm: vm.to_string(),
            drive: drive.to_string(),
            available: disks().map(|e| e.name.clone()).collect(),
        })
}

/// The image of a drive that can hold snapshots: qcow2, and existing.
pub fn snapshot_image(
    vm: &str,
    entry: &StorageEntry,
    disk_dir: &Path,
) -> Result<PathBuf, StorageError> {
    if entry.kind != StorageKind::Qcow2 {
        return Err(StorageError::NotSnapshottable {
            drive: entry.name.clone(),
            format: entry.kind.as_str().to_string(),
        });
    }
    let path = entry.path(disk_dir);
    if !path.exists() {
        return Err(StorageError::DiskMissing {
            vm: vm.to_string(),
            drive: entry.name.clone(),
            path,
        });
    }
    Ok(path)
}

/// Internal snapshots of one image (not of its backing files).
pub fn list(img: &QemuImg, path: &Path) -> Result<Vec<SnapshotInfo>, StorageError> {
    Ok(img
        .info(path)?
        .into_iter()
        .next()
        .map(|i| i.snapshots)
        .unwrap_or_default())
}

fn not_found(tag: &str, drive: &str, snaps: &[SnapshotInfo]) -> StorageError {
    StorageError::SnapshotNotFound {
        tag: tag.to_string(),
        place: format!("drive '{drive}'"),
        available: snaps.iter().map(|s| s.name.clone()).collect(),
    }
}

/// Finds `tag` by name only (never by ID).
pub fn find<'a>(snaps: &'a [SnapshotInfo], tag: &str) -> Option<&'a SnapshotInfo> {
    snaps.iter().find(|s| s.name == tag)
}

/// `qemu-img snapshot -c`; with `overwrite` an existing one is deleted
/// first. Returns whether one was replaced.
pub fn create(
    img: &QemuImg,
    drive: &str,
    path: &Path,
    tag: &str,
    overwrite: bool,
) -> Result<bool, StorageError> {
    validate_tag(tag)?;
    let existing = find(&list(img, path)?, tag).is_some();
    if existing {
        if !overwrite {
            return Err(StorageError::SnapshotExists {
                tag: tag.to_string(),
                place: format!("drive '{drive}'"),
            });
        }
        img.snapshot(SnapshotOp::Delete, tag, path)?;
    }
    img.snapshot(SnapshotOp::Create, tag, path)?;
    Ok(existing)
}

/// `qemu-img snapshot -a`: the disk goes back to the snapshot (saved VM
/// state, if any, is not loaded). Returns the snapshot.
pub fn load(
    img: &QemuImg,
    drive: &str,
    path: &Path,
    tag: &str,
) -> Result<SnapshotInfo, StorageError> {
    let snaps = list(img, path)?;
    let snap = find(&snaps, tag)
        .cloned()
        .ok_or_else(|| not_found(tag, drive, &snaps))?;
    by_name_is_unambiguous(&snaps, tag)?;
    img.snapshot(SnapshotOp::Apply, tag, path)?;
    Ok(snap)
}

/// `qemu-img snapshot -d`.
pub fn delete(img: &QemuImg, drive: &str, path: &Path, tag: &str) -> Result<(), StorageError> {
    let snaps = list(img, path)?;
    if find(&snaps, tag).is_none() {
        return Err(not_found(tag, drive, &snaps));
    }
    by_name_is_unambiguous(&snaps, tag)?;
    img.snapshot(SnapshotOp::Delete, tag, path)
}

/// qemu-img matches IDs before names: refuse a name that is another
/// snapshot's ID.
fn by_name_is_unambiguous(snaps: &[SnapshotInfo], tag: &str) -> Result<(), StorageError> {
    if snaps.iter().any(|s| s.id == tag && s.name != tag) {
        return Err(StorageError::InvalidName {
            name: tag.to_string(),
            reason: "another snapshot has this as its ID, and QEMU would pick that one",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        for ok in ["s1", "before-upgrade", "v1.2_x", "a"] {
            validate_tag(ok).unwrap();
        }
        for bad in ["", "-x", "12", "a b", "ü", "x/y", &"a".repeat(65)] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
        assert_eq!(
            validate_tag("7").unwrap_err().to_string(),
            "invalid snapshot name '7': digits alone are ambiguous with QEMU's snapshot IDs; add a letter"
        );
    }

    #[test]
    fn offline_cycle() {
        let Ok(img) = QemuImg::find(None) else {
            eprintln!("note: no qemu-img here; skipping");
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("d.qcow2");
        img.create(&p, maqet_config::ImageFormat::Qcow2, Some(1 << 20), None)
            .unwrap();
        assert!(!create(&img, "d", &p, "s1", false).unwrap());
        let e = create(&img, "d", &p, "s1", false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "snapshot 's1' already exists on drive 'd'; add --overwrite to replace it"
        );
        assert!(create(&img, "d", &p, "s1", true).unwrap());
        create(&img, "d", &p, "s2", false).unwrap();
        let names: Vec<_> = list(&img, &p)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["s1", "s2"]);
        let s = load(&img, "d", &p, "s1").unwrap();
        assert!(!s.is_live());
        delete(&img, "d", &p, "s1").unwrap();
        let e = load(&img, "d", &p, "s1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no snapshot 's1' on drive 'd' (snapshots: s2)"
        );
        // s2 got ID 2 or 3; a name equal to another snapshot's ID is refused.
        let id = list(&img, &p).unwrap()[0].id.clone();
        assert!(matches!(
            by_name_is_unambiguous(&list(&img, &p).unwrap(), &id),
            Err(StorageError::InvalidName { .. })
        ));
    }
}
