//! The lifecycle through a fake user manager and fake runners: which
//! systemd calls each path makes, what a failed start undoes, and what is
//! refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use maqet_base::vmname::VmName;
use maqet_host::storage::Provisioned;
use maqet_host::systemd::{SystemdError, UnitStatus};

use super::class::ErrorClass;
use super::define::{define, Changes, Source};
use super::fake::{define_yaml, fake_vms, n, run, unit, FakeRunners, FakeUnits};
use super::notice::quiet;
use super::remove::RemoveOptions;
use super::{names, Notice, OwnerError, StopOutcome, VmError, Vms, Wait};

const T: Duration = Duration::from_secs(30);

struct Case {
    _dir: tempfile::TempDir,
    vms: Vms<FakeUnits, FakeRunners>,
    vm: VmName,
}

/// A data directory with VM `web` (a raw disk a start creates).
fn case() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let vms = fake_vms(dir.path());
    let yaml = "binary: /bin/sh\nstorage:\n  - {name: d, type: raw, size: 64K}\n";
    define_yaml(&vms, dir.path(), "web", yaml, false);
    Case {
        vm: VmName::new("web").unwrap(),
        vms,
        _dir: dir,
    }
}

impl Case {
    fn disk(&self) -> PathBuf {
        self.vms.disk_dir(&self.vm).join("d.raw")
    }
    fn set(&self, st: Option<UnitStatus>) {
        *self.vms.units.status.borrow_mut() = st;
    }
    fn ours(&self, active: &str, sub: &str) -> UnitStatus {
        unit(&self.vm, self.vms.data_dir.path(), active, sub)
    }
    fn start_error(&self, e: SystemdError) {
        *self.vms.units.start.borrow_mut() = Some(e);
    }
    fn runner_calls(&self) -> Vec<String> {
        self.vms.runners.calls.borrow().clone()
    }
}

#[test]
fn a_start_creates_the_disk_then_the_unit() {
    let c = case();
    let seen = std::sync::Mutex::new(Vec::new());
    run(c.vms.start(&n("web"), T, &|n| seen.lock().unwrap().push(n))).unwrap();
    assert!(c.disk().exists());
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|n| matches!(n, Notice::Created { path, .. } if path.ends_with("d.raw"))),
        "{:?}",
        seen.lock().unwrap()
    );
    let calls = c.vms.units.calls();
    assert_eq!(
        calls.last().unwrap(),
        "StartTransientUnit maqet-vm@web.service 30s"
    );
    assert!(!c.vms.units.called("StopUnit"), "{calls:?}");
}

#[test]
fn a_failed_start_quotes_the_runner_and_removes_what_it_created() {
    let c = case();
    let mut st = c.ours("failed", "failed");
    st.result = "exit-code".into();
    st.exec_main_pid = 77;
    c.start_error(SystemdError::Failed {
        unit: c.vm.service_unit(),
        status: Box::new(st),
    });
    let e = run(c.vms.start(&n("web"), T, &quiet)).unwrap_err();
    assert!(matches!(e.root(), VmError::StartFailed { log, .. } if log[0].contains("runner 77")));
    assert_eq!(e.class(), ErrorClass::Failure);
    // The CLI words these facts (cli/exit.rs tests its wording).
    let message = e.to_string();
    assert!(message.starts_with("VM 'web' failed to start"), "{message}");
    assert!(message.contains("; qemu (runner 77): could not open disk"));
    assert!(
        message.contains("; removed what this start created: ") && message.contains("d.raw"),
        "{message}"
    );
    assert!(!c.disk().exists());
    // No restart policy: nothing to stop.
    assert!(!c.vms.units.called("StopUnit"));
    let store = c.vms.store().unwrap();
    assert!(store.created_files("web").unwrap().is_empty());
}

#[test]
fn a_start_that_times_out_stops_the_unit_again() {
    let c = case();
    c.start_error(SystemdError::Timeout {
        unit: c.vm.service_unit(),
        what: "become ready",
        waited: T,
    });
    let e = run(c.vms.start(&n("web"), T, &quiet)).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Timeout);
    assert!(e.to_string().contains("the VM was stopped again"), "{e}");
    let calls = c.vms.units.calls();
    assert!(
        calls.contains(&"StopUnit maqet-vm@web.service".to_string()),
        "{calls:?}"
    );
    assert!(!c.disk().exists());
}

#[test]
fn a_lost_race_waits_for_the_winner_and_never_stops_it() {
    let c = case();
    c.start_error(SystemdError::AlreadyRunning {
        unit: c.vm.service_unit(),
    });
    let units = &c.vms.units;
    let e = run(c.vms.start(&n("web"), T, &quiet)).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Conflict);
    assert!(
        e.to_string().starts_with("VM 'web' is already running"),
        "{e}"
    );
    assert!(units.called("wait settled maqet-vm@web.service"));
    assert!(!units.called("StopUnit"), "{:?}", units.calls());
    assert!(!c.disk().exists(), "the loser's disk is removed");
}

#[test]
fn another_data_directory_s_live_vm_is_neither_started_nor_stopped() {
    let c = case();
    let other = unit(&c.vm, Path::new("/srv/other"), "active", "running");
    c.set(Some(other));
    let e = run(c.vms.start(&n("web"), T, &quiet)).unwrap_err();
    assert!(
        matches!(e, VmError::Owner(OwnerError::OtherDataDir { .. })),
        "{e:?}"
    );
    assert_eq!(e.class(), ErrorClass::Conflict);
    assert!(!c.vms.units.called("StartTransientUnit"));
    assert!(!c.disk().exists());

    let e = run(c.vms.stop(&c.vm, Some(T), true)).unwrap_err();
    assert!(
        matches!(e, VmError::Owner(OwnerError::OtherDataDir { .. })),
        "{e:?}"
    );
    let e = run(c.vms.remove(
        &n("web"),
        &RemoveOptions {
            force: true,
            ..Default::default()
        },
        &quiet,
    ))
    .unwrap_err();
    assert!(
        matches!(e, VmError::Owner(OwnerError::OtherDataDir { .. })),
        "{e:?}"
    );
    for m in ["StopUnit", "KillUnit", "ResetFailedUnit"] {
        assert!(!c.vms.units.called(m), "{m}: {:?}", c.vms.units.calls());
    }
    assert!(c.runner_calls().is_empty());
    assert!(c.vms.record(&n("web")).is_ok(), "still defined");
}

#[test]
fn a_stop_the_runner_answers_needs_no_stop_job() {
    let c = case();
    c.set(Some(c.ours("active", "running")));
    *c.vms.runners.answer.borrow_mut() = Some(StopOutcome::Quit);
    let out = run(c.vms.stop(&c.vm, Some(Duration::from_secs(5)), false)).unwrap();
    assert_eq!(out, Some(StopOutcome::Quit));
    assert_eq!(c.runner_calls(), ["stop web timeout=Some(5s) force=false"]);
    assert!(!c.vms.units.called("StopUnit"));
    assert!(c.vms.units.called("wait down maqet-vm@web.service"));
}

#[test]
fn without_a_runner_the_timeout_bounds_the_stop_job_then_the_unit_is_killed() {
    let c = case();
    c.set(Some(c.ours("active", "running")));
    let t = Duration::from_secs(3);
    c.vms
        .units
        .down
        .borrow_mut()
        .push_back(Err(SystemdError::Timeout {
            unit: c.vm.service_unit(),
            what: "stop",
            waited: t,
        }));
    let out = run(c.vms.stop(&c.vm, Some(t), false)).unwrap();
    assert_eq!(out, Some(StopOutcome::Killed));
    let calls = c.vms.units.calls();
    let at = |m: &str| {
        calls
            .iter()
            .position(|c| c.starts_with(m))
            .unwrap_or_else(|| panic!("{m}: {calls:?}"))
    };
    assert!(at("StopUnit") < at("wait down maqet-vm@web.service 3s"));
    assert!(at("wait down maqet-vm@web.service 3s") < at("KillUnit maqet-vm@web.service 9"));
    // Killed on purpose: not left "failed".
    assert!(calls.contains(&"ResetFailedUnit maqet-vm@web.service".to_string()));
    assert!(calls.contains(&"ResetFailedUnit maqet-vm@web.socket".to_string()));
}

#[test]
fn without_a_runner_a_guest_that_powers_off_in_time_is_not_killed() {
    let c = case();
    c.set(Some(c.ours("active", "running")));
    let out = run(c.vms.stop(&c.vm, Some(Duration::from_secs(3)), false)).unwrap();
    assert_eq!(out, Some(StopOutcome::Powerdown));
    assert!(!c.vms.units.called("KillUnit"));
}

#[test]
fn a_pending_restart_is_cancelled_by_a_stop_job_without_the_runner() {
    let c = case();
    c.set(Some(c.ours("activating", "auto-restart")));
    let out = run(c.vms.stop(&c.vm, None, false)).unwrap();
    assert_eq!(out, Some(StopOutcome::AlreadyStopped));
    assert!(c.runner_calls().is_empty());
    assert!(c.vms.units.called("StopUnit maqet-vm@web.service"));
    assert!(!c.vms.units.called("KillUnit"));
}

#[test]
fn a_stopped_vm_is_not_running_and_rm_refuses_a_running_one_without_force() {
    let c = case();
    assert_eq!(run(c.vms.stop(&c.vm, None, false)).unwrap(), None);
    c.set(Some(c.ours("active", "running")));
    let e = run(c.vms.remove(&n("web"), &RemoveOptions::default(), &quiet)).unwrap_err();
    // The CLI adds "or use `maqet rm --force web`" (cli/exit.rs).
    assert!(matches!(e, VmError::RunningNeedsForce { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Conflict);
    assert!(c.runner_calls().is_empty());
    // --force stops it (killing: no guest to wait for), then forgets it.
    run(c.vms.remove(
        &n("web"),
        &RemoveOptions {
            force: true,
            ..Default::default()
        },
        &quiet,
    ))
    .unwrap();
    assert_eq!(c.runner_calls(), ["stop web timeout=None force=true"]);
    assert!(matches!(
        c.vms.record(&n("web")),
        Err(VmError::NoSuchVm { .. })
    ));
}

#[test]
fn an_undo_with_nothing_created_adds_nothing_to_the_error() {
    let c = case();
    let store = c.vms.store().unwrap();
    let e = run(c.vms.undone(
        &c.vm,
        Provisioned::default(),
        store,
        VmError::AlreadyRunning { vm: c.vm.clone() },
    ));
    assert_eq!(e.to_string(), "VM 'web' is already running");
    assert_eq!(e.class(), ErrorClass::Conflict);
    // …and the CLI's wording of it, nothing added either: cli/exit.rs,
    // `an_undo_of_nothing_adds_nothing_to_the_cli_message`.
}

#[test]
fn a_queued_start_returns_after_the_job_is_queued_with_the_disk_made() {
    let c = case();
    run(c.vms.start_as(&n("web"), T, Wait::Queued, &quiet)).unwrap();
    assert!(c.disk().exists(), "storage comes before the unit");
    let calls = c.vms.units.calls();
    assert_eq!(
        calls.last().unwrap(),
        "StartTransientUnit maqet-vm@web.service queued"
    );
    assert!(!c
        .vms
        .units
        .called("StartTransientUnit maqet-vm@web.service 30s"));
    assert!(!c.vms.units.called("wait "), "{calls:?}");
    // Starting (not yet ready) counts as running for the next start.
    let e = run(c.vms.start_as(&n("web"), T, Wait::Queued, &quiet)).unwrap_err();
    assert!(matches!(e, VmError::AlreadyRunning { .. }), "{e:?}");
}

#[test]
fn a_queued_start_systemd_refuses_is_undone_like_any_other() {
    let c = case();
    c.start_error(SystemdError::Call {
        method: "StartTransientUnit",
        unit: c.vm.socket_unit(),
        message: "refused".into(),
    });
    let e = run(c.vms.start_as(&n("web"), T, Wait::Queued, &quiet)).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Failure);
    assert!(
        e.to_string()
            .contains("; removed what this start created: "),
        "{e}"
    );
    assert!(!c.disk().exists());
}

#[test]
fn remove_each_removes_every_stopped_vm_and_refuses_a_running_one_alone() {
    let c = case();
    add(&c, "db");
    let all = names(&c.vms.data_dir).unwrap();
    // Oldest first, then by name: `web` (made by case()) and `db` fall in
    // one second or in two, so either order is right here.
    let order: Vec<&str> = all.iter().map(VmName::as_str).collect();
    assert!(
        order == ["db", "web"] || order == ["web", "db"],
        "{order:?}"
    );
    let at = |n: &str| order.iter().position(|o| *o == n).unwrap();
    // `web` runs: refused without --force, `db` goes anyway.
    c.set(Some(c.ours("active", "running")));
    let results = run(c.vms.remove_each(&all, &RemoveOptions::default(), &quiet));
    assert!(results[at("db")].is_ok());
    assert!(matches!(
        results[at("web")],
        Err(VmError::RunningNeedsForce { .. })
    ));
    assert_eq!(
        names(&c.vms.data_dir)
            .unwrap()
            .iter()
            .map(VmName::as_str)
            .collect::<Vec<_>>(),
        ["web"]
    );
    let force = RemoveOptions {
        force: true,
        ..Default::default()
    };
    let left = names(&c.vms.data_dir).unwrap();
    let results = run(c.vms.remove_each(&left, &force, &quiet));
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(c.runner_calls(), ["stop web timeout=None force=true"]);
    assert!(names(&c.vms.data_dir).unwrap().is_empty());
}

#[test]
fn an_empty_definition_validates_to_qemu_defaults_and_a_taken_name_conflicts() {
    let c = case();
    let d = define(
        &c.vms.data_dir,
        &Source::Empty { name: n("blank") },
        None,
        &quiet,
    )
    .unwrap();
    assert_eq!(d.vm.as_str(), "blank");
    assert!(d.sources.is_empty());
    let rec = c.vms.record(&n("blank")).unwrap();
    assert_eq!(rec.config, serde_json::json!({}));
    let cfg = super::stored_config(&rec).unwrap();
    assert_eq!(cfg.binary, PathBuf::from(maqet_config::DEFAULT_BINARY));
    assert!(cfg.storage().is_empty());

    let e = define(
        &c.vms.data_dir,
        &Source::Empty { name: n("web") },
        None,
        &quiet,
    )
    .unwrap_err();
    // The CLI adds "; remove it with `maqet rm web` or choose another name".
    assert!(
        matches!(
            &e,
            VmError::Exists {
                from_files: false,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.class(), ErrorClass::Conflict);
    assert_eq!(e.to_string(), "a VM named 'web' already exists");
    // A name that is not one cannot even be asked for (`VmName`).
    let e = VmName::new("no/slash").unwrap_err();
    assert_eq!(VmError::Name(e).class(), ErrorClass::Usage);
}

#[test]
fn a_file_without_a_name_is_refused_with_its_path_and_warnings_are_notices() {
    let c = case();
    let dir = c._dir.path();
    let f = dir.join("anon.yaml");
    std::fs::write(&f, "memory: 64M\nnetwork: {}\n").unwrap();
    let files = Source::Files {
        files: vec![f.clone()],
        name: None,
    };
    let e = define(&c.vms.data_dir, &files, None, &quiet).unwrap_err();
    assert_eq!(e.class(), ErrorClass::InvalidConfig);
    // The CLI adds ": add a `name:` key or pass --name NAME" (cli/exit.rs).
    assert_eq!(
        e.to_string(),
        format!(
            "{}: the VM has no name (no `name:` key, and none given)",
            f.display()
        )
    );
    let seen = std::sync::Mutex::new(Vec::new());
    let named = Source::Files {
        files: vec![f],
        name: Some(n("anon")),
    };
    let d = define(&c.vms.data_dir, &named, None, &|n| {
        seen.lock().unwrap().push(n)
    })
    .unwrap();
    assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
    assert_eq!(
        *seen.lock().unwrap(),
        [Notice::Warning {
            message: d.warnings[0].clone()
        }]
    );
    // From a file: the CLI adds "… or choose another name with --name".
    let e = define(&c.vms.data_dir, &named, None, &quiet).unwrap_err();
    assert!(
        matches!(
            e,
            VmError::Exists {
                from_files: true,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn apply_stores_what_changed_and_refuses_a_running_vm() {
    let c = case();
    let changes = Changes {
        memory: Some("256M".into()),
        set: vec![("cpu".into(), "2".into())],
        ..Default::default()
    };
    let applied = run(c.vms.apply(&n("web"), &changes, &quiet)).unwrap();
    let keys: Vec<String> = applied.changes.iter().map(|c| c.to_string()).collect();
    assert_eq!(applied.changes.len(), 2, "{keys:?}");
    let rec = c.vms.record(&n("web")).unwrap();
    assert_eq!(rec.config["memory"], "256M");
    assert_eq!(rec.config["cpu"], 2);
    // The same again changes nothing.
    let again = run(c.vms.apply(&n("web"), &changes, &quiet)).unwrap();
    assert!(again.changes.is_empty());

    let bad = Changes {
        set: vec![("cpu".into(), "0".into()), ("memory".into(), "lots".into())],
        ..Default::default()
    };
    let e = run(c.vms.apply(&n("web"), &bad, &quiet)).unwrap_err();
    assert!(matches!(&e, VmError::Invalid(v) if v.len() == 2), "{e:?}");
    assert_eq!(e.class(), ErrorClass::InvalidConfig);

    c.set(Some(c.ours("active", "running")));
    let e = run(c.vms.apply(&n("web"), &changes, &quiet)).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Conflict);
    // The CLI words it "stop it first with `maqet stop web`" (cli/exit.rs).
    assert!(matches!(e, VmError::RunningNoApply { .. }), "{e:?}");
    let e = run(c.vms.apply(&n("nope"), &changes, &quiet)).unwrap_err();
    assert!(matches!(e, VmError::NoSuchVm { .. }));
}

/// Defines VM `name` (no storage) next to `web`.
fn add(c: &Case, name: &str) {
    define(
        &c.vms.data_dir,
        &Source::Empty { name: n(name) },
        None,
        &quiet,
    )
    .unwrap();
}

#[test]
fn enable_sets_the_flag_and_says_whether_the_login_unit_acts_on_it() {
    use super::autostart::AutostartNow;
    let c = case();
    let seen = std::sync::Mutex::new(Vec::new());
    let notify = |n| seen.lock().unwrap().push(n);
    let said = |seen: &std::sync::Mutex<Vec<Notice>>| std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(
        run(c.vms.set_autostart(&c.vm, true, None, &notify)).unwrap(),
        None
    );
    assert!(c.vms.record(&c.vm).unwrap().autostart);
    assert_eq!(
        said(&seen),
        [
            Notice::Autostart {
                vm: c.vm.clone(),
                on: true
            },
            Notice::AutostartUnitDisabled {
                unit: "maqet-autostart.service".into()
            }
        ]
    );
    *c.vms.units.unit_file.borrow_mut() = Some("enabled".into());
    run(c.vms.set_autostart(&c.vm, true, None, &notify)).unwrap();
    assert_eq!(
        said(&seen),
        [Notice::Autostart {
            vm: c.vm.clone(),
            on: true
        }]
    );
    // `disable --now` of a stopped VM: the flag goes, nothing to stop.
    assert_eq!(
        run(c.vms.set_autostart(&c.vm, false, Some(T), &notify)).unwrap(),
        Some(AutostartNow::Stopped(None))
    );
    assert!(!c.vms.record(&c.vm).unwrap().autostart);
    assert_eq!(
        said(&seen),
        [Notice::Autostart {
            vm: c.vm.clone(),
            on: false
        }]
    );
    // `enable --now` starts it.
    assert_eq!(
        run(c.vms.set_autostart(&c.vm, true, Some(T), &notify)).unwrap(),
        Some(AutostartNow::Started)
    );
    assert!(c
        .vms
        .units
        .called("StartTransientUnit maqet-vm@web.service"));
}

#[test]
fn status_lists_the_helper_units_on_its_own_connection() {
    let c = case();
    run(c.vms.status(&c.vm)).unwrap();
    assert!(
        c.vms.units.calls().contains(
            &"ListUnitsByPatterns maqet-tpm@web.* maqet-fs@web-* maqet-net@web.*".to_string()
        ),
        "{:?}",
        c.vms.units.calls()
    );
}
