//! Faults of the definitions database, through the real `maqet` binary: a full disk, a
//! read-only data directory or file, a lock held by another process, and racing `add`s on
//! a database that does not exist yet. Every failed write must exit non-zero with a message
//! naming the database, and leave the previous state intact.
//!
//! The full-disk tests fill a 1 MiB tmpfs owned by the test user, which
//! `tests/session/user-session.sh up` mounts as root (tests/session/small-fs.sh); they take
//! a lock on it so only one of them fills it at a time.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::{SmallFs, World};
use serde_json::Value;

/// Exit codes documented in `maqet --help`.
const FAILURE: i32 = 1;
const CONFLICT: i32 = 5;
const TIMEOUT: i32 = 7;

fn run(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(common::bin_dir().join("maqet"))
        .env("MAQET_DATA_DIR", data_dir)
        .env_remove("MAQET_RUNNER")
        .args(args)
        .output()
        .expect("run maqet")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs maqet in `data_dir`, asserts exit `code`, returns stderr.
fn expect(data_dir: &Path, code: i32, args: &[&str]) -> String {
    let o = run(data_dir, args);
    let stderr = text(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(code),
        "maqet {args:?}: expected exit {code}\nstdout: {}\nstderr: {stderr}",
        text(&o.stdout)
    );
    stderr
}

fn ok(data_dir: &Path, args: &[&str]) -> String {
    let o = run(data_dir, args);
    assert!(
        o.status.success(),
        "maqet {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// Names of the VMs defined in `data_dir`.
fn names(data_dir: &Path) -> Vec<String> {
    let v: Value = serde_json::from_str(&ok(data_dir, &["ls", "--json"])).expect("ls JSON");
    v.as_array()
        .unwrap()
        .iter()
        .map(|vm| vm["name"].as_str().unwrap().to_owned())
        .collect()
}

fn info(data_dir: &Path, name: &str) -> Value {
    serde_json::from_str(&ok(data_dir, &["info", name, "--json"])).expect("info JSON")
}

fn assert_no_space(stderr: &str, data_dir: &Path) {
    assert!(
        stderr.contains("no space left on device"),
        "expected a no-space error: {stderr}"
    );
    assert!(
        stderr.contains(&data_dir.join("maqet.db").display().to_string()),
        "the error must name the database: {stderr}"
    );
}

// ---------------------------------------------------------------- the small filesystem

/// A data directory on the small filesystem holding VM `name` (64M), with the -shm and
/// -wal files a reader leaves behind: a write on the full disk then fails at its COMMIT,
/// not already while setting up shared memory (the path that used to report success).
fn defined_vm_on_small_fs(w: &World, small: &SmallFs, suffix: &str) -> String {
    let name = w.name(suffix);
    let yaml = w.vm_yaml(&name, "");
    ok(&small.data_dir(), &["add", yaml.to_str().unwrap()]);
    assert_eq!(names(&small.data_dir()), [name.as_str()]);
    name
}

// ---------------------------------------------------------------- full disk

#[test]
fn full_disk_add_on_fresh_database_fails_and_stores_nothing() {
    let w = World::new("sf-fresh");
    let small = SmallFs::take("fresh");
    let name = w.name("vm");
    let yaml = w.vm_yaml(&name, "");
    small.fill();
    let err = expect(&small.data_dir(), FAILURE, &["add", yaml.to_str().unwrap()]);
    assert_no_space(&err, &small.data_dir());
    // Readers work on the full disk, and see nothing.
    assert!(names(&small.data_dir()).is_empty());
    small.unfill();
    assert!(names(&small.data_dir()).is_empty());
    ok(&small.data_dir(), &["add", yaml.to_str().unwrap()]);
    assert_eq!(names(&small.data_dir()), [name.as_str()]);
    // The writer removed its -wal and -shm on close; a reader on the full disk cannot
    // create them and reads the file as immutable instead.
    for side in ["maqet.db-wal", "maqet.db-shm"] {
        let _ = fs::remove_file(small.data_dir().join(side));
    }
    small.fill();
    assert_eq!(names(&small.data_dir()), [name.as_str()]);
    assert_eq!(info(&small.data_dir(), &name)["config"]["memory"], "64M");
}

#[test]
fn full_disk_add_on_existing_database_keeps_previous_state() {
    let w = World::new("sf-exist");
    let small = SmallFs::take("exist");
    let old = defined_vm_on_small_fs(&w, &small, "old");
    let new = w.name("new");
    let yaml = w.vm_yaml(&new, "");
    small.fill();
    let err = expect(&small.data_dir(), FAILURE, &["add", yaml.to_str().unwrap()]);
    assert_no_space(&err, &small.data_dir());
    assert_eq!(names(&small.data_dir()), [old.as_str()]);
    small.unfill();
    assert_eq!(names(&small.data_dir()), [old]);
}

#[test]
fn full_disk_apply_keeps_the_old_config() {
    let w = World::new("sf-apply");
    let small = SmallFs::take("apply");
    let vm = defined_vm_on_small_fs(&w, &small, "vm");
    small.fill();
    let err = expect(
        &small.data_dir(),
        FAILURE,
        &["apply", &vm, "--memory", "128M"],
    );
    assert_no_space(&err, &small.data_dir());
    small.unfill();
    assert_eq!(info(&small.data_dir(), &vm)["config"]["memory"], "64M");
    // With space again, the same apply goes through.
    ok(&small.data_dir(), &["apply", &vm, "--memory", "128M"]);
    assert_eq!(info(&small.data_dir(), &vm)["config"]["memory"], "128M");
}

#[test]
fn full_disk_enable_keeps_the_flag() {
    let w = World::new("sf-enable");
    let small = SmallFs::take("enable");
    let vm = defined_vm_on_small_fs(&w, &small, "vm");
    small.fill();
    let err = expect(&small.data_dir(), FAILURE, &["enable", &vm]);
    assert_no_space(&err, &small.data_dir());
    small.unfill();
    assert_eq!(info(&small.data_dir(), &vm)["autostart"], false);
}

// ---------------------------------------------------------------- read-only

/// Restores write permission on drop, so World can clean up even after a failed assertion.
struct Writable(Vec<(PathBuf, u32)>);

impl Drop for Writable {
    fn drop(&mut self) {
        for (p, mode) in &self.0 {
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(*mode));
        }
    }
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Every reading command works; every writing command fails with a clear error.
fn readers_work_writers_fail(w: &World, vm: &str) {
    let dd = w.data_dir();
    assert_eq!(names(&dd), [vm]);
    ok(&dd, &["status", vm]);
    assert_eq!(info(&dd, vm)["config"]["memory"], "64M");
    assert!(ok(&dd, &["config", vm]).contains("memory: 64M"));
    ok(&dd, &["storage", "ls"]);
    ok(&dd, &["snapshot", "list", vm]);

    let other = w.vm_yaml(&w.name("other"), "");
    for args in [
        vec!["add", other.to_str().unwrap()],
        vec!["apply", vm, "--memory", "128M"],
        vec!["enable", vm],
        vec!["rm", vm],
    ] {
        let err = expect(&dd, FAILURE, &args);
        assert!(
            err.contains("cannot be written") && err.contains("maqet.db"),
            "maqet {args:?}: {err}"
        );
    }
    assert_eq!(names(&dd), [vm]);
    assert_eq!(info(&dd, vm)["config"]["memory"], "64M");
    assert_eq!(info(&dd, vm)["autostart"], false);
}

#[test]
fn read_only_data_directory_serves_readers_and_refuses_writers() {
    let w = World::new("sf-rodir");
    let vm = w.add_vm("vm", "");
    let dd = w.data_dir();
    // Read once, so the reader's -wal and -shm files exist too, as they usually do.
    names(&dd);
    let _restore = Writable(vec![(dd.clone(), 0o700)]);
    chmod(&dd, 0o555);
    readers_work_writers_fail(&w, &vm);
    chmod(&dd, 0o700);
    // Also without any -wal or -shm file (the last writer removed them).
    for side in ["maqet.db-wal", "maqet.db-shm"] {
        let _ = fs::remove_file(dd.join(side));
    }
    chmod(&dd, 0o555);
    readers_work_writers_fail(&w, &vm);
    chmod(&dd, 0o700);
    ok(&dd, &["enable", &vm]);
    assert_eq!(info(&dd, &vm)["autostart"], true);
}

#[test]
fn read_only_database_file_serves_readers_and_refuses_writers() {
    let w = World::new("sf-rofile");
    let vm = w.add_vm("vm", "");
    let db = w.data_dir().join("maqet.db");
    let _restore = Writable(vec![(db.clone(), 0o600)]);
    chmod(&db, 0o444);
    readers_work_writers_fail(&w, &vm);
    // The readers left nothing behind that breaks writing once the file is writable again.
    chmod(&db, 0o600);
    ok(&w.data_dir(), &["enable", &vm]);
    assert_eq!(info(&w.data_dir(), &vm)["autostart"], true);
}

// ---------------------------------------------------------------- lock held elsewhere

/// Another process holding the write lock (`BEGIN EXCLUSIVE`) until its stdin closes.
fn hold_lock(db: &Path) -> Child {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('held', flush=True)\n\
             sys.stdin.read()\n\
             c.execute('ROLLBACK')\n",
        ])
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held", "python3 did not take the lock");
    child
}

#[test]
fn lock_held_past_the_busy_timeout_is_a_clear_timeout() {
    let w = World::new("sf-lock");
    let vm = w.add_vm("vm", "");
    let dd = w.data_dir();
    let mut holder = hold_lock(&dd.join("maqet.db"));
    let other = w.vm_yaml(&w.name("other"), "");
    for args in [vec!["add", other.to_str().unwrap()], vec!["enable", &vm]] {
        let err = expect(&dd, TIMEOUT, &args);
        assert!(
            err.contains("busy") && err.contains("another process") && err.contains("maqet.db"),
            "maqet {args:?}: {err}"
        );
    }
    // Readers are not blocked by a writer (WAL).
    assert_eq!(names(&dd), [vm.as_str()]);
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    assert_eq!(names(&dd), [vm.as_str()]);
    assert_eq!(info(&dd, &vm)["autostart"], false);
    ok(&dd, &["enable", &vm]);
}

// ---------------------------------------------------------------- racing adds

fn spawn_adds(data_dir: &Path, files: &[PathBuf]) -> Vec<Output> {
    let children: Vec<Child> = files
        .iter()
        .map(|f| {
            Command::new(common::bin_dir().join("maqet"))
                .env("MAQET_DATA_DIR", data_dir)
                .arg("add")
                .arg(f)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn maqet add")
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

#[test]
fn concurrent_adds_of_one_name_on_a_fresh_database() {
    let w = World::new("sf-race1");
    let name = w.name("same");
    let yaml = w.vm_yaml(&name, "");
    for round in 0..10 {
        let dd = w.dir.path().join(format!("race-{round}"));
        let outs = spawn_adds(&dd, &vec![yaml.clone(); 10]);
        let codes: Vec<_> = outs.iter().map(|o| o.status.code()).collect();
        assert_eq!(
            codes.iter().filter(|c| **c == Some(0)).count(),
            1,
            "round {round}: exactly one add wins: {codes:?}"
        );
        for o in outs.iter().filter(|o| !o.status.success()) {
            let err = text(&o.stderr);
            assert_eq!(o.status.code(), Some(CONFLICT), "{err}");
            assert!(err.contains("already exists"), "{err}");
        }
        assert_eq!(names(&dd), [name.as_str()]);
    }
}

#[test]
fn concurrent_adds_of_different_names_on_a_fresh_database() {
    let w = World::new("sf-race8");
    let mut want: Vec<String> = (0..10).map(|i| w.name(&format!("n{i}"))).collect();
    want.sort();
    let files: Vec<PathBuf> = want.iter().map(|n| w.vm_yaml(n, "")).collect();
    // The race is in creating the database: several rounds, each on a fresh one.
    for round in 0..5 {
        let dd = w.dir.path().join(format!("race-{round}"));
        for o in spawn_adds(&dd, &files) {
            assert!(o.status.success(), "round {round}: {}", text(&o.stderr));
        }
        let mut got = names(&dd);
        got.sort();
        assert_eq!(got, want);
    }
}

// ---------------------------------------------------------------- lost updates

/// `apply` used to write the config's `autostart` (absent: false) over the flag that
/// `maqet enable` had set, silently undoing it.
#[test]
fn apply_keeps_the_autostart_flag_set_by_enable() {
    let w = World::new("sf-autostart");
    let vm = w.add_vm("vm", "");
    let dd = w.data_dir();
    ok(&dd, &["enable", &vm]);
    ok(&dd, &["apply", &vm, "--memory", "128M"]);
    let rec = info(&dd, &vm);
    assert_eq!(rec["autostart"], true, "{rec:#}");
    assert_eq!(rec["config"]["memory"], "128M");
    // A change of `autostart` itself still sets the flag.
    ok(&dd, &["apply", &vm, "--set", "autostart=false"]);
    assert_eq!(info(&dd, &vm)["autostart"], false);
}
