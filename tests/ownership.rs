//! One data directory never acts on another's VM (unit names are per
//! user), and a running VM whose control socket was removed is reported as
//! such. Real user manager, real QEMU.

mod common;

use std::time::Duration;

use serde_json::Value;

use common::*;

/// A VM with a qcow2 disk, so snapshot commands have a drive to name.
const WITH_DISK: &str = "storage:\n  - {name: root, size: 16M}\n";

/// Defines `name` in `w` from the same small VM as `World::add_vm`.
fn define(w: &World, name: &str, extra: &str) {
    let f = w.vm_yaml(name, extra);
    w.ok(&["add", f.to_str().unwrap()]);
}

fn main_pid(vm: &str) -> String {
    unit_prop(&format!("maqet-vm@{vm}.service"), "MainPID")
}

#[test]
fn another_data_directory_never_acts_on_the_vm() {
    let a = World::new("ownA");
    let b = World::new("ownB");
    let vm = a.name("twin");
    define(&a, &vm, WITH_DISK);
    define(&b, &vm, WITH_DISK);
    a.ok(&["start", &vm]);
    let pid = main_pid(&vm);
    let qemu = a.status(&vm)["qemu_pid"].as_u64().unwrap();
    let a_dir = a.data_dir().display().to_string();
    let shot = b.dir.path().join("shot.ppm");
    let shot = shot.to_str().unwrap();

    let refused: Vec<Vec<&str>> = vec![
        vec!["status", &vm],
        vec!["status", &vm, "--json"],
        vec!["inspect", &vm],
        vec!["stop", &vm],
        vec!["stop", "--timeout", "2", &vm],
        vec!["stop", "--force", &vm],
        vec!["restart", &vm],
        vec!["rm", &vm],
        vec!["rm", "--force", &vm],
        vec!["qmp", "run", &vm, "query-status"],
        vec!["qmp", &vm, "query-status"],
        vec!["qmp", "keys", &vm, "ret"],
        vec!["qmp", "type", &vm, "x"],
        vec!["qmp", "screendump", &vm, shot],
        vec!["qmp", "pause", &vm],
        vec!["qmp", "resume", &vm],
        vec!["qmp", "device-add", &vm, "virtio-rng-pci", "--id", "rng0"],
        vec!["qmp", "device-del", &vm, "rng0"],
        vec!["console", "--dump", &vm],
        vec!["events", &vm],
        vec!["reset", &vm],
        vec!["reboot", &vm],
        vec!["snapshot", "create", "--live", &vm, "root", "s1"],
        vec!["snapshot", "load", "--live", &vm, "root", "s1"],
        vec!["snapshot", "delete", "--live", &vm, "root", "s1"],
        vec!["snapshot", "list", &vm],
        vec!["logs", &vm],
    ];
    for args in &refused {
        let err = b.fails(5, args);
        assert!(
            err.contains(&a_dir) && err.contains("another data directory"),
            "maqet {args:?} from B must name A's directory {a_dir}: {err}"
        );
    }

    // `ls` shows B's VM as B's (defined), never A's running state.
    let ls: Value = serde_json::from_str(&b.ok(&["ls", "--json"])).unwrap();
    let row = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == vm.as_str())
        .unwrap_or_else(|| panic!("{vm} in B's ls: {ls:#}"));
    assert_eq!(row["state"], "defined", "{ls:#}");
    assert_eq!(row["runner_pid"], Value::Null, "{ls:#}");

    // doctor --fix from B leaves A's VM alone.
    let _ = b.maqet(&["doctor", "--fix"]);

    // A's VM is untouched: same runner, same QEMU, still running, and its
    // own data directory still reaches it.
    assert_eq!(main_pid(&vm), pid, "A's runner changed");
    assert!(alive(qemu), "A's QEMU is gone");
    assert_eq!(a.state(&vm), "running");
    let st: Value = serde_json::from_str(&a.ok(&["qmp", "run", &vm, "query-status"])).unwrap();
    assert_eq!(st["status"], "running", "{st:#}");
    a.ok(&["stop", "--force", &vm]);
    // With A's VM stopped, B's definition is B's to act on again: B runs it
    // once, and each data directory's `logs` shows its own runs only — the
    // runner's lines and the manager's about the unit — though both share
    // the unit's journal.
    b.ok(&["start", &vm]);
    let b_pid = main_pid(&vm);
    b.ok(&["stop", "--force", &vm]);
    let b_dir = b.data_dir().display().to_string();
    let runner = |p: &str| format!("maqet-runner[{p}]");
    let started = |d: &str| format!("(data {d})");
    let mut shown = (String::new(), String::new());
    wait_until("both runs in the journal", Duration::from_secs(10), || {
        shown = (a.ok(&["logs", &vm]), b.ok(&["logs", &vm]));
        shown.0.contains(&runner(&pid)) && shown.1.contains(&runner(&b_pid))
    });
    let (a_logs, b_logs) = shown;
    assert!(a_logs.contains(&started(&a_dir)), "{a_logs}");
    assert!(b_logs.contains(&started(&b_dir)), "{b_logs}");
    assert!(
        !a_logs.contains(&runner(&b_pid)) && !a_logs.contains(&started(&b_dir)),
        "A's logs show B's run:\n{a_logs}"
    );
    assert!(
        !b_logs.contains(&runner(&pid)) && !b_logs.contains(&started(&a_dir)),
        "B's logs show A's run:\n{b_logs}"
    );
    b.ok(&["rm", &vm]);
}

#[test]
fn a_missing_control_socket_is_reported_and_stop_still_honours_its_timeout() {
    let w = World::new("nosock");
    // A guest without an OS ignores ACPI power-down, and the VM's own grace
    // is long: only --timeout can end the stop early.
    let vm = w.add_vm("s", "shutdown_timeout: 600\n");
    w.ok(&["start", &vm]);
    let sock = socket_path(&vm);
    std::fs::remove_file(&sock).unwrap();

    let err = w.fails(1, &["qmp", "run", &vm, "query-status"]);
    assert!(
        err.contains("is running") && err.contains("control socket") && err.contains("missing"),
        "{err}"
    );
    assert!(!err.contains("not running"), "{err}");
    assert!(
        err.contains("maqet doctor") && err.contains("maqet restart"),
        "{err}"
    );

    let o = w.maqet(&["doctor", "--json"]);
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            let m = f["message"].as_str().unwrap();
            m.contains(&vm) && m.contains("control socket") && m.contains("missing")
        })
        .unwrap_or_else(|| panic!("doctor reports the missing socket: {r:#}"));
    assert_eq!(f["severity"], "warning", "{f:#}");
    assert!(
        f["hint"].as_str().unwrap().contains("maqet restart"),
        "{f:#}"
    );

    // Without the runner's socket the stop goes through systemd; the guest
    // ignores power-down, so it ends because --timeout ran out (killed),
    // not after the VM's 600 s shutdown_timeout.
    let o = w.maqet(&["stop", "--timeout", "2", "--json", &vm]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "stop failed: {stderr}");
    assert!(
        stderr.contains("control socket") && !stderr.contains("not running"),
        "{stderr}"
    );
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out["was_running"], true, "{out:#}");
    assert_eq!(out["outcome"], "killed", "{out:#}");
    assert_eq!(w.state(&vm), "defined");
    assert!(qemu_pids(&vm).is_empty(), "QEMU left running");
    // And it starts again with its socket.
    w.ok(&["start", &vm]);
    assert!(sock.exists());
    w.ok(&["stop", "--force", &vm]);
    assert_eq!(w.state(&vm), "defined");
}

/// The runner's own word counts too: a unit relabelled as B's (its
/// description is all systemd knows) still leads B to A's runner through
/// the per-name socket, and the runner's status reply refuses it.
#[test]
fn a_runner_of_another_data_directory_is_refused_even_when_the_unit_says_ours() {
    let a = World::new("runA");
    let b = World::new("runB");
    let vm = a.name("twin");
    define(&a, &vm, "");
    define(&b, &vm, "");
    a.ok(&["start", &vm]);
    let pid = main_pid(&vm);
    let unit = format!("maqet-vm@{vm}.service");
    let relabel = |dir: &std::path::Path| {
        let ok = std::process::Command::new("systemctl")
            .args(["--user", "set-property", "--runtime", &unit])
            .arg(format!(
                "Description=maqet VM {vm} (data {})",
                dir.display()
            ))
            .status()
            .unwrap()
            .success();
        assert!(ok, "systemctl set-property Description");
    };
    relabel(&b.data_dir());
    let a_dir = a.data_dir().display().to_string();
    for args in [
        vec!["qmp", "run", &vm, "query-status"],
        vec!["events", &vm],
        vec!["console", "--dump", &vm],
        vec!["reset", &vm],
        vec!["stop", &vm],
        vec!["stop", "--force", &vm],
    ] {
        let err = b.fails(5, &args);
        assert!(
            err.contains(&a_dir) && err.contains("another data directory"),
            "maqet {args:?} from B must name A's directory {a_dir}: {err}"
        );
    }
    assert_eq!(main_pid(&vm), pid, "A's runner changed");
    relabel(&a.data_dir());
    assert_eq!(a.state(&vm), "running");
    a.ok(&["stop", "--force", &vm]);
}
