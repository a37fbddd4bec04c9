//! What the guest sees: a real Linux guest (tests/guest/build.sh: Debian
//! cloud kernel + busybox initramfs, booted under TCG in ~3 s) driven
//! through maqet — serial console, keyboard, screen, hot-plug, pause,
//! events, ACPI power-down and reboot handling.
//!
//! The guest prints `maqet-test-guest: ready` when it is up, runs a shell
//! on ttyS0, prints every line typed on its keyboard as `kbd: LINE`, and
//! powers off on the ACPI power button unless booted with `maqet.noacpi`.

mod common;

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(60);
const READY: &str = "maqet-test-guest: ready";

/// Adds a VM that boots the test guest with a serial console; `extra` is
/// more top-level YAML, `append` more kernel parameters.
fn add_guest(w: &World, suffix: &str, extra: &str, append: &str) -> String {
    let name = w.name(suffix);
    let text = format!(
        "name: {name}\nbinary: {QEMU}\nmemory: 128M\nconsole: true\nshutdown_timeout: 20\n\
         arguments:\n  - accel: tcg\n  - display: none\n  - nodefaults\n\
         \x20 - kernel: {}\n  - initrd: {}\n  - append: \"console=ttyS0 quiet {append}\"\n{extra}",
        guest_file("MAQET_GUEST_KERNEL"),
        guest_file("MAQET_GUEST_INITRD"),
    );
    let f = w.write(&format!("{name}.yaml"), &text);
    w.ok(&["add", f.to_str().unwrap()]);
    name
}

/// A maqet process whose stdout and stderr are collected as they come.
struct Spawned {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
}

fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

impl Spawned {
    fn new(w: &World, args: &[&str]) -> Spawned {
        let mut child = w
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn maqet");
        let out = collect(child.stdout.take().unwrap());
        let err = collect(child.stderr.take().unwrap());
        Spawned {
            stdin: child.stdin.take(),
            child,
            out,
            err,
        }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    /// Waits until stdout contains `needle`; returns all of stdout.
    fn wait_out(&self, needle: &str, within: Duration) -> String {
        let end = Instant::now() + within;
        loop {
            let s = self.stdout();
            if s.contains(needle) {
                return s;
            }
            assert!(
                Instant::now() < end,
                "no {needle:?} within {within:?}; stdout so far:\n{s}\nstderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_err(&self, needle: &str, within: Duration) {
        wait_until(&format!("{needle:?} on stderr"), within, || {
            self.stderr().contains(needle)
        });
    }

    fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the process to end by itself; returns its exit code.
    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let end = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(
                Instant::now() < end,
                "maqet did not exit; stderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Distinct markers per command, so a command's output is found even in a
/// replayed console buffer.
static MARK: AtomicU32 = AtomicU32::new(1);

/// `maqet console VM --no-tty --replay` used as a shell: runs commands and
/// returns their output.
struct Console(Spawned);

impl Console {
    fn attach(w: &World, vm: &str) -> Console {
        Console(Spawned::new(w, &["console", vm, "--no-tty", "--replay"]))
    }

    fn wait_ready(&self) {
        self.0.wait_out(READY, BOOT);
    }

    /// Runs `cmd` in the guest's shell. The end marker is computed by the
    /// shell (`$((…))`), so the echoed command line never matches it.
    fn run(&mut self, cmd: &str) -> String {
        let n = 100_000 + std::process::id() % 1000 * 1000 + MARK.fetch_add(1, Ordering::Relaxed);
        self.0.send(&format!(
            "echo \"<$(({n}+1))>\"; {cmd}; echo \"</$(({n}+1))>\"\n"
        ));
        let (start, end) = (format!("<{}>", n + 1), format!("</{}>", n + 1));
        let out = self.0.wait_out(&end, Duration::from_secs(30));
        let after = &out[out.rfind(&start).expect("start marker") + start.len()..];
        after[..after.find(&end).unwrap()].replace('\r', "")
    }
}

fn unit_result(vm: &str) -> (String, String) {
    let unit = format!("maqet-vm@{vm}.service");
    (unit_prop(&unit, "ActiveState"), unit_prop(&unit, "Result"))
}

/// A VM whose unit ended on its own must end up inactive, not failed.
fn assert_ended_cleanly(w: &World, vm: &str) {
    w.wait_state(vm, "defined", Duration::from_secs(30));
    let (active, result) = unit_result(vm);
    assert!(
        (active == "inactive" || active.is_empty()) && (result == "success" || result.is_empty()),
        "{vm}: ActiveState={active} Result={result}"
    );
    assert!(qemu_pids(vm).is_empty());
}

fn random_word() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    nanos % 90_000 + 10_000
}

#[test]
fn console_shows_the_boot_and_runs_commands() {
    let w = World::new("gcons");
    let vm = add_guest(&w, "c", "", "");
    let info: Value = serde_json::from_str(&w.ok(&["info", &vm, "--json"])).unwrap();
    let argv: Vec<&str> = info["qemu_argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        argv.ends_with(&[
            "-chardev",
            "socket,id=maqet-console,fd=5",
            "-serial",
            "chardev:maqet-console"
        ]),
        "{argv:?}"
    );

    w.ok(&["start", &vm]);
    let mut a = Console::attach(&w, &vm);
    a.wait_ready();
    let word = random_word();
    let out = a.run(&format!("echo hello-{word}"));
    assert_eq!(out.trim(), format!("hello-{word}"));

    // A second viewer sees the same live output; input from either counts.
    let mut b = Console::attach(&w, &vm);
    b.wait_ready();
    let out = b.run("uname -s; cat /proc/cmdline");
    assert!(
        out.contains("Linux") && out.contains("console=ttyS0"),
        "{out}"
    );
    a.0.wait_out("console=ttyS0 quiet", Duration::from_secs(10));

    // Other commands work while viewers are attached.
    let st: Value = serde_json::from_str(&w.ok(&["qmp", "run", &vm, "query-status"])).unwrap();
    assert_eq!(st["status"], "running");

    // --dump: the buffered output, then exit.
    let dump = w.ok(&["console", &vm, "--dump"]);
    assert!(
        dump.contains(READY) && dump.contains(&format!("hello-{word}")),
        "{dump}"
    );

    // The guest powers itself off: the unit ends cleanly and viewers are told.
    a.0.send("poweroff -f\n");
    assert_ended_cleanly(&w, &vm);
    assert_eq!(a.0.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(a.0.stderr().contains("the VM stopped"), "{}", a.0.stderr());
    assert_eq!(b.0.wait_exit(Duration::from_secs(10)), Some(0));
    let err = w.fails(5, &["console", &vm]);
    assert!(err.contains("not running"), "{err}");
}

#[test]
fn console_and_screendump_need_their_devices() {
    let w = World::new("gnodev");
    // The harness's plain VM: no console, no display, no guest.
    let vm = w.add_vm("n", "");
    w.ok(&["start", &vm]);
    let err = w.fails(1, &["console", &vm, "--no-tty"]);
    assert!(
        err.contains("no serial console") && err.contains("console: true"),
        "{err}"
    );
    let err = w.fails(6, &["qmp", "screendump", &vm, "/tmp/none.png"]);
    assert!(err.contains("no display"), "{err}");
    assert!(!std::path::Path::new("/tmp/none.png").exists());
    w.ok(&["stop", &vm, "--force"]);
}

#[test]
fn keyboard_and_screen_reach_the_guest() {
    let w = World::new("gkbd");
    let vm = add_guest(&w, "k", "vga: std\n", "");
    // Local checks fail before anything is sent (the VM is not even running).
    let err = w.fails(2, &["qmp", "keys", &vm, "ctrl", "shfit"]);
    assert!(err.contains("did you mean 'shift'"), "{err}");
    let err = w.fails(2, &["qmp", "type", &vm, "naïve"]);
    assert!(
        err.contains("'ï'") && err.contains("position 2") && err.contains("nothing was sent"),
        "{err}"
    );

    w.ok(&["start", &vm]);
    let con = Console::attach(&w, &vm);
    con.wait_ready();

    // Shifted symbols, tab and repeated letters arrive intact, in order.
    let text = "Hello, World! ~aa bb\t{x}|<y>? \"q\" 100% #1";
    w.ok(&["qmp", "type", &vm, &format!("{text}\n")]);
    con.0
        .wait_out(&format!("kbd: {text}\r"), Duration::from_secs(30));
    // One combination: shift+a is a capital A.
    w.ok(&["qmp", "keys", &vm, "shift", "a"]);
    w.ok(&["qmp", "keys", &vm, "Enter", "--hold-time", "50"]);
    con.0.wait_out("kbd: A\r", Duration::from_secs(30));

    // Screendumps: PNG by extension, PPM otherwise; relative to the caller's cwd.
    let o = w
        .cmd()
        .args(["qmp", "screendump", &vm, "shot.png"])
        .current_dir(w.dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = std::fs::read(w.dir.path().join("shot.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(width >= 320 && height >= 200, "{width}x{height}");
    let ppm_path = w.dir.path().join("shot.ppm");
    w.ok(&["qmp", "screendump", &vm, ppm_path.to_str().unwrap()]);
    let ppm = std::fs::read(&ppm_path).unwrap();
    let header = format!("P6\n{width} {height}\n255\n");
    assert!(ppm.starts_with(header.as_bytes()), "{:?}", &ppm[..16]);
    assert_eq!(
        ppm.len(),
        header.len() + (width * height * 3) as usize,
        "PPM size"
    );

    // The guest handles ACPI: stop powers it off cleanly, no quit needed.
    let out = w.ok(&["stop", &vm]);
    assert!(out.contains("powered off"), "{out}");
    assert_ended_cleanly(&w, &vm);
}

#[test]
fn hotplug_pause_reset_and_events() {
    let w = World::new("gdev");
    let vm = add_guest(&w, "d", "", "");
    w.ok(&["start", &vm]);
    let mut con = Console::attach(&w, &vm);
    con.wait_ready();
    let events = Spawned::new(&w, &["events", &vm]);
    let events_json = Spawned::new(&w, &["events", &vm, "--json"]);
    events.wait_err("following", Duration::from_secs(10));
    events_json.wait_err("following", Duration::from_secs(10));

    // The guest's own view of its PCI bus (0x1af4 is virtio's vendor id).
    let pci = "for d in /sys/bus/pci/devices/*; do echo $(cat $d/vendor):$(cat $d/device); done";
    let before = con.run(pci);
    assert!(!before.contains("0x1af4"), "{before}");
    w.ok(&["qmp", "device-add", &vm, "virtio-rng-pci", "--id", "rng0"]);
    let end = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let now = con.run(pci);
        if now.contains("0x1af4:") || Instant::now() > end {
            break now;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        after.contains("0x1af4:"),
        "the guest never saw the device:\n{after}"
    );
    // device-del returns once the guest released it (DEVICE_DELETED).
    w.ok(&["qmp", "device-del", &vm, "rng0", "--timeout", "30"]);
    let gone = con.run(pci);
    assert!(!gone.contains("0x1af4"), "{gone}");
    let err = w.fails(6, &["qmp", "device-del", &vm, "rng0"]);
    assert!(err.contains("not found"), "{err}");

    // Pause and resume show in status and as events.
    w.ok(&["qmp", "pause", &vm]);
    w.wait_state(&vm, "paused", Duration::from_secs(10));
    let err = w.fails(5, &["qmp", "type", &vm, "x"]);
    assert!(err.contains("paused"), "{err}");
    w.ok(&["qmp", "resume", &vm]);
    w.wait_state(&vm, "running", Duration::from_secs(10));
    events.wait_out(" RESUME", Duration::from_secs(10));
    let text = events.stdout();
    let stop_at = text.find(" STOP").expect("STOP event");
    assert!(stop_at < text.find(" RESUME").unwrap(), "{text}");
    assert!(text.contains("DEVICE_DELETED"), "{text}");

    // reset: the guest boots again (a second banner).
    w.ok(&["reset", &vm]);
    events.wait_out(" RESET", Duration::from_secs(10));
    wait_until("a second boot", BOOT, || {
        con.0.stdout().matches(READY).count() >= 2
    });

    let lines: Vec<Value> = events_json
        .wait_out("\"RESET\"", Duration::from_secs(10))
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let names: Vec<&str> = lines.iter().map(|e| e["event"].as_str().unwrap()).collect();
    for want in ["DEVICE_DELETED", "STOP", "RESUME", "RESET"] {
        assert!(names.contains(&want), "{want} missing: {names:?}");
    }
    assert!(lines.iter().all(|e| e["timestamp"]["seconds"].is_u64()));

    w.ok(&["stop", &vm, "--force"]);
    // The event streams end with the VM.
    let mut events = events;
    assert_eq!(events.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn guest_reboot_with_on_reboot_stop_ends_the_unit() {
    let w = World::new("gnoreb");
    let vm = add_guest(&w, "r", "on_reboot: stop\n", "");
    let info = w.ok(&["info", &vm]);
    assert!(info.contains("-no-reboot"), "{info}");
    w.ok(&["start", &vm]);
    let mut con = Console::attach(&w, &vm);
    con.wait_ready();
    con.0.send("reboot -f\n");
    assert_ended_cleanly(&w, &vm);
}

#[test]
fn reboot_restarts_the_guest_and_an_acpi_deaf_guest_is_quit() {
    let w = World::new("greb");
    let vm = add_guest(&w, "n", "", "maqet.noacpi");
    w.ok(&["start", &vm]);
    let con = Console::attach(&w, &vm);
    con.wait_ready();
    // Ctrl-Alt-Delete: the kernel restarts, the VM runs on.
    let out = w.ok(&["reboot", &vm]);
    assert!(out.contains("guest rebooted"), "{out}");
    wait_until("a second boot", BOOT, || {
        con.0.stdout().matches(READY).count() >= 2
    });
    assert_eq!(w.state(&vm), "running");

    // No acpid: the power button is ignored and stop falls back to quit.
    let started = Instant::now();
    let out = w.ok(&["stop", &vm, "--timeout", "1"]);
    assert!(out.contains("quit"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_ended_cleanly(&w, &vm);
}

#[test]
fn reboot_command_with_on_reboot_stop_reports_the_end() {
    let w = World::new("grebstop");
    let vm = add_guest(&w, "s", "on_reboot: stop\n", "");
    w.ok(&["start", &vm]);
    Console::attach(&w, &vm).wait_ready();
    let out = w.ok(&["reboot", &vm]);
    assert!(out.contains("on_reboot: stop"), "{out}");
    assert_ended_cleanly(&w, &vm);
    let err = w.fails(5, &["reboot", &vm]);
    assert!(err.contains("not running"), "{err}");
}
