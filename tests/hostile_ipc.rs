//! Hostile clients on a real VM's socket: malformed, extreme and oversized
//! requests, a flood of idle connections, and QMP commands that would run
//! host programs. The VM must keep running with the same QEMU, the unit
//! must never be restarted, and every bad request gets an error reply.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{alive, socket_path, unit_prop, wait_until, World};
use serde_json::Value;

/// systemd's watchdog for VM units (`WatchdogSec=`); the flood is held
/// for more than twice as long.
const WATCHDOG: Duration = Duration::from_secs(10);

fn connect(sock: &Path) -> UnixStream {
    let s = UnixStream::connect(sock).expect("connect to the runner socket");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Sends one line on `s` and reads one reply line.
fn ask(s: &mut UnixStream, line: &[u8]) -> Value {
    s.write_all(line).unwrap();
    s.write_all(b"\n").unwrap();
    read_reply(s)
}

fn read_reply(s: &mut UnixStream) -> Value {
    let mut r = BufReader::new(s);
    let mut reply = String::new();
    r.read_line(&mut reply).expect("a reply line");
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("reply {reply:?}: {e}"))
}

/// The runner's and QEMU's pids, which must never change.
fn pids(w: &World, vm: &str) -> (u64, u64) {
    let st = w.status(vm);
    assert_eq!(st["state"], "running", "{st:#}");
    (
        st["runner_pid"].as_u64().unwrap(),
        st["qemu_pid"].as_u64().unwrap(),
    )
}

fn assert_untouched(w: &World, vm: &str, before: (u64, u64)) {
    assert_eq!(pids(w, vm), before, "the runner or QEMU changed");
    assert!(alive(before.1), "QEMU died");
    let unit = format!("maqet-vm@{vm}.service");
    assert_eq!(unit_prop(&unit, "NRestarts"), "0");
    assert_eq!(unit_prop(&unit, "MainPID"), before.0.to_string());
    assert_eq!(unit_prop(&unit, "ActiveState"), "active");
    let out = w.ok(&["qmp", "run", vm, "query-status"]);
    assert!(out.contains("\"running\""), "{out}");
}

#[test]
fn every_hostile_request_gets_an_error_and_the_vm_keeps_running() {
    let w = World::new("hostile");
    let vm = w.add_vm("h", "");
    w.ok(&["start", &vm]);
    let before = pids(&w, &vm);
    let sock = socket_path(&vm);

    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_args = format!(
        r#"{{"id":9,"method":"qmp","params":{{"execute":"query-status","arguments":{{"a":{}}}}}}}"#,
        "[".repeat(200) + &"]".repeat(200)
    );
    let long_method = format!(r#"{{"id":9,"method":"{}"}}"#, "m".repeat(500_000));
    let mut hostile: Vec<Vec<u8>> = [
        "not json",
        "{",
        "null",
        "[]",
        r#"{"id":1}"#,
        r#"{"id":1,"method":"selfdestruct"}"#,
        r#"{"id":18446744073709551616,"method":"status"}"#,
        r#"{"id":-1,"method":"status"}"#,
        r#"{"id":1e400,"method":"status"}"#,
        r#"{"id":1,"method":"stop","params":{"timeout":1e400}}"#,
        r#"{"id":1,"method":"stop","params":{"timeout":1e20}}"#,
        r#"{"id":1,"method":"stop","params":{"timeout":1.7976931348623157e308}}"#,
        r#"{"id":1,"method":"stop","params":{"timeout":18446744073709551616}}"#,
        r#"{"id":1,"method":"stop","params":{"timeout":86401}}"#,
        r#"{"id":1,"method":"stop","params":{"timeout":-1}}"#,
        r#"{"id":1,"method":"stop","params":{"timeout":"NaN"}}"#,
        r#"{"id":1,"method":"stop","params":{"timeout":"Infinity"}}"#,
        r#"{"id":1,"method":"stop","params":{"force":"yes"}}"#,
        r#"{"id":1,"method":"stop","params":[1]}"#,
        r#"{"id":1,"method":"stop","params":"now"}"#,
        r#"{"id":1,"method":"stop","parms":{}}"#,
        r#"{"id":1,"method":"stop","params":{"timeout":1,"tiemout":2}}"#,
        r#"{"id":1,"method":"qmp","params":"query-status"}"#,
        r#"{"id":1,"method":"qmp","params":{"execute":"Query Status"}}"#,
        r#"{"id":1,"method":"qmp","params":{"execute":"query-status","arguments":[1]}}"#,
        r#"{"id":1,"method":"console","params":5}"#,
        r#"{"id":1,"method":"console","params":{"replay":"yes"}}"#,
        &deep,
        &deep_args,
        &long_method,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    hostile.push(b"{\"id\":1,\"method\":\"st\xff\xfeop\"}".to_vec());
    hostile.push(b"\0\0\0\0".to_vec());

    // All on one connection: it survives every error.
    let mut s = connect(&sock);
    for line in &hostile {
        let shown = String::from_utf8_lossy(&line[..line.len().min(100)]).into_owned();
        let r = ask(&mut s, line);
        let kind = r["error"]["kind"].as_str();
        // `console` reports the missing console before its params matter.
        let ok_kinds: &[&str] = if shown.contains("console") {
            &["bad_request", "unavailable"]
        } else {
            &["bad_request"]
        };
        assert!(kind.is_some_and(|k| ok_kinds.contains(&k)), "{shown}: {r}");
        assert!(
            r.to_string().len() < 2000,
            "{shown}: the reply echoes the input"
        );
    }
    let r = ask(&mut s, br#"{"id":7,"method":"status"}"#);
    assert_eq!(r["id"], 7, "{r}");
    assert_eq!(r["result"]["qemu_pid"], before.1, "{r}");

    // Over the 1 MiB cap: an error, then the runner hangs up.
    let mut s = connect(&sock);
    let huge = vec![b'x'; (1 << 20) + 4096];
    let _ = s.write_all(&huge);
    let r = read_reply(&mut s);
    assert_eq!(r["error"]["kind"], "bad_request", "{r}");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);

    // The CLI refuses what the runner would refuse, and stops nothing.
    for t in ["100000", "1e20", "inf", "-1"] {
        let err = w.fails(2, &["stop", &vm, &format!("--timeout={t}")]);
        assert!(err.contains("--timeout"), "{t}: {err}");
    }

    assert_untouched(&w, &vm, before);
    w.ok(&["stop", &vm, "--force"]);
}

#[test]
fn an_idle_connection_flood_neither_kills_the_vm_nor_locks_maqet_out() {
    let w = World::new("flood");
    let vm = w.add_vm("f", "");
    w.ok(&["start", &vm]);
    let before = pids(&w, &vm);
    let unit = format!("maqet-vm@{vm}.service");
    assert_eq!(unit_prop(&unit, "WatchdogUSec"), "10s");
    let sock = socket_path(&vm);

    // Several hundred idle connections, renewed all the time so the runner
    // keeps accepting (and shedding) while maqet's own commands come in.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        let sock = sock.clone();
        std::thread::spawn(move || {
            let mut held = std::collections::VecDeque::new();
            let mut opened = 0u32;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(s) = UnixStream::connect(&sock) {
                    held.push_back(s);
                    opened += 1;
                }
                if held.len() > 600 {
                    held.pop_front();
                }
                if held.len() >= 600 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            opened
        })
    };
    let end = Instant::now() + WATCHDOG * 2 + Duration::from_secs(5);
    let mut rounds = 0;
    while Instant::now() < end {
        assert_eq!(pids(&w, &vm), before);
        let out = w.ok(&["qmp", "run", &vm, "query-status"]);
        assert!(out.contains("\"running\""), "{out}");
        rounds += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    let opened = flood.join().unwrap();
    assert!(opened > 1000, "the flood opened only {opened} connections");
    // Every call above succeeded during the flood; on a loaded machine a
    // call can take seconds, so only a few rounds are required.
    assert!(rounds >= 2, "only {rounds} status rounds");
    assert_eq!(unit_prop(&unit, "Result"), "success");
    assert_untouched(&w, &vm, before);
    // The runner gave the descriptors back.
    wait_until(
        "the runner to close the flood's connections",
        Duration::from_secs(10),
        || {
            std::fs::read_dir(format!("/proc/{}/fd", before.0))
                .map(|d| d.count() < 64)
                .unwrap_or(false)
        },
    );
    w.ok(&["stop", &vm, "--force"]);
}

#[test]
fn qmp_commands_that_run_host_programs_are_refused_unless_allowed() {
    let w = World::new("qmppol");
    let marker = w.dir.path().join("marker");
    let m = marker.display();
    let refused_args = [
        ("migrate", format!(r#"{{"uri":"exec:touch {m}"}}"#)),
        (
            "migrate",
            format!(
                r#"{{"channels":[{{"channel-type":"main","addr":{{"transport":"exec","args":["touch","{m}"]}}}}]}}"#
            ),
        ),
        ("migrate-incoming", format!(r#"{{"uri":"exec:touch {m}"}}"#)),
        (
            "netdev_add",
            r#"{"type":"tap","id":"t0","script":"/bin/sh","downscript":"no"}"#.to_string(),
        ),
        (
            "netdev_add",
            r#"{"type":"user","id":"u0","smb":"/tmp"}"#.to_string(),
        ),
    ];

    let vm = w.add_vm("p", "");
    w.ok(&["start", &vm]);
    let before = pids(&w, &vm);
    for (cmd, args) in &refused_args {
        let err = w.fails(2, &["qmp", "run", &vm, cmd, args]);
        assert!(
            err.contains("run a program on the host") && err.contains("qmp_allow_host_exec"),
            "{cmd} {args}: {err}"
        );
    }
    assert!(!marker.exists(), "a refused command ran");
    assert_untouched(&w, &vm, before);
    w.ok(&["stop", &vm, "--force"]);

    // Opted out: the harmless `touch` runs (the migration itself then
    // fails, as touch reads nothing) and the VM keeps running.
    let open = w.add_vm("o", "qmp_allow_host_exec: true\n");
    let shown = w.ok(&["config", &open]);
    assert!(shown.contains("qmp_allow_host_exec: true"), "{shown}");
    w.ok(&["start", &open]);
    let before = pids(&w, &open);
    // HMP stays refused even so.
    w.fails(
        2,
        &[
            "qmp",
            "run",
            &open,
            "human-monitor-command",
            r#"{"command-line":"info status"}"#,
        ],
    );
    let (cmd, args) = &refused_args[0];
    w.ok(&["qmp", "run", &open, cmd, args]);
    wait_until(
        "the exec: migration to run touch",
        Duration::from_secs(20),
        || marker.exists(),
    );
    wait_until(
        "the failed migration to end",
        Duration::from_secs(20),
        || {
            let out = w.ok(&["qmp", "run", &open, "query-migrate"]);
            !out.contains("\"active\"") && !out.contains("\"setup\"")
        },
    );
    assert_untouched(&w, &open, before);
    w.ok(&["stop", &open, "--force"]);
}

/// Processes whose parent is `pid` (zombies included).
fn children(pid: u64) -> Vec<String> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `PID (COMM) STATE PPID …`; COMM may hold spaces.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (state, ppid) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
        if ppid == pid.to_string() {
            out.push(format!("{head}) {state}"));
        }
    }
    out
}

/// One QMP exchange on the VM's `.qmp` socket: greeting, negotiation,
/// then `command`'s reply.
fn qmp_endpoint(path: &str, command: &Value) -> Value {
    let mut s = UnixStream::connect(path).expect("connect to the .qmp socket");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    let mut next = |r: &mut BufReader<UnixStream>| {
        line.clear();
        r.read_line(&mut line).expect("a QMP line");
        serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    };
    assert!(next(&mut r).get("QMP").is_some(), "no greeting");
    s.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .unwrap();
    assert_eq!(next(&mut r), serde_json::json!({"return": {}}));
    s.write_all(format!("{command}\n").as_bytes()).unwrap();
    loop {
        let v = next(&mut r);
        if v.get("event").is_none() {
            return v;
        }
    }
}

/// The issue's example — `netdev_add` of a vde backend whose socket is
/// libvdeplug's `cmd://` plugin — and its relatives, over `maqet qmp` and
/// over the `.qmp` endpoint: each is refused, nothing runs (no marker
/// file) and QEMU has no child, not even a defunct one.
#[test]
fn no_backend_runs_a_host_program_over_either_socket() {
    let w = World::new("qmpvde");
    let marker = w.dir.path().join("ran");
    let m = marker.display();
    let attempts = [
        serde_json::json!({"execute": "netdev_add", "arguments":
            {"type": "vde", "id": "v", "sock": format!("cmd://sh -c \"id > {m}\"")}}),
        serde_json::json!({"execute": "netdev_add", "arguments":
            {"type": "user", "id": "u", "guestfwd": [{"str": format!("tcp:10.0.2.100:1-cmd:touch {m}")}]}}),
        serde_json::json!({"execute": "netdev_add", "arguments":
            {"type": "bridge", "id": "b", "br": "br0"}}),
        serde_json::json!({"execute": "blockdev-add", "arguments":
            {"driver": "ssh", "node-name": "s", "server": {"host": "127.0.0.1", "port": "1"}, "path": "/x"}}),
        serde_json::json!({"execute": "blockdev-add", "arguments":
            {"driver": "raw", "node-name": "r", "file": format!("json:{{\"driver\":\"rbd\",\"pool\":\"p\",\"image\":\"{m}\"}}")}}),
    ];
    let vm = w.add_vm("v", "");
    w.ok(&["start", &vm]);
    let before = pids(&w, &vm);
    let qmp = w.ok(&["qmp", "socket", &vm]).trim().to_string();
    for a in &attempts {
        let (cmd, args) = (a["execute"].as_str().unwrap(), a["arguments"].to_string());
        let err = w.fails(2, &["qmp", "run", &vm, cmd, &args]);
        assert!(
            err.contains("run a program on the host") && err.contains("qmp_allow_host_exec"),
            "maqet qmp {cmd} {args}: {err}"
        );
        let r = qmp_endpoint(&qmp, a);
        assert_eq!(r["error"]["class"], "GenericError", "{a}: {r}");
        assert!(
            r["error"]["desc"]
                .as_str()
                .unwrap()
                .contains("qmp_allow_host_exec"),
            "{a}: {r}"
        );
    }
    assert!(!marker.exists(), "a host command ran");
    assert_eq!(
        children(before.1),
        Vec::<String>::new(),
        "QEMU has children"
    );
    assert_untouched(&w, &vm, before);
    w.ok(&["stop", &vm, "--force"]);
}

/// Opens `n` event streams on the runner socket; returns the open ones
/// and the replies of those refused (which must come at once).
fn event_streams(sock: &Path, n: usize) -> (Vec<UnixStream>, Vec<Value>) {
    let (mut open, mut refused) = (vec![], vec![]);
    for _ in 0..n {
        let mut s = connect(sock);
        let r = ask(&mut s, br#"{"id":1,"method":"events"}"#);
        if r["result"]["streaming"] == true {
            open.push(s);
        } else {
            refused.push(r);
        }
    }
    (open, refused)
}

/// Opens `n` negotiated sessions on the `.qmp` socket; the open ones and
/// the refusals of the rest.
fn qmp_sessions(path: &str, n: usize) -> (Vec<UnixStream>, Vec<Value>) {
    let (mut open, mut refused) = (vec![], vec![]);
    for _ in 0..n {
        let mut s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let greeting = read_reply(&mut s);
        assert!(greeting.get("QMP").is_some(), "{greeting}");
        let r = ask(&mut s, br#"{"execute":"qmp_capabilities"}"#);
        if r.get("return").is_some() {
            open.push(s);
        } else {
            refused.push(r);
        }
    }
    (open, refused)
}

/// 64 `events` streams and 64 negotiated `.qmp` sessions at once: the
/// streams beyond their cap are told "too many clients" at once, and the
/// VM's control stays open — `qmp`, `status`, the console and a `stop`
/// that the runner itself carries out (no fallback to killing the unit).
#[test]
fn streams_never_lock_control_out() {
    let w = World::new("streams");
    let vm = w.add_vm("s", "console: true\n");
    w.ok(&["start", &vm]);
    let before = pids(&w, &vm);
    let sock = socket_path(&vm);
    let qmp = w.ok(&["qmp", "socket", &vm]).trim().to_string();

    let (events, refused) = event_streams(&sock, 64);
    assert!(!events.is_empty(), "no event stream at all");
    assert!(!refused.is_empty(), "64 event streams all accepted");
    for r in &refused {
        let m = r["error"]["message"].as_str().unwrap_or_default();
        assert!(m.contains("too many clients"), "{r}");
    }
    let (sessions, refused) = qmp_sessions(&qmp, 64);
    assert!(!sessions.is_empty() && !refused.is_empty());
    for r in &refused {
        let d = r["error"]["desc"].as_str().unwrap_or_default();
        assert!(d.contains("too many clients"), "{r}");
    }

    let out = w.ok(&["qmp", "run", &vm, "query-status"]);
    assert!(out.contains("\"running\""), "{out}");
    assert_eq!(w.state(&vm), "running");
    w.ok(&["console", &vm, "--dump"]);
    assert_untouched(&w, &vm, before);
    // The runner answers the stop itself: QEMU is told to quit once the
    // guest (which has no OS) ignores the power button for a second.
    let out = w.maqet(&["stop", &vm, "--timeout", "1"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("told to quit"), "{text}");
    drop((events, sessions));
}

/// `maqet ssh VM --user=-oProxyCommand=…` is refused (exit 2) before ssh
/// runs: ssh used to read the user name as an option and run the command
/// (here `touch MARKER@127.0.0.1`).
#[test]
fn an_ssh_user_is_never_an_option_of_ssh() {
    let w = World::new("sshopt");
    let marker = w.dir.path().join("ran");
    let vm = w.add_vm("s", "ssh: true\n");
    w.ok(&["start", &vm]);
    // With a remote command, the old argv left ssh a destination ("true"),
    // so the ProxyCommand ran.
    let user = format!("--user=-oProxyCommand=touch {}", marker.display());
    let err = w.fails(2, &["ssh", &vm, &user, "--", "true"]);
    assert!(err.contains("starts with '-'"), "{err}");
    let ran: Vec<_> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ran"))
        .collect();
    assert!(ran.is_empty(), "ssh ran the command: {ran:?}");
    w.ok(&["stop", &vm, "--force"]);
}

/// A screendump never goes to a FIFO (QEMU used to block in `open()`
/// until the watchdog killed the VM) nor over a file that exists, unless
/// `--force` and that file is a regular one.
#[test]
fn screendumps_never_block_qemu_or_overwrite_what_they_should_not() {
    let w = World::new("shot");
    let vm = w.add_vm("s", "  - device: VGA\n");
    w.ok(&["start", &vm]);
    let before = pids(&w, &vm);
    let d = w.dir.path();
    let fifo = d.join("fifo.ppm");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let f = fifo.to_str().unwrap();

    let args = format!(r#"{{"filename":"{f}"}}"#);
    let err = w.fails(2, &["qmp", "run", &vm, "screendump", &args]);
    assert!(err.contains("a FIFO, not a regular file"), "{err}");
    let err = w.fails(2, &["qmp", "screendump", &vm, f]);
    assert!(err.contains("a FIFO"), "{err}");
    let err = w.fails(2, &["qmp", "screendump", &vm, f, "--force"]);
    assert!(err.contains("never replaced"), "{err}");

    // An existing file (say, a disk image) is kept unless --force.
    let image = d.join("disk.qcow2");
    std::fs::write(&image, "QFI\u{fb} stands in for a disk").unwrap();
    let err = w.fails(5, &["qmp", "screendump", &vm, image.to_str().unwrap()]);
    assert!(err.contains("--force"), "{err}");
    assert!(std::fs::read(&image).unwrap().starts_with(b"QFI"));
    w.ok(&["qmp", "screendump", &vm, image.to_str().unwrap(), "--force"]);
    assert!(std::fs::read(&image).unwrap().starts_with(b"P6"));
    let new = d.join("new.ppm");
    w.ok(&["qmp", "screendump", &vm, new.to_str().unwrap()]);
    assert!(std::fs::read(&new).unwrap().starts_with(b"P6"));
    let temps: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");

    assert_untouched(&w, &vm, before);
    w.ok(&["stop", &vm, "--force"]);
}
