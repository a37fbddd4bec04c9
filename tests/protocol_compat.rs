//! A new CLI against a runner of the previous protocol (a VM started before
//! a package upgrade keeps its old runner). The old runner is a stand-in
//! that answers exactly as protocol-1 runners did, bound where the CLI
//! looks for the VM's socket: `$XDG_RUNTIME_DIR/maqet/vm/NAME.sock`, with
//! XDG_RUNTIME_DIR pointed at a directory of this test. The commands used
//! (`qmp run`, `qmp socket`) consult only the socket, not systemd, so no
//! unit is needed and the real `maqet` binary runs unchanged.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};

use common::World;
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
    let vm = w.add_vm("old", "");
    let runtime = w.dir.path().join("runtime");
    let sock_dir = runtime.join("maqet/vm");
    std::fs::create_dir_all(&sock_dir).unwrap();
    std::fs::set_permissions(&sock_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let listener = UnixListener::bind(sock_dir.join(format!("{vm}.sock"))).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    serve_protocol_1(listener, vm.clone(), seen.clone());
    let run = |args: &[&str]| {
        w.cmd()
            .env("XDG_RUNTIME_DIR", &runtime)
            .args(args)
            .output()
            .unwrap()
    };

    // What protocol 1 had works, in protocol 1's wire format, without a
    // version round trip.
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
        [r#"{"id":1,"method":"qmp","params":{"execute":"query-status"}}"#]
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
}
