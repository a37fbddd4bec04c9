//! Hostile config values against the real thing: what cannot be passed to
//! QEMU safely is refused by `add` with its file:line:column (exit 4) and
//! nothing is stored; what can is escaped and reaches QEMU intact.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// `maqet ls --json` names.
fn defined(w: &World) -> Vec<String> {
    let v: Value = serde_json::from_str(&w.ok(&["ls", "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|vm| vm["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn add_refuses_nul_bytes_and_option_keys_with_their_position() {
    let w = World::new("cfgnul");
    let share = w.dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let cases = [
        // A NUL byte, written as YAML's "\0" escape, in a virtfs option.
        (
            "nul",
            "  - {name: s, type: virtfs, path: SHARE, options: {multidevs: \"remap\\0\"}}\n",
            ":9:",
            "storage[0].options.multidevs: the value contains a NUL byte",
        ),
        // An option key that would add `path=/etc` to the -virtfs option.
        (
            "key",
            "  - {name: s, type: virtfs, path: SHARE, options: {\"fmode=0600,path\": /etc}}\n",
            ":9:",
            "storage[0].options.fmode=0600,path: key",
        ),
    ];
    for (suffix, storage, line, message) in cases {
        let name = w.name(suffix);
        let f = w.vm_yaml(
            &name,
            &format!(
                "storage:\n{}",
                storage.replace("SHARE", &share.display().to_string())
            ),
        );
        let err = w.fails(4, &["add", f.to_str().unwrap()]);
        let place = format!("{}{line}", f.display());
        assert!(err.contains(&place), "{suffix}: no {place} in {err}");
        assert!(err.contains(message), "{suffix}: {err}");
        assert!(!defined(&w).contains(&name), "{suffix}: stored anyway");
    }
    // A NUL byte in the kernel command line, too.
    let name = w.name("append");
    let f = w.vm_yaml(&name, "  - append: \"console=ttyS0\\0\"\n");
    let err = w.fails(4, &["add", f.to_str().unwrap()]);
    assert!(
        err.contains(&format!("{}:8:", f.display())) && err.contains("arguments[3].append"),
        "{err}"
    );
    assert!(defined(&w).is_empty());
}

#[test]
fn comma_in_a_value_reaches_qemu_as_one_value() {
    let w = World::new("cfgcomma");
    let share = w.dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let vm = w.add_vm(
        "comma",
        &format!(
            concat!(
                "  - blockdev: {{driver: null-co, node-name: d0}}\n",
                "  - device: {{virtio-blk-pci: null, drive: d0, id: blk0, serial: \"a,id=evil\"}}\n",
                "storage:\n",
                "  - {{name: s, type: virtfs, path: {}, options: {{multidevs: \"remap,path=/etc\"}}}}\n",
            ),
            share.display()
        ),
    );
    // The stored command line keeps the share where the config put it.
    let info = w.ok(&["info", &vm]);
    assert!(
        info.contains(&format!(
            "-virtfs local,path={},mount_tag=s,security_model=passthrough,id=s,multidevs=remap,,path=/etc",
            share.display()
        )),
        "{info}"
    );
    assert!(info.contains("serial=a,,id=evil"), "{info}");
    // QEMU itself reads the value back whole (the share is left out: QEMU
    // would rightly refuse that multidevs value).
    w.ok(&["apply", &vm, "--set", "storage=[]"]);
    w.ok(&["start", &vm]);
    let got: Value = serde_json::from_str(&w.ok(&[
        "qmp",
        "run",
        &vm,
        "qom-get",
        r#"{"path": "/machine/peripheral/blk0", "property": "serial"}"#,
    ]))
    .unwrap();
    assert_eq!(got, "a,id=evil");
    w.ok(&["stop", &vm, "--timeout", "1"]);
    w.wait_state(&vm, "defined", Duration::from_secs(30));
}

#[test]
fn set_keys_are_bounded() {
    let w = World::new("cfgset");
    let vm = w.add_vm("set", "");
    let deep = vec!["a"; 20_000].join(".");
    let err = w.fails(4, &["apply", &vm, "--set", &format!("{deep}=1")]);
    assert!(err.contains("at most 256"), "{err}");
    let err = w.fails(
        4,
        &[
            "apply",
            &vm,
            "--set",
            &format!("{}=1", vec!["a"; 17].join(".")),
        ],
    );
    assert!(err.contains("at most 16 levels"), "{err}");
    let big = "x".repeat(70_000);
    let err = w.fails(4, &["apply", &vm, "--set", &format!("display={big}")]);
    assert!(err.contains("at most 65536"), "{err}");
    // Nothing was changed.
    let cfg = w.ok(&["config", &vm]);
    assert!(!cfg.contains("a:") && !cfg.contains("xxxx"), "{cfg}");
}

#[test]
fn each_config_warning_is_printed_once() {
    let w = World::new("cfgwarn");
    let name = w.name("warn");
    let f = w.vm_yaml(&name, "network: {type: user}\n");
    let out = w.maqet(&["add", f.to_str().unwrap()]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr
            .matches("'network' as a mapping is the original tool's")
            .count(),
        1,
        "{stderr}"
    );
    let out = w.maqet(&["apply", &name, "--set", "cpu=2"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr
            .matches("'network' as a mapping is the original tool's")
            .count(),
        1,
        "{stderr}"
    );
}

/// The QMP policy at `add` and `apply`: options that make QEMU run a host
/// program are refused where they were written (exit 4, nothing stored or
/// changed) unless the config sets `qmp_allow_host_exec: true`.
#[test]
fn add_and_apply_refuse_options_that_run_host_programs() {
    let w = World::new("cfgexec");
    let marker = w.dir.path().join("ran");
    let cases = [
        (
            "vde",
            format!(
                "  - netdev: {{vde: null, id: v, sock: \"cmd://sh -c 'touch {}'\"}}\n",
                marker.display()
            ),
            ":8:5:",
            "netdev type 'vde'",
        ),
        (
            "tap",
            "args: [-netdev, \"tap,id=t,script= no,downscript=no\"]\n".to_string(),
            ":8:8:",
            "a tap without script=no and downscript=no",
        ),
        (
            "incoming",
            format!("  - incoming: \"exec:touch {}\"\n", marker.display()),
            ":8:5:",
            "-incoming exec:",
        ),
    ];
    for (suffix, extra, line, message) in &cases {
        let name = w.name(suffix);
        let f = w.vm_yaml(&name, extra);
        let err = w.fails(4, &["add", f.to_str().unwrap()]);
        let place = format!("{}{line}", f.display());
        assert!(err.contains(&place), "{suffix}: no {place} in {err}");
        assert!(
            err.contains(message) && err.contains("qmp_allow_host_exec: true"),
            "{suffix}: {err}"
        );
        assert!(!defined(&w).contains(&name), "{suffix}: stored anyway");
    }
    // apply: the same check, and the stored config stays as it was.
    let vm = w.add_vm("apply", "");
    let before = w.ok(&["config", &vm]);
    let f = w.vm_yaml(&vm, &cases[0].1);
    let err = w.fails(4, &["apply", &vm, f.to_str().unwrap()]);
    assert!(err.contains("netdev type 'vde'"), "{err}");
    assert_eq!(w.ok(&["config", &vm]), before);
    // The opt-out lets the same config in.
    let open = w.name("open");
    let f = w.write(
        &format!("{open}.yaml"),
        &format!(
            "name: {open}\nbinary: {QEMU}\nqmp_allow_host_exec: true\narguments:\n{}",
            cases[0].1
        ),
    );
    w.ok(&["add", f.to_str().unwrap()]);
    assert!(defined(&w).contains(&open));
    assert!(!marker.exists());
}

/// The issue's alias bomb (a 600 KB string aliased 500 times, under the
/// value cap) is refused by `add` with its position and nothing is
/// stored; large definitions that were stored give their space back when
/// they are removed.
#[test]
fn alias_bombs_are_refused_and_removed_definitions_give_space_back() {
    let w = World::new("cfgbomb");
    let name = w.name("bomb");
    let refs = vec!["*s"; 500].join(", ");
    let f = w.write(
        "bomb.yaml",
        &format!(
            "name: {name}\nbinary: {QEMU}\nbig: &s \"{}\"\nargs: [{refs}]\n",
            "x".repeat(600_000)
        ),
    );
    let err = w.fails(4, &["add", f.to_str().unwrap()]);
    assert!(
        err.contains(&format!("{}:4:", f.display())) && err.contains("more than 1 MiB"),
        "{err}"
    );
    assert!(defined(&w).is_empty());

    // Two definitions of ~900 KB each (a long kernel command line), then rm.
    let db = w.data_dir().join("maqet.db");
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let on_disk = || size(&db) + size(&db.with_extension("db-wal"));
    let small = w.add_vm("small", "");
    let baseline = on_disk();
    let mut big = vec![];
    for i in 0..2 {
        let vm = w.add_vm(
            &format!("big{i}"),
            &format!("  - append: \"{}\"\n", "y".repeat(900_000)),
        );
        big.push(vm);
    }
    assert!(on_disk() > baseline + 1_500_000, "{}", on_disk());
    for vm in &big {
        w.ok(&["rm", vm]);
    }
    assert!(
        on_disk() < baseline + (1 << 20),
        "{} bytes on disk after rm (baseline {baseline})",
        on_disk()
    );
    assert_eq!(defined(&w), vec![small]);
}

fn mkfifo(p: &std::path::Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo {}", p.display());
}

/// `maqet ARGS` within `limit`, else it is killed and the test fails:
/// these commands used to wait for ever.
fn within(w: &World, args: &[&str], limit: Duration) -> std::process::Output {
    let mut child = w
        .cmd()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let end = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("maqet {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostileTestKeyOnlyForItsShape maqet-test";

/// FIFOs where a regular file is meant: refused by `add` with their
/// position; when one replaces a file after `add`, `start`, `storage
/// ls|verify`, `snapshot list` and `storage attach` answer at once (and
/// `rm` is not held up), and `autostart` starts the other VMs and
/// reports the one that failed.
#[test]
fn special_files_never_hang_anything() {
    let w = World::new("cfgfifo");
    let d = w.dir.path();
    let fifo = d.join("fifo");
    mkfifo(&fifo);
    let f = fifo.display();
    for (suffix, extra, line) in [
        (
            "disk",
            format!("storage:\n  - {{name: d, type: raw, file: {f}}}\n"),
            ":9:",
        ),
        (
            "userdata",
            format!("cloud_init:\n  ssh_authorized_keys: [\"{KEY}\"]\n  user_data_file: {f}\n"),
            ":10:",
        ),
        (
            "key",
            format!("cloud_init:\n  ssh_authorized_keys: [{f}]\n"),
            ":9:",
        ),
    ] {
        let name = w.name(suffix);
        let file = w.vm_yaml(&name, &extra);
        let err = w.fails(4, &["add", file.to_str().unwrap()]);
        assert!(
            err.contains(&format!("{}{line}", file.display())) && err.contains("a FIFO"),
            "{suffix}: {err}"
        );
    }
    assert!(defined(&w).is_empty());

    // Regular files at `add`, FIFOs by the time they are used.
    let user_data = d.join("user-data");
    std::fs::write(&user_data, "#cloud-config\n").unwrap();
    let seeded = w.add_vm(
        "seeded",
        &format!(
            "cloud_init:\n  ssh_authorized_keys: [\"{KEY}\"]\n  user_data_file: {}\nautostart: true\n",
            user_data.display()
        ),
    );
    let plain = w.add_vm("plain", "autostart: true\n");
    let disk = d.join("disk.qcow2");
    let disked = w.add_vm(
        "disked",
        &format!(
            "storage:\n  - {{name: d, size: 1M, file: {}}}\n",
            disk.display()
        ),
    );
    w.ok(&["storage", "create", &disked]);
    std::fs::remove_file(&user_data).unwrap();
    mkfifo(&user_data);
    std::fs::remove_file(&disk).unwrap();
    mkfifo(&disk);
    let limit = Duration::from_secs(120);

    // `start` validates the definition again: refused before anything is read.
    let o = within(&w, &["start", &seeded], limit);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("a FIFO, not a regular file"),
        "{}",
        text(&o)
    );
    let o = within(&w, &["storage", "ls", &disked], limit);
    assert!(
        text(&o).contains("a FIFO, not a disk image"),
        "{}",
        text(&o)
    );
    let o = within(&w, &["storage", "verify", &disked], limit);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("a FIFO"), "{}", text(&o));
    let o = within(&w, &["snapshot", "list", &disked], limit);
    assert!(
        !o.status.success() && text(&o).contains("a FIFO"),
        "{}",
        text(&o)
    );
    let o = within(
        &w,
        &["storage", "attach", &plain, fifo.to_str().unwrap()],
        limit,
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("a FIFO"), "{}", text(&o));

    // autostart: the seeded VM fails, the plain one is started anyway.
    let o = within(&w, &["autostart"], limit);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains(&format!("{seeded}: failed")) && out.contains("a FIFO"),
        "{out}"
    );
    assert!(out.contains(&format!("{plain}: started")), "{out}");
    assert_eq!(w.state(&plain), "running");
    w.ok(&["stop", &plain, "--force"]);

    // Nothing holds a VM's lock: rm answers at once.
    let o = within(&w, &["rm", &seeded], limit);
    assert!(o.status.success(), "{}", text(&o));
}
