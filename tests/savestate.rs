//! Saving and resuming a VM's running state (issue 20), through the real
//! binaries, user manager and QEMU: `maqet suspend` and `start`, a stop by
//! systemd under `on_stop: save`, `autostart` after it, a full disk during
//! a save, every refusal while a VM is saved, states that must not be
//! trusted, and kills during a save.
//!
//! The test guest (tests/guest) booted with `maqet.count` prints
//! `count=N up=UPTIME t=UNIXTIME` on its console every second: a resumed
//! guest goes on from the saved count with its uptime, and its clock is
//! set by the guest agent.

mod common;

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(90);
const CONFLICT: i32 = 5;
const USAGE: i32 = 2;
const FAILURE: i32 = 1;

/// The test guest, counting, with a serial console and the guest agent.
fn guest_yaml(name: &str, extra: &str) -> String {
    format!(
        "name: {name}\nbinary: {QEMU}\nmemory: 128M\nconsole: true\nguest_agent: true\nshutdown_timeout: 20\n\
         arguments:\n  - accel: tcg\n  - display: none\n  - nodefaults\n\
         \x20 - kernel: {}\n  - initrd: {}\n  - append: \"console=ttyS0 quiet maqet.count\"\n{extra}",
        guest_file("MAQET_GUEST_KERNEL"),
        guest_file("MAQET_GUEST_INITRD"),
    )
}

fn add_guest(w: &World, suffix: &str, extra: &str) -> String {
    let name = w.name(suffix);
    let f = w.write(&format!("{name}.yaml"), &guest_yaml(&name, extra));
    w.ok(&["add", f.to_str().unwrap()]);
    name
}

/// One `count=` line of the console.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Count {
    n: u64,
    up: f64,
    t: u64,
}

fn counts(console: &str) -> Vec<Count> {
    console
        .lines()
        .filter_map(|l| {
            let l = &l[l.find("count=")?..];
            let mut n = None;
            let mut up = None;
            let mut t = None;
            for part in l.split_whitespace() {
                match part.split_once('=') {
                    Some(("count", v)) => n = v.parse().ok(),
                    Some(("up", v)) => up = v.parse().ok(),
                    Some(("t", v)) => t = v.trim().parse().ok(),
                    _ => {}
                }
            }
            Some(Count {
                n: n?,
                up: up?,
                t: t?,
            })
        })
        .collect()
}

fn console(w: &World, vm: &str) -> String {
    w.ok(&["console", vm, "--dump"])
}

/// Waits until the guest has printed a count of at least `n`; all counts.
fn wait_count(w: &World, vm: &str, n: u64) -> Vec<Count> {
    let end = Instant::now() + BOOT;
    loop {
        let c = counts(&console(w, vm));
        if c.last().is_some_and(|c| c.n >= n) {
            return c;
        }
        assert!(
            Instant::now() < end,
            "{vm} never counted to {n}; console:\n{}",
            console(w, vm)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn state_file(w: &World, vm: &str) -> PathBuf {
    w.data_dir().join("disks").join(vm).join("state.sav")
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Files in `dir` whose names end in `.tmp` (temporary files of saves).
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the VM's unit is neither active nor stopping.
fn wait_down(vm: &str) {
    let unit = format!("maqet-vm@{vm}.service");
    wait_until(&format!("{unit} down"), Duration::from_secs(60), || {
        !matches!(
            unit_prop(&unit, "ActiveState").as_str(),
            "active" | "activating" | "deactivating" | "reloading"
        )
    });
}

#[test]
fn suspend_and_start_continue_the_count_uptime_and_clock() {
    let w = World::new("ssresume");
    let vm = add_guest(&w, "g", "");
    w.ok(&["start", &vm]);
    let before = wait_count(&w, &vm, 3);
    let last = *before.last().unwrap();

    let out = w.ok(&["suspend", &vm, "--json"]);
    let s = json(&out);
    let file = state_file(&w, &vm);
    assert_eq!(s["name"], vm.as_str());
    assert_eq!(s["path"], file.to_str().unwrap(), "{s:#}");
    assert_eq!(s["run_state"], "running");
    let size = std::fs::metadata(&file).unwrap().len();
    assert_eq!(s["size"], size);
    assert!(size > 1 << 20, "a 128 MiB guest's state is {size} bytes");
    assert_eq!(mode(&file), 0o600);
    assert!(qemu_pids(&vm).is_empty(), "QEMU ended after the save");
    assert!(temporaries(file.parent().unwrap()).is_empty());

    // Shown as saved, with time and size, in status, ls and inspect.
    let st = w.status(&vm);
    assert_eq!(st["state"], "saved", "{st:#}");
    assert_eq!(st["saved"]["size"], size);
    assert_eq!(st["saved"]["reason"], "suspend");
    assert!(st["saved"]["problem"].is_null());
    assert!(st["saved"]["saved_at"].as_u64().unwrap() >= now() - 60);
    let ls = json(&w.ok(&["ls", "--json"]));
    let row = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == vm.as_str())
        .unwrap();
    assert_eq!(row["state"], "saved");
    assert_eq!(row["saved"]["size"], size);
    let saved_only = json(&w.ok(&["ls", "--json", "--state", "saved"]));
    assert_eq!(saved_only.as_array().unwrap().len(), 1);
    let human = w.ok(&["ls"]);
    assert!(human.contains("saved") && human.contains(&vm), "{human}");
    let inspect = json(&w.ok(&["inspect", &vm, "--json"]));
    assert_eq!(inspect["state"], "saved");
    assert_eq!(inspect["saved"]["path"], file.to_str().unwrap());

    // Time passes while it is saved; the guest's clock stands still.
    std::thread::sleep(Duration::from_secs(8));
    let o = w.maqet(&["start", &vm]);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "start: {stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");
    let after = wait_count(&w, &vm, last.n + 3);
    let first = after[0];
    assert!(
        first.n > last.n,
        "the resumed guest counts on from {} (not from 1): {after:?}",
        last.n
    );
    assert!(
        first.up >= last.up,
        "uptime did not reset: {first:?} after {last:?}"
    );
    // Set by the guest agent once it ran: a line printed since is at most
    // a second or two old (without the agent it would be 8 s behind).
    let newest = *after.last().unwrap();
    let checked = now();
    assert!(
        newest.t + 4 >= checked,
        "the guest agent set the clock: the guest's time {} is behind the host's {checked}",
        newest.t
    );
    // Resumed: the state is gone, and the VM runs as any other.
    assert!(!file.exists(), "the state file is deleted after the resume");
    let st = w.status(&vm);
    assert_eq!(st["state"], "running");
    assert!(st["saved"].is_null());
    let q = json(&w.ok(&["qmp", "run", &vm, "query-status"]));
    assert_eq!(q["status"], "running");
    w.ok(&["stop", &vm, "--timeout", "5"]);
}

#[test]
fn a_stop_by_systemd_saves_with_on_stop_save_and_autostart_resumes_it() {
    let w = World::new("ssstop");
    let saving = add_guest(&w, "save", "on_stop: save\n");
    let plain = w.add_vm("plain", "");
    w.ok(&["start", &saving]);
    w.ok(&["start", &plain]);
    let last = *wait_count(&w, &saving, 3).last().unwrap();
    // The stop timeout leaves room for writing the memory.
    let unit = format!("maqet-vm@{saving}.service");
    let timeout = unit_prop(&unit, "TimeoutStopUSec");
    assert!(
        timeout.ends_with('s') && !timeout.ends_with("ms"),
        "TimeoutStopUSec={timeout}"
    );

    for vm in [&saving, &plain] {
        let st = Command::new("systemctl")
            .args(["--user", "stop", &format!("maqet-vm@{vm}.service")])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let st = w.status(&saving);
    assert_eq!(st["state"], "saved", "{st:#}");
    assert_eq!(st["saved"]["reason"], "stop");
    assert!(state_file(&w, &saving).is_file());
    // Without on_stop: save, powered off as before: no state.
    assert_eq!(w.state(&plain), "defined");
    assert!(w.status(&plain)["saved"].is_null());
    assert!(!state_file(&w, &plain).exists());
    let journal = journal_json(&unit);
    assert!(
        journal.iter().any(|r| r["MESSAGE"]
            .as_str()
            .is_some_and(|m| m.contains("saving the VM's state (on_stop: save)"))),
        "the journal says why it saved"
    );

    // The next login's `maqet autostart` resumes it (and only it: the
    // other VM is not marked for autostart).
    let out = json(&w.ok(&["autostart", "--json"]));
    let names: Vec<&str> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [saving.as_str()], "{out:#}");
    assert_eq!(out[0]["result"], "started");
    let after = wait_count(&w, &saving, last.n + 1);
    assert!(after[0].n > last.n, "{after:?} after {last:?}");
    assert_eq!(w.state(&plain), "defined");
    // A stop through maqet powers off, on_stop or not.
    let o = json(&w.ok(&["stop", &saving, "--json", "--timeout", "10"]));
    assert_eq!(o["was_running"], true);
    assert_eq!(w.state(&saving), "defined");
    assert!(!state_file(&w, &saving).exists());
}

/// Exclusive use of the 1 MiB tmpfs (tests/session/small-fs.sh; the
/// state_faults tests take the same lock).
struct SmallFs {
    work: PathBuf,
    _lock: File,
}

impl SmallFs {
    fn take(tag: &str) -> SmallFs {
        let root = PathBuf::from(
            std::env::var_os("MAQET_SMALL_FS").unwrap_or("/var/tmp/maqet-it-smallfs".into()),
        );
        let lock = File::create(root.join(".lock")).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `tests/session/user-session.sh up` as root",
                root.display()
            )
        });
        // SAFETY: a valid open descriptor; flock blocks until the other test releases it.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        let work = root.join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir(&work).unwrap();
        SmallFs { work, _lock: lock }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

#[test]
fn a_full_disk_keeps_the_vm_running_and_names_the_directory() {
    let fs = SmallFs::take("savestate");
    let data = fs.work.join("data");
    let w = World::new("ssfull");
    let vm = w.name("g");
    let yaml = w.write("g.yaml", &guest_yaml(&vm, ""));
    let maqet = |args: &[&str]| {
        Command::new(bin_dir().join("maqet"))
            .env("MAQET_DATA_DIR", &data)
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let o = maqet(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(&["add", yaml.to_str().unwrap()]);
    ok(&["start", &vm]);
    let _stop = Defer(|| {
        let _ = maqet(&["rm", "--force", "--delete-storage", &vm]);
    });
    // Booted: its RAM holds far more than the 1 MiB file system takes.
    let end = Instant::now() + BOOT;
    while counts(&ok(&["console", &vm, "--dump"])).is_empty() {
        assert!(Instant::now() < end, "the guest never counted");
        std::thread::sleep(Duration::from_millis(200));
    }
    let dir = data.join("disks").join(&vm);
    let o = maqet(&["suspend", &vm]);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(FAILURE), "{stderr}");
    assert!(stderr.contains("no space left"), "{stderr}");
    assert!(
        stderr.contains(&dir.display().to_string()),
        "the error names the directory: {stderr}"
    );
    assert!(stderr.contains("runs on"), "{stderr}");
    // Still running, the guest too; nothing half-written stays.
    let st: Value = serde_json::from_str(&ok(&["status", &vm, "--json"])).unwrap();
    assert_eq!(st["state"], "running", "{st:#}");
    assert!(st["saved"].is_null());
    let q: Value = serde_json::from_str(&ok(&["qmp", "run", &vm, "query-status"])).unwrap();
    assert_eq!(q["status"], "running");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let before = counts(&ok(&["console", &vm, "--dump"]));
    let end = Instant::now() + Duration::from_secs(30);
    while counts(&ok(&["console", &vm, "--dump"])).len() <= before.len() {
        assert!(Instant::now() < end, "the guest stopped counting");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs its closure when dropped (clean-up that must happen on a panic).
struct Defer<F: FnMut()>(F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

#[test]
fn while_saved_what_would_change_its_disks_or_hardware_is_refused() {
    let w = World::new("ssrefuse");
    let vm = w.add_vm("r", "storage:\n  - {name: d, size: 16M}\n");
    w.ok(&["storage", "create", &vm]);
    w.ok(&["snapshot", "create", &vm, "d", "before"]);
    w.ok(&["start", &vm]);
    w.ok(&["suspend", &vm]);
    assert_eq!(w.state(&vm), "saved");

    let refused = |args: &[&str]| {
        let e = w.fails(CONFLICT, args);
        assert!(
            e.contains("saved running state")
                && e.contains(&format!("maqet start --fresh {vm}"))
                && e.contains(&format!("maqet suspend --discard {vm}")),
            "{args:?}: {e}"
        );
    };
    refused(&["snapshot", "create", &vm, "d", "s1"]);
    refused(&["snapshot", "load", &vm, "d", "before"]);
    refused(&["snapshot", "delete", &vm, "d", "before"]);
    refused(&["storage", "attach", &vm, "name=e,size=8M"]);
    refused(&["apply", &vm, "--set", "memory=96M"]);
    refused(&["clone", &vm, &w.name("copy"), "--full"]);
    // A change that leaves the machine as it is goes through.
    w.ok(&["apply", &vm, "--set", "shutdown_timeout=7"]);
    w.ok(&["apply", &vm, "--set", "on_stop=save"]);
    // Saving it again: it is saved already.
    let e = w.fails(CONFLICT, &["suspend", &vm]);
    assert!(
        e.contains("saved already") && e.contains(&format!("maqet start {vm}")),
        "{e}"
    );
    // Discarding asks; without a terminal only --yes says yes.
    let e = w.fails(USAGE, &["suspend", "--discard", &vm]);
    assert!(e.contains("--yes"), "{e}");
    let e = w.fails(USAGE, &["start", "--fresh", &vm]);
    assert!(e.contains("--yes"), "{e}");
    assert_eq!(w.state(&vm), "saved", "nothing was discarded");
    // --fresh: boots afresh, the state is gone.
    let file = state_file(&w, &vm);
    let o = w.maqet(&["start", "--fresh", "--yes", &vm]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("discarded the saved state"), "{err}");
    assert!(!file.exists());
    assert_eq!(w.state(&vm), "running");
    // A running VM has no state to discard.
    let e = w.fails(CONFLICT, &["suspend", "--discard", "--yes", &vm]);
    assert!(e.contains("is running"), "{e}");

    // suspend --discard of a saved VM.
    w.ok(&["suspend", &vm]);
    assert!(file.exists());
    let d = json(&w.ok(&["suspend", "--discard", "--yes", &vm, "--json"]));
    assert_eq!(d["discarded"], true, "{d:#}");
    assert_eq!(d["deleted"][0], file.to_str().unwrap());
    assert!(!file.exists());
    assert_eq!(w.state(&vm), "defined");
    let d = json(&w.ok(&["suspend", "--discard", "--yes", &vm, "--json"]));
    assert_eq!(d["discarded"], false);
    // Not running, not saved: nothing to suspend.
    let e = w.fails(CONFLICT, &["suspend", &vm]);
    assert!(e.contains("not running"), "{e}");

    // rm --delete-storage deletes the state file with the disks.
    w.ok(&["start", &vm]);
    w.ok(&["suspend", &vm]);
    let o = w.maqet(&["rm", "--delete-storage", &vm]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!("deleted {}", file.display())),
        "{err}"
    );
    assert!(!file.exists() && !file.parent().unwrap().exists());
}

#[test]
fn a_state_file_that_is_not_the_recorded_one_is_never_loaded() {
    let w = World::new("sstrust");
    let vm = w.add_vm("t", "");
    let file = state_file(&w, &vm);
    let start_fresh = |why: &str| {
        let o = w.maqet(&["start", &vm]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        assert!(err.contains("boots afresh"), "{err}");
        assert!(err.contains(why), "{why}: {err}");
        assert!(!err.contains("resuming"), "{err}");
        // Booted, not loaded: QEMU did not get -incoming.
        let journal = journal_json(&format!("maqet-vm@{vm}.service"));
        let last_argv = journal
            .iter()
            .filter_map(|r| r["QEMU_ARGV"].as_str())
            .next_back()
            .unwrap_or_default()
            .to_string();
        assert!(!last_argv.contains("-incoming"), "{last_argv}");
        w.ok(&["stop", &vm, "--force"]);
    };
    // Cut short after the save (a torn copy under the right name).
    w.ok(&["start", &vm]);
    w.ok(&["suspend", &vm]);
    let size = std::fs::metadata(&file).unwrap().len();
    File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(size / 2)
        .unwrap();
    assert_ne!(w.state(&vm), "saved", "the view already distrusts it");
    assert!(!w.status(&vm)["saved"]["problem"].is_null());
    start_fresh("bytes where the save wrote");
    assert!(!file.exists(), "the untrusted file is deleted");

    // Killed between the record and the rename: the file is still under
    // its temporary name.
    w.ok(&["start", &vm]);
    w.ok(&["suspend", &vm]);
    let temp = file.with_file_name(".state.sav.maqet-4242.tmp");
    std::fs::rename(&file, &temp).unwrap();
    start_fresh("is gone");
    assert!(!temp.exists(), "the interrupted save's file is deleted");

    // Replaced by another file.
    w.ok(&["start", &vm]);
    w.ok(&["suspend", &vm]);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, bytes).unwrap();
    start_fresh("no longer the file maqet saved");
    // Not maqet's: kept.
    assert!(file.exists());
}

/// Kills the runner or QEMU at a random point of a save; afterwards a
/// start resumes a complete state or boots afresh — never a torn one —
/// and the disk passes `qemu-img check`. A few rounds here; `make
/// crash-save` runs many (tests/crash-save-run.sh).
#[test]
fn kills_during_a_save_never_leave_a_torn_state_a_start_trusts() {
    let w = World::new("sskill");
    let vm = add_guest(
        &w,
        "k",
        "storage:\n  - {name: d, size: 64M, interface: virtio}\n",
    );
    // A save's length, measured once.
    w.ok(&["start", &vm]);
    wait_count(&w, &vm, 2);
    let t0 = Instant::now();
    w.ok(&["suspend", &vm]);
    let save = t0.elapsed();
    w.ok(&["start", &vm]);
    let mut seed = u64::from(std::process::id());
    let mut outcomes = Vec::new();
    for round in 0..4 {
        let last = wait_count(&w, &vm, 2).last().unwrap().n;
        let st = w.status(&vm);
        let target = match round % 2 {
            0 => st["runner_pid"].as_u64().unwrap(),
            _ => st["qemu_pid"].as_u64().unwrap(),
        };
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let at = save.mul_f64(1.2 * ((seed >> 33) % 1000) as f64 / 1000.0);
        let mut suspend = w
            .cmd()
            .args(["suspend", &vm])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        // The save may be over and the process gone: that is a round too.
        // SAFETY: kill(2) with a PID and a signal number.
        unsafe { libc::kill(target as i32, libc::SIGKILL) };
        let _ = suspend.wait();
        wait_down(&vm);
        let saved = w.status(&vm)["state"] == "saved";
        let o = w.maqet(&["start", &vm]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            o.status.success(),
            "round {round}: start after the kill: {err}"
        );
        let after = wait_count(&w, &vm, 1);
        if saved {
            assert!(err.contains("resuming"), "{err}");
            assert!(after[0].n > last, "round {round}: {after:?} after {last}");
            outcomes.push("resumed");
        } else {
            assert!(!err.contains("resuming"), "{err}");
            assert_eq!(after[0].n, 1, "round {round}: booted afresh: {after:?}");
            outcomes.push("fresh");
        }
        let dir = state_file(&w, &vm).parent().unwrap().to_path_buf();
        assert!(temporaries(&dir).is_empty(), "{:?}", temporaries(&dir));
    }
    w.ok(&["stop", &vm, "--force"]);
    let disk = w.data_dir().join("disks").join(&vm).join("d.qcow2");
    let check = Command::new("qemu-img")
        .args(["check", "-q", disk.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(
        matches!(check.code(), Some(0) | Some(3)),
        "qemu-img check: {check:?} (3 is leaked clusters only)"
    );
    eprintln!("kill rounds: {outcomes:?}");
}
