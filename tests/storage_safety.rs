//! Deleting only what is provably maqet's (docs/storage.md), against the
//! real user manager, QEMU and qemu-img: a created disk that another VM
//! uses — through `arguments`, down a backing chain, or as a running QEMU
//! of another data directory — is kept; so is a file replaced after
//! creation, and nothing is deleted through a parent directory replaced by a
//! symlink; two data directories racing to start one VM name leave the
//! loser with no claim on the winner's disks. An unused, unchanged created
//! disk is deleted. Also: `snapshot list` with `arguments` disks, and whose
//! lock a qemu-img conflict is blamed on.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn ino(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).unwrap().ino()
}

/// `rm NAME --delete-storage`, which must succeed; returns stderr.
fn rm_delete_storage(w: &World, vm: &str) -> String {
    w.fails(0, &["rm", vm, "--delete-storage"])
}

#[test]
fn an_unused_unchanged_created_disk_is_deleted() {
    let w = World::new("sfpos");
    let vm = w.add_vm("a", "storage:\n  - {name: hdd, size: 8M}\n");
    // Another VM here that uses other files does not get in the way.
    w.add_vm("b", "storage:\n  - {name: hdd, size: 8M}\n");
    let hdd = disks_of(&w, &vm).join("hdd.qcow2");
    // QEMU writes to it while it runs: it is still the file maqet made.
    w.ok(&["start", &vm]);
    w.ok(&["stop", &vm, "--force"]);
    assert!(hdd.exists());
    let said = rm_delete_storage(&w, &vm);
    assert!(
        said.contains(&format!(
            "deleted {} (disk, created by maqet)",
            hdd.display()
        )),
        "{said}"
    );
    assert!(!hdd.exists() && !disks_of(&w, &vm).exists(), "{said}");
}

#[test]
fn a_failed_start_lists_every_file_it_removed() {
    let w = World::new("sffail");
    // QEMU refuses the device after maqet made the disk and its directory.
    let vm = w.add_vm(
        "f",
        "  - device: no-such-device-xyz\nstorage:\n  - {name: hdd, size: 8M}\n",
    );
    let err = w.fails(1, &["start", &vm]);
    let hdd = disks_of(&w, &vm).join("hdd.qcow2");
    assert!(
        err.contains(&format!(
            "(removed what this start created: {}, {})",
            hdd.display(),
            disks_of(&w, &vm).display()
        )),
        "{err}"
    );
    assert!(!disks_of(&w, &vm).exists());
    let ls: Vec<Value> = serde_json::from_str(&w.ok(&["storage", "ls", &vm, "--json"])).unwrap();
    assert!(ls.iter().all(|r| r["created_by_maqet"] == false), "{ls:#?}");
}

#[test]
fn a_disk_another_vm_names_in_arguments_is_kept() {
    let w = World::new("sfargs");
    let vm = w.add_vm("a", "storage:\n  - {name: hdd, size: 8M}\n");
    w.ok(&["storage", "create", &vm]);
    let hdd = disks_of(&w, &vm).join("hdd.qcow2");
    let other = w.add_vm(
        "b",
        &format!("  - drive: file={},if=virtio,format=qcow2\n", hdd.display()),
    );
    let said = rm_delete_storage(&w, &vm);
    assert!(
        said.contains(&format!("kept {} (VM '{other}' uses it)", hdd.display())),
        "{said}"
    );
    assert!(hdd.exists());
    assert!(!said.contains("deleted"), "{said}");
}

#[test]
fn a_disk_two_levels_down_another_vms_backing_chain_is_kept() {
    let w = World::new("sfchain");
    let dir = w.dir.path().canonicalize().unwrap();
    let base = dir.join("base.qcow2");
    let vm = w.add_vm(
        "a",
        &format!(
            "storage:\n  - {{name: base, size: 8M, file: {}}}\n",
            base.display()
        ),
    );
    w.ok(&["storage", "create", &vm]);
    // base <- mid <- top, made by the user; only top is on B's command line.
    let (mid, top) = (dir.join("mid.qcow2"), dir.join("top.qcow2"));
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        path_str(&mid),
    ]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        path_str(&top),
    ]);
    let other = w.add_vm(
        "b",
        &format!("storage:\n  - {{name: top, file: {}}}\n", top.display()),
    );
    let said = rm_delete_storage(&w, &vm);
    assert!(
        said.contains(&format!(
            "kept {} (VM '{other}' uses it as a backing file of {})",
            base.display(),
            top.display()
        )),
        "{said}"
    );
    assert!(base.exists() && mid.exists() && top.exists());
}

#[test]
fn a_file_replaced_after_creation_is_kept() {
    let w = World::new("sfrepl");
    let vm = w.add_vm("a", "storage:\n  - {name: hdd, size: 8M}\n");
    w.ok(&["storage", "create", &vm]);
    let hdd = disks_of(&w, &vm).join("hdd.qcow2");
    let made = ino(&hdd);
    // The user puts their own image in its place (a new inode).
    let theirs = disks_of(&w, &vm).join("theirs.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", path_str(&theirs), "8M"]);
    std::fs::rename(&theirs, &hdd).unwrap();
    assert_ne!(ino(&hdd), made);
    let said = rm_delete_storage(&w, &vm);
    assert!(
        said.contains(&format!(
            "kept {} (it is no longer the file maqet created",
            hdd.display()
        )),
        "{said}"
    );
    assert!(hdd.exists());
    assert!(
        said.contains(&format!(
            "kept {} (directory holds other files)",
            disks_of(&w, &vm).display()
        )),
        "{said}"
    );
}

#[test]
fn nothing_is_deleted_through_a_parent_replaced_by_a_symlink() {
    let w = World::new("sflink");
    let dir = w.dir.path().canonicalize().unwrap();
    let vmdisks = dir.join("vmdisks");
    let vm = w.add_vm(
        "a",
        &format!(
            "storage:\n  - {{name: hdd, size: 8M, file: {}/hdd.qcow2}}\n",
            vmdisks.display()
        ),
    );
    let out = w.ok(&["storage", "create", &vm]);
    assert!(
        out.contains(&format!("created {}", vmdisks.display())),
        "{out}"
    );
    // The user moves the directory (with maqet's very disk in it) to their
    // own place and leaves a symlink: the path now leads into their
    // directory, to the same inode even.
    let user = dir.join("user-files");
    std::fs::rename(&vmdisks, &user).unwrap();
    std::os::unix::fs::symlink(&user, &vmdisks).unwrap();
    std::fs::write(user.join("notes.txt"), "mine").unwrap();
    let said = rm_delete_storage(&w, &vm);
    assert!(
        said.contains(&format!(
            "kept {}/hdd.qcow2 ({} is no longer the directory maqet created",
            vmdisks.display(),
            vmdisks.display()
        )),
        "{said}"
    );
    assert!(!said.contains("deleted"), "{said}");
    assert!(user.join("hdd.qcow2").exists() && user.join("notes.txt").exists());
    assert!(vmdisks.is_symlink());
}

#[test]
fn a_running_qemu_of_another_data_directory_keeps_the_disk() {
    let a = World::new("sfdira");
    let b = World::new("sfdirb");
    let vm = a.add_vm("a", "storage:\n  - {name: hdd, size: 8M}\n");
    a.ok(&["storage", "create", &vm]);
    let hdd = disks_of(&a, &vm).join("hdd.qcow2");
    // B's VM boots from A's disk; A's data directory knows nothing of it.
    let user = b.add_vm(
        "b",
        &format!("  - drive: file={},if=virtio,format=qcow2\n", hdd.display()),
    );
    b.ok(&["start", &user]);
    let pid = b.status(&user)["qemu_pid"].as_u64();
    // A disk-only snapshot cannot take the lock: blamed on that VM.
    let err = a.fails(5, &["snapshot", "create", &vm, "hdd", "s1"]);
    assert!(err.contains(&format!("running VM '{user}'")), "{err}");
    let said = rm_delete_storage(&a, &vm);
    assert!(
        said.contains(&format!(
            "kept {} (running VM '{user}' (data directory {}",
            hdd.display(),
            b.data_dir().display()
        )),
        "{said}"
    );
    assert!(hdd.exists());
    assert_eq!(b.state(&user), "running");
    if let Some(pid) = pid {
        assert!(alive(pid));
    }
    b.ok(&["stop", &user, "--force"]);
}

/// Whether some process holds an open-file-description lock (QEMU's image
/// locking) on `path`, per /proc/locks ("… OFDLCK ADVISORY READ -1 maj:min:inode …").
fn holds_ofd_lock(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(path).unwrap().ino();
    let locks = std::fs::read_to_string("/proc/locks").unwrap();
    locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"OFDLCK")
            && f.iter()
                .any(|x| x.rsplit(':').next() == Some(&ino.to_string()) && x.contains(':'))
    })
}

#[test]
fn a_lock_held_by_another_process_is_not_blamed_on_a_vm() {
    let w = World::new("sflock");
    let vm = w.add_vm("a", "storage:\n  - {name: hdd, size: 8M}\n");
    w.ok(&["storage", "create", &vm]);
    let hdd = disks_of(&w, &vm).join("hdd.qcow2");
    // Another process (not a VM) holds the image's write lock, as a
    // concurrent `maqet snapshot`/`storage create` would.
    let mut holder = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "sleep 600000", path_str(&hdd)])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("qemu-io to hold the lock", Duration::from_secs(30), || {
        if let Ok(Some(st)) = holder.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(holder.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("qemu-io ended ({st}) before holding the lock: {err}");
        }
        // Read /proc/locks rather than probing with `qemu-img info`: that
        // probe takes a lock of its own and can make qemu-io fail to start.
        holds_ofd_lock(&hdd)
    });
    let err = w.fails(5, &["snapshot", "create", &vm, "hdd", "s1"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(
        err.contains("no running VM uses it: another process holds its lock"),
        "{err}"
    );
    assert!(!err.contains("a VM using this image"), "{err}");
    // With the lock free it works.
    w.ok(&["snapshot", "create", &vm, "hdd", "s1"]);
}

#[test]
fn snapshot_list_covers_arguments_disks_and_labels_live_parts_alike() {
    let w = World::new("sflist");
    let dir = w.dir.path().canonicalize().unwrap();
    let extra = dir.join("extra.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", path_str(&extra), "8M"]);
    let vm = w.add_vm(
        "a",
        &format!(
            "  - drive: file={},if=virtio,format=qcow2\nstorage:\n  - {{name: hdd, size: 8M}}\n  - {{name: data, size: 8M}}\n",
            extra.display()
        ),
    );
    w.ok(&["start", &vm]);
    // The VM state goes to 'data'; 'hdd' and the arguments disk hold parts.
    w.ok(&["snapshot", "create", &vm, "data", "s1", "--live"]);
    let list = |args: &[&str]| -> Vec<Value> {
        let mut all = vec!["snapshot", "list", &vm];
        all.extend_from_slice(args);
        all.push("--json");
        serde_json::from_str(&w.ok(&all)).unwrap()
    };
    let kinds = |rows: &[Value]| -> Vec<(String, String)> {
        let mut k: Vec<(String, String)> = rows
            .iter()
            .map(|r| {
                (
                    r["drive"].as_str().unwrap().to_string(),
                    r["kind"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        k.sort();
        k
    };
    let all = |rows: &[Value]| {
        let mut want = vec![
            ("data".to_string(), "live".to_string()),
            ("hdd".to_string(), "live".to_string()),
            (extra.display().to_string(), "live".to_string()),
        ];
        want.sort();
        assert_eq!(kinds(rows), want, "{rows:#?}");
    };
    all(&list(&[]));
    assert_eq!(
        kinds(&list(&["hdd"])),
        [("hdd".to_string(), "live".to_string())]
    );
    w.ok(&["stop", &vm, "--force"]);
    // Stopped, from qemu-img: the same rows, labelled the same way.
    all(&list(&[]));
    assert_eq!(
        kinds(&list(&["hdd"])),
        [("hdd".to_string(), "live".to_string())]
    );
}

#[test]
fn two_data_directories_racing_to_start_one_name_leave_the_loser_nothing() {
    // Who wins, and who creates the shared disk, varies from round to
    // round; every round must end the same way.
    for round in 0..3 {
        race_once(round);
    }
}

fn race_once(round: u32) {
    let a = World::new("sfracea");
    let b = World::new("sfraceb");
    let name = a.name(&format!("twin{round}"));
    let shared_dir = a.dir.path().canonicalize().unwrap().join("shared");
    std::fs::create_dir(&shared_dir).unwrap();
    let shared = shared_dir.join("shared.qcow2");
    let extra = format!(
        "storage:\n  - {{name: own, size: 8M}}\n  - {{name: shared, size: 8M, file: {}}}\n",
        shared.display()
    );
    for w in [&a, &b] {
        let f = w.vm_yaml(&name, &extra);
        w.ok(&["add", path_str(&f)]);
    }
    let spawn = |w: &World| {
        w.cmd()
            .args(["start", &name])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (pa, pb) = (spawn(&a), spawn(&b));
    let (oa, ob) = (
        pa.wait_with_output().unwrap(),
        pb.wait_with_output().unwrap(),
    );
    let said = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let (winner, loser, lost) = match (oa.status.code(), ob.status.code()) {
        (Some(0), Some(5)) => (&a, &b, said(&ob)),
        (Some(5), Some(0)) => (&b, &a, said(&oa)),
        other => panic!(
            "expected one start to win and one to conflict: {other:?}\nA: {}\nB: {}",
            said(&oa),
            said(&ob)
        ),
    };
    eprintln!("the losing start said: {lost}");
    assert!(lost.contains("of another data directory"), "{lost}");
    assert_eq!(winner.state(&name), "running");
    let pid = winner.status(&name)["qemu_pid"].as_u64().expect("qemu pid");
    // The loser keeps no disk and no claim: its own disk is gone (if it
    // made one), and nothing is recorded as created by maqet there.
    assert!(!disks_of(loser, &name).join("own.qcow2").exists(), "{lost}");
    let ls: Vec<Value> =
        serde_json::from_str(&loser.ok(&["storage", "ls", &name, "--json"])).unwrap();
    assert!(
        ls.iter().all(|r| r["created_by_maqet"] == false),
        "{ls:#?}\n{lost}"
    );
    let winners_own = disks_of(winner, &name).join("own.qcow2");
    assert!(winners_own.exists() && shared.exists());

    // A later rm --delete-storage from the loser deletes nothing of the
    // winner's and leaves its VM alone.
    let o = loser.maqet(&["rm", &name, "--delete-storage"]);
    let rm_said = String::from_utf8_lossy(&o.stderr);
    assert!(!rm_said.contains("deleted"), "{rm_said}");
    assert!(shared.exists() && winners_own.exists(), "{rm_said}");
    assert_eq!(winner.state(&name), "running");
    assert!(alive(pid));
    winner.ok(&["stop", &name, "--force"]);
}
