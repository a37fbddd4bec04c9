//! Data safety, third pass (issue 16), against the real user manager, QEMU
//! and qemu-img: a disk in use — however it is named, by whoever — is never
//! deleted; TPM state and cloud-init seeds go through the same deletion walk
//! as disks; snapshots never write an image that must only be read, and a
//! live load restores the snapshot the user named; a killed `clone --full`
//! or `storage create` leaves nothing a later command trusts, and `rm
//! --delete-storage` deletes nothing while the database is busy; a clone
//! holds its source's lock and never shares a writable disk; `storage
//! verify` checks the backing file an overlay really has; a failed live
//! save says so once; `storage attach` names every VM that uses a file.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn qcow2(path: &Path) {
    qemu_img(&["create", "-q", "-f", "qcow2", path_str(path), "8M"]);
}

fn sha256(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(std::fs::read(p).unwrap());
    format!("{:x}", h.finalize())
}

/// `rm VM --delete-storage`, which must succeed; returns stderr.
fn rm_delete_storage(w: &World, vm: &str) -> String {
    w.fails(0, &["rm", vm, "--delete-storage"])
}

// ------------------------------------------------------------ 1. "in use"

#[test]
fn a_stopped_vms_relative_paths_resolve_in_qemus_working_directory_and_keep_the_disk() {
    let w = World::new("ds-rel");
    let a = w.add_vm(
        "a",
        "storage:\n  - {name: hdd, size: 8M}\n  - {name: data, size: 8M}\n",
    );
    w.ok(&["storage", "create", &a]);
    let hdd = disks_of(&w, &a).join("hdd.qcow2");
    let data = disks_of(&w, &a).join("data.qcow2");
    // Relative to QEMU's working directory, the data directory: in `args`
    // (never resolved at load) and nested in an `arguments` mapping.
    let b = w.add_vm(
        "b",
        &format!("args: ['-drive', 'file=../data/disks/{a}/hdd.qcow2,if=virtio,format=qcow2']\n"),
    );
    let c = w.add_vm(
        "c",
        &format!("  - drive: {{file: disks/{a}/data.qcow2, if: virtio, format: qcow2}}\n"),
    );
    // QEMU finds them there: the unit's working directory is the data
    // directory, whatever the user manager's default.
    for vm in [&b, &c] {
        w.ok(&["start", vm]);
        w.ok(&["stop", vm, "--force"]);
    }
    // `storage verify` checks them, where QEMU will look.
    let checks: Vec<Value> =
        serde_json::from_str(&w.ok(&["storage", "verify", &b, "--json"])).unwrap();
    assert!(
        checks.iter().any(|c| c["path"]
            == path_str(&w.data_dir().join(format!("disks/{a}/hdd.qcow2")))
            && c["status"] == "ok"),
        "{checks:#?}"
    );
    let said = rm_delete_storage(&w, &a);
    assert!(
        said.contains(&format!("kept {} (VM '{b}' uses it)", hdd.display())),
        "{said}"
    );
    assert!(
        said.contains(&format!("kept {} (VM '{c}' uses it)", data.display())),
        "{said}"
    );
    assert!(hdd.exists() && data.exists(), "{said}");
}

#[test]
fn a_disk_named_in_a_json_filename_is_kept_while_that_vm_runs() {
    let w = World::new("ds-json");
    let a = w.add_vm("a", "storage:\n  - {name: hdd, size: 8M}\n");
    w.ok(&["storage", "create", &a]);
    let hdd = disks_of(&w, &a).join("hdd.qcow2");
    // QEMU's json: pseudo-protocol, its commas doubled inside -drive.
    let b = w.add_vm(
        "b",
        &format!(
            "args: ['-drive', 'file=json:{{\"driver\":\"qcow2\",,\"file\":{{\"driver\":\"file\",,\"filename\":\"{}\"}}}},if=virtio']\n",
            hdd.display()
        ),
    );
    w.ok(&["start", &b]);
    let said = rm_delete_storage(&w, &a);
    assert!(
        said.contains(&format!("kept {} (", hdd.display())) && said.contains(&format!("'{b}'")),
        "{said}"
    );
    assert!(hdd.exists());
    assert_eq!(w.state(&b), "running");
    w.ok(&["stop", &b, "--force"]);
}

#[test]
fn a_hot_plugged_disk_is_kept_whoever_plugged_it() {
    let w = World::new("ds-plug");
    let other = World::new("ds-plug2");
    let a = w.add_vm(
        "a",
        "storage:\n  - {name: hdd, size: 8M}\n  - {name: data, size: 8M}\n",
    );
    w.ok(&["storage", "create", &a]);
    let hdd = disks_of(&w, &a).join("hdd.qcow2");
    let data = disks_of(&w, &a).join("data.qcow2");
    // Through QMP in this data directory: not on any command line.
    let b = w.add_vm("b", "");
    w.ok(&["start", &b]);
    w.ok(&[
        "qmp",
        "run",
        &b,
        "blockdev-add",
        &format!(
            r#"{{"node-name":"plugged","driver":"qcow2","file":{{"driver":"file","filename":"{}"}}}}"#,
            hdd.display()
        ),
    ]);
    // With `storage attach --live` from another data directory.
    let c = other.add_vm("c", "");
    other.ok(&["start", &c]);
    other.ok(&["storage", "attach", &c, path_str(&data), "--live"]);
    let said = rm_delete_storage(&w, &a);
    assert!(
        said.contains(&format!("kept {} (running VM '{b}'", hdd.display())),
        "{said}"
    );
    assert!(
        said.contains(&format!("kept {} (running VM '{c}'", data.display())),
        "{said}"
    );
    assert!(hdd.exists() && data.exists());
    w.ok(&["stop", &b, "--force"]);
    other.ok(&["stop", &c, "--force"]);
}

#[test]
fn a_qemu_started_by_hand_keeps_its_disk() {
    let w = World::new("ds-hand");
    let a = w.add_vm("a", "storage:\n  - {name: hdd, size: 8M}\n");
    w.ok(&["storage", "create", &a]);
    let hdd = disks_of(&w, &a).join("hdd.qcow2");
    let pidfile = w.dir.path().join("qemu.pid");
    let o = Command::new(QEMU)
        .args([
            "-accel",
            "tcg",
            "-m",
            "64",
            "-display",
            "none",
            "-nodefaults",
        ])
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=qcow2", hdd.display()))
        .args(["-daemonize", "-pidfile", path_str(&pidfile)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let pid: u64 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let said = w.maqet(&["rm", &a, "--delete-storage"]);
    // SAFETY: signalling the QEMU this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let said = String::from_utf8_lossy(&said.stderr).into_owned();
    assert!(
        said.contains(&format!("kept {} (process {pid} (", hdd.display())),
        "{said}"
    );
    assert!(hdd.exists());
}

#[test]
fn storage_verify_checks_args_disks_where_qemu_finds_them() {
    let w = World::new("ds-vargs");
    let vm = w.add_vm(
        "v",
        "args: ['-drive', 'file=torn.qcow2,if=virtio,format=qcow2']\n",
    );
    // A qcow2 cut short, in QEMU's working directory.
    let torn = w.data_dir().join("torn.qcow2");
    qcow2(&torn);
    let f = std::fs::OpenOptions::new().write(true).open(&torn).unwrap();
    f.set_len(100).unwrap();
    let err = w.fails(1, &["storage", "verify", &vm]);
    assert!(err.contains(&format!("{vm}/args (corrupt)")), "{err}");
}

// ------------------------------------------------------------ 2. one deletion walk

/// A stopped VM with TPM state: its `tpm/` directory made by maqet at
/// start, holding swtpm's state file.
fn tpm_vm(w: &World) -> (String, PathBuf) {
    let vm = w.add_vm("t", "  - machine: q35\ntpm: true\n");
    w.ok(&["start", &vm]);
    w.ok(&["stop", &vm, "--force"]);
    let tpm = disks_of(w, &vm).join("tpm");
    assert!(tpm.is_dir());
    // swtpm writes it when the TPM is first initialised; written here too
    // in case this swtpm had not yet.
    let permall = tpm.join("tpm2-00.permall");
    if !permall.exists() {
        std::fs::write(&permall, b"tpm state").unwrap();
    }
    (vm, tpm)
}

#[test]
fn tpm_state_is_deleted_only_through_the_recorded_directory() {
    let w = World::new("ds-tpm");
    // The VM's directory moved away and replaced by a symlink to it.
    let (vm, tpm) = tpm_vm(&w);
    let vm_dir = disks_of(&w, &vm);
    let moved = w.dir.path().join("moved");
    std::fs::rename(&vm_dir, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &vm_dir).unwrap();
    let said = rm_delete_storage(&w, &vm);
    assert!(moved.join("tpm/tpm2-00.permall").exists(), "{said}");
    assert!(!said.contains("deleted"), "{said}");
    assert!(said.contains(&format!("kept {}", tpm.display())), "{said}");

    // The tpm directory replaced by a copy of itself.
    let w = World::new("ds-tpm2");
    let (vm, tpm) = tpm_vm(&w);
    let copy = disks_of(&w, &vm).join("tpm.copy");
    let o = Command::new("cp")
        .args(["-a", path_str(&tpm), path_str(&copy)])
        .output()
        .unwrap();
    assert!(o.status.success());
    std::fs::remove_dir_all(&tpm).unwrap();
    std::fs::rename(&copy, &tpm).unwrap();
    let said = rm_delete_storage(&w, &vm);
    assert!(tpm.join("tpm2-00.permall").exists(), "{said}");
    assert!(
        said.contains(&format!(
            "kept {} (the TPM state in it stays: it is no longer the directory maqet created",
            tpm.display()
        )),
        "{said}"
    );
    assert!(!said.contains("(TPM state)"), "{said}");

    // Untouched: swtpm's files go, then the directory, then the VM's.
    let w = World::new("ds-tpm3");
    let (vm, tpm) = tpm_vm(&w);
    let said = rm_delete_storage(&w, &vm);
    assert!(
        said.contains(&format!(
            "deleted {} (TPM state)",
            tpm.join("tpm2-00.permall").display()
        )),
        "{said}"
    );
    assert!(!disks_of(&w, &vm).exists(), "{said}");
}

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample maqet@test";

#[test]
fn the_cloud_init_seed_is_kept_by_rm_and_deleted_by_the_same_walk_as_disks() {
    let w = World::new("ds-seed");
    let extra = format!("cloud_init:\n  ssh_authorized_keys: ['{KEY}']\nssh: false\n");
    let vm = w.add_vm("s", &extra);
    w.ok(&["start", &vm]);
    w.ok(&["stop", &vm, "--force"]);
    let seed = w.data_dir().join("cloud-init").join(&vm);
    let image = seed.join("cidata.img");
    let id = std::fs::read_to_string(seed.join("instance-id")).unwrap();
    // Plain rm keeps it, and says so, like the disks maqet made.
    let said = w.fails(0, &["rm", &vm]);
    assert!(image.exists(), "{said}");
    assert!(
        said.contains("kept the files maqet created") && said.contains(path_str(&image)),
        "{said}"
    );
    // A VM of the name again: the same instance (the kept disks are that
    // machine), its seed files now that VM's own.
    w.add_vm("s", &extra);
    w.ok(&["start", &vm]);
    w.ok(&["stop", &vm, "--force"]);
    assert_eq!(
        std::fs::read_to_string(seed.join("instance-id")).unwrap(),
        id
    );
    // Moved away behind a symlink: nothing in the target is touched.
    let moved = w.dir.path().join("seed-moved");
    std::fs::rename(&seed, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &seed).unwrap();
    let o = w.maqet(&["rm", &vm, "--delete-storage"]);
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(moved.join("cidata.img").exists(), "{said}");
    assert!(!said.contains("deleted"), "{said}");
    // Back in place: deleted, directory and all.
    w.add_vm("s", &extra);
    std::fs::remove_file(&seed).unwrap();
    std::fs::rename(&moved, &seed).unwrap();
    w.ok(&["start", &vm]);
    w.ok(&["stop", &vm, "--force"]);
    let said = rm_delete_storage(&w, &vm);
    assert!(
        said.contains(&format!("deleted {}", image.display())),
        "{said}"
    );
    assert!(!seed.exists(), "{said}");
}

// ------------------------------------------------------------ 3. read-only images

#[test]
fn snapshots_never_write_a_read_only_disk_or_another_vms_base() {
    let w = World::new("ds-ro");
    let base = w.dir.path().canonicalize().unwrap().join("base.qcow2");
    qcow2(&base);
    qemu_img(&["snapshot", "-c", "s0", path_str(&base)]);
    let before = sha256(&base);
    let ro = w.add_vm(
        "ro",
        &format!(
            "storage:\n  - {{name: base, file: {}, readonly: true}}\n",
            base.display()
        ),
    );
    let over = w.add_vm(
        "over",
        &format!("storage:\n  - {{name: root, base: {}}}\n", base.display()),
    );
    let rw = w.add_vm(
        "rw",
        &format!("storage:\n  - {{name: b, file: {}}}\n", base.display()),
    );
    for (args, why) in [
        (vec!["snapshot", "create", &ro, "base", "s1"], "read-only"),
        (vec!["snapshot", "load", &ro, "base", "s0"], "read-only"),
        (vec!["snapshot", "create", &rw, "b", "s1"], "as their base"),
        (vec!["snapshot", "load", &rw, "b", "s0"], "as their base"),
        (vec!["snapshot", "delete", &rw, "b", "s0"], "as their base"),
    ] {
        let err = w.fails(5, &args);
        assert!(
            err.contains(why) && err.contains("nothing was changed"),
            "{args:?}: {err}"
        );
    }
    let err = w.fails(5, &["snapshot", "create", &rw, "b", "s1"]);
    assert!(
        err.contains(&format!(
            "VM '{over}' uses it as the base of its disk 'root'"
        )),
        "{err}"
    );
    assert_eq!(sha256(&base), before, "the base was written");
    // An image nobody reads as a base is still snapshotted.
    w.ok(&["rm", &over]);
    w.ok(&["snapshot", "create", &rw, "b", "s1"]);
}

// ------------------------------------------------------------ 4. the snapshot named

/// QMP `snapshot-save` of tag `tag` on `node`, run to its end (as a user
/// with `maqet qmp run` can).
fn qmp_save(w: &World, vm: &str, node: &str, tag: &str) {
    let job = format!("ds-save-{tag}");
    w.ok(&[
        "qmp",
        "run",
        vm,
        "snapshot-save",
        &format!(r#"{{"job-id":"{job}","tag":"{tag}","vmstate":"{node}","devices":["{node}"]}}"#),
    ]);
    wait_until("the save job to conclude", Duration::from_secs(120), || {
        let jobs: Value = serde_json::from_str(&w.ok(&["qmp", "run", vm, "query-jobs"])).unwrap();
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == job.as_str() && j["status"] == "concluded")
    });
    w.ok(&[
        "qmp",
        "run",
        vm,
        "job-dismiss",
        &format!(r#"{{"id":"{job}"}}"#),
    ]);
}

#[test]
fn a_live_load_never_restores_another_snapshot_whose_id_is_the_name() {
    let w = World::new("ds-id");
    let vm = w.add_vm("a", "storage:\n  - {name: hdd, size: 8M}\n");
    w.ok(&["start", &vm]);
    // ID 1, named "first".
    w.ok(&["snapshot", "create", &vm, "hdd", "first", "--live"]);
    let blocks: Value = serde_json::from_str(&w.ok(&["qmp", "run", &vm, "query-block"])).unwrap();
    let node = blocks
        .as_array()
        .unwrap()
        .iter()
        .find(|d| {
            d["inserted"]["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("hdd.qcow2"))
        })
        .and_then(|d| d["inserted"]["node-name"].as_str())
        .unwrap()
        .to_string();
    // ID 2, named "1": QEMU looks "1" up as an ID first.
    qmp_save(&w, &vm, &node, "1");
    let err = w.fails(2, &["snapshot", "load", &vm, "hdd", "1", "--live"]);
    assert!(
        err.contains("is the ID of another snapshot") && err.contains("nothing was changed"),
        "{err}"
    );
    let err = w.fails(2, &["snapshot", "delete", &vm, "hdd", "1", "--live"]);
    assert!(err.contains("is the ID of another snapshot"), "{err}");
    // Both are still there; the unambiguous one loads.
    let list = w.ok(&["snapshot", "list", &vm, "--json"]);
    assert!(
        list.contains("\"first\"") && list.contains("\"1\""),
        "{list}"
    );
    w.ok(&["snapshot", "load", &vm, "hdd", "first", "--live"]);
    w.ok(&["stop", &vm, "--force"]);
}

// ------------------------------------------------------------ 5. crashes

/// Size of [`BigSource`]'s disk: big enough that its copy takes a while
/// (tens of milliseconds even on a quiet machine), small enough to write
/// in a moment.
const BIG: u64 = 256 << 20;

/// A source VM whose one raw disk holds [`BIG`] bytes of known data, so a
/// `clone --full` of it can be caught mid-copy: the test watches for the
/// copy's temporary file and stops the clone (SIGSTOP) at once. A FIFO
/// would block the copy by itself, but maqet rightly refuses to read one
/// as a disk (a FIFO must never hang a command).
struct BigSource {
    vm: String,
    disk: PathBuf,
}

impl BigSource {
    fn new(w: &World) -> BigSource {
        let vm = w.add_vm("src", "storage:\n  - {name: d, type: raw, size: 1M}\n");
        let disk = disks_of(w, &vm).join("d.raw");
        std::fs::create_dir_all(disk.parent().unwrap()).unwrap();
        let mut f = std::fs::File::create(&disk).unwrap();
        let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        for _ in 0..BIG >> 20 {
            f.write_all(&chunk).unwrap();
        }
        f.sync_all().unwrap();
        BigSource { vm, disk }
    }

    /// Waits until `clone` has begun its copy into `dir` (a temporary file
    /// is there) and stops it (SIGSTOP) right then; asserts the copy is
    /// unfinished. The caller continues (SIGCONT) or kills it.
    fn stop_mid_copy(&self, clone: &mut std::process::Child, dir: &Path) {
        let temp = || {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.path())
        };
        let end = Instant::now() + Duration::from_secs(120);
        let found = loop {
            if let Some(t) = temp() {
                signal(clone, libc::SIGSTOP);
                break t;
            }
            assert!(
                clone.try_wait().unwrap().is_none(),
                "the clone ended before its copy was seen"
            );
            assert!(Instant::now() < end, "the copy did not start within 120s");
            std::thread::sleep(Duration::from_millis(1));
        };
        let copied = std::fs::metadata(&found).map(|m| m.len()).unwrap_or(0);
        assert!(
            copied < BIG,
            "the copy finished ({copied} bytes) before the clone could be stopped"
        );
    }

    fn digest(&self) -> String {
        sha256(&self.disk)
    }
}

fn signal(child: &std::process::Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid; it is not reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
}

#[test]
fn a_clone_killed_while_copying_is_never_started_and_the_next_clone_cleans_it() {
    let w = World::new("ds-ckill");
    let src = BigSource::new(&w);
    let dst = w.name("dst");
    let dst_dir = disks_of(&w, &dst);
    let mut clone = w
        .cmd()
        .args(["clone", &src.vm, &dst, "--full"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    src.stop_mid_copy(&mut clone, &dst_dir);
    clone.kill().unwrap();
    clone.wait().unwrap();
    // No torn image under the disk's name; the half-made clone is refused
    // and reported.
    assert!(!dst_dir.join("d.raw").exists());
    let err = w.fails(5, &["start", &dst]);
    assert!(err.contains("is incomplete"), "{err}");
    let err = w.fails(1, &["storage", "verify", &dst]);
    assert!(err.contains("(definition) (incomplete)"), "{err}");
    // doctor's exit status depends on the machine (linger, KVM); its report
    // is what counts here.
    let doctor = w.maqet(&["doctor", "--json"]);
    let doctor: Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let leftovers: Vec<&Value> = doctor["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "leftovers")
        .collect();
    assert!(
        leftovers.iter().any(|f| f["message"]
            .as_str()
            .unwrap()
            .contains(&format!("VM '{dst}' is incomplete"))),
        "{leftovers:#?}"
    );
    // The next clone to that name removes what was left and clones afresh.
    let digest = src.digest();
    let o = w.maqet(&["clone", &w.name("src"), &dst, "--full"]);
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "removed what an interrupted clone to '{dst}' had left"
        )),
        "{said}"
    );
    assert_eq!(sha256(&dst_dir.join("d.raw")), digest);
    let names: Vec<String> = std::fs::read_dir(&dst_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["d.raw"], "no temporary file left");
    w.ok(&["storage", "verify", &dst]);
}

#[test]
fn temporary_files_of_a_killed_storage_create_are_listed_and_removed() {
    let w = World::new("ds-tmp");
    let vm = w.add_vm(
        "v",
        "storage:\n  - {name: hdd, size: 8M}\n  - {name: data, size: 8M, file: extra/data.qcow2}\n",
    );
    w.ok(&["storage", "create", &vm]);
    // What a `storage create` killed while qemu-img wrote leaves: one for a
    // disk that exists now, one for a disk not made yet.
    let dir = disks_of(&w, &vm);
    let hdd_left = dir.join(".hdd.qcow2.maqet-999991.tmp");
    std::fs::write(&hdd_left, b"torn").unwrap();
    let data = w.dir.path().join("extra/data.qcow2");
    std::fs::remove_file(&data).unwrap();
    let data_left = w.dir.path().join("extra/.data.qcow2.maqet-999992.tmp");
    std::fs::write(&data_left, b"torn").unwrap();
    let err = w.fails(1, &["storage", "verify", &vm]);
    assert!(
        err.contains(&format!("{vm}/(leftover) (incomplete)")),
        "{err}"
    );
    let out = w.maqet(&["storage", "verify", &vm]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(path_str(&hdd_left)) && table.contains(path_str(&data_left)),
        "{table}"
    );
    // The next creation of that disk removes its leftover.
    w.ok(&["storage", "create", &vm]);
    assert!(data.exists() && !data_left.exists());
    // rm --delete-storage removes the other, so the directory can go.
    let said = rm_delete_storage(&w, &vm);
    assert!(
        said.contains(&format!(
            "deleted {} (left half-written by an interrupted maqet command)",
            hdd_left.display()
        )),
        "{said}"
    );
    assert!(!dir.exists(), "{said}");
}

#[test]
fn rm_delete_storage_deletes_nothing_while_the_database_is_busy() {
    let w = World::new("ds-busy");
    let vm = w.add_vm(
        "v",
        "storage:\n  - {name: hdd, size: 8M}\n  - {name: data, size: 8M}\n",
    );
    w.ok(&["storage", "create", &vm]);
    let (hdd, data) = (
        disks_of(&w, &vm).join("hdd.qcow2"),
        disks_of(&w, &vm).join("data.qcow2"),
    );
    // Another writer holds the database's write lock past rm's busy timeout.
    let conn = rusqlite::Connection::open(w.data_dir().join("maqet.db")).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = w.fails(7, &["rm", &vm, "--delete-storage"]);
    conn.execute_batch("ROLLBACK").unwrap();
    drop(conn);
    assert!(
        err.contains("is busy") && err.contains("nothing was changed"),
        "{err}"
    );
    assert!(hdd.exists() && data.exists(), "{err}");
    assert!(w.ok(&["ls"]).contains(&vm));
    let said = rm_delete_storage(&w, &vm);
    assert!(!hdd.exists() && !data.exists(), "{said}");
}

// ------------------------------------------------------------ 6. clones

#[test]
fn a_full_clone_holds_its_sources_lock_so_its_start_waits() {
    let w = World::new("ds-clock");
    let src = BigSource::new(&w);
    let dst = w.name("dst");
    let mut clone = w
        .cmd()
        .args(["clone", &src.vm, &dst, "--full"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    src.stop_mid_copy(&mut clone, &disks_of(&w, &dst));
    let start = w
        .cmd()
        .args(["start", &src.vm])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // As long as the copy is unfinished the source does not run (the start
    // waits for the lock).
    for _ in 0..30 {
        assert_eq!(w.state(&src.vm), "defined", "the source started mid-copy");
        std::thread::sleep(Duration::from_millis(100));
    }
    let vm = src.vm.clone();
    signal(&clone, libc::SIGCONT);
    let o = clone.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = start.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(w.state(&vm), "running");
    w.ok(&["stop", &vm, "--force"]);
}

#[test]
fn a_clone_never_shares_a_writable_arguments_disk() {
    let w = World::new("ds-cargs");
    let dir = w.dir.path().canonicalize().unwrap();
    let disk = dir.join("x.qcow2");
    qcow2(&disk);
    let iso = dir.join("install.iso");
    std::fs::write(&iso, vec![0u8; 2048]).unwrap();
    let src = w.add_vm(
        "src",
        &format!(
            "  - drive: \"file={},if=virtio,format=qcow2\"\n  - cdrom: {}\n",
            disk.display(),
            iso.display()
        ),
    );
    let err = w.fails(5, &["clone", &src, &w.name("dst")]);
    assert!(
        err.contains(&format!(
            "gives the VM the disk {} (writable)",
            disk.display()
        )),
        "{err}"
    );
    assert!(w.maqet(&["info", &w.name("dst")]).status.code() == Some(3));
    // Read-only media (the ISO) are shared.
    let ro = w.add_vm(
        "ro",
        &format!(
            "  - drive: \"file={},if=virtio,format=qcow2,readonly=on\"\n  - cdrom: {}\n",
            disk.display(),
            iso.display()
        ),
    );
    w.ok(&["clone", &ro, &w.name("ro2")]);
}

// ------------------------------------------------------------ 7. smaller truths

#[test]
fn storage_verify_checks_the_backing_file_the_overlay_really_has() {
    let w = World::new("ds-rebase");
    let dir = w.dir.path().canonicalize().unwrap();
    let (b1, b2) = (dir.join("b1.qcow2"), dir.join("b2.qcow2"));
    qcow2(&b1);
    qcow2(&b2);
    let vm = w.add_vm(
        "v",
        &format!("storage:\n  - {{name: root, base: {}}}\n", b1.display()),
    );
    w.ok(&["storage", "create", &vm]);
    w.ok(&["storage", "verify", &vm]);
    let overlay = disks_of(&w, &vm).join("root.qcow2");
    qemu_img(&[
        "rebase",
        "-u",
        "-b",
        path_str(&b2),
        "-F",
        "qcow2",
        path_str(&overlay),
    ]);
    let err = w.fails(1, &["storage", "verify", &vm]);
    assert!(err.contains(&format!("{vm}/root (base mismatch)")), "{err}");
    let table = w.maqet(&["storage", "verify", &vm]).stdout;
    let table = String::from_utf8_lossy(&table);
    assert!(
        table.contains(&format!("its backing file is {}", b2.display())),
        "{table}"
    );
}

#[test]
fn a_live_save_that_runs_out_of_space_says_so_once() {
    let w = World::new("ds-enospc");
    let small = SmallFs::take("ds-enospc");
    // The whole data directory on the small file system (disk images may
    // not live under /var otherwise).
    let data = small.work.join("data");
    let run = |args: &[&str]| {
        w.cmd()
            .env("MAQET_DATA_DIR", &data)
            .args(args)
            .output()
            .unwrap()
    };
    let vm = w.name("v");
    let f = w.vm_yaml(&vm, "storage:\n  - {name: hdd, size: 8M}\n");
    for args in [vec!["add", path_str(&f)], vec!["start", &vm]] {
        let o = run(&args);
        assert!(o.status.success(), "{args:?}: {o:?}");
    }
    small.fill();
    let o = run(&["snapshot", "create", &vm, "hdd", "s1", "--live"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    small.unfill();
    let stopped = run(&["rm", "--force", &vm]);
    assert!(!o.status.success(), "{err}");
    assert_eq!(
        err.matches("saving snapshot 's1' failed").count(),
        1,
        "{err}"
    );
    assert!(stopped.status.success(), "{stopped:?}");
}

#[test]
fn storage_attach_names_every_vm_that_uses_the_file() {
    let w = World::new("ds-note");
    let x = w.dir.path().canonicalize().unwrap().join("x.qcow2");
    qcow2(&x);
    let a = w.add_vm(
        "a",
        &format!("storage:\n  - {{name: root, base: {}}}\n", x.display()),
    );
    let b = w.add_vm(
        "b",
        &format!(
            "args: ['-drive', 'file={},if=virtio,format=qcow2,readonly=on']\n",
            x.display()
        ),
    );
    let c = w.add_vm("c", "");
    let o = w.maqet(&["storage", "attach", &c, path_str(&x), "--readonly"]);
    let note = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{note}");
    assert!(
        note.contains(&format!("VM '{a}' uses it as the base of its disk 'root'"))
            && note.contains(&format!("VM '{b}' uses it")),
        "{note}"
    );
}
