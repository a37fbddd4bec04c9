//! Snapshots through the fake user manager: which refusals come before
//! anything is touched, a disk-only cycle with the real qemu-img, how the
//! list pairs a whole-VM snapshot's parts, and how a live job's freeze
//! report becomes an error.

use crate::class::ErrorClass;
use crate::fake::{define_yaml, fake_vms, n, run, unit, FakeRunners, FakeUnits};
use crate::Vms;
use maqet_base::vmname::VmName;
use maqet_host::ipc::protocol::FreezeReport;
use maqet_host::storage::live::Outcome;
use maqet_host::storage::{QemuImg, StorageError};

use super::list::{mark_live, SnapshotRow};
use super::live::settle;
use super::{SnapshotError, SnapshotOp, SnapshotRequest};
use crate::VmError;

struct Case {
    _dir: tempfile::TempDir,
    vms: Vms<FakeUnits, FakeRunners>,
}

/// VM `web` with a qcow2 disk `d` and a raw disk `r`, neither created.
fn case() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let vms = fake_vms(dir.path());
    let yaml = "binary: /bin/sh\nstorage:\n  - {name: d, type: qcow2, size: 1M}\n  - {name: r, type: raw, size: 64K}\n";
    define_yaml(&vms, dir.path(), "web", yaml, false);
    Case { _dir: dir, vms }
}

impl Case {
    fn web(&self) -> VmName {
        VmName::new("web").unwrap()
    }
    fn running(&self) {
        *self.vms.units.status.borrow_mut() = Some(unit(
            &self.web(),
            self.vms.data_dir.path(),
            "active",
            "running",
        ));
    }
    fn snapshot(
        &self,
        op: SnapshotOp,
        tag: &str,
        live: bool,
    ) -> Result<super::Snapshotted, VmError> {
        let req = SnapshotRequest {
            vm: n("web"),
            drive: "d".into(),
            tag: tag.into(),
            op,
            live,
        };
        run(self.vms.snapshot(&req, &mut |_| {}))
    }
}

const CREATE: SnapshotOp = SnapshotOp::Create {
    overwrite: false,
    freeze: true,
};

#[test]
fn a_bad_tag_is_refused_before_the_vm_is_looked_at() {
    let c = case();
    let e = c.snapshot(CREATE, "12", false).unwrap_err();
    assert!(
        matches!(e, VmError::Storage(StorageError::InvalidName { .. })),
        "{e}"
    );
    assert!(c.vms.units.calls().is_empty(), "{:?}", c.vms.units.calls());
}

#[test]
fn live_needs_a_running_vm_and_qemu_img_a_stopped_one() {
    let c = case();
    let e = c.snapshot(SnapshotOp::Load, "s1", true).unwrap_err();
    assert!(matches!(
        e,
        VmError::Snapshot(SnapshotError::NotRunning { .. })
    ));
    assert_eq!(e.class(), ErrorClass::Conflict);
    assert_eq!(
        e.to_string(),
        "VM 'web' is not running, so there is no live state to load (without --live, `maqet snapshot load web d s1` works on the stopped VM's disk)"
    );
    c.running();
    let e = c.snapshot(SnapshotOp::Delete, "s1", false).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Conflict);
    assert_eq!(
        e.to_string(),
        "VM 'web' is running: maqet will not delete a snapshot of a disk of a running VM with qemu-img. Stop it first (`maqet stop web`), or add --live to delete the whole running VM (every disk plus RAM) through QEMU"
    );
    // Refused on the unit's state alone: the image was never made.
    assert!(!c.vms.disk_dir(&c.web()).join("d.qcow2").exists());
}

#[test]
fn an_unknown_drive_or_vm_is_not_found() {
    let c = case();
    let req = SnapshotRequest {
        vm: n("web"),
        drive: "nope".into(),
        tag: "s1".into(),
        op: SnapshotOp::Load,
        live: false,
    };
    let e = run(c.vms.snapshot(&req, &mut |_| {})).unwrap_err();
    assert_eq!(e.class(), ErrorClass::NotFound, "{e}");
    let e = run(c.vms.snapshots(&n("ghost"), None)).unwrap_err();
    assert_eq!(e.class(), ErrorClass::NotFound, "{e}");
    let e = run(c.vms.snapshots(&n("web"), Some("r"))).unwrap_err();
    assert!(
        matches!(e, VmError::Storage(StorageError::NotSnapshottable { ref drive, .. }) if drive == "r"),
        "{e}"
    );
}

#[test]
fn a_stopped_vm_gets_disk_only_snapshots() {
    let Ok(img) = QemuImg::find(None) else {
        eprintln!("note: no qemu-img here; skipping");
        return;
    };
    let c = case();
    let disk = c.vms.disk_dir(&c.web()).join("d.qcow2");
    std::fs::create_dir_all(disk.parent().unwrap()).unwrap();
    img.create(&disk, maqet_config::ImageFormat::Qcow2, Some(1 << 20), None)
        .unwrap();
    let made = c.snapshot(CREATE, "s1", false).unwrap();
    assert_eq!(made.drives, ["d"]);
    assert!(!made.live() && !made.replaced);
    assert_eq!(made.freeze, FreezeReport::default());
    let again = c.snapshot(CREATE, "s1", false).unwrap_err();
    assert!(
        matches!(again, VmError::Storage(StorageError::SnapshotExists { .. })),
        "{again}"
    );
    let over = SnapshotOp::Create {
        overwrite: true,
        freeze: true,
    };
    assert!(c.snapshot(over, "s1", false).unwrap().replaced);
    let rows = run(c.vms.snapshots(&n("web"), Some("d"))).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].drive.as_str(), rows[0].tag.as_str()), ("d", "s1"));
    assert!(!rows[0].live);
    let loaded = c.snapshot(SnapshotOp::Load, "s1", false).unwrap();
    assert!(!loaded.ram_not_loaded);
    c.snapshot(SnapshotOp::Delete, "s1", false).unwrap();
    assert!(run(c.vms.snapshots(&n("web"), None)).unwrap().is_empty());
    // A stopped VM's snapshots need no runner.
    assert!(c.vms.runners.calls.borrow().is_empty());
}

fn row(drive: &str, tag: &str, date_sec: i64, vm_state_size: u64) -> SnapshotRow {
    SnapshotRow {
        drive: drive.into(),
        tag: tag.into(),
        id: "1".into(),
        date_sec,
        vm_state_size,
        live: vm_state_size > 0,
        vm_clock_sec: 0.0,
    }
}

#[test]
fn the_parts_of_a_whole_vm_snapshot_are_all_live() {
    let mut rows = vec![
        row("a", "s1", 100, 4096),
        row("b", "s1", 100, 0),
        // Same tag, another time: a disk-only snapshot of its own.
        row("b", "s1", 200, 0),
        row("b", "s2", 100, 0),
    ];
    mark_live(&mut rows);
    let live: Vec<bool> = rows.iter().map(|r| r.live).collect();
    assert_eq!(live, [true, true, false, false]);
}

fn vm() -> VmName {
    VmName::new("web").unwrap()
}

fn frozen(thaw_error: Option<&str>) -> FreezeReport {
    FreezeReport {
        agent: true,
        frozen: true,
        filesystems: Some(2),
        thaw_error: thaw_error.map(str::to_string),
        ..FreezeReport::default()
    }
}

fn job_failed() -> Result<(), StorageError> {
    Err(StorageError::Job {
        what: "saving snapshot 's1'".into(),
        message: "No space left on device".into(),
    })
}

#[test]
fn a_failed_thaw_is_an_error_even_after_a_good_save() {
    let o = Outcome {
        result: Ok(()),
        freeze: frozen(Some("the guest agent did not answer")),
    };
    let e = settle(&vm(), o).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the snapshot job finished, but thawing the file systems of VM 'web' failed: the guest agent did not answer; they may still be frozen: run `maqet guest web fsthaw`"
    );
    assert_eq!(crate::class::storage(&e), ErrorClass::Failure);
}

#[test]
fn a_failed_save_says_whether_the_guest_was_thawed() {
    let o = Outcome {
        result: job_failed(),
        freeze: frozen(None),
    };
    assert_eq!(
        settle(&vm(), o).unwrap_err().to_string(),
        "saving snapshot 's1' failed: No space left on device (the guest's file systems were thawed again)"
    );
    let o = Outcome {
        result: job_failed(),
        freeze: frozen(Some("timed out")),
    };
    let e = settle(&vm(), o).unwrap_err().to_string();
    assert!(
        e.starts_with("saving snapshot 's1' failed: No space left on device, but thawing"),
        "{e}"
    );
    // Unfrozen: the job's error as it was.
    let o = Outcome {
        result: job_failed(),
        freeze: FreezeReport::default(),
    };
    assert_eq!(
        settle(&vm(), o).unwrap_err().to_string(),
        "saving snapshot 's1' failed: No space left on device"
    );
}

#[test]
fn only_an_asked_for_freeze_that_did_not_happen_is_reported() {
    let unfrozen = FreezeReport {
        agent: true,
        reason: Some("the guest agent did not answer".into()),
        ..FreezeReport::default()
    };
    let done = |op, vmstate: Option<&str>, freeze: FreezeReport| super::Snapshotted {
        vm: vm(),
        tag: "s1".into(),
        op,
        drives: vec!["d".into()],
        vmstate_drive: vmstate.map(str::to_string),
        replaced: false,
        ram_not_loaded: false,
        freeze,
    };
    let live = Some("d");
    assert_eq!(
        done(CREATE, live, unfrozen.clone()).unfrozen_reason(),
        Some("the guest agent did not answer")
    );
    let no_freeze = SnapshotOp::Create {
        overwrite: false,
        freeze: false,
    };
    assert_eq!(
        done(no_freeze, live, unfrozen.clone()).unfrozen_reason(),
        None
    );
    // No agent: nothing to freeze, nothing to warn of.
    let no_agent = FreezeReport {
        agent: false,
        ..unfrozen.clone()
    };
    assert_eq!(done(CREATE, live, no_agent).unfrozen_reason(), None);
    assert_eq!(done(CREATE, live, frozen(None)).unfrozen_reason(), None);
    // A disk-only snapshot never freezes.
    assert_eq!(done(CREATE, None, unfrozen).unfrozen_reason(), None);
}
