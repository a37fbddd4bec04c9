//! VM-to-VM networks, forwards changed while a VM runs, and automatic
//! forwards (issue 19), against the real user manager, vde_switch and QEMU
//! (TCG): two test guests on one network ping each other; the network's
//! switch unit comes with the first VM and goes after the last, survives
//! nothing of another user (its sockets are in this user's 0700 runtime
//! directory) and is replaced after it was killed; `ports add` makes a
//! host port answer and `ports rm` closes it; `ports: auto` follows a
//! guest listener; bad input is refused at `add` with its position.
//!
//! The test guest (tests/guest/init) gives the NIC whose MAC a kernel
//! parameter `maqet.net=MAC=ADDR/LEN` names that address, runs dropbear
//! on port 22 of its user-network NIC and qemu-ga; busybox `nc` listens.

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Generous: guests boot under TCG on two shared cores.
const BOOT: Duration = Duration::from_secs(240);
/// How long a forward change may take to show (the design: ~2 s).
const SETTLE: Duration = Duration::from_secs(60);

/// Adds a VM that boots the test guest with its agent; `extra` is more
/// top-level YAML, `append` more kernel parameters.
fn add_guest(w: &World, suffix: &str, extra: &str, append: &str) -> String {
    let name = w.name(suffix);
    let text = format!(
        "name: {name}\nbinary: {QEMU}\nmemory: 128M\nconsole: true\nshutdown_timeout: 20\n\
         guest_agent: true\n\
         arguments:\n  - accel: tcg\n  - display: none\n  - nodefaults\n\
         \x20 - kernel: {}\n  - initrd: {}\n  - append: \"console=ttyS0 quiet {append}\"\n{extra}",
        guest_file("MAQET_GUEST_KERNEL"),
        guest_file("MAQET_GUEST_INITRD"),
    );
    let f = w.write(&format!("{name}.yaml"), &text);
    w.ok(&["add", f.to_str().unwrap()]);
    name
}

/// A network name of this test run (at most 32 characters, no '.').
fn network(tag: &str) -> String {
    format!("{tag}{}", std::process::id())
}

fn net_dir() -> PathBuf {
    let rt = std::env::var("XDG_RUNTIME_DIR").expect("XDG_RUNTIME_DIR");
    Path::new(&rt).join("maqet/net")
}

fn switch(net: &str) -> String {
    format!("maqet-switch@{net}.service")
}

/// The switch's state as systemd says (`inactive` once it is unloaded).
fn switch_state(net: &str) -> String {
    unit_prop(&switch(net), "ActiveState")
}

fn wait_switch(net: &str, want: &[&str]) {
    wait_until(&format!("{} in {want:?}", switch(net)), SETTLE, || {
        want.contains(&switch_state(net).as_str())
    });
}

fn networks(w: &World) -> Vec<Value> {
    let out = w.ok(&["network", "ls", "--json"]);
    match serde_json::from_str(&out).unwrap() {
        Value::Array(a) => a,
        v => panic!("not a list: {v}"),
    }
}

/// `maqet network ls --json`'s entry of `net`: its state and `(vm, running)`.
fn network_entry(w: &World, net: &str) -> (String, Vec<(String, bool)>) {
    let nets = networks(w);
    let n = nets
        .iter()
        .find(|n| n["name"] == net)
        .unwrap_or_else(|| panic!("{net} not in {nets:?}"));
    let vms = n["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["vm"].as_str().unwrap().to_string(), m["running"] == true))
        .collect();
    (n["state"].as_str().unwrap().to_string(), vms)
}

fn uid() -> u32 {
    let o = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

fn local(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
}

/// Connects to 127.0.0.1:`port` and reads until `want` arrives; retried
/// until `within` (the guest's server may still be starting).
fn read_from(port: u16, want: &str, within: Duration) -> String {
    let end = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < end {
        if let Ok(mut s) = TcpStream::connect(local(port)) {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 256];
            while let Ok(n) = s.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                if String::from_utf8_lossy(&buf).contains(want) {
                    return String::from_utf8_lossy(&buf).into_owned();
                }
            }
            last = String::from_utf8_lossy(&buf).into_owned();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("127.0.0.1:{port} never sent {want:?} (last: {last:?})");
}

fn refused(port: u16) -> bool {
    matches!(
        TcpStream::connect(local(port)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// `maqet ports VM` lines.
fn port_lines(w: &World, vm: &str) -> Vec<String> {
    w.ok(&["ports", vm]).lines().map(str::to_string).collect()
}

/// The host port of the automatic forward to guest port `guest`, if any
/// (one to guest 22 is also the ssh port: `(ssh, auto)`).
fn auto_host_port(w: &World, vm: &str, guest: u16) -> Option<u16> {
    let ends = [
        format!(" -> {guest}/tcp  (auto)"),
        format!(" -> {guest}/tcp  (ssh, auto)"),
    ];
    port_lines(w, vm).iter().find_map(|l| {
        let head = ends.iter().find_map(|e| l.strip_suffix(e.as_str()))?;
        head.strip_prefix("127.0.0.1:")?.parse().ok()
    })
}

#[test]
fn two_vms_on_a_network_reach_each_other_and_its_switch_goes_with_the_last() {
    let w = World::new("net");
    let net = network("lab");
    let (ma, mb) = ("52:54:00:77:00:01", "52:54:00:77:00:02");
    let joins = |mac: &str| format!("networks: [{{name: {net}, mac: \"{mac}\"}}]\n");
    let a = add_guest(&w, "a", &joins(ma), &format!("maqet.net={ma}=10.77.0.1/24"));
    let b = add_guest(&w, "b", &joins(mb), &format!("maqet.net={mb}=10.77.0.2/24"));
    assert_eq!(switch_state(&net), "inactive", "no switch before a VM");
    // Defined, not running: listed with the network all the same.
    let (state, vms) = network_entry(&w, &net);
    assert_eq!(state, "inactive");
    assert_eq!(vms, vec![(a.clone(), false), (b.clone(), false)]);

    // Both first, at once: one of the two starts makes the switch, the
    // other joins it (the network's lock decides).
    w.ok(&["start", &a, &b]);
    assert_eq!(switch_state(&net), "active");
    let listed = Command::new("systemctl")
        .args(["--user", "list-units", "--no-legend", "maqet-*"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&switch(&net)),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    let (state, vms) = network_entry(&w, &net);
    assert_eq!(state, "active");
    assert_eq!(vms, vec![(a.clone(), true), (b.clone(), true)]);

    // Nobody else can join: every directory on the way to the switch's
    // sockets is this user's and closed to group and others, so another
    // uid cannot even reach the socket's name.
    let dir = net_dir().join(&net);
    for d in [
        net_dir().parent().unwrap().parent().unwrap(),
        &net_dir(),
        &dir,
    ] {
        let m = std::fs::metadata(d).unwrap();
        assert_eq!(m.uid(), uid(), "{}", d.display());
        assert_eq!(mode(d) & 0o077, 0, "{} is {:o}", d.display(), mode(d));
    }
    assert_eq!(mode(&dir.join("ctl")) & 0o077, 0);

    // QEMU gets a NIC on the switch's directory with the configured MAC.
    let info = w.ok(&["info", &a]);
    assert!(
        info.contains(&format!("-netdev vde,id=maqet-lan0,sock={}", dir.display()))
            && info.contains(&format!("netdev=maqet-lan0,mac={ma}")),
        "{info}"
    );

    for vm in [&a, &b] {
        w.ok(&[
            "wait",
            "--for",
            "agent",
            vm,
            "--timeout",
            &BOOT.as_secs().to_string(),
        ]);
    }
    // a reaches b over the network (ARP first, so a few tries).
    let end = Instant::now() + SETTLE;
    loop {
        let o = w.maqet(&[
            "guest",
            &a,
            "exec",
            "--",
            "ping",
            "-c",
            "2",
            "-W",
            "3",
            "10.77.0.2",
        ]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        if o.status.success() {
            assert!(out.contains("2 packets received"), "{out}");
            break;
        }
        assert!(
            Instant::now() < end,
            "a never reached b: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    w.ok(&[
        "guest",
        &b,
        "exec",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "5",
        "10.77.0.1",
    ]);

    // The switch stays while a VM is on it, and goes after the last.
    w.ok(&["stop", &a]);
    assert_eq!(switch_state(&net), "active");
    let (_, vms) = network_entry(&w, &net);
    assert_eq!(vms, vec![(b.clone(), true), (a.clone(), false)]);
    w.ok(&["stop", &b]);
    wait_switch(&net, &["inactive"]);
    wait_until("the switch's directory gone", SETTLE, || !dir.exists());
    assert_eq!(network_entry(&w, &net).0, "inactive");
}

#[test]
fn a_killed_switch_leaves_its_vms_and_the_next_start_replaces_it() {
    let w = World::new("netkill");
    let net = network("kill");
    let joins = format!("networks: [{net}]\n");
    let a = w.add_vm("a", &joins);
    let b = w.add_vm("b", &joins);
    w.ok(&["start", &a]);
    let pid: u64 = unit_prop(&switch(&net), "MainPID").parse().unwrap();
    assert!(pid > 0);
    send_signal(pid, "-9");
    wait_switch(&net, &["failed"]);
    // The VM runs on (cut off from the network until it restarts).
    assert_eq!(w.state(&a), "running");
    assert_eq!(network_entry(&w, &net).0, "failed");
    // Its sockets stayed (a killed vde_switch cannot remove them, nor bind
    // over them); another VM's start clears them and starts the switch.
    assert!(net_dir().join(&net).join("ctl").exists());
    w.ok(&["start", &b]);
    assert_eq!(switch_state(&net), "active");
    assert_eq!(w.state(&b), "running");
    w.ok(&["stop", &a, &b]);
    wait_switch(&net, &["inactive"]);
    // And from nothing again.
    w.ok(&["start", &a]);
    assert_eq!(switch_state(&net), "active");
    w.ok(&["stop", &a]);
    wait_switch(&net, &["inactive"]);
}

#[test]
fn ports_change_while_the_vm_runs_and_auto_follows_the_guest() {
    let w = World::new("ports");
    let vm = add_guest(&w, "p", "ports: [auto]\n", "");
    w.ok(&["start", &vm]);
    w.ok(&[
        "wait",
        "--for",
        "agent",
        &vm,
        "--timeout",
        &BOOT.as_secs().to_string(),
    ]);

    // Automatic: the guest's ssh server (port 22, below 1024) is forwarded
    // from a host port of 1024 up (8022, or the next free one).
    wait_until(
        "an automatic forward of the guest's port 22",
        SETTLE,
        || auto_host_port(&w, &vm, 22).is_some(),
    );
    let ssh = auto_host_port(&w, &vm, 22).unwrap();
    assert!(ssh >= 1024, "{ssh}");
    assert!(read_from(ssh, "SSH-2.0-", SETTLE).starts_with("SSH-2.0-"));

    // A listener that starts now is forwarded from its own port, reaches
    // the guest, and goes when it closes (nc serves one connection).
    let g = free_port();
    let serve = format!("echo hello-from-{g} | nc -l -p {g} >/dev/null 2>&1 &");
    w.ok(&["guest", &vm, "exec", "--", "sh", "-c", &serve]);
    wait_until("the automatic forward of the new listener", SETTLE, || {
        auto_host_port(&w, &vm, g) == Some(g)
    });
    let status: Value = serde_json::from_str(&w.ok(&["status", &vm, "--json"])).unwrap();
    let origins: Vec<(u64, String)> = status["ports"]["forwards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["guest_port"].as_u64().unwrap(),
                f["origin"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        origins.contains(&(u64::from(g), "auto".into())),
        "{origins:?}"
    );
    assert!(read_from(g, &format!("hello-from-{g}"), SETTLE).contains("hello"));
    wait_until("the closed listener's forward removed", SETTLE, || {
        auto_host_port(&w, &vm, g).is_none()
    });
    wait_until("its host port closed", SETTLE, || refused(g));

    // A listener on a port the host has taken: the next free one, said so.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let q = held.local_addr().unwrap().port();
    w.ok(&[
        "guest",
        &vm,
        "exec",
        "--",
        "sh",
        "-c",
        &format!("nc -l -p {q} >/dev/null 2>&1 &"),
    ]);
    wait_until(
        "a forward of the guest's port whose host port is taken",
        SETTLE,
        || auto_host_port(&w, &vm, q).is_some(),
    );
    let moved = auto_host_port(&w, &vm, q).unwrap();
    assert_ne!(moved, q);
    let reason = format!("host port {q} is taken, so 127.0.0.1:{moved} forwards to it");
    wait_until("the journal saying why", SETTLE, || {
        let o = Command::new("journalctl")
            .args([
                "--user",
                &format!("MAQET_VM={vm}"),
                "-o",
                "cat",
                "--no-pager",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).contains(&reason)
    });
    w.ok(&["guest", &vm, "exec", "--", "sh", "-c", "kill $(pidof nc)"]);
    wait_until("that forward removed", SETTLE, || {
        auto_host_port(&w, &vm, q).is_none()
    });
    drop(held);

    // By hand: a host port answers once added, and not once removed.
    let h = free_port();
    let added = w.ok(&["ports", "add", &vm, &format!("{h}:22")]);
    assert!(
        added.contains(&format!("now forwards 127.0.0.1:{h} -> 22/tcp")),
        "{added}"
    );
    assert!(read_from(h, "SSH-2.0-", SETTLE).starts_with("SSH-2.0-"));
    // The forward by hand covers guest port 22: the automatic one goes,
    // and this one becomes the ssh port.
    wait_until("the forward by hand is the ssh port", SETTLE, || {
        port_lines(&w, &vm).contains(&format!("127.0.0.1:{h} -> 22/tcp  (ssh, added)"))
    });
    // The status line names it as the ssh port.
    let status = unit_prop(&format!("maqet-vm@{vm}.service"), "StatusText");
    assert!(status.contains(&format!("ssh 127.0.0.1:{h}")), "{status}");
    let inspect = w.ok(&["inspect", &vm, "--json"]);
    assert!(
        inspect.contains(&format!("\"host_port\": {h}")),
        "{inspect}"
    );
    assert_eq!(auto_host_port(&w, &vm, 22), None);
    let udp = free_port();
    w.ok(&["ports", "add", "--udp", &vm, &format!("{udp}:53")]);
    assert!(port_lines(&w, &vm).contains(&format!("127.0.0.1:{udp} -> 53/udp  (added)")));

    // Refused, and nothing changes: a privileged or non-loopback host
    // side, a clash, a port something else holds, a forward that is not
    // there, a spec that is none.
    let before = port_lines(&w, &vm);
    assert!(w
        .fails(2, &["ports", "add", &vm, "80:22"])
        .contains("below"));
    assert!(w
        .fails(
            2,
            &["ports", "add", &vm, &format!("0.0.0.0:{}:22", free_port())]
        )
        .contains("not a loopback address"));
    assert!(w
        .fails(5, &["ports", "add", &vm, &format!("{h}:23")])
        .contains("already forwarded"));
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    assert!(w
        .fails(5, &["ports", "add", &vm, &format!("{taken}:22")])
        .contains("already in use"));
    assert!(w
        .fails(3, &["ports", "rm", &vm, &free_port().to_string()])
        .contains("forwards nothing from"));
    assert!(w
        .fails(2, &["ports", "add", &vm, "22"])
        .contains("[ADDR:]HOST:GUEST"));
    assert!(w
        .fails(2, &["ports", "add", "--udp", &vm, "1:2/tcp"])
        .contains("--udp"));
    assert_eq!(port_lines(&w, &vm), before);
    drop(held);

    w.ok(&["ports", "rm", &vm, &h.to_string()]);
    wait_until("the removed port closed", SETTLE, || refused(h));
    assert!(!port_lines(&w, &vm)
        .iter()
        .any(|l| l.contains(&format!(":{h} "))));
    w.ok(&["ports", "rm", &vm, &format!("{udp}/udp")]);

    // --save: in the definition too (`maqet config` shows it), and out.
    let s = free_port();
    w.ok(&["ports", "add", "--save", &vm, &format!("{s}:22")]);
    assert!(w.ok(&["config", &vm]).contains(&format!("{s}:22/tcp")));
    assert!(read_from(s, "SSH-2.0-", SETTLE).starts_with("SSH-2.0-"));
    w.ok(&["ports", "rm", "--save", &vm, &format!("{s}:22")]);
    assert!(!w.ok(&["config", &vm]).contains(&format!("{s}:22")));

    // Stopped: only the definition changes, and only when asked.
    w.ok(&["stop", &vm]);
    assert!(w
        .fails(5, &["ports", "add", &vm, &format!("{s}:22")])
        .contains("add --save"));
    let saved = w.ok(&["ports", "add", "--save", &vm, &format!("{s}:22")]);
    assert!(saved.contains("the next start will forward it"), "{saved}");
    assert!(w.ok(&["config", &vm]).contains(&format!("{s}:22/tcp")));
}

#[test]
fn bad_network_and_port_keys_are_refused_at_add_with_their_position() {
    let w = World::new("netbad");
    let cases = [
        (
            "slash",
            "networks: [\"lab/x\"]\n",
            "invalid network name 'lab/x'",
        ),
        (
            "dot",
            "networks: [\"lab.pid\"]\n",
            "invalid network name 'lab.pid'",
        ),
        (
            "twice",
            "networks: [lab, lab]\n",
            "network 'lab' is already listed",
        ),
        ("auto", "ports: auto\n", "set `guest_agent: true`"),
        (
            "any",
            "ports: [\"0.0.0.0:18080:80\"]\n",
            "not a loopback address",
        ),
        ("low", "ports: [\"80:80\"]\n", "is below"),
    ];
    for (suffix, extra, want) in cases {
        let name = w.name(suffix);
        let f = w.vm_yaml(&name, extra);
        let err = w.fails(4, &["add", f.to_str().unwrap()]);
        assert!(err.contains(want), "{extra}: {err}");
        // file:line:column of the offending value.
        assert!(err.contains(&format!("{}:", f.display())), "{extra}: {err}");
    }
    // Without vde_switch, a network cannot be had: refused before anything.
    let name = w.name("noswitch");
    let f = w.vm_yaml(&name, "networks: [lab]\n");
    let o = w
        .cmd()
        .env("MAQET_VDE_SWITCH", "/nonexistent/vde_switch")
        .args(["add", f.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("vde_switch ('/nonexistent/vde_switch') is not installed"),
        "{err}"
    );
    // Nothing was defined.
    let ls: Value = serde_json::from_str(&w.ok(&["ls", "--json"])).unwrap();
    assert_eq!(ls, Value::Array(vec![]), "{ls}");
}
