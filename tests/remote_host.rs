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

// ---------------------------------------------------------------------
// `maqet -H`: the commands of this machine's maqet on the remote host.
// ---------------------------------------------------------------------

/// The near side of `maqet -H`: the test user's maqet with a hosts.yaml of
/// its own and a runtime directory of its own (for the ssh master
/// connections and forwarded sockets, which are ended when it is dropped).
struct Near {
    dir: tempfile::TempDir,
}

impl Near {
    /// `r` is the remote world's host (the staged maqet, its data
    /// directory); `extra` more hosts.yaml text.
    fn new(w: &RemoteWorld, extra: &str) -> Near {
        let dir = tempfile::Builder::new()
            .prefix("maqet-it-near-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("config/maqet")).unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        let r = &w.remote;
        std::fs::write(
            dir.path().join("config/maqet/hosts.yaml"),
            format!(
                "r:\n  ssh: {}@{}\n  port: {}\n  maqet: {}\n  data_dir: {}\n{extra}",
                r.user,
                r.host,
                r.port,
                RemoteWorld::maqet_path(),
                w.data_dir()
            ),
        )
        .unwrap();
        Near { dir }
    }

    fn cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(bin_dir().join("maqet"));
        c.env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            // Whatever this side's data directory: -H never uses it.
            .env("MAQET_DATA_DIR", self.dir.path().join("local-data"))
            .env_remove("MAQET_HOST")
            .env_remove("MAQET_RUNNER")
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null());
        c
    }

    fn maqet(&self, args: &[&str]) -> std::process::Output {
        self.cmd().args(args).output().expect("run maqet")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.maqet(args);
        assert!(
            o.status.success(),
            "maqet {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Asserts the exit code; returns stderr.
    fn fails(&self, code: i32, args: &[&str]) -> String {
        let o = self.maqet(args);
        assert_eq!(
            o.status.code(),
            Some(code),
            "maqet {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        );
        stderr(&o)
    }

    fn write(&self, file: &str, text: &str) -> String {
        let p = self.dir.path().join(file);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }
}

impl Drop for Near {
    /// Ends the master connections this test's commands left running.
    fn drop(&mut self) {
        let Ok(masters) = std::fs::read_dir(self.dir.path().join("run/maqet/ssh")) else {
            return;
        };
        for m in masters.flatten() {
            let _ = std::process::Command::new("ssh")
                .arg("-o")
                .arg(format!("ControlPath={}", m.path().display()))
                .args(["-O", "exit", "--", "unused"])
                .output();
        }
    }
}

fn headless_yaml(name: &str, extra: &str) -> String {
    format!(
        "name: {name}\nbinary: {QEMU}\nmemory: 64M\narguments:\n  - accel: tcg\n  - display: none\n  - nodefaults\n{extra}"
    )
}

#[test]
fn a_vm_lives_its_whole_life_through_dash_h() {
    let w = RemoteWorld::new("hlife");
    let near = Near::new(&w, "");
    let vm = w.name("a");
    // A config file of this machine, sent as content.
    let f = near.write("a.yaml", &headless_yaml(&vm, "console: true\n"));
    let note = near.write("note.txt", "from the near side\n");
    assert_eq!(near.ok(&["-H", "r", "add", &f, "--copy", &note]).trim(), vm);
    // It is the remote user's definition, in the remote data directory.
    let remote_ls = w.ok(&["ls", "--json"]);
    assert!(remote_ls.contains(&vm), "{remote_ls}");
    assert!(!near.dir.path().join("local-data").exists());
    // The config and the --copy file landed side by side over there.
    let info: serde_json::Value = serde_json::from_str(&w.ok(&["info", &vm, "--json"])).unwrap();
    let source = info["sources"][0].as_str().expect("a source").to_string();
    assert!(
        source.starts_with(&format!("{}/uploads/", w.data_dir())),
        "{source}"
    );
    let dir = source.rsplit_once('/').unwrap().0;
    assert_eq!(
        w.remote
            .ok(&shell_words(&["cat", &format!("{dir}/note.txt")])),
        "from the near side\n"
    );

    near.ok(&["-H", "r", "start", &vm]);
    let service = format!("maqet-vm@{vm}.service");
    assert_eq!(w.remote.unit_prop(&service, "ActiveState"), "active");
    assert_eq!(unit_prop(&service, "LoadState"), "not-found");

    // ls and status: the remote reports, rendered here.
    let ls = near.ok(&["-H", "r", "ls"]);
    assert!(ls.starts_with("NAME"), "{ls}");
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&vm) && l.contains("running")),
        "{ls}"
    );
    let st: serde_json::Value =
        serde_json::from_str(&near.ok(&["-H", "r", "status", &vm, "--json"])).unwrap();
    // The same report the remote maqet gives (usage figures move on).
    let there = w.status(&vm);
    for k in ["name", "state", "unit", "runner_pid", "qemu_pid", "since"] {
        assert_eq!(st[k], there[k], "{k}: {st:#} vs {there:#}");
    }
    assert_eq!(st["state"], "running");
    let text = near.ok(&["-H", "r", "status", &vm]);
    assert!(text.starts_with(&format!("{vm}: running")), "{text}");

    // QMP through the protocol, and through a forwarded socket.
    let q: serde_json::Value =
        serde_json::from_str(&near.ok(&["-H", "r", "qmp", "run", &vm, "query-status"])).unwrap();
    assert_eq!(q["status"], "running");
    let sock = near.ok(&["-H", "r", "qmp", "socket", &vm]);
    let sock = sock.trim();
    assert!(
        sock.starts_with(near.dir.path().join("run").to_str().unwrap()),
        "a local socket: {sock}"
    );
    {
        use std::io::{BufRead, BufReader, Write};
        let s = std::os::unix::net::UnixStream::connect(sock)
            .expect("connect the forwarded QMP socket");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"QMP\""), "{line}");
        let mut s = s;
        s.write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"query-status\"}\n")
            .unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"return\""), "{line}");
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"running\""), "{line}");
    }

    // The console, attached through a terminal (script) and detached with Ctrl-].
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg("(sleep 3; printf '\\035') | script -qec \"$0 -H r console $1\" /dev/null")
        .arg(bin_dir().join("maqet"))
        .arg(&vm)
        .envs(
            near.cmd()
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .env_remove("MAQET_HOST")
        .current_dir(near.dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out} {}", stderr(&o));
    assert!(
        out.contains(&format!("Connected to the console of {vm}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("[detached from the console of {vm}]")),
        "{out}"
    );

    // The remote journal, through the remote maqet.
    let logs = near.ok(&["-H", "r", "logs", "-n", "50", &vm]);
    assert!(
        logs.contains(&format!("Started maqet-vm@{vm}.service")),
        "{logs}"
    );

    near.ok(&["-H", "r", "stop", "--force", &vm]);
    assert_eq!(w.status(&vm)["state"], "defined");
    near.ok(&["-H", "r", "rm", &vm]);
    let remote_ls = w.ok(&["ls", "--json"]);
    assert!(!remote_ls.contains(&vm), "{remote_ls}");
}

#[test]
fn exit_codes_and_messages_over_dash_h_are_the_local_ones() {
    let w = RemoteWorld::new("hcodes");
    let near = Near::new(&w, "");
    let local = World::new("hcodes-local");
    let vm = w.name("a");
    let lvm = local.name("a");
    let f = near.write("a.yaml", &headless_yaml(&vm, ""));
    near.ok(&["-H", "r", "add", &f]);
    local.ok(&["add", local.vm_yaml(&lvm, "").to_str().unwrap()]);
    let bad = near.write("bad.yaml", "name: x\nmemory: 5Q\n");
    let lbad = local.write("bad.yaml", "name: x\nmemory: 5Q\n");
    let lbad = lbad.to_str().unwrap();
    let lfile = local.dir.path().join(format!("{lvm}.yaml"));
    let lfile = lfile.to_str().unwrap();
    let ghost = w.name("ghost");
    let lghost = local.name("ghost");
    // (remote args, local args, exit code)
    let cases: Vec<(Vec<&str>, Vec<&str>, i32)> = vec![
        (vec!["status", &ghost], vec!["status", &lghost], 3),
        (vec!["start", &ghost], vec!["start", &lghost], 3),
        (vec!["rm", &ghost], vec!["rm", &lghost], 3),
        (
            vec!["qmp", "run", &ghost, "query-status"],
            vec!["qmp", "run", &lghost, "query-status"],
            3,
        ),
        (vec!["add", &f], vec!["add", lfile], 5),
        (vec!["add", &bad], vec!["add", lbad], 4),
        (
            vec!["qmp", "run", &vm, "query-status"],
            vec!["qmp", "run", &lvm, "query-status"],
            5,
        ),
        (
            vec!["ls", "--state", "sleepy"],
            vec!["ls", "--state", "sleepy"],
            2,
        ),
    ];
    for (remote, here, code) in cases {
        let mut args = vec!["-H", "r"];
        args.extend(&remote);
        let there = near.fails(code, &args);
        let here_err = local.fails(code, &here);
        // The same words, with the names and paths of each side.
        let norm = |s: &str, name: &str, g: &str, dir: &str| {
            s.replace(name, "VM")
                .replace(g, "GHOST")
                .replace(dir, "DIR")
        };
        let data = w.data_dir();
        let ldata = local.data_dir();
        let first = |s: &str| s.lines().next().unwrap_or("").to_string();
        if code != 4 {
            assert_eq!(
                norm(&first(&there), &vm, &ghost, &data),
                norm(&first(&here_err), &lvm, &lghost, ldata.to_str().unwrap()),
                "{remote:?}"
            );
        } else {
            // Config errors name the uploaded file on the remote side.
            assert!(
                there.contains("memory: invalid memory size '5Q'"),
                "{there}"
            );
        }
    }
    // Starting twice: a conflict, as here.
    near.ok(&["-H", "r", "start", &vm]);
    let e = near.fails(5, &["-H", "r", "start", &vm]);
    assert!(e.contains(&format!("VM '{vm}' is already running")), "{e}");
    near.ok(&["-H", "r", "rm", "--force", &vm]);
}

#[test]
fn ls_over_two_hosts_names_the_unreachable_one_and_lists_the_other() {
    let w = RemoteWorld::new("hls");
    let dead = free_port();
    let near = Near::new(
        &w,
        &format!(
            "dead:\n  ssh: {}@127.0.0.1\n  port: {dead}\n",
            w.remote.user
        ),
    );
    let vm = w.name("a");
    let f = near.write("a.yaml", &headless_yaml(&vm, ""));
    near.ok(&["-H", "r", "add", &f]);
    for args in [
        vec!["-H", "r", "-H", "dead", "ls"],
        vec!["--all-hosts", "ls"],
    ] {
        let o = near.maqet(&args);
        let out = String::from_utf8_lossy(&o.stdout);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {out} {err}");
        let header = out.lines().next().unwrap_or("");
        assert!(
            header.starts_with("HOST") && header.contains("NAME"),
            "{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with("r ") && l.contains(&vm) && l.contains("defined")),
            "{out}"
        );
        assert!(
            err.contains(&format!(
                "cannot reach dead: ssh: connect to host 127.0.0.1 port {dead}"
            )),
            "{err}"
        );
    }
    // JSON: each row says its host.
    let o = near.maqet(&["-H", "r", "-H", "dead", "ls", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["host"], "r");
    assert_eq!(v[0]["name"], vm.as_str());
    // MAQET_HOST names the host when -H does not.
    let o = near
        .cmd()
        .env("MAQET_HOST", "r")
        .args(["ls"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&vm),
        "{}",
        stderr(&o)
    );
    // One host only: the plain table, no HOST column.
    let one = near.ok(&["-H", "r", "ls"]);
    assert!(one.starts_with("NAME"), "{one}");
}

#[test]
fn a_remote_without_maqet_and_a_version_mismatch_are_named() {
    let w = RemoteWorld::new("hvers");
    // Stand-ins for other maqet versions: they answer the hello as a
    // maqet of protocol 7 (and 99) would.
    let refusing = w.write(
        "old-maqet",
        "#!/bin/sh\nread hello\necho '{\"greeting\":\"refused\",\"maqet\":\"9.1.0\",\"protocol\":9,\"oldest\":7}'\n",
    );
    let welcoming = w.write(
        "odd-maqet",
        "#!/bin/sh\nread hello\necho '{\"greeting\":\"welcome\",\"maqet\":\"99.0.0\",\"protocol\":99}'\n",
    );
    w.remote
        .ok(&shell_words(&["chmod", "+x", &refusing, &welcoming]));
    let r = &w.remote;
    let near = Near::new(
        &w,
        &format!(
            "none:\n  ssh: {u}@{h}\n  port: {p}\n  maqet: /nonexistent/maqet\nold:\n  ssh: {u}@{h}\n  port: {p}\n  maqet: {refusing}\nodd:\n  ssh: {u}@{h}\n  port: {p}\n  maqet: {welcoming}\n",
            u = r.user,
            h = r.host,
            p = r.port
        ),
    );
    let e = near.fails(1, &["-H", "none", "ls"]);
    assert!(
        e.contains("maqet is not installed on none (`/nonexistent/maqet` was not found there): install maqet there (or set `maqet:` in hosts.yaml)"),
        "{e}"
    );
    let ours = env!("CARGO_PKG_VERSION");
    let e = near.fails(1, &["-H", "old", "status", "x"]);
    assert!(
        e.contains(&format!("the maqet on old is maqet 9.1.0 and speaks protocol 7 to 9; this is maqet {ours} and speaks protocol 1")),
        "{e}"
    );
    let e = near.fails(1, &["-H", "odd", "ls"]);
    assert!(e.contains("maqet 99.0.0 and speaks protocol 99"), "{e}");
}

#[test]
fn display_print_gives_a_local_socket_that_answers_rfb() {
    let w = RemoteWorld::new("hdisp");
    let near = Near::new(&w, "");
    let vm = w.name("d");
    // No `display:` at all: the private VNC socket of the VM.
    let f = near.write(
        "d.yaml",
        &format!("name: {vm}\nbinary: {QEMU}\nmemory: 64M\narguments:\n  - accel: tcg\n"),
    );
    near.ok(&["-H", "r", "add", &f]);
    near.ok(&["-H", "r", "start", &vm]);
    let uri = near.ok(&["-H", "r", "display", &vm, "--print"]);
    let path = uri
        .trim()
        .strip_prefix("vnc+unix://")
        .unwrap_or_else(|| panic!("a VNC URI: {uri}"));
    assert!(
        path.starts_with(near.dir.path().to_str().unwrap()),
        "{path}"
    );
    use std::io::Read;
    let mut s =
        std::os::unix::net::UnixStream::connect(path).expect("connect the forwarded display");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut banner = [0u8; 12];
    s.read_exact(&mut banner).unwrap();
    assert!(
        banner.starts_with(b"RFB 003."),
        "{:?}",
        String::from_utf8_lossy(&banner)
    );
    near.ok(&["-H", "r", "rm", "--force", &vm]);
}

#[test]
fn host_add_ls_rm_keep_hosts_yaml() {
    let w = RemoteWorld::new("hhosts");
    let near = Near::new(&w, "");
    near.ok(&[
        "host",
        "add",
        "lab",
        "alice@lab.example:2200",
        "--remote-data-dir",
        "/srv/m",
    ]);
    let e = near.fails(5, &["host", "add", "lab", "bob@elsewhere"]);
    assert!(e.contains("a host named 'lab' is already in"), "{e}");
    let e = near.fails(2, &["host", "add", "x", "--", "-oProxyCommand=sh"]);
    assert!(e.contains("may not start with '-'"), "{e}");
    let ls = near.ok(&["host", "ls"]);
    assert!(
        ls.lines().any(|l| l.starts_with("lab")
            && l.contains("alice@lab.example:2200")
            && l.contains("/srv/m")),
        "{ls}"
    );
    let names = near.ok(&["__complete-hosts"]);
    assert_eq!(names.lines().collect::<Vec<_>>(), ["r", "lab"]);
    near.ok(&["host", "rm", "lab"]);
    near.fails(3, &["host", "rm", "lab"]);
    let ls = near.ok(&["host", "ls", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ls).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{ls}");
    // A broken hosts.yaml is named with its line.
    near.write("config/maqet/hosts.yaml", "r:\n  ssh: x\n  prot: 22\n");
    let e = near.fails(4, &["-H", "r", "ls"]);
    assert!(e.contains("hosts.yaml:3:3: r.prot: unknown key"), "{e}");
}

#[test]
fn events_stream_through_dash_h_and_end_with_the_client() {
    use std::io::{BufRead, BufReader};
    let w = RemoteWorld::new("hevents");
    let near = Near::new(&w, "");
    let vm = w.name("e");
    let f = near.write("e.yaml", &headless_yaml(&vm, ""));
    near.ok(&["-H", "r", "add", &f]);
    near.ok(&["-H", "r", "start", &vm]);
    let mut events = near
        .cmd()
        .args(["-H", "r", "events", &vm, "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(events.stdout.take().unwrap()).lines();
    // The stream is open once the remote maqet runs it; then pause and
    // resume the VM and read both events as they come.
    let remote_events = || {
        let o = w.remote.run(&format!(
            "pgrep -u {} -f -- '[ ]events {vm}'",
            w.remote.user
        ));
        !stdout(&o).is_empty()
    };
    wait_until(
        "the remote events command",
        Duration::from_secs(60),
        remote_events,
    );
    near.ok(&["-H", "r", "qmp", "pause", &vm]);
    near.ok(&["-H", "r", "qmp", "resume", &vm]);
    let mut seen = Vec::new();
    while !(seen.iter().any(|e: &String| e == "STOP") && seen.iter().any(|e| e == "RESUME")) {
        let line = lines.next().expect("an event line").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON event");
        seen.push(v["event"].as_str().unwrap_or_default().to_string());
    }
    // Ending the local maqet ends the ssh session, and the server then
    // stops the remote command instead of letting it run for no one.
    send_signal(events.id().into(), "-TERM");
    let _ = events.wait();
    wait_until(
        "the remote events command to end",
        Duration::from_secs(60),
        || !remote_events(),
    );
    near.ok(&["-H", "r", "rm", "--force", &vm]);
}
