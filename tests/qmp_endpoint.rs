//! The per-VM QMP socket for standard QMP clients, driven by QEMU's own
//! Python client (`qemu.qmp`, installed by tests/session/install-deps.sh)
//! and its `qmp-shell`, against a real VM under the real user manager.

mod common;

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use common::World;

/// Where install-deps.sh puts `qemu.qmp`.
const PYLIB: &str = "/opt/maqet-pylib";

fn python(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut c = Command::new("/usr/bin/python3");
    c.args(args)
        .env("PYTHONPATH", PYLIB)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("python3");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
fn qemu_qmp_client_negotiates_executes_gets_events_and_meets_the_policy() {
    let w = World::new("qmpsock");
    let vm = w.add_vm("q", "");
    w.ok(&["start", &vm]);

    let path = w.ok(&["qmp", "socket", &vm]).trim().to_string();
    assert!(path.ends_with(&format!("maqet/vm/{vm}/qmp.sock")), "{path}");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(w.status(&vm)["qmp_socket"], path.as_str());

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/qmp/standard_client.py");
    let (ok, out) = python(&[script.to_str().unwrap(), &path], None);
    assert!(ok, "{out}");
    for line in ["query-status running", "event STOP", "refused GenericError"] {
        assert!(out.contains(line), "{line} missing from:\n{out}");
    }
    assert!(out.contains("qemu-error DeviceNotFound"), "{out}");

    // qmp-shell, non-interactively: commands on stdin, replies on stdout.
    let (ok, out) = python(
        &["-m", "qemu.qmp.qmp_shell", &path],
        Some("query-status\nhuman-monitor-command command-line=info\n"),
    );
    assert!(ok, "{out}");
    assert!(out.contains("\"status\": \"running\""), "{out}");
    assert!(out.contains("GenericError"), "{out}");

    // The VM kept running throughout, and the socket goes with the VM.
    assert_eq!(w.state(&vm), "running");
    w.ok(&["stop", &vm, "--force"]);
    assert!(!Path::new(&path).exists(), "{path} left behind");
    assert!(w.status(&vm)["qmp_socket"].is_null());
}
