//! `maqet storage verify` and `maqet storage attach` against the real user
//! manager, QEMU and qemu-img: verify passes good disks (also of a running
//! VM, read only with -U, leaving it running), fails missing and corrupted
//! ones naming them; attach adds a FILE or a SPEC to a stopped VM (QEMU
//! sees it at the next start), refuses a running VM without --live,
//! hot-plugs with --live and keeps it for the next start, and refuses
//! duplicates and a disk another running VM uses. The VMs boot no guest:
//! QEMU's `query-block` is what they show.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn qcow2(w: &World, file: &str) -> PathBuf {
    let p = w.dir.path().join(file);
    let o = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", path_str(&p), "8M"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    p
}

/// The image files QEMU has open, from `maqet qmp VM query-block`.
fn block_files(w: &World, vm: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(&w.ok(&["qmp", "run", vm, "query-block"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["inserted"]["file"].as_str().map(str::to_string))
        .collect()
}

fn verify_json(w: &World, vm: &str) -> (Option<i32>, Vec<Value>) {
    let o = w.maqet(&["storage", "verify", vm, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    (o.status.code(), v.as_array().unwrap().clone())
}

fn status_of<'a>(checks: &'a [Value], disk: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["disk"] == disk)
        .unwrap_or_else(|| panic!("no {disk} in {checks:#?}"))
}

fn stop(w: &World, vm: &str) {
    w.ok(&["stop", vm, "--force"]);
}

#[test]
fn verify_passes_good_disks_and_names_missing_and_corrupt_ones() {
    let w = World::new("sc-verify");
    let ext = qcow2(&w, "ext.qcow2");
    let vm = w.add_vm(
        "v",
        &format!(
            "storage:\n  - {{name: hdd, size: 8M}}\n  - {{name: ext, file: {}}}\n  - {{name: later, size: 8M}}\n",
            ext.display()
        ),
    );
    w.ok(&["storage", "create", &vm]);
    let out = w.ok(&["storage", "verify", &vm]);
    assert!(
        out.contains("ext") && out.contains("ok: qcow2, no errors"),
        "{out}"
    );

    // A disk never created is not a failure.
    let fresh = w.add_vm("fresh", "storage:\n  - {name: new, size: 8M}\n");
    let (code, checks) = verify_json(&w, &fresh);
    assert_eq!(code, Some(0), "{checks:#?}");
    assert_eq!(status_of(&checks, "new")["status"], "not-created");

    // Garbage in the qcow2 header: qemu-img's own message, exit 1.
    let mut bytes = std::fs::read(&ext).unwrap();
    bytes[..64].fill(b'x');
    std::fs::write(&ext, bytes).unwrap();
    let o = w.maqet(&["storage", "verify", &vm]);
    assert_eq!(o.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stdout.contains("Image is not in qcow2 format"), "{stdout}");
    assert!(stderr.contains(&format!("{vm}/ext (corrupt)")), "{stderr}");

    // A created disk that is gone is missing (not "not created yet").
    std::fs::remove_file(w.data_dir().join("disks").join(&vm).join("hdd.qcow2")).unwrap();
    let (code, checks) = verify_json(&w, &vm);
    assert_eq!(code, Some(1));
    assert_eq!(status_of(&checks, "hdd")["status"], "missing");
    assert_eq!(status_of(&checks, "ext")["status"], "corrupt");
    assert_eq!(status_of(&checks, "later")["status"], "ok");
    let err = w.fails(1, &["storage", "verify"]);
    assert!(err.contains(&format!("{vm}/hdd (missing)")), "{err}");
    assert!(!err.contains(&fresh), "{err}");

    // Images named in raw `arguments` are disks too.
    let gone = w.dir.path().join("gone.qcow2");
    let raw = w.dir.path().join("r.img");
    std::fs::write(&raw, vec![0u8; 8192]).unwrap();
    let args = w.add_vm(
        "args",
        &format!(
            "  - drive: \"file={},format=qcow2,if=virtio\"\n  - drive: \"file={},format=raw,if=virtio\"\n",
            gone.display(),
            raw.display()
        ),
    );
    let (code, checks) = verify_json(&w, &args);
    assert_eq!(code, Some(1));
    assert_eq!(status_of(&checks, "arguments[3]")["status"], "missing");
    assert_eq!(status_of(&checks, "arguments[4]")["status"], "ok");
    assert_eq!(
        status_of(&checks, "arguments[4]")["message"],
        "raw, 8192 bytes"
    );
}

#[test]
fn verify_reads_a_running_vms_disks_with_force_share_and_leaves_it_running() {
    let w = World::new("sc-run");
    let vm = w.add_vm("r", "storage:\n  - {name: hdd, size: 8M}\n");
    w.ok(&["start", &vm]);
    let pids = qemu_pids(&vm);
    let out = w.ok(&["storage", "verify", &vm]);
    assert!(out.contains("ok: qcow2, no errors"), "{out}");
    assert!(out.contains("qemu-img -U"), "{out}");
    let (code, checks) = verify_json(&w, &vm);
    assert_eq!(code, Some(0));
    assert_eq!(status_of(&checks, "hdd")["force_share"], true);
    assert_eq!(w.state(&vm), "running");
    assert_eq!(qemu_pids(&vm), pids);
    stop(&w, &vm);
}

#[test]
fn attach_to_a_stopped_vm_shows_up_at_the_next_start() {
    let w = World::new("sc-stopped");
    let vm = w.add_vm("s", "");
    let file = qcow2(&w, "extra disk.qcow2");
    let out = w.ok(&["storage", "attach", &vm, path_str(&file)]);
    assert!(out.contains("attached drive 'extra-disk'"), "{out}");
    let out = w.ok(&["storage", "attach", &vm, "name=data,size=8M"]);
    assert!(out.contains("created at the next start"), "{out}");
    // Duplicates: the same file under another name, the same name.
    let err = w.fails(
        5,
        &[
            "storage",
            "attach",
            &vm,
            &format!("file={},name=again", file.display()),
        ],
    );
    assert!(
        err.contains("already uses") && err.contains("extra-disk"),
        "{err}"
    );
    let err = w.fails(5, &["storage", "attach", &vm, "name=data,size=8M"]);
    assert!(err.contains("already has a disk named 'data'"), "{err}");
    let err = w.fails(2, &["storage", "attach", &vm, "name=x,sise=8M"]);
    assert!(err.contains("unknown key 'sise'"), "{err}");
    w.ok(&["start", &vm]);
    let files = block_files(&w, &vm);
    let data = w.data_dir().join("disks").join(&vm).join("data.qcow2");
    assert!(files.contains(&path_str(&file).to_string()), "{files:?}");
    assert!(files.contains(&path_str(&data).to_string()), "{files:?}");
    stop(&w, &vm);
}

#[test]
fn attach_to_a_running_vm_needs_live_which_hot_plugs_and_records() {
    let w = World::new("sc-live");
    let vm = w.add_vm("l", "");
    w.ok(&["start", &vm]);
    let file = qcow2(&w, "hot.qcow2");
    let err = w.fails(5, &["storage", "attach", &vm, path_str(&file)]);
    assert!(
        err.contains("is running") && err.contains("--live"),
        "{err}"
    );
    assert!(block_files(&w, &vm).is_empty());
    w.ok(&["storage", "attach", &vm, path_str(&file), "--live"]);
    assert!(block_files(&w, &vm).contains(&path_str(&file).to_string()));
    // A new disk from a spec is created, then hot-plugged.
    let out = w.ok(&["storage", "attach", &vm, "name=fresh,size=8M", "--live"]);
    let fresh = w.data_dir().join("disks").join(&vm).join("fresh.qcow2");
    assert!(out.contains("created") && fresh.exists(), "{out}");
    assert!(block_files(&w, &vm).contains(&path_str(&fresh).to_string()));
    // Read-only, live and after the restart below.
    let ro = qcow2(&w, "ro.qcow2");
    w.ok(&[
        "storage",
        "attach",
        &vm,
        path_str(&ro),
        "--live",
        "--readonly",
    ]);
    assert_eq!(read_only(&w, &vm, &ro), Some(true));
    // A failed hot-plug (IDE cannot be) changes nothing.
    let other = qcow2(&w, "ide.qcow2");
    let err = w.fails(
        2,
        &[
            "storage",
            "attach",
            &vm,
            path_str(&other),
            "--live",
            "--if",
            "ide",
        ],
    );
    assert!(err.contains("cannot be hot-plugged"), "{err}");
    let err = w.fails(5, &["storage", "attach", &vm, path_str(&file), "--live"]);
    assert!(err.contains("already has a disk named 'hot'"), "{err}");
    stop(&w, &vm);
    let cfg = w.ok(&["config", &vm]);
    assert!(
        cfg.contains("hot.qcow2") && !cfg.contains("ide.qcow2"),
        "{cfg}"
    );
    w.ok(&["start", &vm]);
    let files = block_files(&w, &vm);
    assert!(files.contains(&path_str(&file).to_string()), "{files:?}");
    assert!(files.contains(&path_str(&fresh).to_string()), "{files:?}");
    assert_eq!(read_only(&w, &vm, &ro), Some(true));
    assert_eq!(read_only(&w, &vm, &file), Some(false));
    stop(&w, &vm);
}

/// Whether QEMU has the image at `path` open read-only (`query-block`).
fn read_only(w: &World, vm: &str, path: &Path) -> Option<bool> {
    let v: Value = serde_json::from_str(&w.ok(&["qmp", "run", vm, "query-block"])).unwrap();
    v.as_array()?
        .iter()
        .find(|d| d["inserted"]["file"] == path_str(path))
        .and_then(|d| d["inserted"]["ro"].as_bool())
}

#[test]
fn attaching_a_disk_another_running_vm_uses_is_refused() {
    let w = World::new("sc-owner");
    let a = w.add_vm("a", "storage:\n  - {name: hdd, size: 8M}\n");
    let b = w.add_vm("b", "");
    w.ok(&["start", &a]);
    let disk = w.data_dir().join("disks").join(&a).join("hdd.qcow2");
    let err = w.fails(5, &["storage", "attach", &b, path_str(&disk)]);
    assert!(err.contains(&format!("running VM '{a}'")), "{err}");
    assert!(!w.ok(&["config", &b]).contains("hdd.qcow2"));
    stop(&w, &a);
    // Stopped, A still names the disk: attached, and said so.
    let o = w.maqet(&["storage", "attach", &b, path_str(&disk)]);
    assert!(o.status.success(), "{o:?}");
    let note = String::from_utf8_lossy(&o.stderr);
    assert!(
        note.contains(&format!("VM '{a}' uses it too")) && note.contains("image locks"),
        "{note}"
    );
    // A disk no other VM names gets no note.
    let file = qcow2(&w, "own.qcow2");
    let o = w.maqet(&["storage", "attach", &b, path_str(&file)]);
    assert!(o.status.success() && o.stderr.is_empty(), "{o:?}");
}

#[test]
fn a_failed_hot_plug_changes_nothing_and_deletes_the_disk_it_created() {
    let w = World::new("sc-rollback");
    // q35's root bus cannot hot-plug: QEMU refuses device_add after blockdev-add.
    let vm = w.add_vm("q", "  - machine: q35\n");
    w.ok(&["start", &vm]);
    let before = w.ok(&["config", &vm]);
    let err = w.fails(
        6,
        &["storage", "attach", &vm, "name=nope,size=8M", "--live"],
    );
    assert!(err.contains("does not support hotplugging"), "{err}");
    let created = w.data_dir().join("disks").join(&vm).join("nope.qcow2");
    assert!(err.contains("removed what this start created"), "{err}");
    assert!(!created.exists());
    assert_eq!(w.ok(&["config", &vm]), before);
    // The node was deleted again, so the same attach can be retried later.
    let nodes = w.ok(&["qmp", "run", &vm, "query-named-block-nodes"]);
    assert!(!nodes.contains("maqet-nope"), "{nodes}");
    stop(&w, &vm);
}
