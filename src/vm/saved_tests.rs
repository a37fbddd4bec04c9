//! A saved state through the vm layer over the fakes: what a start does
//! with it (resume and give it time, distrust a changed file, clear what
//! interrupted saves left), `--fresh`, and the refusals while saved.

use std::time::Duration;

use crate::class::ErrorClass;
use maqet_base::vmname::VmName;
use maqet_host::state::{SaveReason, SavedState};
use maqet_host::storage::identity::stat_path;

use super::define::Changes;
use super::fake::{define_yaml, fake_vms, run, unit, FakeRunners, FakeUnits};
use super::notice::quiet;
use super::saved::same_machine;
use super::{Notice, SavedError, VmError, Vms, Wait};

const T: Duration = Duration::from_secs(30);

struct Case {
    _dir: tempfile::TempDir,
    vms: Vms<FakeUnits, FakeRunners>,
    vm: VmName,
}

fn case() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let vms = fake_vms(dir.path());
    let yaml = "binary: /bin/sh\nmemory: 64M\nstorage:\n  - {name: d, type: raw, size: 64K}\n";
    define_yaml(&vms, dir.path(), "web", yaml, false);
    Case {
        vm: VmName::new("web").unwrap(),
        vms,
        _dir: dir,
    }
}

impl Case {
    /// A state file of `size` bytes (sparse), recorded as a save made it.
    fn save(&self, size: u64) -> SavedState {
        let dir = self.vms.disk_dir(&self.vm);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.canonicalize().unwrap().join("state.sav");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(size).unwrap();
        let s = SavedState {
            identity: stat_path(&path).unwrap().identity,
            path,
            size,
            saved_at: 1_800_000_000,
            run_state: "running".into(),
            reason: SaveReason::Suspend,
            qemu_version: "7.2.22".into(),
            save_ms: 5,
        };
        self.vms
            .store()
            .unwrap()
            .record_saved_state("web", &s)
            .unwrap();
        s
    }

    fn start(&self, fresh: bool) -> (Result<(), VmError>, Vec<Notice>) {
        let seen = std::sync::Mutex::new(Vec::new());
        let r = run(self.vms.start_with(&self.vm, T, Wait::Ready, fresh, &|n| {
            seen.lock().unwrap().push(n)
        }));
        (r, seen.into_inner().unwrap())
    }

    fn recorded(&self) -> Option<SavedState> {
        self.vms.saved_state(&self.vm).unwrap()
    }
}

#[test]
fn a_start_announces_the_resume_and_gives_the_load_its_time() {
    let c = case();
    let s = c.save(640 << 20);
    let (r, seen) = c.start(false);
    r.unwrap();
    assert!(
        seen.iter()
            .any(|n| matches!(n, Notice::Resuming { size, .. } if *size == 640 << 20)),
        "{seen:?}"
    );
    // The record is the runner's to forget, once QEMU has loaded it.
    assert_eq!(c.recorded(), Some(s));
    // 30 s floor + 640 MiB at 32 MiB/s.
    assert_eq!(
        c.vms.units.calls().last().unwrap(),
        "StartTransientUnit maqet-vm@web.service 50s"
    );
}

#[test]
fn a_changed_state_file_is_not_resumed_and_the_start_says_so() {
    let c = case();
    let s = c.save(4096);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&s.path)
        .unwrap()
        .set_len(5000)
        .unwrap();
    let (r, seen) = c.start(false);
    r.unwrap();
    let warned = seen.iter().any(|n| {
        matches!(n, Notice::Warning { message } if message.contains("not resumed") && message.contains("boots afresh"))
    });
    assert!(warned, "{seen:?}");
    assert!(!seen.iter().any(|n| matches!(n, Notice::Resuming { .. })));
    assert_eq!(
        c.recorded(),
        None,
        "forgotten before the runner could see it"
    );
    assert!(!s.path.exists(), "the same inode: maqet's file, deleted");
}

#[test]
fn what_an_interrupted_save_left_is_deleted_before_a_fresh_boot() {
    let c = case();
    let dir = c.vms.disk_dir(&c.vm);
    std::fs::create_dir_all(&dir).unwrap();
    let left = dir
        .canonicalize()
        .unwrap()
        .join(".state.sav.maqet-999999.tmp");
    std::fs::write(&left, b"torn").unwrap();
    let (r, seen) = c.start(false);
    r.unwrap();
    assert!(!left.exists());
    assert!(
        seen.iter().any(
            |n| matches!(n, Notice::Warning { message } if message.contains("was interrupted"))
        ),
        "{seen:?}"
    );
}

#[test]
fn start_fresh_discards_the_state_but_never_a_running_vms() {
    let c = case();
    // Running: the start is refused before anything is discarded.
    let s = c.save(4096);
    *c.vms.units.status.borrow_mut() =
        Some(unit(&c.vm, c.vms.data_dir.path(), "active", "running"));
    let (r, _) = c.start(true);
    assert!(matches!(r, Err(VmError::AlreadyRunning { .. })), "{r:?}");
    assert_eq!(c.recorded(), Some(s.clone()));
    assert!(s.path.exists());
    let e = run(c.vms.discard_saved(&c.vm)).unwrap_err();
    assert!(
        matches!(e, VmError::Saved(SavedError::Running { .. })),
        "{e}"
    );
    assert_eq!(e.class(), ErrorClass::Conflict);
    // Stopped: discarded, said so, and the VM boots afresh.
    *c.vms.units.status.borrow_mut() = None;
    let (r, seen) = c.start(true);
    r.unwrap();
    assert!(
        seen.iter()
            .any(|n| matches!(n, Notice::Discarded { path, .. } if *path == s.path)),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|n| matches!(n, Notice::Resuming { .. })));
    assert_eq!(c.recorded(), None);
    assert!(!s.path.exists());
    let store = c.vms.store().unwrap();
    assert!(!store
        .created_files("web")
        .unwrap()
        .iter()
        .any(|f| f.path == s.path));
}

#[test]
fn while_saved_changes_to_the_machine_are_refused_with_the_way_out() {
    let c = case();
    c.save(4096);
    let set = |k: &str, v: &str| Changes {
        set: vec![(k.into(), v.into())],
        ..Changes::default()
    };
    let e = run(c.vms.apply(&c.vm, &set("memory", "128M"), &quiet)).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Conflict, "{e}");
    for way_out in [
        "maqet start web",
        "maqet start --fresh web",
        "maqet suspend --discard web",
    ] {
        assert!(e.to_string().contains(way_out), "{e}");
    }
    // Unit settings leave QEMU's command line alone: applied.
    run(c.vms.apply(&c.vm, &set("restart", "on-failure"), &quiet)).unwrap();
    run(c.vms.apply(&c.vm, &set("on_stop", "save"), &quiet)).unwrap();
    let e = run(c.vms.apply(&c.vm, &set("console", "true"), &quiet)).unwrap_err();
    assert!(
        matches!(e, VmError::Saved(SavedError::Refused { .. })),
        "{e}"
    );
    let e = c
        .vms
        .refuse_saved(&c.vm, "a disk-only `snapshot create`")
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("a disk-only `snapshot create` would change"),
        "{e}"
    );
    // Discarded: nothing is refused any more.
    run(c.vms.discard_saved(&c.vm)).unwrap();
    run(c.vms.apply(&c.vm, &set("memory", "128M"), &quiet)).unwrap();
}

#[test]
fn the_machine_is_what_renders_the_same_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = maqet_base::paths::DataDir::resolve(Some(dir.path())).unwrap();
    let vm = VmName::new("m").unwrap();
    let cfg = |extra: &str| {
        let text = format!("binary: /bin/sh\nmemory: 64M\n{extra}");
        maqet_config::ConfigDocument::from_yaml_str(&text, "m.yaml", dir.path())
            .unwrap()
            .validate()
            .unwrap()
    };
    let base = cfg("");
    for same in [
        "autostart: true\n",
        "on_stop: save\n",
        "shutdown_timeout: 5\n",
        "restart: always\n",
        "resources: {memory_max: 1G}\n",
        "qmp_allow_host_exec: true\n",
    ] {
        assert!(same_machine(&data, &vm, &base, &cfg(same)), "{same}");
    }
    let with_ports = cfg("ports: ['8080:80']\n");
    assert!(
        same_machine(&data, &vm, &with_ports, &cfg("ports: ['9090:80']\n")),
        "host ports are not the guest's"
    );
    for other in [
        "cpu: 2\n",
        "console: true\n",
        "guest_agent: true\n",
        "ports: ['8080:80']\n",
        "storage:\n  - {name: d, size: 1M}\n",
        "arguments:\n  - device: virtio-rng-pci\n",
    ] {
        assert!(!same_machine(&data, &vm, &base, &cfg(other)), "{other}");
    }
}
