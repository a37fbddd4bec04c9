//! Issue 19, part A: virtiofs shares (one virtiofsd per share, as the
//! companion unit `maqet-fs@VM-TAG`) and `network: passt` (passt as
//! `maqet-net@VM`) — against the real user manager, virtiofsd, passt and a
//! booting test guest (TCG); and the bad configs `add` refuses.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(120);
const READY: &str = "maqet-test-guest: ready";

/// Adds a VM booting the test guest with a serial console; `extra` is
/// more YAML, `append` more kernel parameters.
// Generous: a TCG guest crawls when the machine is busy.
/// How long a command in the guest's shell may take.
const RUN: Duration = Duration::from_secs(240);

fn add_guest(w: &World, suffix: &str, extra: &str, append: &str) -> String {
    let name = w.name(suffix);
    let text = format!(
        "name: {name}\nbinary: {QEMU}\nmemory: 256M\nconsole: true\ndisplay: none\nshutdown_timeout: 5\n\
         {extra}arguments:\n  - accel: tcg\n  - kernel: {}\n  - initrd: {}\n  - append: \"console=ttyS0 quiet {append}\"\n",
        guest_file("MAQET_GUEST_KERNEL"),
        guest_file("MAQET_GUEST_INITRD"),
    );
    let f = w.write(&format!("{name}.yaml"), &text);
    w.ok(&["add", f.to_str().unwrap()]);
    name
}

/// Live PIDs whose command line (NULs as blanks) starts with a program
/// named `program` and contains `needle`.
fn pids_with(program: &str, needle: &str) -> Vec<u64> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let prog = cmd.split(' ').next().unwrap_or("");
        if Path::new(prog)
            .file_name()
            .is_some_and(|f| f.to_string_lossy().starts_with(program))
            && cmd.contains(needle)
            && alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

/// The children of `pid`.
fn children(pid: u64) -> Vec<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn list_units(pattern: &str) -> String {
    let o = Command::new("systemctl")
        .args([
            "--user",
            "list-units",
            pattern,
            "--all",
            "--no-legend",
            "--plain",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Journal records of `vm` (by its field) from program `ident`.
fn journal_of(vm: &str, ident: &str) -> Vec<Value> {
    let o = Command::new("journalctl")
        .args(["--user", "-o", "json", "--no-pager"])
        .arg(format!("MAQET_VM={vm}"))
        .arg(format!("SYSLOG_IDENTIFIER={ident}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A helper's own journal line (not the relay's) arrives tagged with the VM.
fn wait_journal_line(vm: &str, ident: &str, needle: &str) {
    wait_until(
        &format!("{ident}'s line {needle:?} under MAQET_VM={vm}"),
        Duration::from_secs(20),
        || {
            journal_of(vm, ident).iter().any(|r| {
                r["MAQET_SOURCE"] == ident
                    && r["MESSAGE"].as_str().is_some_and(|m| m.contains(needle))
            })
        },
    );
}

fn random_word() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("w{}x{}", t, std::process::id())
}

/// Kills (SIGKILL) the helper the relay of `unit` runs, waits for the VM
/// to fail naming `unit`, and checks nothing of the VM is left running.
fn kill_helper_and_expect_failure(w: &World, vm: &str, unit: &str, program: &str, needle: &str) {
    let relay: u64 = unit_prop(unit, "MainPID").parse().unwrap();
    assert!(relay > 0, "{unit} has no main process");
    let helper = children(relay)
        .into_iter()
        .find(|p| pids_with(program, needle).contains(p))
        .unwrap_or_else(|| panic!("no {program} under {unit}'s relay {relay}"));
    send_signal(helper, "-9");
    let st = w.wait_state(vm, "failed", Duration::from_secs(90));
    let why = st["last_error"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!("{unit} failed")) && why.contains("SIGKILL"),
        "{st:#}"
    );
    // Nothing outlives the VM: QEMU, every helper of it, their units.
    wait_until("the VM's processes to go", Duration::from_secs(30), || {
        qemu_pids(vm).is_empty() && pids_with(program, needle).is_empty()
    });
    wait_until(
        "the VM's helper units to stop",
        Duration::from_secs(30),
        || {
            list_units(&format!("maqet-*@{vm}*"))
                .lines()
                .all(|l| !l.contains(" active ") && !l.contains(" activating "))
        },
    );
}

#[test]
fn a_virtiofs_share_is_read_written_and_mounted_by_cloud_init() {
    let w = World::new("vfs");
    let share = w.dir.path().join("share");
    let ro = w.dir.path().join("ro");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    let word = random_word();
    std::fs::write(share.join("from-host"), &word).unwrap();
    std::fs::write(ro.join("keep"), "kept").unwrap();
    let me = std::fs::metadata(&share).unwrap().uid();
    let vm = add_guest(
        &w,
        "v",
        &format!(
            "cloud_init: {{user: tester, ssh_authorized_keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample t@h\"]}}\nssh: false\nshares:\n  - {{host: {}, tag: src, guest: /mnt/src}}\n  - \"{}:ro_src:ro\"\n",
            share.display(),
            ro.display()
        ),
        "",
    );
    let out = w.cmd().args(["start", &vm]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // One virtiofsd unit pair per share, beside the VM's, in one listing.
    let units = list_units("maqet-*");
    for u in [
        format!("maqet-fs@{vm}-src.service"),
        format!("maqet-fs@{vm}-src.socket"),
        format!("maqet-fs@{vm}-ro_src.service"),
        format!("maqet-fs@{vm}-ro_src.socket"),
    ] {
        assert!(
            units
                .lines()
                .any(|l| l.starts_with(&u) && l.contains(" active ")),
            "{u} not active in:\n{units}"
        );
    }
    let st = w.status(&vm);
    let helpers = st["companions"].to_string();
    assert!(
        helpers.contains(&format!("maqet-fs@{vm}-ro_src.service")),
        "{st:#}"
    );
    // Sockets private, in the VM's runtime directory; virtiofsd sandboxed
    // in a user namespace (they work on this machine), read-only as asked.
    let rt = runtime_dir(&vm);
    assert_eq!(mode(&rt.join("fs0.sock")), 0o600);
    assert_eq!(mode(&rt.join("fs1.sock")), 0o600);
    let exec = unit_prop(&format!("maqet-fs@{vm}-ro_src.service"), "ExecStart");
    assert!(
        exec.contains("--fd=3")
            && exec.contains("--sandbox=namespace")
            && exec.contains("--readonly"),
        "{exec}"
    );
    assert!(!exec.contains("--tag"), "{exec}");

    let mut c = Console::attach(&w, &vm);
    c.wait_for(READY, BOOT);
    // cloud-init's bootcmd mounted the share at its guest path.
    let mounts = c.run_within(RUN, "grep virtiofs /proc/mounts");
    assert!(mounts.contains("src /mnt/src virtiofs"), "{mounts}");
    assert_eq!(c.run_within(RUN, "cat /mnt/src/from-host").trim(), word);
    // The guest's root writes a file; on the host it is the user's.
    c.run_within(RUN, "echo from-guest > /mnt/src/from-guest");
    let written = share.join("from-guest");
    wait_until(
        "the guest's file on the host",
        Duration::from_secs(10),
        || std::fs::read_to_string(&written).is_ok_and(|s| s == "from-guest\n"),
    );
    assert_eq!(std::fs::metadata(&written).unwrap().uid(), me);
    // A read-only share reads but refuses writes.
    let out = c.run_within(RUN, "mkdir -p /mnt/ro && mount -t virtiofs ro_src /mnt/ro && cat /mnt/ro/keep; echo x > /mnt/ro/new");
    assert!(
        out.contains("kept") && out.contains("Read-only file system"),
        "{out}"
    );
    assert!(!ro.join("new").exists());
    drop(c);

    // virtiofsd's own lines are in the journal under the VM's field.
    wait_journal_line(&vm, "virtiofsd", "Client connected");

    // virtiofsd dies: the VM fails naming it, and nothing is left.
    kill_helper_and_expect_failure(
        &w,
        &vm,
        &format!("maqet-fs@{vm}-src.service"),
        "virtiofsd",
        &share.to_string_lossy(),
    );
    assert!(pids_with("virtiofsd", &ro.to_string_lossy()).is_empty());
}

/// Answers one HTTP request on `l` with `body`.
fn serve_once(l: TcpListener, body: &'static str) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        // One write: passt (Debian 12's) was seen losing a reply that came
        // in several small segments followed at once by the close.
        let reply = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(reply.as_bytes());
    })
}

/// `GET /` on 127.0.0.1:`port` until the reply holds `want`, retried while
/// nothing answers yet. Reads until `want` rather than to the end: the
/// guest's close reaches the host late through passt (see below).
fn http_get(port: u16, want: &str, within: Duration) -> String {
    let end = Instant::now() + within;
    loop {
        let got = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut out = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&out).contains(want) {
                match s.read(&mut buf)? {
                    0 => break,
                    n => out.extend_from_slice(&buf[..n]),
                }
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        });
        match got {
            Ok(s) if s.contains(want) => return s,
            r => assert!(Instant::now() < end, "no {want:?} on port {port}: {r:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Local addresses of the TCP sockets listening on `port`.
fn tcp_listeners(port: u16) -> Vec<String> {
    let mut out = vec![];
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else {
                continue;
            };
            let Some((addr, p)) = local.rsplit_once(':') else {
                continue;
            };
            if *state == "0A" && u16::from_str_radix(p, 16) == Ok(port) {
                out.push(addr.to_string());
            }
        }
    }
    out
}

#[test]
fn passt_gives_the_guest_the_host_and_forwards_tcp_and_udp() {
    let w = World::new("passt");
    let (tcp, udp) = (free_port(), free_port());
    let host_service = TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host_service.local_addr().unwrap().port();
    let served = serve_once(host_service, "host-says-hi\n");
    let vm = add_guest(
        &w,
        "n",
        &format!("network: passt\nports: [\"{tcp}:80\", \"{udp}:7/udp\"]\n"),
        "maqet.dhcp",
    );
    let out = w.cmd().args(["start", &vm]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = format!("maqet-net@{vm}.service");
    assert!(
        list_units("maqet-*")
            .lines()
            .any(|l| l.starts_with(&unit) && l.contains(" active ")),
        "{}",
        list_units("maqet-*")
    );
    assert_eq!(mode(&runtime_dir(&vm).join("net.sock")), 0o600);
    // The forwards are passt's, on 127.0.0.1 only.
    assert_eq!(tcp_listeners(tcp), vec!["0100007F"]);
    let exec = unit_prop(&unit, "ExecStart");
    assert!(
        exec.contains(&format!("--tcp-ports 127.0.0.1/{tcp}:80"))
            && exec.contains(&format!("--udp-ports 127.0.0.1/{udp}:7")),
        "{exec}"
    );

    let mut c = Console::attach(&w, &vm);
    c.wait_for(READY, BOOT);
    // passt's DHCP handed out the host's address; its gateway is the host.
    let lease = c.wait_for("dhcp: eth0", Duration::from_secs(10));
    let router = lease
        .lines()
        .find_map(|l| {
            l.split_once("dhcp: eth0 ")?
                .1
                .split_once(" router ")?
                .1
                .split_whitespace()
                .next()
        })
        .unwrap_or_else(|| panic!("no router in the lease: {lease}"))
        .to_string();
    // `timeout`: Debian 12's passt hands the guest the host's close of a
    // connection late (seen: ~40 s after the reply), and wget waits for
    // it; the reply itself comes at once.
    let got = c.run_within(
        RUN,
        &format!("timeout 20 wget -q -O - http://{router}:{host_port}/"),
    );
    assert!(got.contains("host-says-hi"), "{got}");
    served.join().unwrap();
    // A TCP forward reaches the guest's web server.
    c.run_within(
        RUN,
        "mkdir -p /www && echo guest-says-hi > /www/index.html && { httpd -f -p 80 -h /www & }",
    );
    http_get(tcp, "guest-says-hi", Duration::from_secs(30));
    // A UDP forward reaches the guest's socat, and its answer comes back.
    c.run_within(
        RUN,
        "{ /usr/sbin/socat UDP4-RECVFROM:7,fork SYSTEM:'echo guest-udp' >/dev/null 2>&1 & }",
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        sock.send_to(b"ping\n", ("127.0.0.1", udp)).unwrap();
        let mut buf = [0u8; 64];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            break String::from_utf8_lossy(&buf[..n]).into_owned();
        }
        assert!(Instant::now() < end, "no UDP answer through port {udp}");
    };
    assert_eq!(answer, "guest-udp\n");
    drop(c);
    // Nothing listens off loopback for this VM: passt's only listeners are
    // the forwards, on 127.0.0.1.
    assert!(tcp_listeners(tcp).iter().all(|a| a == "0100007F"));

    wait_journal_line(&vm, "passt", "UNIX domain socket bound");

    // passt dies: the VM fails naming it, and nothing is left.
    kill_helper_and_expect_failure(&w, &vm, &unit, "passt", &vm);
    assert!(tcp_listeners(tcp).is_empty());
}

#[test]
fn bad_shares_and_networks_are_refused_at_add_with_their_position() {
    let w = World::new("badsh");
    let dir = w.dir.path().join("d");
    std::fs::create_dir_all(&dir).unwrap();
    let file = w.dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    let d = dir.display();
    // (what, the YAML, (key, value) replacements, the error said)
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "missing",
            "shares: [\"/nonexistent-maqet/x:src\"]\n".into(),
            vec![],
            "a share's directory must exist",
        ),
        (
            "file",
            format!("shares:\n  - {{host: {}, tag: src}}\n", file.display()),
            vec![],
            "is not a directory",
        ),
        (
            "clash",
            format!("shares:\n  - {d}:src\n  - {{host: {d}, tag: src}}\n"),
            vec![],
            "tag 'src' is already the tag",
        ),
        (
            "clash9p",
            format!(
                "shares: [\"{d}:src\"]\nstorage:\n  - {{name: src, type: virtfs, path: {d}}}\n"
            ),
            vec![],
            "also the mount_tag of the 9p share",
        ),
        (
            "badtag",
            format!("shares: [\"{d}:my-src\"]\n"),
            vec![],
            "no '-'",
        ),
        (
            "portclash",
            "network: passt\nports: [\"18080:80\", \"18080:81\"]\n".into(),
            vec![],
            "host port 18080 is already forwarded",
        ),
        (
            "lowport",
            "network: passt\nports: [\"80:80\"]\n".into(),
            vec![],
            "is below",
        ),
        (
            "network",
            "network: pasta\n".into(),
            vec![],
            "unknown network 'pasta'; expected 'user'",
        ),
        (
            "novfsd",
            format!("shares: [\"{d}:src\"]\n"),
            vec![("MAQET_VIRTIOFSD", "/nonexistent/virtiofsd")],
            "install the package virtiofsd",
        ),
        (
            "nopasst",
            "network: passt\n".into(),
            vec![("MAQET_PASST", "/nonexistent/passt")],
            "install the package passt",
        ),
    ];
    for (suffix, extra, env, want) in cases {
        let name = w.name(suffix);
        let f = w.vm_yaml(&name, &extra);
        let out = w
            .cmd()
            .args(["add", f.to_str().unwrap()])
            .envs(env)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{suffix}: {err}");
        assert!(err.contains(want), "{suffix}: {err}");
        // file:line:column of the offending key or item.
        let at = format!("{}:", f.display());
        let pos = err
            .find(&at)
            .unwrap_or_else(|| panic!("{suffix}: no position: {err}"));
        let rest = &err[pos + at.len()..];
        let mut nums = rest.split(':').take(2).map(|n| n.parse::<u32>());
        assert!(
            matches!((nums.next(), nums.next()), (Some(Ok(l)), Some(Ok(c))) if l > 0 && c > 0),
            "{suffix}: {err}"
        );
    }
    // Nothing was stored, so nothing can start.
    assert_eq!(w.ok(&["ls", "--json"]).trim(), "[]");
    // doctor names the helpers and where virtiofsd comes from.
    let doc = w.maqet(&["doctor"]);
    let text = String::from_utf8_lossy(&doc.stdout);
    assert!(
        text.contains("virtiofsd") && text.contains("passt") && text.contains("userns"),
        "{text}"
    );
}
