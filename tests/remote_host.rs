//! The remote host of `maqet -H`: a second user with its own user manager
//! behind a real sshd on a loopback port (tests/session/sshd.sh). These
//! tests check that stand-in itself — plain ssh with host key checking on,
//! the remote user's manager answering, the staged maqet running there and
//! starting VMs under that manager, and wrong host keys and unknown keys
//! refused — so a failing `-H` test points at maqet, not at the setup.

mod common;

use std::time::Duration;

use common::remote::{shell_words, Remote, RemoteWorld};
use common::*;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn ssh_logs_in_as_the_remote_user_and_reaches_its_manager() {
    let r = Remote::from_env();
    let out = r.ok("id -un; id -u; echo \"$XDG_RUNTIME_DIR\"; echo \"$DBUS_SESSION_BUS_ADDRESS\"");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0], r.user);
    let uid = lines[1];
    let me = stdout(&std::process::Command::new("id").arg("-u").output().unwrap());
    assert_ne!(uid, me, "the remote user must not be the test user");
    assert_eq!(lines[2], format!("/run/user/{uid}"));
    assert_eq!(lines[3], format!("unix:path=/run/user/{uid}/bus"));

    // Its own manager, over its own bus: what a maqet started by sshd talks to.
    let o = r.run("systemctl --user is-system-running");
    let state = stdout(&o);
    assert!(
        state == "running" || state == "degraded",
        "remote systemctl --user is-system-running: {state:?} {}",
        stderr(&o)
    );
    let o = r.run("busctl --user status");
    assert!(o.status.success(), "remote busctl --user: {}", stderr(&o));
    assert!(
        stdout(&o).contains("BusScope=user"),
        "remote user bus: {}",
        stdout(&o)
    );
    // The remote user may use /dev/kvm and read its own journal, as the test user may.
    let groups = r.ok("id -nG");
    for g in ["kvm", "systemd-journal"] {
        assert!(
            groups.split_whitespace().any(|x| x == g),
            "groups: {groups}"
        );
    }
}

#[test]
fn the_test_user_reaches_itself_by_the_name_localhost() {
    let r = Remote::test_user();
    assert_eq!(r.host, "localhost");
    let out = r.ok("id -un; echo \"$XDG_RUNTIME_DIR\"");
    let me = stdout(
        &std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap(),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], me);
    assert_eq!(
        Some(lines[1]),
        std::env::var("XDG_RUNTIME_DIR").ok().as_deref(),
        "the same user's runtime directory on both sides"
    );
    let state = stdout(&r.run("systemctl --user is-system-running"));
    assert!(state == "running" || state == "degraded", "{state:?}");
}

#[test]
fn destination_is_what_maqet_h_takes() {
    let r = Remote::from_env();
    assert_eq!(r.destination(), format!("{}@{}:{}", r.user, r.host, r.port));
    // Quoting survives the remote shell word for word.
    let words = ["a b", "it's", "$HOME", "*", ""];
    let out = r.ok(&format!("printf '<%s>\\n' {}", shell_words(&words)));
    assert_eq!(out, "<a b>\n<it's>\n<$HOME>\n<*>\n<>\n");
}

#[test]
fn the_staged_maqet_runs_on_the_remote_side() {
    let w = RemoteWorld::new("rmaqet");
    let version = w.ok(&["--version"]);
    assert_eq!(
        version.trim(),
        format!("maqet {}", env!("CARGO_PKG_VERSION")),
        "remote maqet --version"
    );
    let ls: serde_json::Value = serde_json::from_str(&w.ok(&["ls", "--json"])).expect("ls JSON");
    assert_eq!(ls, serde_json::json!([]), "a fresh remote data directory");
    // The world's directory belongs to the remote user, not to the test user.
    let owner = w.remote.ok(&format!(
        "stat -c %U {}",
        common::remote::shell_quote(&w.dir)
    ));
    assert_eq!(owner.trim(), w.remote.user);
}

#[test]
fn the_remote_user_runs_vms_under_its_own_manager() {
    let w = RemoteWorld::new("rvm");
    let vm = w.add_vm("a", "");
    let service = format!("maqet-vm@{vm}.service");
    w.ok(&["start", &vm]);
    let st = w.status(&vm);
    assert_eq!(st["state"], "running", "{st:#}");
    let qemu_pid = st["qemu_pid"].as_u64().expect("qemu pid");
    let runner_pid = st["runner_pid"].as_u64().expect("runner pid");

    // The remote user's manager runs it; the test user's own manager knows nothing of it.
    assert_eq!(w.remote.unit_prop(&service, "ActiveState"), "active");
    assert_eq!(
        w.remote.unit_prop(&service, "MainPID"),
        runner_pid.to_string()
    );
    assert_eq!(unit_prop(&service, "LoadState"), "not-found");

    // QEMU is a process of the remote user's (read here, outside maqet and ssh).
    let remote_uid = w.remote.ok("id -u").trim().to_string();
    let status = std::fs::read_to_string(format!("/proc/{qemu_pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some(remote_uid.as_str()),
        "{uid_line}"
    );
    // The runner is the staged one, found beside the remote maqet.
    let exe = w
        .remote
        .ok(&format!("readlink /proc/{runner_pid}/exe"))
        .trim()
        .to_string();
    assert_eq!(exe, format!("{}/maqet-runner", bin_dir().display()));

    // No guest to power down: kill QEMU rather than wait out the ACPI timeout.
    w.ok(&["stop", &vm, "--force"]);
    wait_until(
        "the remote VM unit to stop",
        Duration::from_secs(30),
        || w.remote.unit_prop(&service, "ActiveState") != "active",
    );
    assert!(!alive(qemu_pid), "QEMU {qemu_pid} outlived its stop");
}

/// A known_hosts file naming `names` with a host key that is not the sshd's.
fn foreign_known_hosts(dir: &std::path::Path, names: &[String]) -> std::path::PathBuf {
    let key = dir.join("other_host_key");
    let o = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "ssh-keygen: {}", stderr(&o));
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let public: Vec<&str> = public.split_whitespace().take(2).collect();
    let text: String = names
        .iter()
        .map(|n| format!("{n} {}\n", public.join(" ")))
        .collect();
    let file = dir.join("known_hosts");
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn a_changed_host_key_is_refused() {
    let r = Remote::from_env();
    let tmp = tempfile::tempdir().unwrap();
    let names = [
        format!("[{}]:{}", r.host, r.port),
        format!("[localhost]:{}", r.port),
    ];
    let known = foreign_known_hosts(tmp.path(), &names);
    let kh = format!("UserKnownHostsFile={}", known.display());
    // The user's defaults otherwise (no StrictHostKeyChecking given), as for `maqet -H`.
    let o = r
        .ssh_with(&["-o", &kh, "-o", "GlobalKnownHostsFile=/dev/null"])
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(255), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("Host key verification failed"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_unknown_host_key_is_refused() {
    let r = Remote::from_env();
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("known_hosts");
    std::fs::write(&empty, "").unwrap();
    let kh = format!("UserKnownHostsFile={}", empty.display());
    let o = r
        .ssh_with(&["-o", &kh, "-o", "GlobalKnownHostsFile=/dev/null"])
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(255), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Host key verification failed"),
        "{}",
        stderr(&o)
    );
    // Nothing was learnt on the way.
    assert_eq!(std::fs::read_to_string(&empty).unwrap(), "");
}

#[test]
fn a_key_the_remote_user_does_not_know_is_refused() {
    let r = Remote::from_env();
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("id_other");
    let o = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "ssh-keygen: {}", stderr(&o));
    let o = r
        .ssh_with(&["-i", key.to_str().unwrap(), "-o", "IdentitiesOnly=yes"])
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(255), "{}", stderr(&o));
    // Keys only: no password or keyboard-interactive method is offered.
    assert!(
        stderr(&o).contains("Permission denied (publickey)"),
        "{}",
        stderr(&o)
    );
}
