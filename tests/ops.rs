//! Running VMs well: restart policies, resource-control properties, live
//! usage, autostart, `doctor` and `inspect` — against the real user
//! manager, checked through systemctl and the file system as well.

mod common;

use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn kill9(pid: u64) {
    send_signal(pid, "-9");
}

/// Holds for `window` (polling): for "stays stopped" after a restart delay.
fn stays(what: &str, window: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        assert!(f(), "no longer true: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn json_of(out: &[u8]) -> Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

/// A restart delay short enough for tests, long enough to observe.
const RESTART: &str = "restart_sec: 0.3\nshutdown_timeout: 1\n";

#[test]
fn restart_on_failure_brings_a_killed_qemu_back_and_counts_it() {
    let w = World::new("rsfail");
    let vm = w.add_vm("r", &format!("restart: on-failure\n{RESTART}"));
    let service = format!("maqet-vm@{vm}.service");
    w.ok(&["start", &vm]);
    assert_eq!(unit_prop(&service, "Restart"), "on-failure");
    assert_eq!(unit_prop(&service, "RestartUSec"), "300ms");
    let old = w.status(&vm)["qemu_pid"].as_u64().unwrap();

    kill9(old);
    let end = Instant::now() + Duration::from_secs(20);
    let st = loop {
        let st = w.status(&vm);
        if st["state"] == "running" && st["restarts"] == 1 {
            break st;
        }
        assert!(Instant::now() < end, "never came back: {st:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let new = st["qemu_pid"].as_u64().expect("new qemu pid");
    assert_ne!(new, old);
    assert_eq!(qemu_pids(&vm), vec![new]);
    assert_eq!(unit_prop(&service, "NRestarts"), "1");
    // The restarted runner got its socket again: QMP works.
    let v: Value = serde_json::from_str(&w.ok(&["qmp", "run", &vm, "query-status"])).unwrap();
    assert_eq!(v["status"], "running");
    let human = w.ok(&["status", &vm]);
    assert!(human.contains("restarts: 1"), "{human}");
    assert!(w.ok(&["ls"]).contains(&vm));

    // A requested stop is not a failure: it stays down.
    w.ok(&["stop", &vm]);
    assert_eq!(w.state(&vm), "defined");
    stays("stopped VM stays down", Duration::from_secs(1), || {
        qemu_pids(&vm).is_empty()
    });
    assert_eq!(w.state(&vm), "defined");
}

#[test]
fn restart_no_leaves_a_killed_vm_failed() {
    let w = World::new("rsno");
    let vm = w.add_vm("n", "");
    let service = format!("maqet-vm@{vm}.service");
    w.ok(&["start", &vm]);
    assert_eq!(unit_prop(&service, "Restart"), "no");
    kill9(w.status(&vm)["qemu_pid"].as_u64().unwrap());
    let st = w.wait_state(&vm, "failed", Duration::from_secs(10));
    assert_eq!(st["restarts"], 0, "{st:#}");
    assert_eq!(st["exit_status"], 137, "{st:#}");
    let failure = st["failure"].as_str().unwrap();
    assert!(
        failure.contains("QEMU was killed by signal SIGKILL"),
        "{failure}"
    );
    // `failed`, not `auto-restart`: nothing is pending.
    assert_eq!(unit_prop(&service, "SubState"), "failed");
    assert!(qemu_pids(&vm).is_empty());
}

#[test]
fn stop_of_a_restart_always_vm_keeps_it_stopped() {
    let w = World::new("rsalw");
    let vm = w.add_vm("a", &format!("restart: always\n{RESTART}"));
    let service = format!("maqet-vm@{vm}.service");
    w.ok(&["start", &vm]);
    assert_eq!(unit_prop(&service, "Restart"), "always");
    assert_eq!(unit_prop(&service, "RestartPreventExitStatus"), "100 102");
    assert_eq!(unit_prop(&service, "SuccessExitStatus"), "100");

    // maqet stop (through the runner): ends with the "stopped on request"
    // status, which Restart=always must not undo.
    let out = w.ok(&["stop", &vm]);
    assert!(out.contains("quit") || out.contains("powered off"), "{out}");
    assert_eq!(w.state(&vm), "defined");
    stays("stopped VM stays down", Duration::from_secs(1), || {
        qemu_pids(&vm).is_empty()
    });
    assert_eq!(w.state(&vm), "defined");

    // --force as well.
    w.ok(&["start", &vm]);
    w.ok(&["stop", "--force", &vm]);
    stays(
        "force-stopped VM stays down",
        Duration::from_secs(1),
        || qemu_pids(&vm).is_empty(),
    );
    assert_eq!(w.state(&vm), "defined");

    // And systemctl --user stop (SIGTERM path).
    w.ok(&["start", &vm]);
    let ok = Command::new("systemctl")
        .args(["--user", "stop", &service])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    stays(
        "systemctl-stopped VM stays down",
        Duration::from_secs(1),
        || qemu_pids(&vm).is_empty(),
    );
    assert_eq!(w.state(&vm), "defined");

    // QEMU ending by itself (as after a guest poweroff) is restarted:
    // that is what `always` means (docs/systemd.md).
    w.ok(&["start", &vm]);
    let _ = w.maqet(&["qmp", "run", &vm, "quit"]);
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let st = w.status(&vm);
        if st["state"] == "running" && st["restarts"] == 1 {
            break;
        }
        assert!(Instant::now() < end, "not restarted: {st:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    w.ok(&["stop", &vm]);

    // A stop while a restart is pending cancels it (a long delay, so the
    // pending state can be seen).
    let slow = w.add_vm(
        "s",
        "restart: always\nrestart_sec: 60\nshutdown_timeout: 1\n",
    );
    w.ok(&["start", &slow]);
    let _ = w.maqet(&["qmp", "run", &slow, "quit"]);
    let st = w.wait_state(&slow, "restarting", Duration::from_secs(10));
    assert!(st["runner_pid"].is_null(), "{st:#}");
    let human = w.ok(&["status", &slow]);
    assert!(human.contains("restart policy starts it again"), "{human}");
    w.ok(&["stop", &slow]);
    assert_eq!(w.state(&slow), "defined");
    assert_eq!(
        unit_prop(&format!("maqet-vm@{slow}.service"), "ActiveState"),
        "inactive"
    );
}

#[test]
fn resources_become_unit_properties_and_usage_is_shown() {
    let w = World::new("res");
    let vm = w.add_vm(
        "r",
        "resources:\n  memory_max: 512M\n  cpu_quota: 150%\n  cpu_weight: 200\n  io_weight: 300\n  tasks_max: 64\n",
    );
    let service = format!("maqet-vm@{vm}.service");
    w.ok(&["start", &vm]);
    for (prop, want) in [
        ("MemoryMax", "536870912"),
        ("CPUQuotaPerSecUSec", "1.500000s"),
        ("CPUWeight", "200"),
        ("IOWeight", "300"),
        ("TasksMax", "64"),
        ("MemoryAccounting", "yes"),
        ("CPUAccounting", "yes"),
        ("TasksAccounting", "yes"),
    ] {
        assert_eq!(unit_prop(&service, prop), want, "{prop}");
    }
    // Live usage: systemd's counters where it has them, /proc otherwise.
    let st = w.status(&vm);
    let source = st["usage_source"].as_str().expect("a usage source");
    assert!(source == "systemd" || source == "proc", "{st:#}");
    if source == "systemd" {
        assert_ne!(unit_prop(&service, "MemoryCurrent"), "[not set]");
    }
    assert!(st["memory_bytes"].as_u64().unwrap() > 1 << 20, "{st:#}");
    assert!(st["tasks"].as_u64().unwrap() >= 2, "{st:#}");
    assert!(st["cpu_nsec"].as_u64().is_some(), "{st:#}");
    assert!(st["uptime_sec"].as_u64().is_some(), "{st:#}");
    // ls fills CPU and MEM.
    let ls = w.ok(&["ls"]);
    let row = ls.lines().find(|l| l.starts_with(&vm)).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1], "running", "{ls}");
    assert!(cols[3].ends_with('s') && cols[4].ends_with('M'), "{ls}");
    // doctor says whether these limits are enforced here.
    let r = json_of(&w.maqet(&["doctor", "--json"]).stdout);
    let cg = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "cgroups")
        .unwrap_or_else(|| panic!("no cgroups finding: {r:#}"))
        .clone();
    match cg["severity"].as_str().unwrap() {
        "ok" => assert_eq!(source, "systemd", "{cg}"),
        "warning" => assert!(
            cg["message"].as_str().unwrap().contains("not enforced"),
            "{cg}"
        ),
        other => panic!("cgroups finding {other}: {cg}"),
    }
    // A VM without `resources` sets no limits.
    let plain = w.add_vm("p", "");
    w.ok(&["start", &plain]);
    assert_eq!(
        unit_prop(&format!("maqet-vm@{plain}.service"), "MemoryMax"),
        "infinity"
    );
}

#[test]
fn enable_disable_and_autostart_start_exactly_the_marked_vms() {
    let w = World::new("auto");
    let a = w.add_vm("a", "autostart: true\n");
    let b = w.add_vm("b", "");
    let c = w.add_vm("c", "");
    let info = |n: &str| -> Value { json_of(w.ok(&["info", n, "--json"]).as_bytes()) };
    assert_eq!(info(&a)["autostart"], true);
    w.ok(&["enable", &c]);
    w.ok(&["disable", &a]);
    assert_eq!(info(&a)["autostart"], false);
    assert_eq!(info(&c)["autostart"], true);

    let out = json_of(w.ok(&["autostart", "--json"]).as_bytes());
    assert_eq!(
        out,
        serde_json::json!([{"name": c, "result": "started"}]),
        "{out:#}"
    );
    assert_eq!(w.state(&c), "running");
    assert_eq!(w.state(&a), "defined");
    assert_eq!(w.state(&b), "defined");

    w.ok(&["enable", &a]);
    let out = json_of(w.ok(&["autostart", "--json"]).as_bytes());
    assert_eq!(
        out,
        serde_json::json!([
            {"name": a, "result": "started"},
            {"name": c, "result": "already_running"}
        ]),
        "{out:#}"
    );
    assert_eq!(w.state(&a), "running");
    assert_eq!(w.state(&b), "defined");

    // A VM that cannot start: reported, the others still handled, exit 1.
    let bad = w.add_vm("x", "autostart: true\nargs:\n  - -no-such-option\n");
    let o = w.maqet(&["autostart", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let out = json_of(&o.stdout);
    let of = |n: &str| {
        out.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .unwrap_or_else(|| panic!("{n} missing: {out:#}"))
            .clone()
    };
    assert_eq!(of(&bad)["result"], "failed");
    assert!(
        of(&bad)["error"]
            .as_str()
            .unwrap()
            .contains("no-such-option"),
        "{out:#}"
    );
    assert_eq!(of(&a)["result"], "already_running");
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 of 3"));
    // Unknown VM: exit 3.
    w.fails(3, &["enable", "no-such-vm"]);
}

#[test]
fn doctor_reports_a_healthy_session() {
    let w = World::new("doc");
    let vm = w.add_vm("d", "");
    w.ok(&["start", &vm]);
    let o = w.maqet(&["doctor", "--json"]);
    let r = json_of(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{r:#}");
    assert_eq!(r["ok"], true);
    assert_eq!(r["errors"], 0);
    let findings = r["findings"].as_array().unwrap();
    let sev = |check: &str| -> Vec<String> {
        findings
            .iter()
            .filter(|f| f["check"] == check)
            .map(|f| f["severity"].as_str().unwrap().to_string())
            .collect()
    };
    for check in [
        "session", "runner", "database", "config", "kvm", "qemu", "journal",
    ] {
        assert!(
            sev(check).iter().all(|s| s == "ok") && !sev(check).is_empty(),
            "{check}: {r:#}"
        );
    }
    assert!(sev("linger").len() == 1, "{r:#}");
    let qemu = findings
        .iter()
        .find(|f| f["check"] == "qemu" && f["message"].as_str().unwrap().contains(&vm))
        .unwrap_or_else(|| panic!("QEMU finding names the VM: {r:#}"));
    assert!(
        qemu["message"].as_str().unwrap().contains("QEMU 7."),
        "{qemu}"
    );
    // Nothing about this data directory's own VM.
    assert!(
        !findings
            .iter()
            .any(|f| f["severity"] != "ok" && f["message"].as_str().unwrap().contains(&vm)),
        "{r:#}"
    );
    let human = w.ok(&["doctor"]);
    assert!(human.contains("0 error(s)"), "{human}");
}

#[test]
fn doctor_finds_and_fixes_a_failed_unit_and_a_stale_socket() {
    let w = World::new("docfix");
    let vm = w.add_vm("f", "");
    w.ok(&["start", &vm]);
    kill9(w.status(&vm)["runner_pid"].as_u64().unwrap());
    w.wait_state(&vm, "failed", Duration::from_secs(10));

    // A socket file no unit owns (as a crashed manager would leave). It
    // lives in a runtime directory of this test's own: the real one is
    // shared with tests running in parallel, whose `doctor --fix` would
    // remove it between the two runs below.
    let stale_name = w.name("stale");
    let runtime = w.dir.path().join("run");
    let stale = runtime.join("maqet/vm").join(format!("{stale_name}.sock"));
    let doctor = |args: &[&str]| {
        w.cmd()
            .args(args)
            .env("XDG_RUNTIME_DIR", &runtime)
            .output()
            .unwrap()
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(stale.parent().unwrap())
        .unwrap();
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    // A VM's runtime directory that outlived it (a crashed manager, a
    // start refused before its unit existed): its display socket and port
    // plan, last changed well before now.
    let gone = w.name("gone");
    let gone_dir = runtime.join("maqet/vm").join(&gone);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&gone_dir)
        .unwrap();
    drop(UnixListener::bind(gone_dir.join("vnc.sock")).unwrap());
    std::fs::write(gone_dir.join("ports.json"), "{}").unwrap();
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(600);
    for p in [gone_dir.join("ports.json"), gone_dir.clone()] {
        std::fs::File::open(&p)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
    }

    let find = |r: &Value, check: &str, needle: &str| -> Option<Value> {
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"] == check && f["message"].as_str().unwrap().contains(needle))
            .cloned()
    };
    let o = doctor(&["doctor", "--json"]);
    let r = json_of(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "warnings only: {r:#}");
    let unit = find(&r, "units", &vm).unwrap_or_else(|| panic!("failed unit: {r:#}"));
    assert_eq!(unit["severity"], "warning");
    assert_eq!(unit["fixable"], true);
    assert!(
        unit["message"].as_str().unwrap().contains("failed"),
        "{unit}"
    );
    let sock = find(&r, "sockets", &stale_name).unwrap_or_else(|| panic!("stale socket: {r:#}"));
    assert_eq!(sock["fixable"], true);
    assert!(sock.get("fixed").is_none());
    let dir = find(&r, "sockets", &gone).unwrap_or_else(|| panic!("stale directory: {r:#}"));
    assert_eq!(dir["fixable"], true, "{dir}");
    let said = dir["message"].as_str().unwrap();
    assert!(
        said.contains("vnc.sock") && said.contains("ports.json"),
        "{said}"
    );
    let o = doctor(&["doctor"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let human = String::from_utf8(o.stdout).unwrap();
    assert!(human.contains("maqet doctor --fix"), "{human}");

    let o = doctor(&["doctor", "--fix", "--json"]);
    let r = json_of(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{r:#}");
    let unit = find(&r, "units", &vm).unwrap_or_else(|| panic!("failed unit after --fix: {r:#}"));
    assert!(unit["fixed"].as_str().unwrap().contains("reset"), "{unit}");
    let sock = find(&r, "sockets", &stale_name).unwrap();
    assert!(
        sock["fixed"].as_str().unwrap().contains("removed"),
        "{sock}"
    );
    assert!(!stale.exists());
    let dir = find(&r, "sockets", &gone).unwrap();
    assert!(dir["fixed"].as_str().unwrap().contains("removed"), "{dir}");
    assert!(!gone_dir.exists());
    assert_eq!(w.state(&vm), "defined");

    let r = json_of(&doctor(&["doctor", "--json"]).stdout);
    assert!(find(&r, "units", &vm).is_none(), "{r:#}");
    assert!(find(&r, "sockets", &stale_name).is_none(), "{r:#}");
    assert!(find(&r, "sockets", &gone).is_none(), "{r:#}");
}

#[test]
fn doctor_reports_an_unreachable_session_as_an_error() {
    let w = World::new("docnobus");
    let o = w
        .cmd()
        .args(["doctor", "--json"])
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let r = json_of(&o.stdout);
    assert_eq!(r["ok"], false);
    let session = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "session")
        .unwrap()
        .clone();
    assert_eq!(session["severity"], "error", "{r:#}");
    assert!(session["hint"]
        .as_str()
        .unwrap()
        .contains("systemctl --user"));
}

#[test]
fn inspect_json_has_the_keys() {
    let w = World::new("insp");
    let img = w.dir.path().join("data.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let vm = w.add_vm(
        "i",
        &format!(
            "restart: on-failure\nstorage:\n  - name: data\n    type: raw\n    file: {}\n    interface: virtio\n  - name: scratch\n    type: qcow2\n    size: 1G\n",
            img.display()
        ),
    );
    // Defined only: no unit, the socket and a disk not there yet.
    let r = json_of(w.ok(&["inspect", &vm, "--json"]).as_bytes());
    assert_eq!(r["state"], "defined");
    assert_eq!(r["properties"], serde_json::json!({}));
    assert_eq!(r["processes"], serde_json::json!([]));
    assert_eq!(r["sockets"][0]["file"]["exists"], false);
    let disks = r["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 2, "{r:#}");
    assert_eq!(disks[0]["path"], img.to_str().unwrap());
    assert_eq!(disks[0]["exists"], true);
    assert_eq!(disks[0]["size_bytes"], 1 << 20);
    let scratch = disks[1]["path"].as_str().unwrap();
    assert!(
        scratch.ends_with(&format!("disks/{vm}/scratch.qcow2"))
            && scratch.starts_with(w.data_dir().to_str().unwrap()),
        "{r:#}"
    );
    assert_eq!(disks[1]["exists"], false);

    // Running (without the missing disk).
    let run = w.add_vm("j", "restart: on-failure\n");
    w.ok(&["start", &run]);
    let r = json_of(w.ok(&["inspect", &run, "--json"]).as_bytes());
    for key in [
        "name",
        "state",
        "unit",
        "runner_pid",
        "qemu_pid",
        "since",
        "uptime_sec",
        "restarts",
        "memory_bytes",
        "cpu_nsec",
        "tasks",
        "usage_source",
        "autostart",
        "restart_policy",
        "properties",
        "cgroup",
        "processes",
        "sockets",
        "disks",
    ] {
        assert!(r.get(key).is_some(), "{key} missing: {r:#}");
    }
    assert_eq!(r["state"], "running");
    assert_eq!(r["restart_policy"], "on-failure");
    let props = &r["properties"];
    assert_eq!(props["Id"], format!("maqet-vm@{run}.service"));
    assert_eq!(props["Restart"], "on-failure");
    assert_eq!(props["MemoryMax"], Value::Null, "infinity is null");
    assert_eq!(props["MainPID"], r["runner_pid"]);
    let cgroup = r["cgroup"].as_str().unwrap();
    assert!(
        cgroup.ends_with(&format!("maqet.slice/maqet-vm@{run}.service")),
        "{cgroup}"
    );
    let procs = r["processes"].as_array().unwrap();
    assert!(
        procs
            .iter()
            .any(|p| p["pid"] == r["qemu_pid"]
                && p["command"].as_str().unwrap().contains("qemu-system")),
        "{r:#}"
    );
    assert!(procs.iter().any(|p| p["pid"] == r["runner_pid"]), "{r:#}");
    let sock = &r["sockets"][0];
    assert_eq!(sock["unit"], format!("maqet-vm@{run}.socket"));
    assert_eq!(sock["active_state"], "active");
    assert_eq!(sock["socket_mode"], "0600");
    assert_eq!(sock["listen"][0]["type"], "Stream");
    assert_eq!(
        sock["listen"][0]["address"],
        socket_path(&run).to_str().unwrap()
    );
    assert_eq!(sock["file"]["exists"], true);
    assert_eq!(sock["file"]["is_socket"], true);
    assert_eq!(sock["file"]["mode"], "0600");
    let human = w.ok(&["inspect", &run]);
    assert!(
        human.contains("cgroup:")
            && human.contains("socket:")
            && human.contains("restart:   on-failure"),
        "{human}"
    );
}
