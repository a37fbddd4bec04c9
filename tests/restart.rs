//! Restart policies hold for every failure, the state tells the truth when
//! systemd gives up, and concurrent CLI calls neither hang nor orphan a VM —
//! against the real user manager and QEMU.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn spawn(w: &World, args: &[&str]) -> Child {
    w.cmd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn maqet")
}

/// Waits for a child with a bound: a hang fails the test instead of
/// hanging it (the child is killed first).
fn finish(mut c: Child, what: &str, within: Duration) -> Output {
    let mut status = None;
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(what, within, || {
            status = c.try_wait().unwrap();
            status.is_some()
        })
    }));
    if let Err(e) = waited {
        let _ = c.kill();
        let _ = c.wait();
        std::panic::resume_unwind(e);
    }
    let mut out = Output {
        status: status.unwrap(),
        stdout: vec![],
        stderr: vec![],
    };
    c.stdout
        .take()
        .unwrap()
        .read_to_end(&mut out.stdout)
        .unwrap();
    c.stderr
        .take()
        .unwrap()
        .read_to_end(&mut out.stderr)
        .unwrap();
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `status` until `f` holds for it (bounded).
fn wait_status(
    w: &World,
    vm: &str,
    what: &str,
    within: Duration,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(what, within, || {
            last = w.status(vm);
            f(&last)
        })
    }));
    if res.is_err() {
        panic!("{vm}: timed out waiting for {what}; last status: {last:#}");
    }
    last
}

const ON_FAILURE: &str = "restart: on-failure\nrestart_sec: 0.3\nshutdown_timeout: 1\n";

/// The restarted VM is whole again: a new runner, its socket, QMP.
fn assert_restarted(w: &World, vm: &str, old_runner: u64) {
    let service = format!("maqet-vm@{vm}.service");
    let st = wait_status(
        w,
        vm,
        "running after one restart",
        Duration::from_secs(60),
        |s| s["state"] == "running" && s["restarts"] == 1,
    );
    assert_eq!(unit_prop(&service, "NRestarts"), "1");
    let new_runner = st["runner_pid"].as_u64().expect("runner pid");
    assert_ne!(new_runner, old_runner);
    assert_eq!(unit_prop(&service, "MainPID"), new_runner.to_string());
    assert!(socket_path(vm).exists(), "socket file is back");
    assert_eq!(
        unit_prop(&format!("maqet-vm@{vm}.socket"), "ActiveState"),
        "active"
    );
    let v: Value = serde_json::from_str(&w.ok(&["qmp", "run", vm, "query-status"])).unwrap();
    assert_eq!(v["status"], "running");
    assert_eq!(qemu_pids(vm).len(), 1);
}

#[test]
fn a_sigkilled_runner_is_restarted_under_on_failure_and_always() {
    let w = World::new("rskill");
    for policy in ["on-failure", "always"] {
        let vm = w.add_vm(policy, &ON_FAILURE.replace("on-failure", policy));
        w.ok(&["start", &vm]);
        let runner = w.status(&vm)["runner_pid"].as_u64().unwrap();
        send_signal(runner, "-KILL");
        assert_restarted(&w, &vm, runner);
        w.ok(&["stop", &vm]);
        assert_eq!(w.state(&vm), "defined");
        assert!(!socket_path(&vm).exists());
    }
}

#[test]
fn a_watchdog_kill_is_restarted_under_on_failure() {
    let w = World::new("rswdog");
    let vm = w.add_vm("d", ON_FAILURE);
    w.ok(&["start", &vm]);
    let service = format!("maqet-vm@{vm}.service");
    assert_eq!(unit_prop(&service, "WatchdogUSec"), "10s");
    let runner = w.status(&vm)["runner_pid"].as_u64().unwrap();
    // A frozen runner stops pinging: systemd's watchdog kills it.
    send_signal(runner, "-STOP");
    assert_restarted(&w, &vm, runner);
    let journal = journal_json(&service);
    assert!(
        journal.iter().any(|r| r["MESSAGE"]
            .as_str()
            .is_some_and(|m| m.contains("Watchdog timeout"))),
        "the journal shows the watchdog kill"
    );
    w.ok(&["stop", &vm]);
}

/// A QEMU binary that runs the real one until `fail` exists next to it,
/// then runs it with an option QEMU does not know (its own error message).
fn flaky_qemu(w: &World) -> (std::path::PathBuf, std::path::PathBuf) {
    let flag = w.dir.path().join("fail");
    let script = w.write(
        "qemu-flaky",
        &format!(
            "#!/bin/sh\nif [ -e '{}' ]; then exec {QEMU} -bogus-opt \"$@\"; fi\nexec {QEMU} \"$@\"\n",
            flag.display()
        ),
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, flag)
}

#[test]
fn hitting_the_start_limit_is_failed_with_reason_and_doctor_fixes_it() {
    let w = World::new("rslimit");
    let (qemu, flag) = flaky_qemu(&w);
    let name = w.name("l");
    let f = w.write(
        "l.yaml",
        &format!(
            "name: {name}\nbinary: {}\nmemory: 64M\nrestart: on-failure\nrestart_sec: 0.1\nshutdown_timeout: 1\narguments:\n  - accel: tcg\n  - display: none\n  - nodefaults\n",
            qemu.display()
        ),
    );
    w.ok(&["add", f.to_str().unwrap()]);
    w.ok(&["start", &name]);
    // From now on every restart fails at once: systemd gives up.
    std::fs::write(&flag, "").unwrap();
    let runner = w.status(&name)["runner_pid"].as_u64().unwrap();
    send_signal(runner, "-KILL");
    let st = wait_status(&w, &name, "failed", Duration::from_secs(60), |s| {
        s["state"] == "failed"
    });
    assert_eq!(st["result"], "start-limit-hit", "{st:#}");
    let failure = st["failure"].as_str().unwrap();
    assert!(failure.contains("start-limit-hit"), "{failure}");
    let last = st["last_error"].as_str().unwrap_or_default();
    assert!(last.contains("invalid option"), "{st:#}");
    let human = w.ok(&["status", &name]);
    assert!(
        human.contains("start-limit-hit") && human.contains("invalid option"),
        "{human}"
    );
    for args in [
        vec!["ls", "--json"],
        vec!["ls", "--state", "failed", "--json"],
    ] {
        let rows: Value = serde_json::from_str(&w.ok(&args)).unwrap();
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{args:?}: {rows:#}"))
            .clone();
        assert_eq!(row["state"], "failed");
        assert_eq!(row["result"], "start-limit-hit");
        assert!(row["last_error"]
            .as_str()
            .unwrap()
            .contains("invalid option"));
    }
    let table = w.ok(&["ls", "--state", "failed"]);
    assert!(
        table.contains(&name) && table.contains("start-limit-hit"),
        "{table}"
    );

    let doctor: Value = serde_json::from_slice(&w.maqet(&["doctor", "--json"]).stdout).unwrap();
    let finding = |d: &Value| {
        d["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"] == "units" && f["message"].as_str().unwrap().contains(&name))
            .cloned()
    };
    let found = finding(&doctor).unwrap_or_else(|| panic!("{doctor:#}"));
    assert!(
        found["message"]
            .as_str()
            .unwrap()
            .contains("start-limit-hit"),
        "{found}"
    );
    let fixed: Value =
        serde_json::from_slice(&w.maqet(&["doctor", "--fix", "--json"]).stdout).unwrap();
    assert!(finding(&fixed).unwrap()["fixed"].is_string(), "{fixed:#}");
    assert_eq!(w.state(&name), "defined");
    assert!(qemu_pids(&name).is_empty());
}

#[test]
fn start_with_a_restart_policy_fails_at_the_first_failed_attempt() {
    let w = World::new("rsfast");
    let name = w.name("c");
    let f = w.write(
        "c.yaml",
        &format!(
            "name: {name}\nbinary: {QEMU}\nmemory: 64M\nrestart: on-failure\nrestart_sec: 5\narguments:\n  - accel: tcg\n  - display: none\n  - nodefaults\n  - bogus-opt: 1\n"
        ),
    );
    w.ok(&["add", f.to_str().unwrap()]);
    let err = w.fails(1, &["start", &name]);
    assert!(err.contains("failed to start"), "{err}");
    assert!(err.contains("-bogus-opt: invalid option"), "{err}");
    // No restart is pending, nothing runs, and the failure stays visible
    // with QEMU's own words, as for a VM without a restart policy.
    let st = w.status(&name);
    assert_eq!(st["state"], "failed", "{st:#}");
    assert!(
        st["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("-bogus-opt: invalid option")),
        "{st:#}"
    );
    assert!(qemu_pids(&name).is_empty());
    let service = format!("maqet-vm@{name}.service");
    assert_ne!(unit_prop(&service, "SubState"), "auto-restart");
}

#[test]
fn concurrent_graceful_stops_all_return() {
    let w = World::new("rsstop");
    let vms: Vec<String> = (0..12)
        .map(|i| w.add_vm(&format!("s{i}"), "shutdown_timeout: 1\n"))
        .collect();
    let starts: Vec<Child> = vms.iter().map(|v| spawn(&w, &["start", v])).collect();
    for (c, v) in starts.into_iter().zip(&vms) {
        let o = finish(c, &format!("start {v}"), Duration::from_secs(120));
        assert!(o.status.success(), "start {v}: {}", text(&o.stderr));
    }
    let stops: Vec<Child> = vms
        .iter()
        .map(|v| spawn(&w, &["stop", "--timeout", "1", v]))
        .collect();
    for (c, v) in stops.into_iter().zip(&vms) {
        let o = finish(c, &format!("stop {v}"), Duration::from_secs(120));
        assert_eq!(o.status.code(), Some(0), "stop {v}: {}", text(&o.stderr));
    }
    for v in &vms {
        assert_eq!(w.state(v), "defined");
        assert!(qemu_pids(v).is_empty(), "{v}");
        assert!(!socket_path(v).exists(), "{v}");
    }
}

#[test]
fn rm_racing_start_never_leaves_an_unknown_vm() {
    let w = World::new("rsrace");
    for i in 0..6 {
        let vm = w.add_vm(&format!("x{i}"), "shutdown_timeout: 1\n");
        let start = spawn(&w, &["start", &vm]);
        let rm = spawn(&w, &["rm", &vm]);
        let start = finish(start, "start", Duration::from_secs(120));
        let rm = finish(rm, "rm", Duration::from_secs(120));
        let service = format!("maqet-vm@{vm}.service");
        match rm.status.code() {
            // Removed first or before the start took hold: nothing runs.
            Some(0) => {
                assert_eq!(
                    start.status.code(),
                    Some(3),
                    "start succeeded for a removed VM: {}",
                    text(&start.stdout)
                );
                wait_until("no unit left", Duration::from_secs(30), || {
                    matches!(unit_prop(&service, "ActiveState").as_str(), "inactive" | "")
                });
                assert!(qemu_pids(&vm).is_empty(), "orphan QEMU of {vm}");
                w.fails(3, &["status", &vm]);
            }
            // The start won: the VM is defined, running and visible.
            Some(5) => {
                assert!(start.status.success(), "start: {}", text(&start.stderr));
                assert_eq!(w.state(&vm), "running");
                w.ok(&["rm", "--force", &vm]);
                assert!(qemu_pids(&vm).is_empty());
            }
            other => panic!("rm exited {other:?}: {}", text(&rm.stderr)),
        }
    }
}

/// The restart count and state once `status` shows `restarts` ≥ `n`.
fn wait_restarts(w: &World, vm: &str, n: u64) -> Value {
    wait_status(
        w,
        vm,
        &format!("running after restart {n}"),
        Duration::from_secs(90),
        |s| s["state"] == "running" && s["restarts"].as_u64() >= Some(n),
    )
}

/// A VM with a TPM restarts like any other (issue 17.4): killing its runner
/// or freezing it until the watchdog kills it brings VM and swtpm back.
#[test]
fn a_tpm_vm_is_restarted_after_a_runner_kill_and_a_watchdog_kill() {
    let w = World::new("rstpm");
    for policy in ["on-failure", "always"] {
        let vm = w.add_vm(
            policy,
            &format!("tpm: true\n{}", ON_FAILURE.replace("on-failure", policy)),
        );
        let tpm = format!("maqet-tpm@{vm}.service");
        w.ok(&["start", &vm]);
        let swtpm = unit_prop(&tpm, "MainPID");
        assert_ne!(swtpm, "0");
        let runner = w.status(&vm)["runner_pid"].as_u64().unwrap();
        send_signal(runner, "-KILL");
        assert_restarted(&w, &vm, runner);
        assert_eq!(unit_prop(&tpm, "ActiveState"), "active");
        let swtpm2 = unit_prop(&tpm, "MainPID");
        assert_ne!(swtpm2, swtpm, "swtpm came back with the VM");
        if policy == "on-failure" {
            // Frozen: systemd's watchdog kills it, and the policy restarts it.
            let runner = w.status(&vm)["runner_pid"].as_u64().unwrap();
            send_signal(runner, "-STOP");
            let st = wait_restarts(&w, &vm, 2);
            assert_ne!(st["runner_pid"].as_u64(), Some(runner));
            assert_eq!(unit_prop(&tpm, "ActiveState"), "active");
            assert_ne!(unit_prop(&tpm, "MainPID"), swtpm2);
        }
        w.ok(&["stop", &vm]);
        assert_eq!(w.state(&vm), "defined");
        wait_until("the TPM unit to stop", Duration::from_secs(10), || {
            !matches!(
                unit_prop(&tpm, "ActiveState").as_str(),
                "active" | "activating" | "deactivating"
            )
        });
    }
}

/// QEMU ended by a signal it was sent by someone else (QMP SHUTDOWN reason
/// `host-signal`) did not stop because the guest or maqet asked: a failure,
/// restarted under `on-failure`, and the journal says what happened.
#[test]
fn qemu_ended_by_a_host_signal_is_a_failure_under_on_failure() {
    let w = World::new("rssig");
    let vm = w.add_vm("t", ON_FAILURE);
    w.ok(&["start", &vm]);
    let st = w.status(&vm);
    let runner = st["runner_pid"].as_u64().unwrap();
    let qemu = st["qemu_pid"].as_u64().unwrap();
    send_signal(qemu, "-TERM");
    assert_restarted(&w, &vm, runner);
    let service = format!("maqet-vm@{vm}.service");
    let said = || -> Vec<String> {
        journal_json(&service)
            .iter()
            .filter(|r| r["_PID"] == runner.to_string().as_str())
            .filter_map(|r| r["MESSAGE"].as_str().map(str::to_string))
            .collect()
    };
    wait_until(
        "the runner's account of the end",
        Duration::from_secs(10),
        || {
            said()
                .iter()
                .any(|m| m.contains("SIGTERM") && m.contains("host-signal"))
        },
    );
    let said = said();
    assert!(
        !said.iter().any(|m| m.contains("exited cleanly")),
        "{said:#?}"
    );
    w.ok(&["stop", &vm]);
}

/// A stand-in QEMU (tests/qmp/fake_qemu.py) that QEMU's real hardware
/// faults would be needed for: it stops its guest with `internal-error`.
fn fake_qemu(w: &World) -> std::path::PathBuf {
    let p = w.write("fake-qemu", include_str!("qmp/fake_qemu.py"));
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// The runner's journal messages (any run) of `vm` at priority ≤ `prio`.
fn runner_messages(vm: &str, prio: u8) -> Vec<String> {
    journal_json(&format!("maqet-vm@{vm}.service"))
        .iter()
        .filter(|r| {
            r["PRIORITY"]
                .as_str()
                .and_then(|p| p.parse::<u8>().ok())
                .is_some_and(|p| p <= prio)
        })
        .filter_map(|r| r["MESSAGE"].as_str().map(str::to_string))
        .collect()
}

/// QEMU stopping the guest with `internal-error` (issue 17.9): shown as
/// such and logged; without a restart policy it stays for inspection, with
/// one it is a failure the policy restarts from.
#[test]
fn internal_error_is_shown_logged_and_a_failure_for_restart_policies() {
    let w = World::new("rsinterr");
    let q = fake_qemu(&w);
    let add = |suffix: &str, extra: &str| {
        let name = w.name(suffix);
        let f = w.write(
            &format!("{suffix}.yaml"),
            &format!(
                "name: {name}\nbinary: {}\nmemory: 64M\ndisplay: none\nshutdown_timeout: 1\n{extra}\
                 arguments:\n  - maqet-fake-internal-error: 2\n",
                q.display()
            ),
        );
        w.ok(&["add", f.to_str().unwrap()]);
        name
    };
    let plain = add("p", "");
    w.ok(&["start", &plain]);
    let st = w.wait_state(&plain, "internal-error", Duration::from_secs(30));
    assert!(
        st["status_text"]
            .as_str()
            .unwrap()
            .starts_with("internal-error"),
        "{st:#}"
    );
    let rows: Value =
        serde_json::from_str(&w.ok(&["ls", "--json", "--state", "internal-error"])).unwrap();
    assert_eq!(rows[0]["name"], plain.as_str(), "{rows:#}");
    wait_until("the runner's error line", Duration::from_secs(10), || {
        runner_messages(&plain, 3)
            .iter()
            .any(|m| m.contains("internal-error") && m.contains("stays stopped"))
    });
    w.ok(&["stop", &plain]);

    let policed = add("r", "restart: on-failure\nrestart_sec: 0.3\n");
    w.ok(&["start", &policed]);
    let runner = w.status(&policed)["runner_pid"].as_u64().unwrap();
    let st = wait_status(
        &w,
        &policed,
        "a restart after internal-error",
        Duration::from_secs(60),
        |s| s["restarts"].as_u64() >= Some(1),
    );
    assert_ne!(st["runner_pid"].as_u64(), Some(runner), "{st:#}");
    let service = format!("maqet-vm@{policed}.service");
    wait_until(
        "the first run's failure line",
        Duration::from_secs(10),
        || {
            journal_json(&service)
                .iter()
                .filter(|r| r["_PID"] == runner.to_string().as_str())
                .any(|r| {
                    r["MAQET_FAILURE"] == "true"
                        && r["MESSAGE"]
                            .as_str()
                            .is_some_and(|m| m.contains("internal-error"))
                })
        },
    );
    w.ok(&["stop", &policed]);
}
