//! `clone_vm`, `running_ports`/`ssh_plan` and `guest` through the fake user
//! manager: what each refuses, and what a clone stores and copies.

use std::path::PathBuf;
use std::time::Duration;

use crate::class::ErrorClass;
use maqet_base::vmname::VmName;

use super::access::{AccessError, SshRequest};
use super::agent::GuestError;
use super::clone::{plan_disks, CloneError, DiskPlan};
use super::fake::{define_yaml, fake_vms, n, run, unit, FakeRunners, FakeUnits};
use super::{stored_config, VmError, Vms};

struct Case {
    dir: tempfile::TempDir,
    vms: Vms<FakeUnits, FakeRunners>,
}

/// A data directory with VM `src` defined from `yaml`.
fn case(yaml: &str) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let vms = fake_vms(dir.path());
    define_yaml(&vms, dir.path(), "src", yaml, true);
    Case { dir, vms }
}

const RAW: &str = "binary: /bin/sh\nstorage:\n  - {name: d, type: raw, size: 64K}\n";

impl Case {
    fn src(&self) -> VmName {
        VmName::new("src").unwrap()
    }
    fn src_disk(&self) -> PathBuf {
        self.vms.disk_dir(&self.src()).join("d.raw")
    }
    fn running(&self) {
        *self.vms.units.status.borrow_mut() = Some(unit(
            &self.src(),
            self.vms.data_dir.path(),
            "active",
            "running",
        ));
    }
}

#[test]
fn clone_without_disks_yet_stores_the_config_under_the_new_name() {
    let c = case(RAW);
    let cloned = run(c.vms.clone_vm(&n("src"), &n("copy"), false)).unwrap();
    assert_eq!(cloned.vm.as_str(), "copy");
    assert!(!cloned.nvram_skipped);
    let src = c.vms.record(&n("src")).unwrap();
    let copy = c.vms.record(&n("copy")).unwrap();
    assert_eq!(copy.config, src.config);
    assert!(!copy.autostart, "a clone is never autostarted");
    // Nothing to copy, so systemd was not even asked whether it runs.
    assert!(c.vms.units.calls().is_empty());
    assert!(!c.vms.disk_dir(&cloned.vm).exists());
}

#[test]
fn clone_refuses_an_existing_name_and_an_existing_disk_without_base() {
    let c = case(RAW);
    run(c.vms.clone_vm(&n("src"), &n("copy"), false)).unwrap();
    let e = run(c.vms.clone_vm(&n("src"), &n("copy"), false)).unwrap_err();
    assert!(matches!(e, VmError::Clone(CloneError::Exists(_))), "{e}");
    assert_eq!(e.to_string(), "a VM named 'copy' already exists");
    assert_eq!(e.class(), ErrorClass::Conflict);

    std::fs::create_dir_all(c.src_disk().parent().unwrap()).unwrap();
    std::fs::write(c.src_disk(), b"disk").unwrap();
    let e = run(c.vms.clone_vm(&n("src"), &n("other"), false)).unwrap_err();
    assert!(e.to_string().contains("has no base image"), "{e}");
    assert!(e.to_string().contains("use --full"), "{e}");
    assert_eq!(e.class(), ErrorClass::Conflict);
    assert!(
        c.vms.record(&n("other")).is_err(),
        "a refused clone stores nothing"
    );
}

#[test]
fn full_clone_copies_the_disk_private_and_recorded_as_the_clones() {
    use std::os::unix::fs::PermissionsExt;
    let c = case(RAW);
    std::fs::create_dir_all(c.src_disk().parent().unwrap()).unwrap();
    std::fs::write(c.src_disk(), b"disk bytes").unwrap();
    let cloned = run(c.vms.clone_vm(&n("src"), &n("copy"), true)).unwrap();
    let copy = c.vms.disk_dir(&cloned.vm).join("d.raw");
    assert_eq!(std::fs::read(&copy).unwrap(), b"disk bytes");
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let created = c.vms.store().unwrap().created_files("copy").unwrap();
    let paths: Vec<PathBuf> = created.iter().map(|f| f.path.clone()).collect();
    assert!(paths.contains(&copy), "{paths:?}");
    assert!(paths.contains(&c.vms.disk_dir(&cloned.vm)), "{paths:?}");
}

#[test]
fn full_clone_of_a_running_vm_is_refused_before_anything_is_stored() {
    let c = case(RAW);
    std::fs::create_dir_all(c.src_disk().parent().unwrap()).unwrap();
    std::fs::write(c.src_disk(), b"disk").unwrap();
    c.running();
    let e = run(c.vms.clone_vm(&n("src"), &n("copy"), true)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "VM 'src' is running; stop it before copying its disks (`maqet stop src`)"
    );
    assert_eq!(e.class(), ErrorClass::Conflict);
    assert!(c.vms.record(&n("copy")).is_err());
}

#[test]
fn an_interrupted_clone_is_refused_everywhere_and_the_next_clone_replaces_it() {
    let c = case(RAW);
    std::fs::create_dir_all(c.src_disk().parent().unwrap()).unwrap();
    std::fs::write(c.src_disk(), b"disk bytes").unwrap();
    // What a clone killed mid-copy leaves: the definition marked, its
    // directory recorded, a temporary file nobody writes any more.
    let store = c.vms.store().unwrap();
    let src = c.vms.record(&n("src")).unwrap();
    store
        .insert_incomplete_vm(
            &maqet_host::state::NewVm {
                name: "copy".into(),
                config: src.config.clone(),
                sources: vec![],
                autostart: false,
            },
            "a clone of 'src' whose disk copies were not finished",
        )
        .unwrap();
    let copy = VmName::new("copy").unwrap();
    let dir = c.vms.disk_dir(&copy);
    std::fs::create_dir_all(&dir).unwrap();
    let id = maqet_host::storage::identity::stat_path(&dir)
        .unwrap()
        .identity;
    store
        .record_created_file(
            "copy",
            &dir,
            maqet_host::state::FileKind::Directory,
            Some(id),
        )
        .unwrap();
    std::fs::write(dir.join(".d.raw.maqet-999999.tmp"), b"disk").unwrap();
    for e in [
        run(c
            .vms
            .start(&n("copy"), Duration::from_secs(5), &super::notice::quiet))
        .unwrap_err(),
        run(c.vms.create_storage(&copy)).unwrap_err(),
    ] {
        assert!(matches!(e, VmError::Incomplete { .. }), "{e}");
        assert_eq!(e.class(), ErrorClass::Conflict);
    }
    let e = run(c.vms.clone_vm(&n("copy"), &n("third"), true)).unwrap_err();
    assert!(
        matches!(e, VmError::Clone(CloneError::SourceIncomplete { .. })),
        "{e}"
    );
    // The next clone to the name removes what was left, then clones.
    let cloned = run(c.vms.clone_vm(&n("src"), &n("copy"), true)).unwrap();
    assert_eq!(cloned.cleaned.len(), 2, "{:?}", cloned.cleaned);
    assert!(c.vms.record(&n("copy")).unwrap().incomplete.is_none());
    assert_eq!(std::fs::read(dir.join("d.raw")).unwrap(), b"disk bytes");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["d.raw"]);
}

#[test]
fn plan_refuses_a_writable_arguments_disk_and_shares_read_only_media() {
    let c = case(RAW);
    let disk = c.dir.path().join("x.qcow2");
    std::fs::write(&disk, b"").unwrap();
    let plan = |args: &str| {
        let yaml = format!("name: src\nbinary: /bin/sh\nargs: [{args}]\n");
        let cfg = maqet_config::ConfigDocument::from_yaml_str(&yaml, "src.yaml", c.dir.path())
            .unwrap()
            .validate()
            .unwrap();
        plan_disks(
            &cfg,
            c.dir.path(),
            &c.dir.path().join("dst"),
            true,
            c.dir.path(),
        )
    };
    // Relative: QEMU finds it in its working directory.
    let e = plan("-drive, 'file=x.qcow2,if=virtio'").unwrap_err();
    assert!(matches!(e, CloneError::SharedArgument { .. }), "{e}");
    assert!(e.to_string().contains("x.qcow2 (writable)"), "{e}");
    for ro in [
        "-drive, 'file=x.qcow2,if=virtio,readonly=on'",
        "-cdrom, x.qcow2",
        "-drive, 'file=x.qcow2,media=cdrom'",
        "-drive, 'file=x.qcow2,snapshot=on'",
    ] {
        assert_eq!(plan(ro).unwrap(), [], "{ro}");
    }
}

#[test]
fn plan_refuses_a_disk_outside_the_disk_directory() {
    let c = case(RAW);
    let file = c.dir.path().join("shared.raw");
    let yaml = format!(
        "name: src\nbinary: /bin/sh\nstorage:\n  - {{name: d, type: raw, size: 64K, file: {}}}\n",
        file.display()
    );
    let doc = maqet_config::ConfigDocument::from_yaml_str(&yaml, "src.yaml", c.dir.path()).unwrap();
    let cfg = doc.validate().unwrap();
    let e = plan_disks(
        &cfg,
        c.dir.path(),
        &c.dir.path().join("dst"),
        true,
        c.dir.path(),
    )
    .unwrap_err();
    assert!(matches!(e, CloneError::SharedFile { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("which a clone would share with 'src'"),
        "{e}"
    );
    // A disk not made yet is made fresh by the clone's first start.
    let rec = c.vms.record(&n("src")).unwrap();
    let cfg = stored_config(&rec).unwrap();
    let plan = plan_disks(
        &cfg,
        c.dir.path(),
        &c.dir.path().join("dst"),
        true,
        c.dir.path(),
    )
    .unwrap();
    assert_eq!(plan, [DiskPlan::Fresh]);
}

#[test]
fn ports_need_a_network_config_and_a_running_vm() {
    let c = case(RAW);
    let e = run(c.vms.running_ports(&n("src"))).unwrap_err();
    assert!(
        matches!(e, VmError::Access(AccessError::NoPorts { .. })),
        "{e}"
    );
    assert_eq!(e.class(), ErrorClass::Failure);

    let c = case("binary: /bin/sh\nports: [\"8080:80\"]\n");
    let e = run(c.vms.running_ports(&n("src"))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "VM 'src' is not running (start it with `maqet start src`; its ports are chosen at start)"
    );
    let e = run(c.vms.ssh_plan(&n("src"), &SshRequest::default())).unwrap_err();
    assert!(
        matches!(e, VmError::Access(AccessError::NotRunning { .. })),
        "{e}"
    );
}

#[test]
fn an_ssh_user_that_ssh_would_read_as_an_option_is_refused_first() {
    let c = case("binary: /bin/sh\nports: [\"8080:80\"]\n");
    let req = SshRequest {
        user: Some("-oProxyCommand=touch /tmp/x"),
        ..Default::default()
    };
    let e = run(c.vms.ssh_plan(&n("src"), &req)).unwrap_err();
    assert!(
        matches!(e, VmError::Access(AccessError::BadUser { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("starts with '-'"), "{e}");
    assert_eq!(e.class(), ErrorClass::Usage);
}

#[test]
fn ssh_wait_timeout_is_exit_7() {
    let e = VmError::from(AccessError::NoSshServer {
        vm: VmName::new("src").unwrap(),
        port: 2222,
        wait: Duration::from_millis(1500),
    });
    assert!(e.to_string().contains("within 1.5s"), "{e}");
    assert_eq!(e.class(), ErrorClass::Timeout);
}

#[test]
fn guest_needs_an_agent_channel_and_a_running_vm() {
    let c = case(RAW);
    let e = run(c.vms.guest(&n("src"), Duration::from_secs(1)))
        .err()
        .unwrap();
    assert!(
        matches!(e, VmError::Guest(GuestError::NoChannel { .. })),
        "{e}"
    );
    let c = case("binary: /bin/sh\nguest_agent: true\n");
    let e = run(c.vms.guest(&n("src"), Duration::from_secs(1)))
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        "VM 'src' is not running (start it with `maqet start src`; its guest agent answers once the guest has booted)"
    );
    // Like every command that needs a running VM: a conflict (exit 5).
    assert_eq!(e.class(), ErrorClass::Conflict);
}
