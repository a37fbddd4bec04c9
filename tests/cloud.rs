//! From a cloud image to ssh (issue 11), against the real user manager and
//! QEMU (TCG): a base image with its sha256, a per-VM overlay, a cloud-init
//! NoCloud seed that the test guest (tests/guest/init) reads the way
//! cloud-init would (user + authorized key, host name), port forwards with
//! collision checks, `maqet ssh`, and a clone running beside its source.
//! Boots are shared across assertions: one source VM and its clone.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The release string in a bzImage's header (`uname -r` of the guest).
fn kernel_release(vmlinuz: &str) -> String {
    let b = std::fs::read(vmlinuz).unwrap();
    let off = u16::from_le_bytes([b[0x20e], b[0x20f]]) as usize + 0x200;
    let text: Vec<u8> = b[off..]
        .iter()
        .take_while(|&&c| c != b' ' && c != 0)
        .copied()
        .collect();
    String::from_utf8(text).unwrap()
}

fn sh(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn sha256(p: &Path) -> String {
    sh("sha256sum", &[p.to_str().unwrap()])[..64].to_string()
}

struct Cloud {
    w: World,
    base: PathBuf,
    key_pub: PathBuf,
}

impl Cloud {
    fn new(tag: &str) -> Cloud {
        let w = World::new(tag);
        let base = w.dir.path().join("base.qcow2");
        sh(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "32M"],
        );
        let key = w.dir.path().join("id_test");
        sh(
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()],
        );
        Cloud {
            key_pub: key.with_extension("pub"),
            w,
            base,
        }
    }

    /// A VM booting the test guest with a disk on the base image, a seed
    /// with the test's key, and `extra` top-level YAML.
    fn add(&self, suffix: &str, sha: &str, extra: &str) -> String {
        self.add_booting(suffix, sha, extra, "")
    }

    /// [`Cloud::add`] with more kernel parameters.
    fn add_booting(&self, suffix: &str, sha: &str, extra: &str, append: &str) -> String {
        let name = self.w.name(suffix);
        let text = format!(
            "name: {name}\nbinary: {QEMU}\nmemory: 128M\nconsole: true\nshutdown_timeout: 20\n\
             arguments:\n  - accel: tcg\n  - display: none\n  - nodefaults\n\
             \x20 - kernel: {}\n  - initrd: {}\n  - append: \"console=ttyS0 quiet {append}\"\n\
             storage:\n  - name: root\n    base: {}\n    sha256: {sha}\n    size: 64M\n\
             cloud_init:\n  ssh_authorized_keys: [{}]\n{extra}",
            guest_file("MAQET_GUEST_KERNEL"),
            guest_file("MAQET_GUEST_INITRD"),
            self.base.display(),
            self.key_pub.display(),
        );
        let f = self.w.write(&format!("{name}.yaml"), &text);
        self.w.ok(&["add", f.to_str().unwrap()]);
        name
    }

    fn ssh(&self, vm: &str, cmd: &[&str]) -> String {
        let mut args = vec!["ssh", "--wait", "90", vm, "--"];
        args.extend(cmd);
        self.w.ok(&args).trim().to_string()
    }
}

#[test]
fn cloud_image_to_ssh_with_ports_and_a_clone() {
    let c = Cloud::new("cloud");
    let w = &c.w;
    let digest = sha256(&c.base);
    let web = free_port();
    let vm = c.add(
        "src",
        &digest,
        &format!("ports: [\"{web}:80\"]\nguest_agent: true\n"),
    );
    w.ok(&["start", vm.as_str()]);

    // The seed reached the guest: the key logs the invoking user in, and
    // the host name is the VM's.
    let release = kernel_release(&guest_file("MAQET_GUEST_KERNEL"));
    assert_eq!(c.ssh(&vm, &["uname", "-r"]), release);
    assert_eq!(c.ssh(&vm, &["cat", "/etc/hostname"]), vm);
    // The seed the guest read: one account (no image default user with
    // the key and passwordless sudo), and the host name kept resolvable.
    let user_data = c.ssh(&vm, &["cat", "/mnt/cidata/user-data"]);
    assert!(user_data.contains("manage_etc_hosts: true"), "{user_data}");
    assert!(!user_data.contains("- default"), "{user_data}");
    // The remote command's exit status and stderr are the user's own; ssh's
    // own failure (255) comes with its message; its log file does not
    // outlive the session.
    // (ssh hands the guest's shell one command line, as ssh always does.)
    let o = w.maqet(&["ssh", &vm, "--", "echo oops >&2; exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim(), "oops", "{o:?}");
    let o = w.maqet(&["ssh", "--wait", "5", "-l", "nobody", &vm, "--", "true"]);
    assert_eq!(o.status.code(), Some(255), "{o:?}");
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("Permission denied"), "{said}");
    let left: Vec<_> = std::fs::read_dir(w.data_dir().join("ssh"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [format!("{vm}.known_hosts").as_str()], "{left:?}");

    // The guest agent answers on its channel.
    w.ok(&["guest", vm.as_str(), "ping"]);
    let ip = w.ok(&["guest", vm.as_str(), "ip"]);
    assert!(
        ip.lines()
            .any(|l| l.starts_with("eth0 ") && l.contains("10.0.2.15/24")),
        "{ip}"
    );
    assert_eq!(
        w.ok(&["guest", vm.as_str(), "exec", "--", "cat", "/etc/hostname"])
            .trim(),
        vm
    );
    let o = w.maqet(&[
        "guest",
        vm.as_str(),
        "exec",
        "--",
        "sh",
        "-c",
        "echo oops >&2; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&o.stderr), "oops\n");
    let info = w.ok(&["guest", vm.as_str(), "info"]);
    assert!(info.contains("guest-exec"), "{info}");

    // The ports are published where ports, status --json and systemd show them.
    let st = w.status(&vm);
    let ssh_port = st["ports"]["ssh_port"]
        .as_u64()
        .expect("ssh port in status --json");
    let listing = w.ok(&["ports", vm.as_str()]);
    assert!(
        listing.contains(&format!("127.0.0.1:{ssh_port} -> 22/tcp  (ssh)")),
        "{listing}"
    );
    assert!(
        listing.contains(&format!("127.0.0.1:{web} -> 80/tcp")),
        "{listing}"
    );
    let status_text = unit_prop(&format!("maqet-vm@{vm}.service"), "StatusText");
    assert!(
        status_text.contains(&format!("ssh 127.0.0.1:{ssh_port}")),
        "{status_text}"
    );
    let j: Value = serde_json::from_str(&w.ok(&["ports", vm.as_str(), "--json"])).unwrap();
    assert_eq!(j["ssh_port"].as_u64(), Some(ssh_port));

    // A second VM wanting the same host port fails to start, naming it.
    let other = c.add(
        "taken",
        &digest,
        &format!("ports: [\"{web}:8080\"]\nssh: false\n"),
    );
    let err = w.fails(5, &["start", other.as_str()]);
    assert!(err.contains(&format!("port {web}/tcp")), "{err}");
    assert_eq!(w.state(&other), "defined");

    // A clone runs beside its source, with its own overlay and ssh port.
    let clone = w.name("clone");
    let src_no_ports = c.add("plain", &digest, "");
    w.ok(&["clone", src_no_ports.as_str(), clone.as_str()]);
    w.ok(&["start", clone.as_str()]);
    assert_eq!(c.ssh(&clone, &["uname", "-r"]), release);
    assert_eq!(c.ssh(&clone, &["cat", "/etc/hostname"]), clone);
    let clone_port = w.status(&clone)["ports"]["ssh_port"].as_u64().unwrap();
    assert_ne!(clone_port, ssh_port);
    // Both still answer.
    assert_eq!(c.ssh(&vm, &["uname", "-r"]), release);
    let overlays: Vec<PathBuf> = [&vm, &clone]
        .iter()
        .map(|n| w.data_dir().join("disks").join(n).join("root.qcow2"))
        .collect();
    for o in &overlays {
        let info = sh(
            "qemu-img",
            &["info", "-U", "--output=json", o.to_str().unwrap()],
        );
        let info: Value = serde_json::from_str(&info).unwrap();
        assert_eq!(
            info["backing-filename"],
            c.base.to_str().unwrap(),
            "{info:#}"
        );
        assert_eq!(info["backing-filename-format"], "qcow2");
        assert_eq!(info["virtual-size"], 64 * 1024 * 1024);
    }

    // Stopping asks the agent first, and says so — the runner's journal
    // too, which used to say ACPI.
    let stopped = w.ok(&["stop", vm.as_str()]);
    assert!(
        stopped.contains("guest powered off (guest agent shutdown)"),
        "{stopped}"
    );
    wait_until(
        "the runner's journal to say the agent stopped the guest",
        std::time::Duration::from_secs(10),
        || !runner_said(&vm, "guest powered off (guest agent shutdown)").is_empty(),
    );
    assert!(runner_said(&vm, "ACPI power-down").is_empty());
    w.ok(&["stop", clone.as_str()]);
    assert_eq!(sha256(&c.base), digest, "the base image was written");
    // Stopped: no ports to show — a conflict with a hint (exit 5).
    w.fails(5, &["ports", vm.as_str()]);

    // A second start keeps the unchanged seed (not rewritten) and its
    // instance-id, so cloud-init would not run again.
    let seed_dir = w.data_dir().join("cloud-init").join(&vm);
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let seed_time = mtime(&seed_dir.join("cidata.img"));
    let iid = std::fs::read_to_string(seed_dir.join("instance-id")).unwrap();
    let clone_iid = std::fs::read_to_string(
        w.data_dir()
            .join("cloud-init")
            .join(&clone)
            .join("instance-id"),
    )
    .unwrap();
    assert_ne!(iid, clone_iid, "a clone has its own instance-id");
    w.ok(&["start", vm.as_str()]);
    assert_eq!(mtime(&seed_dir.join("cidata.img")), seed_time);
    assert_eq!(
        std::fs::read_to_string(seed_dir.join("instance-id")).unwrap(),
        iid
    );
    w.ok(&["stop", vm.as_str()]);

    // rm forgets the learned host key, and keeps the seed like every file
    // maqet created (`rm --delete-storage` deletes it: data_safety.rs).
    let known_hosts = w.data_dir().join("ssh").join(format!("{vm}.known_hosts"));
    assert!(known_hosts.is_file());
    w.ok(&["rm", vm.as_str()]);
    assert!(seed_dir.join("cidata.img").exists() && !known_hosts.exists());
}

#[test]
fn wrong_base_digest_fails_the_start_with_both_digests() {
    let c = Cloud::new("cloudsha");
    let w = &c.w;
    let wrong = "0".repeat(64);
    let vm = c.add("bad", &wrong, "");
    let err = w.fails(1, &["start", vm.as_str()]);
    let actual = sha256(&c.base);
    assert!(err.contains(&wrong) && err.contains(&actual), "{err}");
    assert_eq!(w.state(&vm), "defined");
    // Nothing was made on the unverified base.
    assert!(!w
        .data_dir()
        .join("disks")
        .join(&vm)
        .join("root.qcow2")
        .exists());
}

#[test]
fn clone_refuses_to_share_or_drop_a_disk() {
    let w = World::new("cloudclone");
    let own = w.dir.path().join("own.qcow2");
    let vm = w.add_vm(
        "f",
        &format!(
            "storage:\n  - {{name: d, file: {}, size: 1M}}\n",
            own.display()
        ),
    );
    let err = w.fails(5, &["clone", vm.as_str(), w.name("f2").as_str()]);
    assert!(err.contains("would share"), "{err}");
    // A disk with data and no base needs --full, which copies it.
    let vm = w.add_vm("g", "storage:\n  - {name: d, size: 1M}\n");
    w.ok(&["storage", "create", vm.as_str()]);
    let err = w.fails(5, &["clone", vm.as_str(), w.name("g2").as_str()]);
    assert!(err.contains("--full"), "{err}");
    let copy = w.name("g3");
    w.ok(&["clone", "--full", vm.as_str(), copy.as_str()]);
    assert!(w
        .data_dir()
        .join("disks")
        .join(&copy)
        .join("d.qcow2")
        .is_file());
    w.ok(&["rm", "--delete-storage", copy.as_str()]);
    assert!(!w.data_dir().join("disks").join(&copy).exists());
    let err = w.fails(5, &["clone", vm.as_str(), vm.as_str()]);
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn without_an_answering_agent_guest_commands_time_out_and_stop_uses_acpi() {
    let c = Cloud::new("cloudnoqga");
    let w = &c.w;
    let vm = c.add_booting(
        "noqga",
        &sha256(&c.base),
        "guest_agent: true\n",
        "maqet.noagent",
    );
    w.ok(&["start", vm.as_str()]);
    // Booted (sshd answers), but nothing serves the agent channel.
    assert_eq!(c.ssh(&vm, &["cat", "/etc/hostname"]), vm);
    let err = w.fails(7, &["guest", vm.as_str(), "ping", "--timeout", "2"]);
    assert!(err.contains("did not answer"), "{err}");
    // A live snapshot goes ahead unfrozen, and says so.
    let o = w.maqet(&["snapshot", "create", &vm, "root", "s1", "--live", "--json"]);
    assert!(o.status.success(), "{o:?}");
    let warning = String::from_utf8_lossy(&o.stderr);
    assert!(
        warning.contains("saved with its file systems not frozen: the guest agent did not answer"),
        "{warning}"
    );
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["frozen"], false, "{j:#}");
    assert!(
        j["freeze"]
            .as_str()
            .unwrap()
            .starts_with("the guest agent did not answer"),
        "{j:#}"
    );
    // A live load cannot ask whether the loaded guest is frozen: it warns,
    // and succeeds.
    let said = w.fails(0, &["snapshot", "load", &vm, "root", "s1", "--live"]);
    assert!(
        said.contains("cannot tell whether the loaded guest's file systems are frozen"),
        "{said}"
    );
    let out: Value = serde_json::from_str(&w.ok(&["stop", vm.as_str(), "--json"])).unwrap();
    assert_eq!(out["guest_agent"], false, "{out:#}");
    assert_eq!(out["outcome"], "powerdown", "{out:#}");
    // A VM without the channel says what to configure.
    let plain = c.add("plain", &sha256(&c.base), "");
    let err = w.fails(1, &["guest", plain.as_str(), "ping"]);
    assert!(err.contains("guest_agent: true"), "{err}");
}

/// The runner's journal messages for `vm` that contain `needle`.
fn runner_said(vm: &str, needle: &str) -> Vec<String> {
    journal_json(&format!("maqet-vm@{vm}.service"))
        .iter()
        .filter_map(|r| r["MESSAGE"].as_str().map(str::to_string))
        .filter(|m| m.contains(needle))
        .collect()
}

/// One raw request on the runner's control socket; its reply is read only
/// when `wait` (otherwise the client goes away at once).
fn raw(vm: &str, method: &str, params: Value, wait: bool) -> Option<Value> {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket_path(vm)).unwrap();
    let req = serde_json::json!({"id": 1, "method": method, "params": params});
    s.write_all(format!("{req}\n").as_bytes()).unwrap();
    if !wait {
        return None;
    }
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert!(v.get("error").is_none(), "{method}: {v}");
    Some(v["result"].clone())
}

/// A `snapshot` save request as `maqet snapshot create --live` makes it:
/// every writable disk's node, the first holding the VM state.
fn save_params(vm: &str, tag: &str) -> Value {
    let blocks = raw(
        vm,
        "qmp",
        serde_json::json!({"execute": "query-block"}),
        true,
    )
    .unwrap();
    let nodes: Vec<&str> = blocks
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["inserted"]["ro"] == false)
        .filter_map(|b| b["inserted"]["node-name"].as_str())
        .collect();
    serde_json::json!({"job": "save", "tag": tag, "vmstate": nodes[0], "devices": nodes,
        "freeze": true})
}

/// The guest agent runs programs only while the file systems are thawed
/// (qemu-ga refuses guest-exec while frozen).
fn assert_thawed(w: &World, vm: &str) {
    let o = w.ok(&["guest", vm, "exec", "--", "cat", "/etc/hostname"]);
    assert_eq!(o.trim(), vm, "guest exec after the snapshot");
}

#[test]
fn live_snapshots_freeze_and_thaw_the_guest_through_the_agent() {
    let c = Cloud::new("freeze");
    let w = &c.w;
    // The base holds an ext4 file system the guest mounts (tests/guest/init):
    // something the agent can freeze, which the initramfs root is not.
    let raw_fs = w.dir.path().join("data.ext4");
    std::fs::File::create(&raw_fs)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    sh(
        "/usr/sbin/mkfs.ext4",
        &["-q", "-F", "-L", "maqet-data", raw_fs.to_str().unwrap()],
    );
    sh(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            raw_fs.to_str().unwrap(),
            c.base.to_str().unwrap(),
        ],
    );
    let vm = c.add("qga", &sha256(&c.base), "guest_agent: true\n");
    w.ok(&["start", vm.as_str()]);
    wait_until(
        "the guest agent to answer",
        Duration::from_secs(120),
        || {
            w.maqet(&["guest", vm.as_str(), "ping", "--timeout", "2"])
                .status
                .success()
        },
    );
    let froze = || runner_said(&vm, "guest file system(s) for the live snapshot").len();
    let thawed = || runner_said(&vm, "thawed").len();

    // Freeze → save → thaw, with the count of frozen file systems.
    let out = w.ok(&["snapshot", "create", &vm, "root", "s1", "--live", "--json"]);
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["guest_agent"], true, "{j:#}");
    assert_eq!(j["frozen"], true, "{j:#}");
    let n = j["filesystems"]
        .as_u64()
        .expect("a count of frozen file systems");
    assert_eq!(n, 1, "the guest's ext4 data disk: {j:#}");
    assert!(j.get("freeze").is_none(), "{j:#}");
    assert_eq!(
        runner_said(&vm, &format!("froze {n} guest file system(s)")).len(),
        1
    );
    assert_eq!((froze(), thawed()), (1, 1));
    assert_thawed(w, &vm);

    // A save that fails after the freeze still thaws. QEMU refuses a tag
    // that exists; `maqet snapshot create` checks that before asking the
    // runner, so the request goes to the runner directly.
    let r = raw(&vm, "snapshot", save_params(&vm, "s1"), true).unwrap();
    assert!(
        r["error"].as_str().unwrap().contains("already exists"),
        "{r:#}"
    );
    assert_eq!(r["freeze"]["frozen"], true, "{r:#}");
    assert!(r["freeze"].get("thaw_error").is_none(), "{r:#}");
    assert_eq!((froze(), thawed()), (2, 2));
    assert_thawed(w, &vm);

    // A client that goes away mid-save (a killed `maqet`) leaves the thaw
    // to the runner, which finishes the save and thaws.
    raw(&vm, "snapshot", save_params(&vm, "s2"), false);
    wait_until("the runner's thaw", Duration::from_secs(120), || {
        thawed() == 3
    });
    assert_eq!(froze(), 3);
    assert_thawed(w, &vm);
    let list = w.ok(&["snapshot", "list", &vm, "--json"]);
    assert!(list.contains("\"s2\""), "{list}");

    // --no-freeze saves without freezing, and says so in --json only.
    let o = w.maqet(&[
        "snapshot",
        "create",
        &vm,
        "root",
        "s3",
        "--live",
        "--no-freeze",
        "--json",
    ]);
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("froz"));
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["frozen"], false, "{j:#}");
    assert_eq!(j["freeze"], "not asked to (--no-freeze)", "{j:#}");
    assert_eq!(froze(), 3);

    // Loading s1, saved frozen, resumes a frozen guest: the runner thaws it.
    let said = w.fails(0, &["snapshot", "load", &vm, "root", "s1", "--live"]);
    assert!(
        said.contains("saved with the guest's file systems frozen, 1 thawed now"),
        "{said}"
    );
    assert_thawed(w, &vm);
    // A state saved unfrozen loads without a thaw.
    let said = w.fails(0, &["snapshot", "load", &vm, "root", "s3", "--live"]);
    assert!(!said.contains("froz"), "{said}");
    w.ok(&["stop", vm.as_str()]);
}
