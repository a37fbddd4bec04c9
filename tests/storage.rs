//! Config compatibility, managed disks and snapshots against real QEMU,
//! qemu-img and the user manager: the original tool's example configs
//! (tests/fixtures/original-examples, copied from the reference) add,
//! start and render their documented argv; disks are created, overlaid and
//! deleted; offline and live snapshots really restore disk contents
//! (checked with qemu-io, not only exit codes); every refusal is checked.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const README: &str = include_str!("fixtures/original-examples/README.md");
const EXAMPLES: &[(&str, &str)] = &[
    (
        "example1-minimal.yaml",
        include_str!("fixtures/original-examples/example1-minimal.yaml"),
    ),
    (
        "example2-devbox.yaml",
        include_str!("fixtures/original-examples/example2-devbox.yaml"),
    ),
    (
        "layered/base.yaml",
        include_str!("fixtures/original-examples/layered/base.yaml"),
    ),
    (
        "layered/ci-runner.yaml",
        include_str!("fixtures/original-examples/layered/ci-runner.yaml"),
    ),
];

/// maqet's own options before the config's groups.
const PREFIX: usize = 7;

fn info(w: &World, vm: &str) -> Value {
    serde_json::from_str(&w.ok(&["info", vm, "--json"])).unwrap()
}

/// The config's part of the QEMU argv (after binary, -name, QMP monitor).
fn config_argv(w: &World, vm: &str) -> Vec<String> {
    let v = info(w, vm);
    let argv: Vec<String> = v["qemu_argv"]
        .as_array()
        .unwrap_or_else(|| panic!("no argv: {v:#}"))
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(argv[1..3], ["-name".to_string(), vm.to_string()]);
    argv[PREFIX..].to_vec()
}

fn split(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// The original argv of a README section with its placeholders replaced
/// by this VM's directories.
fn readme_argv(heading: &str, dir: &Path, disks: &Path) -> Vec<String> {
    let section = &README[README.find(heading).unwrap()..];
    let block = section.split("```").nth(1).unwrap();
    let line = block.trim().trim_start_matches('…').trim();
    split(
        &line
            .replace("<tmpdir>/maqet-<uuid>-", &format!("{}/", disks.display()))
            .replace("<dir>", path_str(dir)),
    )
}

fn qemu_img_info(path: &Path) -> Value {
    let o = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Runs one qemu-io command on a stopped VM's image; true on success
/// (a `read -P` that finds another pattern fails).
fn qemu_io(path: &Path, cmd: &str) -> bool {
    let o = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", cmd])
        .arg(path)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("lock"),
        "image in use: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.status.success() && !out.contains("verification failed")
}

fn stop(w: &World, vm: &str) {
    w.ok(&["stop", vm, "--timeout", "1"]);
    assert!(qemu_pids(vm).is_empty());
}

fn snapshots_json(w: &World, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["snapshot", "list"];
    a.extend_from_slice(args);
    a.push("--json");
    match serde_json::from_str(&w.ok(&a)).unwrap() {
        Value::Array(v) => v,
        other => panic!("{other}"),
    }
}

#[test]
fn original_examples_add_start_and_render_their_argv() {
    let w = World::new("stex");
    let dir = w.dir.path().canonicalize().unwrap();
    for (name, text) in EXAMPLES {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
    }
    // Example 2 needs its base image and share beside it.
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("share")).unwrap();
    let base = dir.join("images/base.qcow2");
    let o = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("64M")
        .output()
        .unwrap();
    assert!(o.status.success());

    let min = w.name("min");
    let dev = w.name("dev");
    let ci = w.name("ci");
    let ex = |f: &str| path_str(&dir.join(f)).to_string();
    w.ok(&[
        "add",
        "--vm-config",
        &ex("example1-minimal.yaml"),
        "--name",
        &min,
    ]);
    w.ok(&["add", &ex("example2-devbox.yaml"), "--name", &dev]);
    let err = w.maqet(&[
        "add",
        &ex("layered/base.yaml"),
        &ex("layered/ci-runner.yaml"),
        "--name",
        &ci,
    ]);
    assert!(err.status.success());
    // The duplicate -smp of the original becomes one option and a warning.
    let warn = String::from_utf8_lossy(&err.stderr);
    assert!(
        warn.contains("cpu is overridden by arguments[4] '-smp 2'"),
        "{warn}"
    );

    assert_eq!(
        config_argv(&w, &min),
        readme_argv("## Example 1", &dir, &disks_of(&w, &min))
    );
    assert_eq!(
        config_argv(&w, &dev),
        readme_argv("## Example 2", &dir, &disks_of(&w, &dev))
    );
    let mut layered = readme_argv("## Example 3", &dir, &disks_of(&w, &ci));
    let i = layered.iter().position(|a| a == "-smp").unwrap();
    assert_eq!(layered.drain(i..i + 2).collect::<Vec<_>>(), ["-smp", "1"]);
    assert_eq!(config_argv(&w, &ci), layered);

    // Example 2 forwards 127.0.0.1:2222; wait out another user of the port.
    wait_until("127.0.0.1:2222 to be free", Duration::from_secs(30), || {
        std::net::TcpListener::bind("127.0.0.1:2222").is_ok()
    });
    for vm in [&min, &dev, &ci] {
        w.ok(&["start", vm]);
        assert_eq!(w.state(vm), "running");
    }
    // Disks were made at first start: 0600, where the argv says, with the
    // sizes and formats of the configs; the overlay keeps a relative backing file.
    let hdd = disks_of(&w, &min).join("hdd.qcow2");
    let overlay = dir.join("images/devbox-overlay.qcow2");
    let scratch = dir.join("images/scratch.img");
    let root = disks_of(&w, &ci).join("root.qcow2");
    let cache = disks_of(&w, &ci).join("cache.qcow2");
    for (p, format, size) in [
        (&hdd, "qcow2", 2u64 << 30),
        (&overlay, "qcow2", 64 << 20),
        (&scratch, "raw", 256 << 20),
        (&root, "qcow2", 4 << 30),
        (&cache, "qcow2", 8 << 30),
    ] {
        assert_eq!(mode(p), 0o600, "{}", p.display());
        let i = qemu_img_info(p);
        assert_eq!(i["format"], format, "{i:#}");
        assert_eq!(i["virtual-size"], size, "{i:#}");
    }
    assert_eq!(mode(&disks_of(&w, &min)), 0o700);
    let oi = qemu_img_info(&overlay);
    assert_eq!(oi["backing-filename"], "base.qcow2", "{oi:#}");
    assert_eq!(oi["backing-filename-format"], "qcow2");

    // storage ls knows them all, with the backing chain.
    let ls: Vec<Value> = serde_json::from_str(&w.ok(&["storage", "ls", "--json"])).unwrap();
    let row = |p: &Path| {
        ls.iter()
            .find(|r| r["path"] == path_str(p))
            .unwrap_or_else(|| panic!("{} not listed: {ls:#?}", p.display()))
            .clone()
    };
    let r = row(&overlay);
    assert_eq!(r["vm"], dev.as_str());
    assert_eq!(r["drive"], "system");
    assert_eq!(r["created_by_maqet"], true);
    assert_eq!(r["backing_chain"], serde_json::json!([path_str(&base)]));
    assert_eq!(row(&scratch)["format"], "raw");
    assert_eq!(row(&hdd)["virtual_size"], 2u64 << 30);
    assert!(row(&hdd)["actual_size"].as_u64().unwrap() > 0);
    assert!(ls.iter().all(|r| r["referenced"] == true), "{ls:#?}");

    for vm in [&min, &dev, &ci] {
        w.ok(&["stop", vm, "--force"]);
    }
    // rm --delete-storage deletes exactly what maqet created.
    let out = w.maqet(&["rm", &dev, "--delete-storage"]);
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("deleted {}", overlay.display())),
        "{said}"
    );
    assert!(
        said.contains(&format!("deleted {}", scratch.display())),
        "{said}"
    );
    assert!(!overlay.exists() && !scratch.exists());
    assert!(base.exists() && dir.join("share").is_dir());
    // Without --delete-storage the disks stay and show up as unreferenced.
    let said = w.fails(0, &["rm", &ci]);
    assert!(said.contains("kept the files maqet created"), "{said}");
    assert!(root.exists() && cache.exists());
    let ls: Vec<Value> = serde_json::from_str(&w.ok(&["storage", "ls", "--json"])).unwrap();
    let orphan = ls.iter().find(|r| r["path"] == path_str(&root)).unwrap();
    assert_eq!(orphan["referenced"], false);
    assert_eq!(orphan["vm"], Value::Null);
    w.ok(&["rm", &min, "--delete-storage"]);
    assert!(!disks_of(&w, &min).exists());
}

#[test]
fn argument_forms_and_merge_rules_render_exact_argv() {
    let w = World::new("stmerge");
    let dir = w.dir.path().canonicalize().unwrap();
    let d = path_str(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let a = w.write(
        "a.yaml",
        &format!(
            r#"binary: {QEMU}
memory: 256M
cpu: 1
storage:
  - {{name: root, size: 1G}}
arguments:
  - "nodefaults"
  - "-snapshot"
  - {{enable-kvm: null}}
  - accel: tcg
  - {{display: gtk, zoom-to-fit: "on"}}
  - netdev: {{user: null, id: n0, hostfwd: "tcp::2222-:22"}}
  - device: {{virtio-net-pci: null, netdev: n0}}
  - device: virtio-rng-pci
  - object: {{memory-backend-ram: null, id: mem0, size: 512M}}
  - numa: {{node: {{nodeid: 0, memdev: mem0}}}}
  - boot: {{order: c}}
  - drive: "file=./x.iso,media=cdrom"
  - chardev: socket,id=s0,path=./s.sock,server=on,wait=off
  - vnc: unix:./vnc.sock
  - loadvm: snap1
  - incoming: defer
  - {{foo: {{}}}}
  - {{}}
  - usb: off
"#
        ),
    );
    let b = w.write(
        "sub/b.yaml",
        r#"name: ignored-by-name-flag
memory: 1G
storage:
  - {name: data, type: raw, file: data.img, size: 64M, interface: ide}
arguments:
  - device: virtio-balloon-pci
  - smp: {cores: 2, threads: 1}
  - {display: {none: null}}
  - kernel: ./vmlinuz
"#,
    );
    let vm = w.name("m");
    w.ok(&["add", path_str(&a), path_str(&b), "--name", &vm]);
    let disks = disks_of(&w, &vm);
    let expected = split(&format!(
        "-m 1G \
         -drive file={}/root.qcow2,if=virtio,format=qcow2 \
         -drive file={d}/sub/data.img,if=ide,format=raw \
         -nodefaults -snapshot -enable-kvm -accel tcg -display none \
         -netdev user,id=n0,hostfwd=tcp::2222-:22 \
         -device virtio-balloon-pci -device virtio-rng-pci \
         -object memory-backend-ram,id=mem0,size=512M -numa node.nodeid=0,node.memdev=mem0 \
         -boot order=c -drive file={d}/x.iso,media=cdrom \
         -chardev socket,id=s0,path={d}/s.sock,server=on,wait=off -vnc unix:{d}/vnc.sock \
         -loadvm snap1 -incoming defer -foo -usb off \
         -smp cores=2,threads=1 -kernel {d}/sub/vmlinuz",
        disks.display()
    ));
    assert_eq!(config_argv(&w, &vm), expected);
    let v = info(&w, &vm);
    let canon = |p: &Path| p.canonicalize().unwrap().display().to_string();
    assert_eq!(v["sources"], serde_json::json!([canon(&a), canon(&b)]));

    // `maqet config` prints YAML that `maqet add` takes back unchanged.
    let yaml = w.ok(&["config", &vm]);
    assert!(yaml.contains(&format!("name: {vm}\n")), "{yaml}");
    std::fs::create_dir_all(dir.join("copy")).unwrap();
    let copy_file = w.write("copy/again.yaml", &yaml);
    let copy = w.name("m2");
    w.ok(&["add", path_str(&copy_file), "--name", &copy]);
    assert_eq!(info(&w, &copy)["config"], v["config"]);
    let mut copy_argv = config_argv(&w, &copy);
    let ours = path_str(&disks_of(&w, &copy)).to_string();
    let theirs = path_str(&disks).to_string();
    for a in copy_argv.iter_mut() {
        *a = a.replace(&ours, &theirs);
    }
    assert_eq!(copy_argv, expected);
    let stored: Value = serde_json::from_str(&w.ok(&["config", &vm, "--json"])).unwrap();
    assert_eq!(stored, v["config"]);
}

#[test]
fn configs_qemu_would_reject_are_refused_at_add_with_file_line_and_key() {
    let w = World::new("strefuse");
    let dir = w.dir.path().canonicalize().unwrap();
    let case = |body: &str, expect: &[&str]| {
        let f = w.write("bad.yaml", &format!("name: bad\nbinary: {QEMU}\n{body}"));
        let err = w.fails(4, &["add", path_str(&f)]);
        let file = format!("{}/bad.yaml:", dir.display());
        assert!(err.contains(&file), "no file:line in {err}");
        for e in expect {
            assert!(err.contains(e), "'{e}' not in {err}");
        }
    };
    case(
        "storage:\n  - {name: d, file: /etc/d.qcow2}\n",
        &["bad.yaml:4:", "storage[0].file", "system directory /etc"],
    );
    case(
        "storage:\n  - {name: d, size: 10Q}\n",
        &["storage[0].size", "invalid size '10Q'"],
    );
    case(
        "arguments:\n  - m: 1G\n  - accel: tcg\n  - m: 2G\n",
        &[
            "arguments[2]",
            "bad.yaml:6:",
            "duplicate single-instance option '-m'",
            "arguments[0]",
        ],
    );
    case(
        "storage:\n  - {name: d, interface: sata}\narguments:\n  - machine: microvm\n",
        &[
            "storage[0].interface",
            "needs a PCI bus",
            "machine 'microvm'",
        ],
    );
    case(
        "storage:\n  - {name: d, interface: nvme}\n",
        &["storage[0].interface", "invalid interface 'nvme'"],
    );
    case(
        "memroy: 1G\n",
        &[
            "bad.yaml:3:1",
            "unknown key 'memroy'",
            "did you mean 'memory'",
        ],
    );
    case(
        "memory: lots\n",
        &["bad.yaml:3:9", "memory: invalid memory size 'lots'"],
    );
    case(
        "storage:\n  - {name: d, mount_tag: x}\n",
        &["'mount_tag' belongs under 'options:'"],
    );
    // Two device items in one file are two devices (the original collapsed them).
    let f = w.write(
        "two.yaml",
        &format!("binary: {QEMU}\narguments:\n  - device: a\n  - device: b\n"),
    );
    let vm = w.name("two");
    w.ok(&["add", path_str(&f), "--name", &vm]);
    // (No display chosen: the private VNC socket comes after them.)
    let vnc = runtime_dir(&vm).join("vnc.sock");
    assert_eq!(
        config_argv(&w, &vm),
        split(&format!("-device a -device b -vnc unix:{}", vnc.display()))
    );
    assert!(w.maqet(&["ls"]).status.success());
}

#[test]
fn apply_merges_validates_and_refuses_a_running_vm() {
    let w = World::new("stapply");
    let vm = w.add_vm("a", "storage:\n  - {name: hdd, size: 16M}\n");
    let extra = w.write(
        "more.yaml",
        "memory: 96M\nstorage:\n  - {name: data, size: 8M}\narguments:\n  - accel: kvm\n",
    );
    let out = w.ok(&[
        "apply",
        &vm,
        path_str(&extra),
        "--cpu",
        "2",
        "--set",
        "resources.tasks_max=100",
        "--set",
        "storage.0.size=32M",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "~ memory: 64M -> 96M",
            "~ arguments[0].accel: tcg -> kvm",
            "~ storage[0].size: 16M -> 32M",
            "+ storage[1]: {\"name\":\"data\",\"size\":\"8M\"}",
            "+ cpu: 2",
            "+ resources: {\"tasks_max\":100}",
        ],
        "{out}"
    );
    let disks = disks_of(&w, &vm);
    assert_eq!(
        config_argv(&w, &vm),
        split(&format!(
            "-m 96M -accel kvm -display none -nodefaults \
             -drive file={0}/hdd.qcow2,if=virtio,format=qcow2 \
             -drive file={0}/data.qcow2,if=virtio,format=qcow2 -smp 2",
            disks.display()
        ))
    );
    let sources = info(&w, &vm)["sources"].clone();
    assert_eq!(sources.as_array().unwrap().len(), 2, "{sources}");
    // Flag values are validated like file values, naming the flag.
    let err = w.fails(4, &["apply", &vm, "--memory", "lots"]);
    assert!(
        err.contains("--memory: memory: invalid memory size 'lots'"),
        "{err}"
    );
    let err = w.fails(4, &["apply", &vm, "--set", "storage.0.interface=nvme"]);
    assert!(
        err.contains("--set storage.0.interface: storage[0].interface: invalid interface 'nvme'"),
        "{err}"
    );
    let err = w.fails(2, &["apply", &vm, "--set", "memory"]);
    assert!(err.contains("expected KEY=VALUE"), "{err}");
    // Nothing new: nothing stored.
    let err = w.fails(0, &["apply", &vm, "--cpu", "2"]);
    assert!(err.contains("unchanged"), "{err}");
    // A missing VM is not created.
    let err = w.fails(3, &["apply", &w.name("nope"), "--cpu", "2"]);
    assert!(err.contains("maqet add"), "{err}");
    assert!(w.maqet(&["info", &w.name("nope")]).status.code() == Some(3));
    // A running VM keeps its config until stopped.
    w.ok(&["apply", &vm, "--set", "arguments.0.accel=tcg"]);
    w.ok(&["start", &vm]);
    let err = w.fails(5, &["apply", &vm, "--memory", "128M"]);
    assert!(err.contains(&format!("maqet stop {vm}")), "{err}");
    stop(&w, &vm);
    w.ok(&["apply", &vm, "--enable-kvm", "--binary", QEMU]);
    assert_eq!(info(&w, &vm)["config"]["enable_kvm"], true);
}

#[test]
fn disks_follow_the_vm_and_failed_starts_leave_none() {
    let w = World::new("stdisk");
    let dir = w.dir.path().canonicalize().unwrap();
    // A disk the user brought, and one maqet makes.
    let mine = dir.join("mine.qcow2");
    assert!(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&mine)
        .arg("8M")
        .status()
        .unwrap()
        .success());
    let vm = w.add_vm(
        "d",
        &format!(
            "storage:\n  - {{name: mine, file: {}}}\n  - {{name: new, size: 8M}}\n  - {{name: share, type: virtfs, path: {}/share}}\n",
            mine.display(),
            dir.display()
        ),
    );
    let new = disks_of(&w, &vm).join("new.qcow2");
    // storage create makes them now; start then has nothing to create.
    let out = w.ok(&["storage", "create", &vm]);
    assert!(out.contains(&format!("created {}", new.display())), "{out}");
    assert!(dir.join("share").is_dir());
    assert_eq!(mode(&new), 0o600);
    let o = w.maqet(&["start", &vm]);
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("created"));
    w.ok(&["stop", &vm, "--force"]);
    // --delete-file only takes the VM's own disks.
    let err = w.fails(2, &["rm", &vm, "--delete-file", "/etc/passwd"]);
    assert!(err.contains("not a disk image of VM"), "{err}");
    assert_eq!(w.state(&vm), "defined");
    let said = w.fails(0, &["rm", &vm, "--delete-storage"]);
    assert!(
        said.contains(&format!("deleted {}", new.display())),
        "{said}"
    );
    assert!(
        said.contains(&format!("kept {} (you brought it", mine.display())),
        "{said}"
    );
    assert!(mine.exists() && !new.exists() && !disks_of(&w, &vm).exists());
    assert!(
        !dir.join("share").exists(),
        "the empty share maqet made was kept"
    );

    // Named explicitly, a brought file goes too.
    let vm = w.add_vm(
        "e",
        &format!("storage:\n  - {{name: mine, file: {}}}\n", mine.display()),
    );
    let said = w.fails(0, &["rm", &vm, "--delete-file", path_str(&mine)]);
    assert!(said.contains("deleted"), "{said}");
    assert!(!mine.exists());

    // A start QEMU refuses removes the disks it created and their records.
    let vm = w.add_vm(
        "f",
        // Continues the harness's arguments list.
        "  - device: no-such-device-xyz\nstorage:\n  - {name: hdd, size: 8M}\n",
    );
    let err = w.fails(1, &["start", &vm]);
    let hdd = disks_of(&w, &vm).join("hdd.qcow2");
    assert!(err.contains("removed what this start created"), "{err}");
    assert!(err.contains(path_str(&hdd)), "{err}");
    assert!(!hdd.exists() && !disks_of(&w, &vm).exists());
    let ls: Vec<Value> = serde_json::from_str(&w.ok(&["storage", "ls", &vm, "--json"])).unwrap();
    assert_eq!(ls.len(), 1);
    assert_eq!(ls[0]["exists"], false);
    assert_eq!(ls[0]["created_by_maqet"], false);
}

#[test]
fn offline_snapshots_restore_the_disk() {
    let w = World::new("stoff");
    let vm = w.add_vm(
        "o",
        "storage:\n  - {name: hdd, size: 8M}\n  - {name: scratch, type: raw, size: 1M}\n",
    );
    let err = w.fails(1, &["snapshot", "create", &vm, "hdd", "s1"]);
    assert!(err.contains("has no image yet"), "{err}");
    w.ok(&["storage", "create", &vm]);
    let hdd = disks_of(&w, &vm).join("hdd.qcow2");
    assert!(qemu_io(&hdd, "write -P 0x11 0 64k"));
    w.ok(&["snapshot", "create", &vm, "hdd", "s1"]);
    assert!(qemu_io(&hdd, "write -P 0xab 0 64k"));
    assert!(qemu_io(&hdd, "read -P 0xab 0 64k"));
    let list = snapshots_json(&w, &[&vm, "hdd"]);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["tag"], "s1");
    assert_eq!(list[0]["kind"], "disk");
    assert_eq!(list[0]["vm_state_size"], 0);
    assert!(list[0]["date"].as_str().unwrap().ends_with('Z'));
    let said = w.fails(0, &["snapshot", "load", &vm, "hdd", "--name", "s1"]);
    assert!(said.contains("back at snapshot 's1'"), "{said}");
    assert!(
        qemu_io(&hdd, "read -P 0x11 0 64k"),
        "the change survived the load"
    );
    assert!(!qemu_io(&hdd, "read -P 0xab 0 64k"));

    // Refusals.
    let err = w.fails(5, &["snapshot", "create", &vm, "hdd", "s1"]);
    assert!(err.contains("--overwrite"), "{err}");
    assert!(qemu_io(&hdd, "write -P 0x22 0 64k"));
    w.ok(&["snapshot", "create", &vm, "hdd", "s1", "--overwrite"]);
    assert!(qemu_io(&hdd, "write -P 0x33 0 64k"));
    w.ok(&["snapshot", "load", &vm, "hdd", "s1"]);
    assert!(
        qemu_io(&hdd, "read -P 0x22 0 64k"),
        "overwrite kept the old state"
    );
    let err = w.fails(3, &["snapshot", "load", &vm, "hdd", "nope"]);
    assert!(
        err.contains("no snapshot 'nope' on drive 'hdd' (snapshots: s1)"),
        "{err}"
    );
    let err = w.fails(2, &["snapshot", "create", &vm, "scratch", "s1"]);
    assert!(err.contains("drive 'scratch' is raw; only qcow2"), "{err}");
    let err = w.fails(3, &["snapshot", "create", &vm, "nodisk", "s1"]);
    assert!(err.contains("disks: hdd, scratch"), "{err}");
    let err = w.fails(2, &["snapshot", "create", &vm, "hdd", "12"]);
    assert!(err.contains("invalid snapshot name '12'"), "{err}");
    let err = w.fails(2, &["snapshot", "create", &vm, "hdd", "a", "--name", "b"]);
    assert!(err.contains("two snapshot names"), "{err}");
    let err = w.fails(5, &["snapshot", "create", &vm, "hdd", "s2", "--live"]);
    assert!(err.contains("is not running"), "{err}");
    // The original tool's argument order.
    w.ok(&["snapshot", &vm, "create", "hdd", "--name", "s2"]);
    let tags: Vec<Value> = snapshots_json(&w, &[&vm])
        .iter()
        .map(|s| s["tag"].clone())
        .collect();
    assert_eq!(tags, ["s1", "s2"]);
    w.ok(&["snapshot", "delete", &vm, "hdd", "s1"]);
    let err = w.fails(3, &["snapshot", "delete", &vm, "hdd", "s1"]);
    assert!(err.contains("no snapshot 's1'"), "{err}");
    assert_eq!(
        qemu_img_info(&hdd)["snapshots"].as_array().unwrap().len(),
        1
    );
    let table = w.ok(&["snapshot", "list", &vm]);
    assert!(table.starts_with("DRIVE  TAG  DATE"), "{table}");
    assert!(table.contains("hdd    s2"), "{table}");
}

#[test]
fn live_snapshots_restore_disks_and_vm_state() {
    let w = World::new("stlive");
    let vm = w.add_vm(
        "l",
        "storage:\n  - {name: hdd, size: 8M}\n  - {name: data, size: 8M}\n",
    );
    w.ok(&["storage", "create", &vm]);
    let hdd = disks_of(&w, &vm).join("hdd.qcow2");
    let data = disks_of(&w, &vm).join("data.qcow2");
    for d in [&hdd, &data] {
        assert!(qemu_io(d, "write -P 0x11 0 64k"));
    }
    w.ok(&["start", &vm]);
    // Without --live, a running VM's disks are not touched.
    let err = w.fails(5, &["snapshot", "create", &vm, "hdd", "s1"]);
    assert!(err.contains("--live"), "{err}");
    // A VM without a guest agent is saved as before: nothing about freezing.
    let o = w.maqet(&[
        "snapshot", "create", &vm, "hdd", "--name", "s1", "--live", "--json",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("froz"),
        "{o:?}"
    );
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&j["guest_agent"], &j["frozen"]),
        (&Value::Bool(false), &Value::Bool(false))
    );
    assert!(
        j.get("freeze").is_none() && j.get("filesystems").is_none(),
        "{j:#}"
    );
    assert_eq!(j["drives"], serde_json::json!(["hdd", "data"]), "{j:#}");
    let list = snapshots_json(&w, &[&vm]);
    assert_eq!(list.len(), 2, "{list:?}");
    let hdd_row = list.iter().find(|r| r["drive"] == "hdd").unwrap();
    assert!(hdd_row["vm_state_size"].as_u64().unwrap() > 0, "{list:?}");
    assert!(list.iter().all(|r| r["kind"] == "live" && r["tag"] == "s1"));
    let err = w.fails(5, &["snapshot", "create", &vm, "hdd", "s1", "--live"]);
    assert!(
        err.contains("already exists on drives 'hdd', 'data'"),
        "{err}"
    );
    let err = w.fails(5, &["snapshot", "load", &vm, "hdd", "s1"]);
    assert!(
        err.contains("will not load a disk snapshot into a running VM"),
        "{err}"
    );
    assert_eq!(w.state(&vm), "running");

    // Change both disks behind the snapshot's back, then load it live.
    stop(&w, &vm);
    for d in [&hdd, &data] {
        assert!(qemu_io(d, "write -P 0xab 0 64k"));
    }
    w.ok(&["start", &vm]);
    let said = w.fails(0, &["snapshot", "load", &vm, "hdd", "s1", "--live"]);
    assert!(said.contains("RAM restored"), "{said}");
    let st: Value = serde_json::from_str(&w.ok(&["qmp", "run", &vm, "query-status"])).unwrap();
    assert_eq!(st["status"], "running");
    // Overwrite and delete while running.
    w.ok(&[
        "snapshot",
        "create",
        &vm,
        "hdd",
        "s1",
        "--live",
        "--overwrite",
    ]);
    w.ok(&["snapshot", "create", &vm, "hdd", "s2", "--live"]);
    w.ok(&["snapshot", "delete", &vm, "hdd", "s2", "--live"]);
    let tags: Vec<Value> = snapshots_json(&w, &[&vm, "hdd"])
        .iter()
        .map(|s| s["tag"].clone())
        .collect();
    assert_eq!(tags, ["s1"]);
    stop(&w, &vm);
    for d in [&hdd, &data] {
        assert!(
            qemu_io(d, "read -P 0x11 0 64k"),
            "{} kept the change",
            d.display()
        );
    }
    w.ok(&["snapshot", "load", &vm, "hdd", "s1"]);
}

#[test]
fn live_snapshots_refuse_raw_disks_before_changing_anything() {
    let w = World::new("straw");
    let vm = w.add_vm(
        "r",
        "storage:\n  - {name: hdd, size: 8M}\n  - {name: scratch, type: raw, size: 1M, interface: ide}\n",
    );
    w.ok(&["start", &vm]);
    let err = w.fails(2, &["snapshot", "create", &vm, "hdd", "s1", "--live"]);
    assert!(
        err.contains("drive 'scratch' (raw, ") && err.contains("nothing was changed"),
        "{err}"
    );
    let hdd = disks_of(&w, &vm).join("hdd.qcow2");
    assert!(qemu_img_info(&hdd).get("snapshots").is_none());
    let err = w.fails(2, &["snapshot", "load", &vm, "hdd", "s1", "--live"]);
    assert!(err.contains("cannot hold internal snapshots"), "{err}");
    assert_eq!(w.state(&vm), "running");
    let st: Value = serde_json::from_str(&w.ok(&["qmp", "run", &vm, "query-status"])).unwrap();
    assert_eq!(st["status"], "running");
    w.ok(&["stop", &vm, "--force"]);
}
