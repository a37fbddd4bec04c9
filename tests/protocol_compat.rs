//! A new CLI against a runner of the previous protocol (a VM started before
//! a package upgrade keeps its old runner). The old runner is a stand-in
//! that answers exactly as protocol-1 runners did, bound where the CLI
//! looks for the socket of a VM started before the per-VM runtime
//! directory (`$XDG_RUNTIME_DIR/maqet/vm/NAME.sock`, beside it). The
//! CLI first checks that the VM's unit is live and this data directory's,
//! so a real transient unit of the VM's name and description runs beside
//! it (`systemd-run --user`, a `sleep`); the real `maqet` binary runs
//! unchanged.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::{legacy_socket_path as socket_path, World};

/// A live unit that says it is VM `vm` of `data_dir`, as an old runner's
/// unit does; stopped (and its socket file removed) when dropped.
struct OldUnit {
    unit: String,
    socket: PathBuf,
}

impl OldUnit {
    fn start(vm: &str, data_dir: &std::path::Path) -> OldUnit {
        let unit = format!("maqet-vm@{vm}.service");
        let o = Command::new("systemd-run")
            .args(["--user", "--quiet", "--unit", &unit, "--description"])
            .arg(format!("maqet VM {vm} (data {})", data_dir.display()))
            .args(["sleep", "600"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        OldUnit {
            unit,
            socket: socket_path(vm),
        }
    }
}

impl Drop for OldUnit {
    fn drop(&mut self) {
        let _ = Command::new("systemctl")
            .args(["--user", "stop", &self.unit])
            .output();
        let _ = std::fs::remove_file(&self.socket);
    }
}
use serde_json::{json, Value};

/// Serves protocol 1 on `listener`: a status reply without `protocol`,
/// `query-status` through `qmp`; records every request line.
fn serve_protocol_1(listener: UnixListener, vm: String, seen: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut w = stream.try_clone().unwrap();
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                seen.lock().unwrap().push(line.clone());
                let req: Value = serde_json::from_str(&line).unwrap();
                let result = match req["method"].as_str() {
                    Some("status") => json!({"vm": vm, "runner_pid": 1, "qemu_pid": 2,
                        "qemu_version": "7.2.0", "run_state": "running", "ready_at": 1}),
                    Some("qmp") if req["params"]["execute"] == "query-status" => {
                        json!({"status": "running", "running": true, "singlestep": false})
                    }
                    _ => {
                        let e = json!({"id": req["id"], "error": {"kind": "bad_request", "message": "no"}});
                        writeln!(w, "{e}").unwrap();
                        continue;
                    }
                };
                writeln!(w, "{}", json!({"id": req["id"], "result": result})).unwrap();
            }
        }
    });
}

#[test]
fn a_new_cli_uses_a_protocol_1_runner_where_it_can_and_says_why_not_where_it_cannot() {
    let w = World::new("proto1");
    let vm = w.add_vm("old", "ports: [\"47001:80\"]\n");
    let sock = socket_path(&vm);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(sock.parent().unwrap())
        .unwrap();
    let listener = UnixListener::bind(&sock).unwrap();
    let _unit = OldUnit::start(&vm, &w.data_dir().canonicalize().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    serve_protocol_1(listener, vm.clone(), seen.clone());
    let run = |args: &[&str]| w.cmd().args(args).output().unwrap();

    // What protocol 1 had works, in protocol 1's wire format, without a
    // version round trip: the status request is the ownership check (an old
    // runner's reply names no data directory, so the unit's description
    // decides), then the command itself.
    let o = run(&["qmp", "run", &vm, "query-status"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["status"],
        "running"
    );
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [
            r#"{"id":1,"method":"status"}"#,
            r#"{"id":2,"method":"qmp","params":{"execute":"query-status"}}"#
        ]
    );

    // What it lacks is refused, saying which runner, what needs what, and
    // the way out.
    let o = run(&["qmp", "socket", &vm]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    let want = format!(
        "the runner of VM '{vm}' speaks protocol 1 (started by an older maqet); `maqet qmp socket` needs 2: restart the VM with `maqet restart {vm}` to use it"
    );
    assert!(err.contains(&want), "{err}");
    assert!(o.stdout.is_empty());
    // Saving its running state needs protocol 5: nothing was asked of it
    // but its version.
    let before = seen.lock().unwrap().len();
    let o = run(&["suspend", &vm]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    let want = format!(
        "the runner of VM '{vm}' speaks protocol 1 (started by an older maqet); `maqet suspend` needs 5: restart the VM with `maqet restart {vm}` to use it"
    );
    assert!(err.contains(&want), "{err}");
    assert!(seen.lock().unwrap()[before..]
        .iter()
        .all(|l| l.contains(r#""method":"status""#)));

    // Forwards changed while it runs need protocol 6: refused before any
    // request but the status, with the way out (--save alone works).
    let sent = seen.lock().unwrap().len();
    let o = run(&["ports", "add", &vm, "47002:81"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    let want = format!(
        "the runner of VM '{vm}' speaks protocol 1 (started by an older maqet); changing forwards while it runs needs protocol 6: restart the VM with `maqet restart {vm}`"
    );
    assert!(err.contains(&want), "{err}");
    assert!(
        seen.lock().unwrap()[sent..]
            .iter()
            .all(|l| l.contains(r#""method":"status""#)),
        "{:?}",
        seen.lock().unwrap()
    );

    // The port plan of such a VM lies beside the directories too, and the
    // new CLI finds it there (its control socket says which layout).
    let plan = sock.with_file_name(format!("{vm}.ports.json"));
    std::fs::write(
        &plan,
        r#"{"forwards":[{"protocol":"tcp","host_port":47001,"guest_port":80}],"ssh_port":null}"#,
    )
    .unwrap();
    let o = run(&["ports", &vm, "--json"]);
    let _ = std::fs::remove_file(&plan);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["forwards"][0]["host_port"], 47001, "{v}");
}
