//! The command surface over several VMs at once, against the real user
//! manager: `start A B C`, `stop A B C`, `start --no-wait`, `rm --all`,
//! `add --empty`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn start_and_stop_several_vms_at_once() {
    let w = World::new("many");
    let vms: Vec<String> = ["a", "b", "c"].iter().map(|s| w.add_vm(s, "")).collect();
    let names: Vec<&str> = vms.iter().map(String::as_str).collect();

    let mut args = vec!["start"];
    args.extend(&names);
    let out = w.ok(&args);
    for vm in &vms {
        assert!(out.contains(&format!("{vm}: started")), "{out}");
        assert_eq!(w.state(vm), "running");
    }
    assert_eq!(out.lines().count(), 3, "{out}");

    let mut args = vec!["stop"];
    args.extend(&names);
    let out = w.ok(&args);
    assert_eq!(out.lines().count(), 3, "{out}");
    for vm in &vms {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{vm}: "))),
            "{out}"
        );
        w.wait_state(vm, "defined", Duration::from_secs(30));
    }
}

#[test]
fn an_unknown_name_among_several_fails_alone_with_the_worst_code() {
    let w = World::new("mixed");
    let a = w.add_vm("a", "");
    let b = w.add_vm("b", "");
    let ghost = w.name("ghost");

    // The known VMs start; the unknown one's line says so; exit 3 (no such
    // VM) is worse than success.
    let err = w.fails(3, &["start", &a, &ghost, &b]);
    assert!(
        err.contains(&format!("{ghost}: no VM named '{ghost}'")),
        "{err}"
    );
    assert!(err.contains("1 of 3 VMs did not start"), "{err}");
    assert_eq!(w.state(&a), "running");
    assert_eq!(w.state(&b), "running");

    // Starting again: two conflicts (already running) and one unknown
    // name; no such VM (3) is more severe than a conflict (5).
    let err = w.fails(3, &["start", &a, &b, &ghost]);
    assert!(
        err.contains(&format!("{a}: VM '{a}' is already running")),
        "{err}"
    );
    assert!(err.contains("3 of 3 VMs did not start"), "{err}");

    let err = w.fails(3, &["stop", &ghost, &a, &b]);
    assert!(err.contains(&format!("{ghost}: no VM named")), "{err}");
    w.wait_state(&a, "defined", Duration::from_secs(30));
    w.wait_state(&b, "defined", Duration::from_secs(30));

    // Stopping stopped VMs: each line says so, exit 0 as for one name.
    let out = w.ok(&["stop", &a, &b]);
    assert!(out.contains(&format!("{a}: not running")), "{out}");
    assert!(out.contains(&format!("{b}: not running")), "{out}");
}

#[test]
fn start_no_wait_returns_once_queued_and_the_vms_come_up() {
    let w = World::new("nowait");
    let a = w.add_vm("a", "");
    let b = w.add_vm("b", "");
    let out = w.ok(&["start", "--no-wait", &a]);
    assert!(
        out.contains(&format!("{a}: start queued"))
            && out.contains(&format!("maqet status {a}"))
            && out.contains(&format!("journalctl --user -u maqet-vm@{a}.service")),
        "{out}"
    );
    w.wait_state(&a, "running", Duration::from_secs(60));

    // Several names: one line each; the running one is a conflict, as
    // without --no-wait.
    let err = w.fails(5, &["start", "--no-wait", &a, &b]);
    assert!(
        err.contains(&format!("{a}: VM '{a}' is already running")),
        "{err}"
    );
    assert!(err.contains("1 of 2 VMs did not start"), "{err}");
    w.wait_state(&b, "running", Duration::from_secs(60));
    w.ok(&["stop", "--force", &a, &b]);
}

#[test]
fn a_vm_failing_after_its_start_was_queued_shows_failed_in_status() {
    let w = World::new("nowaitbad");
    let vm = w.add_vm("b", "args:\n  - -no-such-option\n");
    // Nothing local is wrong: the start is queued and the command succeeds.
    let out = w.ok(&["start", "--no-wait", &vm]);
    assert!(out.contains(&format!("{vm}: start queued")), "{out}");
    let st = w.wait_state(&vm, "failed", Duration::from_secs(60));
    assert!(st["failure"].is_string(), "{st:#}");
    // QEMU's own complaint, from the journal.
    let human = w.ok(&["status", &vm]);
    assert!(human.contains("failed"), "{human}");
    assert!(
        st["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("-no-such-option")),
        "{st:#}"
    );
}

#[test]
fn a_local_refusal_comes_before_the_start_is_queued() {
    let w = World::new("nowaitref");
    let ghost = w.name("ghost");
    let err = w.fails(3, &["start", "--no-wait", &ghost]);
    assert!(err.contains(&format!("no VM named '{ghost}'")), "{err}");
    // A disk the VM names but nobody made (and maqet will not make).
    let vm = w.add_vm(
        "d",
        "storage:\n  - {name: d, type: qcow2, file: /nonexistent/dir/d.qcow2}\n",
    );
    let err = w.fails(1, &["start", "--no-wait", &vm]);
    assert!(err.contains("/nonexistent"), "{err}");
    assert_eq!(w.state(&vm), "defined");
    assert!(
        unit_prop(&format!("maqet-vm@{vm}.service"), "LoadState") != "loaded",
        "no unit was made"
    );
}

/// The unit is not loaded any more (removed, its failed state reset).
fn unit_gone(vm: &str) -> bool {
    unit_prop(&format!("maqet-vm@{vm}.service"), "LoadState") == "not-found"
}

fn defined(w: &World) -> Vec<String> {
    let ls: serde_json::Value = serde_json::from_str(&w.ok(&["ls", "--json"])).unwrap();
    let mut names: Vec<String> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn rm_all_needs_yes_without_a_terminal_and_removes_every_vm_with_it() {
    let w = World::new("rmall");
    let a = w.add_vm("a", "");
    let b = w.add_vm("b", "");
    let c = w.add_vm("c", "");
    w.ok(&["start", &a]);

    // No terminal (stdin is not one for `output()`), no --yes: refused.
    let err = w.fails(2, &["rm", "--all"]);
    assert!(
        err.contains("stdin is not a terminal") && err.contains("--yes"),
        "{err}"
    );
    assert_eq!(defined(&w), [a.clone(), b.clone(), c.clone()]);
    // --all with a name is a usage error too.
    w.fails(2, &["rm", "--all", &a]);

    // Like `rm NAME`: the running one needs --force; the others go.
    let o = w.maqet(&["rm", "--all", "--yes"]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(5), "{out}\n{err}");
    assert!(err.contains(&format!("{a}: VM '{a}' is running")), "{err}");
    assert!(out.contains(&format!("{b}: removed")), "{out}");
    assert!(out.contains(&format!("{c}: removed")), "{out}");
    assert!(err.contains("1 of 3 VMs were not removed"), "{err}");
    assert_eq!(defined(&w), [a.as_str()]);
    assert_eq!(w.state(&a), "running");

    let out = w.ok(&["rm", "--all", "--yes", "--force"]);
    assert_eq!(out.trim(), format!("{a}: removed"));
    assert!(defined(&w).is_empty());
    wait_until("the unit to be gone", Duration::from_secs(30), || {
        unit_gone(&a)
    });
    // Nothing left: nothing to ask about.
    w.ok(&["rm", "--all"]);
}

/// `maqet rm --all` on a pseudo-terminal (util-linux `script`), typing
/// `answer`; returns the exit code and what the terminal showed.
fn rm_all_on_a_tty(w: &World, answer: &str) -> (Option<i32>, String) {
    let cmd = format!("{} rm --all", bin_dir().join("maqet").display());
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("MAQET_DATA_DIR", w.data_dir())
        .env_remove("MAQET_RUNNER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    // Typed once the question is on the screen, as a person would: input
    // that reaches script(1) before the command runs can be lost.
    let mut out = child.stdout.take().unwrap();
    let mut shown = Vec::new();
    let mut buf = [0u8; 4096];
    let mut stdin = child.stdin.take();
    loop {
        let n = std::io::Read::read(&mut out, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        shown.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&shown).contains("[y/N]") {
            if let Some(mut i) = stdin.take() {
                i.write_all(answer.as_bytes()).unwrap();
            }
        }
    }
    drop(stdin);
    let status = child.wait().unwrap();
    (status.code(), String::from_utf8_lossy(&shown).into_owned())
}

#[test]
fn rm_all_on_a_terminal_lists_the_vms_and_asks() {
    let w = World::new("rmtty");
    let a = w.add_vm("a", "");
    let b = w.add_vm("b", "");

    let (code, shown) = rm_all_on_a_tty(&w, "n\n");
    assert_eq!(code, Some(1), "{shown}");
    assert!(
        shown.contains(&format!("\n  {a}")) && shown.contains(&format!("\n  {b}")),
        "{shown}"
    );
    assert!(shown.contains("Remove them? [y/N]"), "{shown}");
    assert!(shown.contains("cancelled: no VM was removed"), "{shown}");
    assert_eq!(defined(&w), [a.clone(), b.clone()]);

    let (code, shown) = rm_all_on_a_tty(&w, "y\n");
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains(&format!("{a}: removed")), "{shown}");
    assert!(shown.contains(&format!("{b}: removed")), "{shown}");
    assert!(defined(&w).is_empty());
}

#[test]
fn an_empty_definition_starts_with_qemu_defaults() {
    let w = World::new("empty");
    let vm = w.name("e");
    // A file and --empty together are a usage error.
    let f = w.vm_yaml(&vm, "");
    w.fails(2, &["add", "--empty", &vm, f.to_str().unwrap()]);
    w.fails(2, &["add", "--empty", "bad/name"]);

    assert_eq!(w.ok(&["add", "--empty", &vm]).trim(), vm);
    let cfg = w.ok(&["config", &vm]);
    assert!(cfg.contains(&format!("name: {vm}")), "{cfg}");
    let info = w.ok(&["info", &vm]);
    assert!(info.contains("qemu-system-x86_64 -name"), "{info}");
    w.fails(5, &["add", "--empty", &vm]);

    w.ok(&["start", &vm]);
    assert_eq!(w.state(&vm), "running");
    let qemu = qemu_pids(&vm);
    assert_eq!(qemu.len(), 1);
    // No display chosen: not QEMU's default (VNC on TCP without a
    // password), but the private VNC socket, which greets.
    let sock = runtime_dir(&vm).join("vnc.sock");
    assert_eq!(mode(&sock), 0o600);
    let mut vnc = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    vnc.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut greeting = [0u8; 12];
    std::io::Read::read_exact(&mut vnc, &mut greeting).unwrap();
    assert_eq!(&greeting, b"RFB 003.008\n");
    drop(vnc);
    assert_no_tcp(&qemu);
    let uri = w.ok(&["display", &vm, "--print"]);
    assert_eq!(uri.trim(), format!("vnc+unix://{}", sock.display()));
    // No guest to power down: killed at once.
    w.ok(&["stop", "--force", &vm]);
    w.wait_state(&vm, "defined", Duration::from_secs(30));
}

#[test]
fn concurrent_applies_each_keep_their_change() {
    let w = World::new("apply8");
    let vm = w.add_vm("c", "");
    // Each apply reads, merges and writes the whole definition: without
    // the VM's lock, one would write over another's change.
    let sets = [
        ("memory", "96M"),
        ("cpu", "2"),
        ("shutdown_timeout", "7"),
        ("vga", "std"),
        ("on_reboot", "stop"),
        ("enable_kvm", "true"),
    ];
    let children: Vec<_> = sets
        .iter()
        .map(|(k, v)| {
            w.cmd()
                .args(["apply", &vm, "--set", &format!("{k}={v}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn maqet")
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{o:?}");
    }
    let cfg = w.ok(&["config", &vm]);
    for (k, v) in sets {
        assert!(cfg.contains(&format!("{k}: {v}")), "{k} lost:\n{cfg}");
    }
}
