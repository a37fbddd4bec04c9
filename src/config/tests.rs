//! End-to-end tests of the config module: real example files, merged
//! documents, validation messages and full argv.

use maqet_base::programs::is_executable;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

pub(super) const EXAMPLES: &str =
    // This crate is src/config of the repository, which has ../shared beside it.
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/reference/examples"
    );

pub(super) const PREFIX_LEN: usize = 7;

/// What a config that chooses no display renders (the runtime dir of [`ctx`]).
const VNC: &str = "-vnc unix:/run/user/1000/maqet/vm/t/vnc.sock";

pub(super) fn ctx(disk_dir: &Path) -> RenderContext {
    RenderContext {
        runtime_dir: "/run/user/1000/maqet/vm/t".into(),
        vm_name: "vm".into(),
        qmp_fd: 3,
        console_fd: None,
        disk_dir: disk_dir.to_path_buf(),
    }
}

/// A temp dir (canonical, so it matches resolved paths) with an
/// executable stand-in for QEMU.
pub(super) struct Env {
    _tmp: tempfile::TempDir,
    pub(super) dir: PathBuf,
    pub(super) qemu: PathBuf,
}

pub(super) fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let qemu = dir.join("qemu-fake");
    fs::write(&qemu, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&qemu, fs::Permissions::from_mode(0o755)).unwrap();
    Env {
        _tmp: tmp,
        dir,
        qemu,
    }
}

impl Env {
    /// Writes `name` (creating parent dirs) and returns its path.
    pub(super) fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    /// A config file whose binary is the stand-in, so validation passes
    /// on machines without QEMU.
    pub(super) fn config(&self, name: &str, body: &str) -> PathBuf {
        self.file(name, &format!("binary: {}\n{body}", self.qemu.display()))
    }

    pub(super) fn doc(&self, body: &str) -> ConfigDocument {
        ConfigDocument::load_files(&[self.config("vm.yaml", body)]).unwrap()
    }

    pub(super) fn argv(&self, body: &str) -> Vec<String> {
        let cfg = self.doc(body).validate().unwrap();
        cfg.render_argv(&ctx(&self.dir.join("disks")))[PREFIX_LEN..].to_vec()
    }

    pub(super) fn error(&self, body: &str) -> String {
        self.doc(body).validate().unwrap_err().to_string()
    }

    pub(super) fn vm_yaml(&self) -> String {
        self.dir.join("vm.yaml").display().to_string()
    }
}

fn split(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

// ---------------------------------------------------------------- examples

/// Copies the examples into `env.dir`; None (with a note) when the shared
/// reference directory is not beside the crate.
fn copy_examples(env: &Env) -> Option<()> {
    let src = Path::new(EXAMPLES);
    if !src.is_dir() {
        eprintln!("note: {EXAMPLES} not found; skipping the example-file test");
        return None;
    }
    for name in [
        "README.md",
        "example1-minimal.yaml",
        "example2-devbox.yaml",
        "layered/base.yaml",
        "layered/ci-runner.yaml",
    ] {
        env.file(name, &fs::read_to_string(src.join(name)).unwrap());
    }
    // Example 2 needs its base image and share directory.
    env.file("images/base.qcow2", "not really qcow2, only has to exist");
    fs::create_dir_all(env.dir.join("share")).unwrap();
    Some(())
}

/// Loads example files; the binary is replaced by the stand-in only when
/// this machine has no QEMU at the examples' path.
fn load_example(env: &Env, files: &[&str]) -> VmConfig {
    let paths: Vec<PathBuf> = files.iter().map(|f| env.dir.join(f)).collect();
    let mut doc = ConfigDocument::load_files(&paths).unwrap();
    if !is_executable(Path::new(DEFAULT_BINARY)) {
        doc.set(
            "binary",
            json!(env.qemu.display().to_string()),
            "test stand-in",
        );
    }
    doc.validate().unwrap()
}

/// The example configurations, as `maqet add` would be given them.
const EXAMPLE_SETS: [&[&str]; 3] = [
    &["example1-minimal.yaml"],
    &["example2-devbox.yaml"],
    &["layered/base.yaml", "layered/ci-runner.yaml"],
];

/// Loads example files with the binary always set to the stand-in, so the
/// stored form does not depend on this machine's QEMU.
fn example_document(env: &Env, files: &[&str]) -> ConfigDocument {
    let paths: Vec<PathBuf> = files.iter().map(|f| env.dir.join(f)).collect();
    let mut doc = ConfigDocument::load_files(&paths).unwrap();
    doc.set(
        "binary",
        json!(env.qemu.display().to_string()),
        "test stand-in",
    );
    doc
}

/// The argv after the prefix, and the prefix checked.
fn rendered(env: &Env, cfg: &VmConfig) -> Vec<String> {
    let argv = cfg.render_argv(&ctx(&env.dir.join("disks")));
    assert_eq!(
        argv[..PREFIX_LEN],
        [
            cfg.binary.display().to_string(),
            "-name".into(),
            "vm".into(),
            "-chardev".into(),
            "socket,id=maqet-qmp,fd=3".into(),
            "-mon".into(),
            "chardev=maqet-qmp,mode=control".into(),
        ]
    );
    argv[PREFIX_LEN..].to_vec()
}

/// The original argv of one README section, with its placeholders turned
/// into what maqet uses.
fn readme_argv(env: &Env, heading: &str) -> Vec<String> {
    let readme = fs::read_to_string(env.dir.join("README.md")).unwrap();
    let section = &readme[readme.find(heading).unwrap()..];
    let block = section.split("```").nth(1).unwrap();
    let line = block.trim().trim_start_matches('…').trim();
    let disks = env.dir.join("disks").display().to_string();
    split(
        &line
            .replace("<tmpdir>/maqet-<uuid>-", &format!("{disks}/"))
            .replace("<dir>", &env.dir.display().to_string()),
    )
}

#[test]
fn example1_minimal() {
    let env = env();
    if copy_examples(&env).is_none() {
        return;
    }
    let cfg = load_example(&env, &["example1-minimal.yaml"]);
    let disks = env.dir.join("disks").display().to_string();
    let expected = split(&format!(
        "-m 256M -smp 1 -drive file={disks}/hdd.qcow2,if=virtio,format=qcow2 -accel tcg -display none -nodefaults"
    ));
    assert_eq!(rendered(&env, &cfg), expected);
    assert_eq!(rendered(&env, &cfg), readme_argv(&env, "## Example 1"));
    assert_eq!(cfg.name.as_deref(), Some("minimal"));
    assert_eq!(cfg.storage()[0].size, Some(2 << 30));
    assert_eq!(cfg.memory_bytes, Some(256 << 20));
    assert_eq!(cfg.cpus, Some(1));
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
}

#[test]
fn example2_devbox() {
    let env = env();
    if copy_examples(&env).is_none() {
        return;
    }
    let cfg = load_example(&env, &["example2-devbox.yaml"]);
    let d = env.dir.display().to_string();
    let expected = split(&format!(
        "-m 512M -smp 2 -display none -vga std \
         -drive file={d}/images/devbox-overlay.qcow2,if=virtio,format=qcow2 \
         -drive file={d}/images/scratch.img,if=ide,format=raw \
         -virtfs local,path={d}/share,mount_tag=hostsrc,security_model=mapped-xattr,id=src,readonly=on \
         -machine q35 -accel tcg -nodefaults \
         -netdev user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22 -device virtio-net-pci,netdev=net0 \
         -chardev socket,id=ser0,path={d}/devbox-serial.sock,server=on,wait=off -serial chardev:ser0 \
         -boot order=c"
    ));
    assert_eq!(rendered(&env, &cfg), expected);
    assert_eq!(rendered(&env, &cfg), readme_argv(&env, "## Example 2"));
    let system = &cfg.storage()[0];
    assert_eq!(system.backing_file, Some(PathBuf::from("base.qcow2")));
    assert_eq!(system.backing_format, Some(ImageFormat::Qcow2));
    assert_eq!(
        system.backing_path(Path::new("/unused")),
        Some(env.dir.join("images/base.qcow2"))
    );
    assert_eq!(system.size, None);
    assert_eq!(cfg.storage()[1].size, Some(256 << 20));
    assert_eq!(cfg.storage()[2].kind, StorageKind::Virtfs);
    assert_eq!(
        cfg.storage()[2].path(Path::new("/x")),
        env.dir.join("share")
    );
}

#[test]
fn example2_needs_its_base_image() {
    let env = env();
    if copy_examples(&env).is_none() {
        return;
    }
    fs::remove_file(env.dir.join("images/base.qcow2")).unwrap();
    let doc = ConfigDocument::load_files(&[env.dir.join("example2-devbox.yaml")]).unwrap();
    let e = doc.validate().unwrap_err().to_string();
    assert!(
        e.contains("storage[0].backing_file: ") && e.contains("images/base.qcow2 does not exist"),
        "{e}"
    );
    assert!(
        e.starts_with(&format!(
            "{}/example2-devbox.yaml:13:19: ",
            env.dir.display()
        )),
        "{e}"
    );
}

#[test]
fn example3_layered() {
    let env = env();
    if copy_examples(&env).is_none() {
        return;
    }
    let cfg = load_example(&env, &["layered/base.yaml", "layered/ci-runner.yaml"]);
    let disks = env.dir.join("disks").display().to_string();
    let expected = split(&format!(
        "-m 1G -drive file={disks}/root.qcow2,if=virtio,format=qcow2 \
         -drive file={disks}/cache.qcow2,if=virtio,format=qcow2 \
         -accel tcg -display none -nodefaults -device virtio-balloon-pci -smp 2"
    ));
    assert_eq!(rendered(&env, &cfg), expected);
    // The README's argv minus the duplicate `-smp 1` the original emitted.
    let mut original = readme_argv(&env, "## Example 3");
    let i = original.iter().position(|a| a == "-smp").unwrap();
    assert_eq!(original.drain(i..i + 2).collect::<Vec<_>>(), ["-smp", "1"]);
    assert_eq!(rendered(&env, &cfg), original);
    assert_eq!(cfg.name.as_deref(), Some("ci-runner"));
    assert_eq!(cfg.cpus, Some(2));
    assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
    let w = &cfg.warnings[0];
    assert!(
        w.starts_with(&format!("{}/layered/base.yaml:4:6: cpu is overridden by arguments[4] '-smp 2' ({}/layered/ci-runner.yaml:", env.dir.display(), env.dir.display())),
        "{w}"
    );
}

#[test]
fn examples_round_trip_through_storage() {
    let env = env();
    if copy_examples(&env).is_none() {
        return;
    }
    for files in EXAMPLE_SETS {
        let doc = example_document(&env, files);
        let stored = doc.to_json();
        assert!(stored.get("name").is_none());
        let again = ConfigDocument::from_stored(&stored).unwrap();
        assert_eq!(again.to_json(), stored);
        let c = ctx(&env.dir.join("disks"));
        assert_eq!(
            again.validate().unwrap().render_argv(&c),
            doc.validate().unwrap().render_argv(&c)
        );
        let paths: Vec<PathBuf> = files.iter().map(|f| env.dir.join(f)).collect();
        assert_eq!(doc.sources(), &paths[..]);
    }
}

// ------------------------------------------------------------ load & merge

#[test]
fn missing_file_and_yaml_errors() {
    let env = env();
    let missing = env.dir.join("nope.yaml");
    assert_eq!(
        ConfigDocument::load_files(std::slice::from_ref(&missing))
            .unwrap_err()
            .to_string(),
        format!("{}: file not found", missing.display())
    );
    let bad = env.file("bad.yaml", "memory: 1G\nstorage:\n  - name: [x\n");
    let e = ConfigDocument::load_files(std::slice::from_ref(&bad))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("{}:", bad.display())) && e.contains(": invalid YAML: "),
        "{e}"
    );
}

#[test]
fn paths_resolve_per_file_before_merging() {
    let env = env();
    let a = env.config("a/a.yaml", "storage: [{name: one, file: one.qcow2}]\n");
    let b = env.file(
        "b/sub/b.yaml",
        "storage: [{name: two, file: ../two.qcow2}]\narguments: [{kernel: vmlinuz}]\n",
    );
    let doc = ConfigDocument::load_files(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(doc.sources(), &[a, b]);
    let j = doc.to_json();
    let d = env.dir.display();
    assert_eq!(j["storage"][0]["file"], format!("{d}/a/one.qcow2"));
    assert_eq!(j["storage"][1]["file"], format!("{d}/b/two.qcow2"));
    assert_eq!(j["arguments"][0]["kernel"], format!("{d}/b/sub/vmlinuz"));
}

#[test]
fn sources_are_canonical() {
    let env = env();
    env.config("vm.yaml", "memory: 1G\n");
    let cwd = std::env::current_dir().unwrap();
    // A path through a symlinked directory is recorded canonically.
    let link = env.dir.join("link");
    std::os::unix::fs::symlink(&env.dir, &link).unwrap();
    let doc = ConfigDocument::load_files(&[link.join("vm.yaml")]).unwrap();
    assert_eq!(doc.sources(), &[env.dir.join("vm.yaml")]);
    assert_eq!(std::env::current_dir().unwrap(), cwd);
}

#[test]
fn same_file_devices_survive_a_later_file() {
    let env = env();
    let a = env.config(
        "a.yaml",
        "arguments:\n  - device: virtio-rng-pci\n  - device: virtio-balloon-pci\n",
    );
    let b = env.file("b.yaml", "arguments: []\n");
    let cfg = ConfigDocument::load_files(&[a, b])
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(
        cfg.render_argv(&ctx(&env.dir))[PREFIX_LEN..],
        split(&format!(
            "-device virtio-rng-pci -device virtio-balloon-pci {VNC}"
        ))
    );
}

#[test]
fn duplicate_single_instance_names_both_places() {
    let env = env();
    let a = env.config("a.yaml", "arguments:\n  - m: 1G\n  - m: 2G\n");
    let b = env.file("b.yaml", "arguments:\n  - m: 3G\n");
    let e = ConfigDocument::load_files(&[a, b])
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    let d = env.dir.display();
    assert_eq!(
        e,
        format!("arguments[1] ({d}/a.yaml:4:5): duplicate single-instance option '-m'; first given at arguments[0] ({d}/b.yaml:2:5)")
    );
}

#[test]
fn single_instance_rules() {
    let env = env();
    let e = env.error("arguments:\n  - machine: q35\n  - accel: tcg\n  - machine: pc\n");
    assert!(
        e.contains("arguments[2] (")
            && e.contains(
                "duplicate single-instance option '-machine'; first given at arguments[0]"
            ),
        "{e}"
    );
    // Multi-instance options are fine.
    assert_eq!(
        env.argv("arguments:\n  - device: a\n  - device: b\n  - machine: q35\n"),
        split(&format!("-device a -device b -machine q35 {VNC}"))
    );
    // A string item of an option that takes a value is not counted; it is
    // refused as an option without its value (QEMU would take the next
    // item's first word).
    let e = env.error("arguments:\n  - \"-machine\"\n  - machine: q35\n");
    assert!(
        e.contains(":3:5: arguments[0] '-machine': -machine takes a value, and none follows it"),
        "{e}"
    );
}

#[test]
fn merge_then_set_flags() {
    let env = env();
    let mut doc = env.doc("memory: 1G\ncpu: 2\n");
    doc.set("memory", json!("2G"), "--memory");
    doc.set("enable_kvm", json!(true), "--enable-kvm");
    let cfg = doc.validate().unwrap();
    assert_eq!(
        cfg.render_argv(&ctx(&env.dir))[PREFIX_LEN..],
        split(&format!("-m 2G -smp 2 -accel kvm {VNC}"))
    );
    doc.set("memory", json!("lots"), "--memory");
    assert_eq!(
        doc.validate().unwrap_err().to_string(),
        "--memory: memory: invalid memory size 'lots' (use a number of MiB, or a number with a K, M, G or T suffix, e.g. 512M or 2G)"
    );
    doc.set("cpu", json!(0), "--cpu");
    let all = doc.validate_all().unwrap_err();
    assert_eq!(all.len(), 2);
    assert!(all[1]
        .to_string()
        .starts_with("--cpu: cpu: must be an integer from 1 to 255"));
}

#[test]
fn stored_config_merges_with_files_and_flags() {
    let env = env();
    let stored = env
        .doc("memory: 1G\narguments: [{device: a}, {device: b}]\n")
        .to_json();
    let mut doc = ConfigDocument::from_stored(&stored).unwrap();
    let f = env.file("new.yaml", "cpu: 4\narguments: [{device: c}]\n");
    doc.merge(ConfigDocument::load_files(std::slice::from_ref(&f)).unwrap());
    doc.set("binary", json!(env.qemu.display().to_string()), "--binary");
    assert_eq!(doc.sources(), &[f]);
    let cfg = doc.validate().unwrap();
    assert_eq!(
        cfg.render_argv(&ctx(&env.dir))[PREFIX_LEN..],
        split(&format!("-m 1G -device c -device b -smp 4 {VNC}"))
    );
    assert!(ConfigDocument::from_stored(&json!(null))
        .unwrap()
        .is_empty());
    assert_eq!(
        ConfigDocument::from_stored(&json!([1])).unwrap_err().to_string(),
        "stored config: expected a JSON object; the database entry is damaged, run 'maqet apply' with the config files again"
    );
}

#[test]
fn name_handling() {
    let env = env();
    let doc = env.doc("name: box\n");
    assert_eq!(doc.name(), Some("box"));
    assert!(doc.to_json().get("name").is_none());
    let doc = env.doc("name: 42\n");
    assert_eq!(doc.name(), None);
    assert_eq!(doc.name_location().unwrap().line, 2);
    assert_eq!(
        doc.validate().unwrap_err().to_string(),
        format!("{}:2:7: name: expected a string, found 42", env.vm_yaml())
    );
}

// -------------------------------------------------------------- top level

#[test]
fn unknown_and_special_keys() {
    let env = env();
    assert_eq!(
        env.error("cpu: 1\nmemroy: 1G\n"),
        format!(
            "{}:3:1: unknown key 'memroy' (did you mean 'memory'?)",
            env.vm_yaml()
        )
    );
    assert_eq!(
        env.error("frobnicate: 1\n"),
        format!("{}:2:1: unknown key 'frobnicate'", env.vm_yaml())
    );
    assert!(env.error("start: true\n").ends_with(
        "'start' is a maqet command, not a config key; configuration cannot contain commands"
    ));
    // The original's `network:` mapping is still accepted, and ignored.
    let cfg = env.doc("network: {type: user}\n").validate().unwrap();
    assert_eq!(cfg.warnings.len(), 1);
    assert!(cfg.warnings[0].contains("'network' as a mapping is the original tool's"));
}

#[test]
fn memory_and_cpu() {
    let env = env();
    assert_eq!(
        env.argv("memory: 512\ncpu: \"3\"\n"),
        split(&format!("-m 512 -smp 3 {VNC}"))
    );
    assert_eq!(
        env.error("memory: lots\n"),
        format!("{}:2:9: memory: invalid memory size 'lots' (use a number of MiB, or a number with a K, M, G or T suffix, e.g. 512M or 2G)", env.vm_yaml())
    );
    assert_eq!(
        env.error("cpu: 256\n"),
        format!(
            "{}:2:6: cpu: must be an integer from 1 to 255, found 256",
            env.vm_yaml()
        )
    );
    assert!(env.error("cpu: two\n").ends_with("found 'two'"));
    assert!(env
        .error("arguments: [{m: lots}]\n")
        .contains("arguments[0]: -m: invalid memory size 'lots'"));
    assert!(env
        .error("arguments: [{smp: 0}]\n")
        .contains("-smp: expected a CPU count"));
    let cfg = env
        .doc("memory: 1G\narguments: [{m: {size: 2G, maxmem: 8G}}, {smp: {cpus: 4}}]\n")
        .validate()
        .unwrap();
    assert_eq!(cfg.memory_bytes, Some(2 << 30));
    assert_eq!(cfg.cpus, Some(4));
}

#[test]
fn display_and_vga_must_be_strings() {
    let env = env();
    let e = env.error("display: off\n");
    assert!(
        e.ends_with("display: expected a string, found the boolean false (unquoted on/off/yes/no are booleans in YAML; quote the value, e.g. \"off\")"),
        "{e}"
    );
    assert!(env
        .error("vga: [std]\n")
        .ends_with("vga: expected a string, found a list"));
}

#[test]
fn shorthand_conflicts_emit_one_option() {
    let env = env();
    let cfg = env
        .doc("memory: 1G\ndisplay: gtk\nvga: std\narguments:\n  - display: none\n  - m: 2G\n  - accel: tcg\n")
        .validate()
        .unwrap();
    assert_eq!(
        cfg.render_argv(&ctx(&env.dir))[PREFIX_LEN..],
        split("-vga std -display none -m 2G -accel tcg")
    );
    assert_eq!(cfg.warnings.len(), 2, "{:?}", cfg.warnings);
    assert!(cfg.warnings[0].contains(":2:9: memory is overridden by arguments[1] '-m 2G' ("));
    assert!(cfg.warnings[1].contains("display is overridden by arguments[0] '-display none'"));
    assert_eq!(cfg.memory_bytes, Some(2 << 30));
}

#[test]
fn args_and_arguments_render_in_key_order() {
    let env = env();
    assert_eq!(
        env.argv("args: [-snapshot, -m, 512]\narguments: [nodefaults, {usb: off}, {display: gtk, zoom-to-fit: on}]\nmemory: 1G\n"),
        split("-snapshot -m 512 -nodefaults -usb off -display gtk,zoom-to-fit=on -m 1G")
    );
    assert!(env
        .error("args: [-a, {b: c}]\n")
        .contains("args[1]: expected a string, found a mapping"));
    assert!(env
        .error("arguments: {accel: tcg}\n")
        .contains("arguments: expected a list of QEMU options"));
}

#[test]
fn skipped_argument_items_warn() {
    let env = env();
    let cfg = env
        .doc("arguments: [{}, 5, nodefaults]\n")
        .validate()
        .unwrap();
    assert_eq!(cfg.arguments.len(), 1);
    assert_eq!(cfg.warnings.len(), 1);
    assert!(cfg.warnings[0].contains("arguments[1]: ignored an integer"));
}

#[test]
fn maqet_keys() {
    let env = env();
    let cfg = env
        .doc(concat!(
            "enable_kvm: yes\nconsole: on\nautostart: true\nshutdown_timeout: 12.5\n",
            "on_reboot: stop\nrestart: on-failure\nrestart_sec: 0\nqmp_allow_host_exec: true\n",
            "on_stop: save\n",
            "resources: {memory_max: 4G, cpu_quota: \"150%\", cpu_weight: 100, io_weight: 10000, tasks_max: 64}\n"
        ))
        .validate()
        .unwrap();
    assert!(cfg.enable_kvm && cfg.console && cfg.autostart && cfg.qmp_allow_host_exec);
    assert_eq!(cfg.shutdown_timeout, 12.5);
    assert_eq!(cfg.on_reboot, OnReboot::Stop);
    assert_eq!(cfg.on_stop, OnStop::Save);
    assert_eq!(cfg.restart, RestartPolicy::OnFailure);
    assert_eq!(cfg.restart_sec, Some(0.0));
    assert_eq!(
        cfg.resources,
        Resources {
            memory_max: Some(4 << 30),
            cpu_quota_percent: Some(150),
            cpu_weight: Some(100),
            io_weight: Some(10000),
            tasks_max: Some(64),
        }
    );
    let mut c = ctx(&env.dir);
    c.console_fd = Some(5);
    assert_eq!(
        cfg.render_argv(&c)[PREFIX_LEN..],
        split(&format!("-accel kvm -no-reboot {VNC} -chardev socket,id=maqet-console,fd=5 -serial chardev:maqet-console"))
    );
    // Defaults.
    let cfg = env.doc("").validate().unwrap();
    assert_eq!(cfg.shutdown_timeout, 30.0);
    assert_eq!(cfg.restart, RestartPolicy::No);
    assert_eq!(cfg.on_stop, OnStop::Shutdown);
    assert!(!cfg.console && !cfg.enable_kvm && !cfg.autostart && !cfg.qmp_allow_host_exec);
    // `restart: no` is the YAML 1.1 boolean false.
    assert_eq!(
        env.doc("restart: no\n").validate().unwrap().restart,
        RestartPolicy::No
    );
}

#[test]
fn maqet_key_errors() {
    let env = env();
    assert!(env
        .error("console: \"on\"\n")
        .contains("console: expected true or false, found 'on'"));
    assert!(env
        .error("qmp_allow_host_exec: 1\n")
        .contains("qmp_allow_host_exec: expected true or false"));
    assert!(env
        .error("shutdown_timeout: 0\n")
        .contains("shutdown_timeout: expected a positive number of seconds"));
    assert!(env
        .error("restart_sec: -1\n")
        .contains("restart_sec: expected a number of seconds"));
    assert!(env
        .error("on_reboot: halt\n")
        .contains("on_reboot: expected 'restart' or 'stop', found 'halt'"));
    assert!(env
        .error("on_stop: sav\n")
        .ends_with("on_stop: expected 'shutdown' or 'save', found 'sav' (did you mean 'save'?)"));
    assert!(env
        .error("restart: on-failur\n")
        .ends_with("restart: expected no, on-failure or always, found 'on-failur' (did you mean 'on-failure'?)"));
    assert!(env
        .error("restart: yes\n")
        .contains("restart: expected no, on-failure or always, found the boolean true"));
    assert!(env
        .error("resources: {cpu_quota: 50}\n")
        .contains("resources.cpu_quota: expected a percentage"));
    assert!(env
        .error("resources: {cpu_weight: 0}\n")
        .contains("resources.cpu_weight: must be an integer from 1 to 10000, found 0"));
    assert!(env
        .error("resources: {io_weigth: 5}\n")
        .contains("resources: unknown key 'io_weigth' (did you mean 'io_weight'?)"));
    assert!(env
        .error("resources: {memory_max: 1.5G}\n")
        .contains("resources.memory_max: invalid size '1.5G'"));
}

#[test]
fn enable_kvm_goes_before_other_accelerators() {
    let env = env();
    assert_eq!(
        env.argv("arguments: [nodefaults, {accel: tcg}]\nenable_kvm: true\n"),
        split(&format!("-nodefaults -accel kvm -accel tcg {VNC}"))
    );
    assert_eq!(
        env.argv("enable_kvm: true\narguments: [{accel: tcg}]\n"),
        split(&format!("-accel kvm -accel tcg {VNC}"))
    );
    assert_eq!(
        env.argv("enable_kvm: true\narguments: [enable-kvm]\n"),
        split(&format!("-enable-kvm {VNC}"))
    );
    assert_eq!(env.argv("enable_kvm: false\n"), split(VNC));
}

#[test]
fn binary_checks() {
    let env = env();
    let y = |body: &str| {
        ConfigDocument::load_files(&[env.file("b.yaml", body)])
            .unwrap()
            .validate()
    };
    let b = env.dir.join("b.yaml").display().to_string();
    assert_eq!(
        y("binary: /nonexistent/qemu\n").unwrap_err().to_string(),
        format!("{b}:1:9: binary: /nonexistent/qemu does not exist; install QEMU (e.g. apt install qemu-system-x86) or set 'binary:' to its path")
    );
    env.file("noexec", "x");
    if !rustix::process::geteuid().is_root() {
        assert_eq!(
            y("binary: ./noexec\n").unwrap_err().to_string(),
            format!(
                "{b}:1:9: binary: {}/noexec is not executable by you",
                env.dir.display()
            )
        );
    }
    assert!(y("binary: /\n")
        .unwrap_err()
        .to_string()
        .contains("is not a regular file"));
    assert!(y("binary: no-such-qemu-xyz\n")
        .unwrap_err()
        .to_string()
        .contains("'no-such-qemu-xyz' was not found in PATH"));
    let cfg = y("binary: sh\n").unwrap();
    assert!(cfg.binary.is_absolute() && cfg.binary.ends_with("sh"));
    let cfg = y("binary: ./qemu-fake\n").unwrap();
    assert_eq!(cfg.binary, env.qemu);
    // No binary: the documented default, checked like any other.
    let r = y("memory: 1G\n");
    if is_executable(Path::new(DEFAULT_BINARY)) {
        assert_eq!(r.unwrap().binary, PathBuf::from(DEFAULT_BINARY));
    } else {
        assert!(r.unwrap_err().to_string().starts_with(&format!(
            "{b}: binary (default, no 'binary:' given): {DEFAULT_BINARY} does not exist"
        )));
    }
}

// ----------------------------------------------------------------- storage

#[test]
fn storage_rendering_per_interface() {
    let env = env();
    let d = env.dir.join("disks").display().to_string();
    assert_eq!(
        env.argv(concat!(
            "storage:\n",
            "  - {name: a, interface: sata}\n",
            "  - {name: b, interface: scsi, type: raw}\n",
            "  - {name: c, interface: sata}\n",
            "  - {name: d, interface: scsi}\n",
            "  - {name: e, interface: none}\n",
            "  - {interface: ide}\n",
        )),
        split(&format!(
            "-device ahci,id=maqet-ahci \
             -drive file={d}/a.qcow2,if=none,id=maqet-drive-a,format=qcow2 -device ide-hd,drive=maqet-drive-a,bus=maqet-ahci.0 \
             -device virtio-scsi-pci,id=maqet-scsi \
             -drive file={d}/b.raw,if=none,id=maqet-drive-b,format=raw -device scsi-hd,drive=maqet-drive-b,bus=maqet-scsi.0 \
             -drive file={d}/c.qcow2,if=none,id=maqet-drive-c,format=qcow2 -device ide-hd,drive=maqet-drive-c,bus=maqet-ahci.1 \
             -drive file={d}/d.qcow2,if=none,id=maqet-drive-d,format=qcow2 -device scsi-hd,drive=maqet-drive-d,bus=maqet-scsi.0 \
             -drive file={d}/e.qcow2,if=none,format=qcow2 \
             -drive file={d}/storage5.qcow2,if=ide,format=qcow2 {VNC}"
        ))
    );
}

#[test]
fn storage_defaults() {
    let env = env();
    let cfg = env
        .doc("storage: [{}, {type: raw, size: 1024}]\n")
        .validate()
        .unwrap();
    let s = cfg.storage();
    assert_eq!(s[0].name, "storage0");
    assert_eq!(s[0].kind, StorageKind::Qcow2);
    assert_eq!(s[0].interface, Interface::Virtio);
    assert_eq!(s[0].size, Some(10 << 30));
    assert_eq!(s[0].size_text.as_deref(), Some("10G"));
    assert_eq!(s[1].name, "storage1");
    assert_eq!(s[1].size, Some(1024));
    assert_eq!(s[1].path(Path::new("/d")), PathBuf::from("/d/storage1.raw"));
}

#[test]
fn storage_errors() {
    let env = env();
    let y = env.vm_yaml();
    assert_eq!(
        env.error("storage:\n  - name: a\n  - name: b\n    size: 10Q\n"),
        format!("{y}:5:11: storage[1].size: invalid size '10Q' (use digits with an optional K, M, G or T suffix, e.g. 10G)")
    );
    assert!(env
        .error("storage: [{type: vmdk}]\n")
        .contains("storage[0].type: unknown type 'vmdk' (supported: qcow2, raw, virtfs;"));
    assert!(env.error("storage: [{interface: nvme}]\n").ends_with(
        "storage[0].interface: invalid interface 'nvme' (valid: ide, none, sata, scsi, virtio)"
    ));
    assert!(env
        .error("storage: [{sise: 1G}]\n")
        .ends_with("storage[0]: unknown field 'sise' (did you mean 'size'?)"));
    assert!(env
        .error("storage: [{type: virtfs, path: /tmp, mount_tag: x}]\n")
        .contains("storage[0]: 'mount_tag' belongs under 'options:' of a virtfs entry"));
    assert!(env
        .error("storage: [{type: virtfs}]\n")
        .contains("storage[0]: a virtfs entry needs 'path'"));
    assert!(env
        .error("storage: [{type: virtfs, path: /tmp, size: 1G}]\n")
        .contains("storage[0].size: not used by virtfs entries"));
    assert!(env
        .error("storage: [{path: x}]\n")
        .contains("storage[0].path: only virtfs entries have 'path'"));
    assert!(env
        .error("storage: [{name: \"a b\"}]\n")
        .contains("storage[0].name: 'a b' must be 1 to 64 letters"));
    assert!(env
        .error("storage: [{type: virtfs, path: /tmp, options: {security_model: bogus}}]\n")
        .ends_with("storage[0].options.security_model: invalid security_model 'bogus' (valid: mapped-file, mapped-xattr, none, passthrough)"));
    assert!(env
        .error("storage: [{type: virtfs, path: /tmp, options: {readonly: \"yes\"}}]\n")
        .contains("storage[0].options.readonly: expected true or false"));
    assert!(env
        .error("storage: {name: a}\n")
        .contains("storage: expected a list of entries"));
    let many: String = (0..7)
        .map(|i| format!("  - {{name: s{i}, interface: sata}}\n"))
        .collect();
    assert!(env
        .error(&format!("storage:\n{many}"))
        .contains("storage[6].interface: at most 6 sata disks"));
}

#[test]
fn duplicate_storage_names_across_files() {
    let env = env();
    let a = env.config("a.yaml", "storage:\n  - name: root\n");
    let b = env.file("b.yaml", "storage:\n  - name: root\n");
    let e = ConfigDocument::load_files(&[a.clone(), b.clone()])
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "{}:2:11: storage[1].name: duplicate storage name 'root' (first used by storage[0] at {}:3:11); names must be unique",
            b.display(),
            a.display()
        )
    );
}

#[test]
fn disk_locations() {
    let env = env();
    assert!(env
        .error("storage: [{file: /etc/disk.qcow2}]\n")
        .ends_with("storage[0].file: /etc/disk.qcow2 is in the system directory /etc; keep disk images under your home or maqet's data directory"));
    assert!(env
        .error("storage: [{file: /var/lib/maqet/d.img}]\n")
        .contains("system directory /var"));
    assert!(env
        .error("storage: [{file: .}]\n")
        .contains("is a directory, not a disk image"));
    let cfg = env
        .doc("storage: [{file: /dev/shm/x.img, type: raw}]\n")
        .validate()
        .unwrap();
    assert_eq!(cfg.storage()[0].file, Some(PathBuf::from("/dev/shm/x.img")));
}

#[test]
fn backing_files() {
    let env = env();
    env.file("imgs/base.qcow2", "x");
    // Relative to the overlay's directory, not the config's.
    let cfg = env
        .doc("storage: [{file: imgs/o.qcow2, backing_file: base.qcow2, backing_format: raw}]\n")
        .validate()
        .unwrap();
    let s = &cfg.storage()[0];
    assert_eq!(s.backing_format, Some(ImageFormat::Raw));
    assert_eq!(s.size, None);
    assert!(env
        .error("storage: [{file: o.qcow2, backing_file: base.qcow2}]\n")
        .contains(&format!(
            "storage[0].backing_file: {}/base.qcow2 does not exist",
            env.dir.display()
        )));
    // An existing overlay already knows its backing file.
    env.file("o.qcow2", "x");
    env.doc("storage: [{file: o.qcow2, backing_file: gone.qcow2}]\n")
        .validate()
        .unwrap();
    assert!(env
        .error("storage: [{backing_file: base.qcow2}]\n")
        .contains("has no 'file:'; add 'file:' or make the backing path absolute"));
    assert!(env
        .error("storage: [{type: raw, file: r.img, backing_file: imgs/base.qcow2}]\n")
        .contains("only qcow2 images can have a backing file"));
    assert!(env
        .error("storage: [{backing_format: raw}]\n")
        .contains("backing_format: given without a base or backing_file"));
}

#[test]
fn virtfs_rendering() {
    let env = env();
    let d = env.dir.display().to_string();
    assert_eq!(
        env.argv("storage:\n  - {name: s, type: virtfs, path: 'my,share', options: {multidevs: remap, fmode: \"0644\", readonly: false}}\n"),
        split(&format!(
            "-virtfs local,path={d}/my,,share,mount_tag=s,security_model=passthrough,id=s,multidevs=remap,fmode=0644 {VNC}"
        ))
    );
    fs::write(env.dir.join("afile"), "x").unwrap();
    assert!(env
        .error("storage: [{type: virtfs, path: afile}]\n")
        .contains("afile is not a directory"));
}

#[test]
fn validate_all_reports_every_error() {
    let env = env();
    let all = env
        .doc("memroy: 1G\ncpu: 0\nstorage: [{size: x}, {type: vmdk}]\n")
        .validate_all()
        .unwrap_err();
    let texts: Vec<String> = all.iter().map(|e| e.to_string()).collect();
    assert_eq!(texts.len(), 4, "{texts:#?}");
    assert!(texts[0].contains("unknown key 'memroy'"));
    assert!(texts[1].contains("cpu: must be"));
    assert!(texts[2].contains("storage[0].size"));
    assert!(texts[3].contains("storage[1].type"));
    assert!(all[0].location().is_some());
}

#[test]
fn null_unsets_a_key() {
    let env = env();
    let a = env.config("a.yaml", "memory: 1G\ncpu: 2\n");
    let b = env.file("b.yaml", "memory: ~\n");
    let cfg = ConfigDocument::load_files(&[a, b])
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(cfg.memory, None);
    assert_eq!(
        cfg.render_argv(&ctx(&env.dir))[PREFIX_LEN..],
        split(&format!("-smp 2 {VNC}"))
    );
}

#[test]
fn interfaces_the_machine_cannot_attach_are_refused() {
    let env = env();
    let e = env.error(
        "storage: [{name: d, interface: virtio, size: 1M}]\narguments: [{machine: microvm}]\n",
    );
    assert!(
        e.starts_with(&format!("{}:2:11: storage[0].interface: 'virtio' needs a PCI bus (virtio-blk-pci), which machine 'microvm' (arguments[0] at {}:3:13) does not have", env.vm_yaml(), env.vm_yaml())),
        "{e}"
    );
    assert!(env
        .error("storage: [{interface: scsi}]\narguments: [{machine: isapc}]\n")
        .contains("'scsi' needs a PCI bus (virtio-scsi-pci), which machine 'isapc'"));
    assert!(env
        .error("storage: [{interface: ide}]\narguments: [{machine: {type: none}}]\n")
        .contains("storage[0].interface: 'ide': machine 'none' (arguments[0]"));
    assert!(env
        .error("storage: [{type: virtfs, path: /tmp}]\nargs: [-M, microvm]\n")
        .contains("a 9p share needs a PCI bus (virtio-9p-pci), which machine 'microvm' (args)"));
    // microvm with PCIe attaches virtio disks.
    env.doc("storage: [{interface: virtio}]\narguments: [{machine: microvm, pcie: \"on\"}]\n")
        .validate()
        .unwrap();
    // Four IDE drives fit on pc; a cdrom from arguments takes a slot.
    let four = "storage:\n  - {name: a, interface: ide}\n  - {name: b, interface: ide}\n  - {name: c, interface: ide}\n  - {name: d, interface: ide}\n";
    env.doc(&format!("{four}arguments: [{{machine: pc}}]\n"))
        .validate()
        .unwrap();
    let e = env.error(&format!(
        "{four}arguments: [{{machine: pc-i440fx-7.2}}, {{drive: \"file=/x.iso,media=cdrom\"}}]\n"
    ));
    assert!(
        e.contains("storage[3].interface: 'ide': machine 'pc-i440fx-7.2' (arguments[0]")
            && e.contains("has 4 IDE slots and this is IDE drive 5")
            && e.contains("use interface: virtio or sata"),
        "{e}"
    );
    // q35 has six.
    env.doc(&format!(
        "{four}arguments: [{{machine: q35}}, {{cdrom: /x.iso}}, {{drive: \"file=/y.iso,if=ide\"}}]\n"
    ))
    .validate()
    .unwrap();
    // Unknown machine types are left to QEMU.
    env.doc("storage: [{interface: ide}]\narguments: [{machine: virt}]\n")
        .validate()
        .unwrap();
}

#[test]
fn default_machine_follows_the_binary_name() {
    let env = env();
    let bin = env.dir.join("qemu-system-x86_64");
    fs::copy(&env.qemu, &bin).unwrap();
    let six = (0..5)
        .map(|i| format!("  - {{name: d{i}, interface: ide}}\n"))
        .collect::<String>();
    let p = env.file(
        "x.yaml",
        &format!("binary: {}\nstorage:\n{six}", bin.display()),
    );
    let e = ConfigDocument::load_files(&[p])
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the default machine 'pc' (no machine option given) has 4 IDE slots"),
        "{e}"
    );
}

#[test]
fn set_path_edits_nested_values() {
    let env = env();
    let mut doc =
        env.doc("memory: 256M\nstorage:\n  - {name: hdd, size: 1G}\nresources: {cpu_weight: 10}\n");
    doc.set_path("memory", "1G").unwrap();
    doc.set_path("cpu", "2").unwrap();
    doc.set_path("storage.0.size", "4G").unwrap();
    doc.set_path("resources.io_weight", "20").unwrap();
    doc.set_path("restart", "on-failure").unwrap();
    doc.set_path("enable_kvm", "false").unwrap();
    let j = doc.to_json();
    assert_eq!(j["memory"], "1G");
    assert_eq!(j["cpu"], 2);
    assert_eq!(j["storage"][0]["size"], "4G");
    assert_eq!(j["resources"], json!({"cpu_weight": 10, "io_weight": 20}));
    assert_eq!(j["enable_kvm"], false);
    let cfg = doc.validate().unwrap();
    assert_eq!(cfg.storage()[0].size, Some(4 << 30));
    // Values are checked by validation, under the flag's label.
    doc.set_path("storage.0.size", "10Q").unwrap();
    assert_eq!(
        doc.validate().unwrap_err().to_string(),
        "--set storage.0.size: storage[0].size: invalid size '10Q' (use digits with an optional K, M, G or T suffix, e.g. 10G)"
    );
    // Structural errors at once.
    let e = doc
        .set_path("storage.3.size", "1G")
        .unwrap_err()
        .to_string();
    assert!(e.contains("'storage' is a list of 1 items"), "{e}");
    let e = doc.set_path("memory.x", "1").unwrap_err().to_string();
    assert!(e.contains("'memory' is a string"), "{e}");
    assert!(doc.set_path("name", "x").is_err());
    assert!(doc.set_path("a..b", "x").is_err());
    let e = doc.set_path("cpu", "[1").unwrap_err().to_string();
    assert!(e.starts_with("--set cpu: '[1' is not a YAML value"), "{e}");
}

#[test]
fn yaml_output_round_trips_examples() {
    let env = env();
    if copy_examples(&env).is_none() {
        return;
    }
    for files in EXAMPLE_SETS {
        let doc = example_document(&env, files);
        let yaml = doc.to_yaml(Some("copy"));
        assert!(yaml.starts_with("name: copy\n"), "{yaml}");
        // Read back from another directory: every path is absolute now.
        let other = env.file("elsewhere/out.yaml", &yaml);
        let again = ConfigDocument::load_files(&[other]).unwrap();
        assert_eq!(again.name(), Some("copy"));
        assert_eq!(again.to_json(), doc.to_json(), "{yaml}");
        let c = ctx(&env.dir.join("disks"));
        assert_eq!(
            again.validate().unwrap().render_argv(&c),
            doc.validate().unwrap().render_argv(&c)
        );
    }
}

/// A top-level `display:` never opens TCP (issue 17.6): every spelling
/// that would is refused with its position; only `arguments` may.
#[test]
fn a_top_level_display_never_opens_tcp() {
    let env = env();
    for tcp in [
        "vnc=:47",
        "vnc=0.0.0.0:1",
        "vnc=127.0.0.1:0,password=on",
        "vnc=[::]:3",
        "vnc,to=99",
        "vncx",
        "dbus,addr=tcp:host=0.0.0.0,port=5000",
        "dbus,p2p=no,addr=unix:path=/tmp/b;tcp:host=h,port=1",
    ] {
        let e = env.error(&format!("display: \"{tcp}\"\n"));
        assert!(
            e.contains("vm.yaml:2:") && e.contains(&format!("display: '{tcp}'")),
            "{tcp}: {e}"
        );
    }
    assert!(env
        .error("display: \"vnc=:47\"\n")
        .contains("would have QEMU serve VNC on TCP"));
    for fine in [
        "vnc",
        "vnc=unix:/run/x.sock",
        "vnc=none",
        "none",
        "gtk,zoom-to-fit=on",
        "dbus,addr=unix:path=/tmp/b",
    ] {
        env.doc(&format!("display: \"{fine}\"\n"))
            .validate()
            .unwrap_or_else(|e| panic!("{fine}: {e}"));
    }
    // No TCP, but it launches a viewer: the host-program policy's refusal.
    assert!(env
        .error("display: spice-app\n")
        .contains("qmp_allow_host_exec"));
    // What the user writes in `arguments` is theirs.
    env.doc("arguments:\n  - display: \"vnc=:47\"\n")
        .validate()
        .unwrap();
}

#[test]
fn socket_displays_and_desktop_key_errors() {
    let env = env();
    let cfg = env.doc("display: vnc\n").validate().unwrap();
    assert_eq!(
        cfg.render_argv(&ctx(&env.dir))[PREFIX_LEN..],
        split("-vnc unix:/run/user/1000/maqet/vm/t/vnc.sock")
    );
    let cfg = env.doc("display: spice\nvga: qxl\n").validate().unwrap();
    assert_eq!(
        cfg.render_argv(&ctx(&env.dir))[PREFIX_LEN..],
        split("-spice unix=on,addr=/run/user/1000/maqet/vm/t/spice.sock,disable-ticketing=on -vga qxl")
    );
    // Other values pass through; an `arguments` display item wins.
    let cfg = env.doc("display: gtk\n").validate().unwrap();
    assert_eq!(
        cfg.render_argv(&ctx(&env.dir))[PREFIX_LEN..],
        split("-display gtk")
    );
    let cfg = env
        .doc("display: vnc\narguments:\n  - display: none\n")
        .validate()
        .unwrap();
    assert_eq!(cfg.desktop.display, None);
    assert!(env
        .error("secure_boot: true\n")
        .contains("secure_boot: needs 'firmware: uefi'"));
    assert!(env
        .error("firmware: uefi\nsecure_boot: true\narguments:\n  - machine: pc\n")
        .contains("needs the q35 machine"));
    assert!(env
        .error("firmware: efi\n")
        .contains("firmware: expected 'bios' or 'uefi', found 'efi'"));
    assert!(env
        .error("tpm: yes please\n")
        .contains("tpm: expected true or false"));
    // `firmware: bios` is the default and renders nothing.
    let cfg = env
        .doc("firmware: bios\ndisplay: none\n")
        .validate()
        .unwrap();
    assert_eq!(cfg.desktop, Desktop::default());
    // A config that chooses no display gets the private VNC socket, not
    // QEMU's default (a window, or VNC on TCP without a password); any
    // display option in `arguments` or `args` is a choice.
    assert_eq!(env.argv(""), split(VNC));
    assert_eq!(
        env.doc("").validate().unwrap().desktop.display,
        Some(maqet_base::display::DisplayServer::Vnc)
    );
    for chosen in [
        "arguments: [nographic]\n",
        "arguments: [{vnc: \"unix:x.sock\"}]\n",
        "arguments: [{spice: \"port=5930\"}]\n",
        "arguments: [{display: curses}]\n",
        "args: [\"-display\", \"none\"]\n",
        "args: [\"--nographic\"]\n",
        "args: [\"-sdl\"]\n",
    ] {
        let cfg = env.doc(chosen).validate().unwrap();
        assert_eq!(cfg.desktop.display, None, "{chosen}");
        let argv = cfg.render_argv(&ctx(&env.dir));
        assert!(
            !argv.iter().any(|a| a.contains("vnc.sock")),
            "{chosen}: {argv:?}"
        );
    }
}

/// The QMP policy at `add`: what would make QEMU run a host program is
/// refused where it was written, unless the config opts out.
#[test]
fn host_programs_in_arguments_args_and_display_are_refused_with_their_position() {
    let env = env();
    let cases = [
        (
            "arguments:\n  - accel: tcg\n  - netdev: {vde: null, id: v, sock: \"cmd://sh -c 'id > /tmp/f'\"}\n",
            ":4:5: arguments[1] '-netdev vde,id=v,sock=cmd://sh -c 'id > /tmp/f'': netdev type 'vde'",
        ),
        (
            "arguments:\n  - netdev: {tap: null, id: t, script: \" no\", downscript: \"no\"}\n",
            ":3:5: arguments[0] '-netdev tap,id=t,script= no,downscript=no': a tap without script=no",
        ),
        (
            "args:\n  - -m\n  - 1G\n  - -drive\n  - \"file=ssh://h/x,if=virtio\"\n",
            ":5:5: args[2] '-drive file=ssh://h/x,if=virtio': block driver 'ssh'",
        ),
        (
            "args: [-name, x, -incoming, \"exec:touch /tmp/x\"]\n",
            ":2:18: args[2] '-incoming exec:touch /tmp/x': -incoming exec:",
        ),
        ("display: spice-app\n", ":2:10: display 'spice-app': display spice-app"),
        (
            "arguments:\n  - plugin: /tmp/p.so\n",
            ":3:5: arguments[0] '-plugin /tmp/p.so': a TCG plugin",
        ),
        (
            "arguments:\n  - qmp: \"tcp::4444,server=on,wait=off\"\n",
            "a second QEMU monitor",
        ),
        // An option whose value would come from the next group.
        ("args: [-nodefaults, -name]\n", ":2:21: args[1] '-name': -name takes a value"),
    ];
    for (body, want) in cases {
        let e = env.error(body);
        assert!(e.contains(want), "{body}: {e}");
        if !want.contains("takes a value") {
            assert!(e.contains("qmp_allow_host_exec: true"), "{e}");
            let allowed = format!("qmp_allow_host_exec: true\n{body}");
            assert!(env.doc(&allowed).validate().is_ok(), "{allowed}");
        }
    }
    // What runs nothing passes, as the original's examples do.
    env.argv(
        "arguments:\n  - netdev: {user: null, id: n0, hostfwd: \"tcp:127.0.0.1:2222-:22\"}\n  - device: {virtio-net-pci: null, netdev: n0}\n  - chardev: socket,id=s,path=/tmp/s,server=on,wait=off\n  - netdev: {tap: null, id: t, ifname: tap0, script: \"no\", downscript: \"no\"}\nargs: [-nodefaults, -serial, \"chardev:s\"]\ndisplay: none\n",
    );
}
