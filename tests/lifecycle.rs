//! The everyday path against the real user manager: add, start, status,
//! qmp, logs, stop, restart, rm — checked through maqet and through
//! systemctl/journalctl/the file system, which must all agree.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use serde_json::Value;

#[test]
fn start_status_qmp_stop_tell_the_truth() {
    let w = World::new("life");
    let vm = w.add_vm("a", "");
    let service = format!("maqet-vm@{vm}.service");
    let socket_unit = format!("maqet-vm@{vm}.socket");
    assert_eq!(w.state(&vm), "defined");

    // start prints nothing on success and returns with QEMU answering QMP.
    let out = w.ok(&["start", &vm]);
    assert_eq!(out, "");
    let st = w.status(&vm);
    assert_eq!(st["state"], "running", "{st:#}");
    assert_eq!(st["unit"], service.as_str());
    let runner_pid = st["runner_pid"].as_u64().expect("runner pid");
    let qemu_pid = st["qemu_pid"].as_u64().expect("qemu pid");
    assert!(st["since"].as_u64().unwrap() > 0);
    assert_eq!(qemu_pids(&vm), vec![qemu_pid]);

    // systemd's own view.
    assert_eq!(unit_prop(&service, "ActiveState"), "active");
    assert_eq!(unit_prop(&service, "Type"), "notify");
    assert_eq!(unit_prop(&service, "MainPID"), runner_pid.to_string());
    assert_eq!(
        unit_prop(&service, "StatusText"),
        format!("running (qemu pid {qemu_pid})")
    );
    assert_eq!(unit_prop(&service, "Slice"), "maqet.slice");
    assert_eq!(unit_prop(&socket_unit, "ActiveState"), "active");
    assert_eq!(unit_prop(&socket_unit, "SubState"), "running");
    let sock = socket_path(&vm);
    let meta = std::fs::metadata(&sock).expect("socket file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir_mode = std::fs::metadata(sock.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);

    // QMP through the runner.
    let v: Value = serde_json::from_str(&w.ok(&["qmp", "run", &vm, "query-status"])).unwrap();
    assert_eq!(v["status"], "running");
    assert_eq!(v["running"], true);
    let v: Value = serde_json::from_str(&w.ok(&["qmp", "run", &vm, "query-name"])).unwrap();
    assert_eq!(v["name"], vm.as_str());
    // The original tool's shorthand: `maqet qmp VM COMMAND`.
    let v: Value = serde_json::from_str(&w.ok(&["qmp", &vm, "query-status"])).unwrap();
    assert_eq!(v["status"], "running");

    // Journal: the runner's structured lines.
    let recs = journal_json(&service);
    assert!(
        recs.iter().any(|r| r["MAQET_VM"] == vm.as_str()
            && r["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.contains("starting QEMU"))),
        "no structured 'starting QEMU' record in the journal: {recs:?}"
    );
    let logs = w.ok(&["logs", &vm, "-n", "200"]);
    assert!(logs.contains("is running"), "{logs}");

    // A guest without an OS ignores ACPI: stop falls back to quit.
    let out = w.ok(&["stop", &vm, "--timeout", "1"]);
    assert!(out.contains("quit"), "{out}");
    assert_eq!(w.state(&vm), "defined");
    assert!(!sock.exists(), "socket file left behind");
    assert!(
        !alive(qemu_pid) && !alive(runner_pid),
        "processes left behind"
    );
    assert!(qemu_pids(&vm).is_empty());
    let active = unit_prop(&service, "ActiveState");
    assert!(active == "inactive" || active.is_empty(), "{active}");

    // Stopping a stopped VM is fine and says so.
    let o = w.maqet(&["stop", &vm]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not running"));
}

#[test]
fn restart_gives_a_new_runner() {
    let w = World::new("restart");
    let vm = w.add_vm("r", "shutdown_timeout: 1\n");
    w.ok(&["start", &vm]);
    let first = w.status(&vm)["runner_pid"].as_u64().unwrap();
    w.ok(&["restart", &vm]);
    let st = w.status(&vm);
    assert_eq!(st["state"], "running");
    assert_ne!(st["runner_pid"].as_u64().unwrap(), first);
    assert!(!alive(first));
    let v: Value = serde_json::from_str(&w.ok(&["stop", &vm, "--force", "--json"])).unwrap();
    assert_eq!(v["outcome"], "killed", "{v}");
    assert_eq!(v["was_running"], true);
    assert_eq!(w.state(&vm), "defined");
    let v: Value = serde_json::from_str(&w.ok(&["stop", &vm, "--json"])).unwrap();
    assert_eq!(
        (v["was_running"].clone(), v["outcome"].clone()),
        (Value::Bool(false), Value::Null)
    );
}

#[test]
fn ls_lists_every_vm_with_systemd_state() {
    let w = World::new("ls");
    let a = w.add_vm("a", "");
    let b = w.add_vm("b", "");
    w.ok(&["start", &a]);
    let rows: Value = serde_json::from_str(&w.ok(&["ls", "--json"])).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let state_of = |n: &str| rows.iter().find(|r| r["name"] == n).unwrap()["state"].clone();
    assert_eq!(state_of(&a), "running");
    assert_eq!(state_of(&b), "defined");
    let running: Value =
        serde_json::from_str(&w.ok(&["ls", "--json", "--state", "running"])).unwrap();
    assert_eq!(running.as_array().unwrap().len(), 1);
    assert_eq!(running[0]["name"], a.as_str());
    let table = w.ok(&["ls"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&a) && l.contains("running")),
        "{table}"
    );
    assert!(w
        .fails(2, &["ls", "--state", "sleeping"])
        .contains("unknown state"));
    w.ok(&["stop", &a, "--force"]);
}

#[test]
fn rm_refuses_a_running_vm_unless_forced() {
    let w = World::new("rm");
    let vm = w.add_vm("x", "");
    w.ok(&["start", &vm]);
    let qemu = w.status(&vm)["qemu_pid"].as_u64().unwrap();
    let err = w.fails(5, &["rm", &vm]);
    assert!(
        err.contains("is running") && err.contains("--force"),
        "{err}"
    );
    w.ok(&["rm", "--force", &vm]);
    assert!(!alive(qemu));
    assert!(!socket_path(&vm).exists());
    w.fails(3, &["status", &vm]);
    w.fails(3, &["rm", &vm]);
    let ls: Value = serde_json::from_str(&w.ok(&["ls", "--json"])).unwrap();
    assert_eq!(ls, Value::Array(vec![]));
}

#[test]
fn qmp_errors_and_policy_map_to_exit_codes() {
    let w = World::new("qmp");
    let vm = w.add_vm("q", "");
    // Not running: a conflict, with a hint.
    let err = w.fails(5, &["qmp", "run", &vm, "query-status"]);
    assert!(
        err.contains("not running") && err.contains("maqet start"),
        "{err}"
    );
    w.ok(&["start", &vm]);
    let err = w.fails(6, &["qmp", "run", &vm, "device_del", r#"{"id":"nope"}"#]);
    assert!(
        err.contains("DeviceNotFound") || err.contains("GenericError"),
        "{err}"
    );
    let err = w.fails(6, &["qmp", "run", &vm, "no-such-command"]);
    assert!(err.contains("CommandNotFound"), "{err}");
    let err = w.fails(
        2,
        &[
            "qmp",
            "run",
            &vm,
            "human-monitor-command",
            r#"{"command-line":"info"}"#,
        ],
    );
    assert!(err.contains("does not forward"), "{err}");
    let err = w.fails(2, &["qmp", "run", &vm, "query-status", "[1,2]"]);
    assert!(err.contains("JSON object"), "{err}");
    // Arguments reach QEMU.
    w.ok(&["qmp", "run", &vm, "stop"]);
    w.wait_state(&vm, "paused", Duration::from_secs(5));
    let v: Value = serde_json::from_str(&w.ok(&["qmp", "run", &vm, "query-status"])).unwrap();
    assert_eq!(v["status"], "paused");
    w.ok(&["qmp", "run", &vm, "cont"]);
    w.wait_state(&vm, "running", Duration::from_secs(5));
    w.ok(&["stop", &vm, "--force"]);
}

#[test]
fn info_shows_the_exact_argv() {
    let w = World::new("info");
    let vm = w.add_vm("i", "");
    let v: Value = serde_json::from_str(&w.ok(&["info", &vm, "--json"])).unwrap();
    let argv: Vec<&str> = v["qemu_argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        argv,
        [
            QEMU,
            "-name",
            &vm,
            "-chardev",
            "socket,id=maqet-qmp,fd=4",
            "-mon",
            "chardev=maqet-qmp,mode=control",
            "-m",
            "64M",
            "-accel",
            "tcg",
            "-display",
            "none",
            "-nodefaults"
        ]
    );
    assert_eq!(v["name"], vm.as_str());
    assert!(v["sources"][0]
        .as_str()
        .unwrap()
        .ends_with(&format!("{vm}.yaml")));
}

/// Every VM keeps its runtime files in a directory of its own (issue 17.5):
/// VMs whose names extend each other's (`x`, `x.qga`, `x.qmp`) run side by
/// side, each reached at its own runner, and a stopped VM leaves nothing.
#[test]
fn names_that_extend_each_other_never_share_a_runtime_file() {
    let w = World::new("names");
    let base = w.name("x");
    let yaml = |name: &str, extra: &str| {
        let f = w.write(
            &format!("{name}.yaml"),
            &format!(
                "name: {name}\nbinary: {QEMU}\nmemory: 64M\n{extra}arguments:\n  - accel: tcg\n  - nodefaults\n"
            ),
        );
        w.ok(&["add", f.to_str().unwrap()]);
        name.to_string()
    };
    // `x` has a guest-agent socket and a QMP endpoint, `x.qga` and `x.qmp`
    // a control socket and a display: under the old names the agent socket
    // of `x` was the control socket of `x.qga`, and the QMP endpoint of `x`
    // the runtime directory of `x.qmp`.
    let agent = yaml(&format!("{base}.qga"), "display: vnc\n");
    let qmp = yaml(&format!("{base}.qmp"), "display: vnc\n");
    let base = yaml(&base, "guest_agent: true\ndisplay: none\n");
    for vm in [&agent, &base, &qmp] {
        w.ok(&["start", vm]);
    }
    for vm in [&agent, &base, &qmp] {
        let st = w.status(vm);
        assert_eq!(st["state"], "running", "{vm}: {st:#}");
        let v: Value = serde_json::from_str(&w.ok(&["qmp", "run", vm, "query-name"])).unwrap();
        assert_eq!(v["name"], vm.as_str());
        let rt = runtime_dir(vm);
        assert_eq!(mode(&rt), 0o700, "{vm}");
        for f in ["control.sock", "qmp.sock"] {
            assert_eq!(mode(&rt.join(f)), 0o600, "{vm}: {f}");
        }
        assert_eq!(st["qmp_socket"], rt.join("qmp.sock").to_str().unwrap());
    }
    // The agent's socket is as private as the others.
    assert_eq!(mode(&runtime_dir(&base).join("qga.sock")), 0o600);
    assert_eq!(mode(&runtime_dir(&agent).join("vnc.sock")), 0o600);
    // Nothing of theirs sits beside the directories any more.
    let root = runtime_dir(&base).parent().unwrap().to_path_buf();
    let beside: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| !e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&base))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");
    // doctor leaves a running VM's own sockets alone (it used to call the
    // agent socket "something listens … stop it").
    let o = w.maqet(&["doctor", "--json"]);
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let about: Vec<&Value> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "sockets" && f["message"].as_str().unwrap().contains(&base))
        .collect();
    assert!(about.is_empty(), "{about:#?}");
    for vm in [&agent, &base, &qmp] {
        w.ok(&["stop", vm, "--force"]);
        assert!(!runtime_dir(vm).exists(), "{vm}: runtime directory left");
    }
}

/// Nothing of a VM stays in the runtime root once it ends, however it
/// ends (issue 17.9, 16.7): its display and agent sockets, which QEMU
/// cannot remove when it is killed, and its port plan.
#[test]
fn a_vm_that_ended_leaves_no_runtime_file() {
    let w = World::new("stale");
    let port = free_port();
    let name = w.name("s");
    let f = w.write(
        "s.yaml",
        &format!(
            "name: {name}\nbinary: {QEMU}\nmemory: 64M\ndisplay: vnc\nguest_agent: true\nports: [\"{port}:80\"]\n\
             arguments:\n  - accel: tcg\n  - nodefaults\n"
        ),
    );
    w.ok(&["add", f.to_str().unwrap()]);
    let rt = runtime_dir(&name);
    let root = rt.parent().unwrap().to_path_buf();
    let mine = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&root)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n == &name || n.starts_with(&format!("{name}.")))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    for how in ["--force", "graceful", "qemu killed"] {
        w.ok(&["start", &name]);
        for f in ["vnc.sock", "qga.sock", "ports.json", "control.sock"] {
            assert!(rt.join(f).exists(), "{how}: {f} missing while running");
        }
        assert_eq!(mode(&rt.join("qga.sock")), 0o600);
        match how {
            "--force" => drop(w.ok(&["stop", "--force", &name])),
            "graceful" => drop(w.ok(&["stop", "--timeout", "1", &name])),
            _ => {
                let qemu = w.status(&name)["qemu_pid"].as_u64().unwrap();
                send_signal(qemu, "-KILL");
                w.wait_state(&name, "failed", Duration::from_secs(20));
            }
        }
        assert_eq!(mine(), Vec::<String>::new(), "{how}");
    }
    w.ok(&["rm", &name]);
    assert_eq!(mine(), Vec::<String>::new());
}

/// A VM started with `-S` waits for `cont`: `prelaunch`, not `running`
/// (issue 17.9), in `status` and `ls` alike.
#[test]
fn a_vm_started_with_dash_s_is_prelaunch_until_cont() {
    let w = World::new("prelaunch");
    let vm = w.add_vm("s", "args: [\"-S\"]\n");
    w.ok(&["start", &vm]);
    let st = w.status(&vm);
    assert_eq!(st["state"], "prelaunch", "{st:#}");
    let rows: Value = serde_json::from_str(&w.ok(&["ls", "--json"])).unwrap();
    assert_eq!(rows[0]["state"], "prelaunch", "{rows:#}");
    w.ok(&["qmp", "run", &vm, "cont"]);
    w.wait_state(&vm, "running", Duration::from_secs(10));
    w.ok(&["stop", &vm, "--force"]);
}

/// `systemctl --user kill` sends SIGTERM to the runner and QEMU alike: the
/// journal says QEMU ended on a signal, never that the guest powered off
/// after ACPI (issue 17.9).
#[test]
fn the_journal_says_a_signal_ended_qemu_not_acpi() {
    let w = World::new("sigjournal");
    let vm = w.add_vm("k", "shutdown_timeout: 1\n");
    w.ok(&["start", &vm]);
    let runner = w.status(&vm)["runner_pid"].as_u64().unwrap();
    let service = format!("maqet-vm@{vm}.service");
    let o = std::process::Command::new("systemctl")
        .args(["--user", "kill", &service])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    wait_until("the VM to end", Duration::from_secs(30), || {
        matches!(w.state(&vm).as_str(), "defined" | "failed")
    });
    let said = || -> Vec<String> {
        journal_json(&service)
            .iter()
            .filter(|r| r["_PID"] == runner.to_string().as_str())
            .filter_map(|r| r["MESSAGE"].as_str().map(str::to_string))
            .collect()
    };
    // journald may still be writing the runner's last lines.
    wait_until(
        "the runner's account of the end",
        Duration::from_secs(10),
        || said().iter().any(|m| m.contains("host-signal")),
    );
    let said = said();
    assert!(!said.iter().any(|m| m.contains("ACPI")), "{said:#?}");
}

/// `maqet info` renders QEMU's command line with the function the runner
/// runs it with (issue 17.9 / 15.2): the cloud-init seed drive, the agent
/// channel, the user network with its forwards and the NIC included, the
/// ssh port a start chooses marked; once the VM runs, it is exactly QEMU's
/// command line.
#[test]
fn info_shows_the_command_line_the_runner_runs() {
    let w = World::new("infofull");
    let port = free_port();
    let vm = w.add_vm(
        "f",
        &format!(
            "cloud_init:\n  ssh_authorized_keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForMaqetTestsOnly maqet-test\"]\n\
             guest_agent: true\nports: [\"{port}:80\"]\n"
        ),
    );
    let argv_of = |v: &Value| -> Vec<String> {
        v["qemu_argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    let info: Value = serde_json::from_str(&w.ok(&["info", &vm, "--json"])).unwrap();
    let argv = argv_of(&info);
    let joined = argv.join(" ");
    let rt = runtime_dir(&vm);
    for want in [
        "id=maqet-cidata".to_string(),
        format!(
            "-chardev socket,id=maqet-qga,path={}/qga.sock,server=on,wait=off",
            rt.display()
        ),
        format!("hostfwd=tcp:127.0.0.1:{port}-:80"),
        "hostfwd=tcp:127.0.0.1:<ssh-port>-:22".to_string(),
        "-device virtio-net-pci,netdev=maqet-net,mac=".to_string(),
    ] {
        assert!(joined.contains(&want), "{want} missing from {joined}");
    }
    assert!(
        info["chosen_at_start"]["<ssh-port>"].is_string(),
        "{info:#}"
    );
    let human = w.ok(&["info", &vm]);
    assert!(human.contains("(<ssh-port>: a free port"), "{human}");

    w.ok(&["start", &vm]);
    let info: Value = serde_json::from_str(&w.ok(&["info", &vm, "--json"])).unwrap();
    let qemu = w.status(&vm)["qemu_pid"].as_u64().unwrap();
    let cmdline: Vec<String> = std::fs::read(format!("/proc/{qemu}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert_eq!(argv_of(&info), cmdline);
    assert_eq!(info["chosen_at_start"], serde_json::json!({}));
    w.ok(&["stop", &vm, "--force"]);
}

/// `ssh`, `ports` and `guest` need a running VM like `qmp` or `console`:
/// on a stopped one they exit 5 with the way out (they exited 1).
#[test]
fn ssh_ports_and_guest_on_a_stopped_vm_exit_5_with_a_hint() {
    let w = World::new("stoppedaccess");
    let port = free_port();
    let vm = w.add_vm(
        "s",
        &format!("ssh: true\nguest_agent: true\nports: [\"{port}:80\"]\n"),
    );
    for args in [
        vec!["ports", vm.as_str()],
        vec!["ssh", vm.as_str(), "--", "true"],
        vec!["guest", vm.as_str(), "ping"],
    ] {
        let err = w.fails(5, &args);
        assert!(
            err.contains("is not running") && err.contains(&format!("`maqet start {vm}`")),
            "{args:?}: {err}"
        );
    }
}

/// A live snapshot asked for while the VM is stopping says so (it blamed a
/// missing control socket: systemd takes the socket away with the stop).
#[test]
fn a_live_snapshot_during_a_stop_says_the_vm_is_stopping() {
    let w = World::new("snapstop");
    // No guest OS: it ignores ACPI, so the stop waits its whole timeout.
    let vm = w.add_vm(
        "s",
        "shutdown_timeout: 20\nstorage:\n  - name: d\n    size: 16M\n",
    );
    w.ok(&["start", &vm]);
    let mut stop = w
        .cmd()
        .args(["stop", &vm])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    w.wait_state(&vm, "stopping", Duration::from_secs(20));
    let err = w.fails(5, &["snapshot", "create", &vm, "d", "s1", "--live"]);
    assert!(err.contains("is stopping"), "{err}");
    assert!(!err.contains("control socket"), "{err}");
    let _ = stop.kill();
    let _ = stop.wait();
    w.ok(&["stop", "--force", &vm]);
}

/// A privileged host port is refused at `add`, as such (start said
/// "already in use (Permission denied)").
#[test]
fn a_privileged_host_port_is_refused_at_add() {
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    let w = World::new("lowport");
    let name = w.name("p");
    let f = w.vm_yaml(&name, "ports: [\"80:80\"]\n");
    if start > 80 {
        let err = w.fails(4, &["add", f.to_str().unwrap()]);
        assert!(
            err.contains("ports[0]: host port 80 is below") && !err.contains("in use"),
            "{err}"
        );
    } else {
        // This host lets users bind port 80.
        w.ok(&["add", f.to_str().unwrap()]);
    }
}

/// An SSH public key a `cloud_init` seed would need is checked at `add`
/// (it was found missing only at `start`).
#[test]
fn a_missing_ssh_public_key_is_refused_at_add() {
    let w = World::new("nokeys");
    let name = w.name("k");
    let f = w.vm_yaml(
        &name,
        "cloud_init:\n  ssh_authorized_keys: [/nonexistent/maqet-test-key.pub]\n",
    );
    let err = w.fails(4, &["add", f.to_str().unwrap()]);
    assert!(
        err.contains("/nonexistent/maqet-test-key.pub") && err.contains("SSH public key"),
        "{err}"
    );
    // The default, ~/.ssh/*.pub, with none there.
    let home = w.dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let f = w.vm_yaml(&name, "cloud_init: true\n");
    let o = w
        .cmd()
        .env("HOME", &home)
        .args(["add", f.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("has no *.pub file"), "{err}");
    w.fails(3, &["status", &name]);
}
