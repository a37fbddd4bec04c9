//! Behaviour under faults: every one leaves no orphan, no stale socket and
//! a state that matches systemd.

mod common;

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn sigkill_of_the_runner_kills_qemu_and_start_works_again() {
    let w = World::new("kill9");
    let vm = w.add_vm("k", "");
    w.ok(&["start", &vm]);
    let st = w.status(&vm);
    let runner = st["runner_pid"].as_u64().unwrap();
    let qemu = st["qemu_pid"].as_u64().unwrap();
    send_signal(runner, "-9");
    let st = w.wait_state(&vm, "failed", Duration::from_secs(10));
    wait_until(
        "QEMU to die with its runner",
        Duration::from_secs(10),
        || !alive(qemu),
    );
    assert!(qemu_pids(&vm).is_empty());
    assert_eq!(st["result"], "signal", "{st:#}");
    assert!(
        st["failure"].as_str().unwrap().contains("SIGKILL"),
        "{st:#}"
    );
    assert!(!socket_path(&vm).exists(), "socket file left behind");
    let human = w.ok(&["status", &vm]);
    assert!(
        human.contains("failed") && human.contains("SIGKILL"),
        "{human}"
    );
    // Right away, no reset needed.
    w.ok(&["start", &vm]);
    assert_eq!(w.state(&vm), "running");
    w.ok(&["stop", &vm, "--force"]);
}

#[test]
fn qemu_exiting_by_itself_ends_the_unit_cleanly() {
    let w = World::new("quit");
    let vm = w.add_vm("q", "");
    w.ok(&["start", &vm]);
    let qemu = w.status(&vm)["qemu_pid"].as_u64().unwrap();
    let sock = socket_path(&vm);
    // QEMU answers quit and then exits; the reply may or may not arrive.
    let _ = w.maqet(&["qmp", "run", &vm, "quit"]);
    w.wait_state(&vm, "defined", Duration::from_secs(10));
    wait_until("QEMU to exit", Duration::from_secs(5), || !alive(qemu));
    let service = format!("maqet-vm@{vm}.service");
    let result = unit_prop(&service, "Result");
    assert!(result == "success" || result.is_empty(), "Result={result}");
    assert!(!sock.exists(), "socket file left behind");
    // The old path starts nothing: no socket, no unit, no QEMU.
    assert!(UnixStream::connect(&sock).is_err());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.state(&vm), "defined");
    assert!(qemu_pids(&vm).is_empty());
}

#[test]
fn qemu_failing_to_start_is_reported_at_once_with_its_message() {
    let w = World::new("badarg");
    let vm = w.add_vm("b", "args:\n  - -no-such-option\n");
    let t = Instant::now();
    let err = w.fails(1, &["start", &vm]);
    let took = t.elapsed();
    assert!(
        err.contains("-no-such-option") && err.contains("invalid option"),
        "{err}"
    );
    assert!(err.contains("failed to start"), "{err}");
    // Not a QMP-handshake timeout (30 s): a generous bound for a loaded CI box.
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(w.state(&vm), "failed");
    assert!(qemu_pids(&vm).is_empty());
    assert!(!socket_path(&vm).exists());
}

#[test]
fn concurrent_starts_make_one_vm_and_one_clear_error() {
    let w = World::new("race");
    let vm = w.add_vm("c", "");
    let spawn = || {
        w.cmd()
            .args(["start", &vm])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let ok = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(ok, 1, "exactly one start must succeed: {outs:?}");
    let loser = outs.iter().find(|o| !o.status.success()).unwrap();
    assert_eq!(loser.status.code(), Some(5), "{loser:?}");
    assert!(
        String::from_utf8_lossy(&loser.stderr).contains("already running"),
        "{loser:?}"
    );
    assert_eq!(qemu_pids(&vm).len(), 1);
    assert_eq!(w.state(&vm), "running");
    // And a third, later start says the same.
    assert!(w.fails(5, &["start", &vm]).contains("already running"));
    w.ok(&["stop", &vm, "--force"]);
}

#[test]
fn hung_qemu_is_killed_by_the_watchdog() {
    let w = World::new("hangq");
    let vm = w.add_vm("h", "");
    w.ok(&["start", &vm]);
    let st = w.status(&vm);
    let qemu = st["qemu_pid"].as_u64().unwrap();
    send_signal(qemu, "-STOP");
    let st = w.wait_state(&vm, "failed", Duration::from_secs(60));
    assert_eq!(st["result"], "watchdog", "{st:#}");
    assert!(
        st["failure"].as_str().unwrap().contains("watchdog"),
        "{st:#}"
    );
    wait_until(
        "the stopped QEMU to be killed",
        Duration::from_secs(20),
        || !alive(qemu),
    );
    assert!(!socket_path(&vm).exists());
}

#[test]
fn hung_runner_is_killed_by_the_watchdog() {
    let w = World::new("hangr");
    let vm = w.add_vm("h", "");
    w.ok(&["start", &vm]);
    let st = w.status(&vm);
    let (runner, qemu) = (
        st["runner_pid"].as_u64().unwrap(),
        st["qemu_pid"].as_u64().unwrap(),
    );
    send_signal(runner, "-STOP");
    let st = w.wait_state(&vm, "failed", Duration::from_secs(60));
    assert_eq!(st["result"], "watchdog", "{st:#}");
    wait_until("QEMU to be killed", Duration::from_secs(20), || {
        !alive(qemu) && !alive(runner)
    });
}

#[test]
fn unreachable_user_manager_gives_a_clear_error() {
    let w = World::new("nobus");
    let vm = w.add_vm("n", "");
    let o = w
        .cmd()
        .args(["start", &vm])
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(8), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("session bus") && err.contains("systemctl --user"),
        "{err}"
    );
    assert!(qemu_pids(&vm).is_empty());
}
