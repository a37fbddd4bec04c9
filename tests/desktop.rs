//! Desktop guests: UEFI (OVMF by QEMU firmware descriptor) with a per-VM
//! NVRAM copy, TPM 2.0 through the swtpm companion unit, and the VNC/SPICE
//! display on a Unix socket — against the real user manager and QEMU (TCG).
//!
//! A UEFI boot costs ~9 s under TCG, so one booted guest carries most
//! assertions (`uefi_tpm_vnc_guest`).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(90);
const READY: &str = "maqet-test-guest: ready";

/// PIDs of processes whose command line contains `needle`.
/// How long a command in the guest's shell may take.
const RUN: Duration = Duration::from_secs(30);

fn pids_with(program: &str, needle: &str) -> Vec<u64> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.split(' ').next().is_some_and(|a| a.ends_with(program))
            && cmd.contains(needle)
            && alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

fn files_of(dir: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    v
}

/// The bytes a variable store holds, whatever its format (read with
/// qemu-img, `-U` so a running VM's store can be read too).
fn nvram_content(path: &Path) -> Vec<u8> {
    let out = path.with_extension("content.raw");
    let _ = std::fs::remove_file(&out);
    let o = std::process::Command::new("qemu-img")
        .args(["convert", "-U", "-O", "raw"])
        .arg(path)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let b = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    b
}

/// `qemu-img info` of an image as JSON (`-U`: it may be in use).
fn image_info(path: &Path) -> Value {
    let o = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    serde_json::from_slice(&o.stdout).unwrap()
}

fn uefi_guest(w: &World, suffix: &str, extra: &str) -> String {
    let name = w.name(suffix);
    let text = format!(
        "name: {name}\nbinary: {QEMU}\nmemory: 256M\nconsole: true\nshutdown_timeout: 20\n\
         firmware: uefi\n{extra}arguments:\n  - machine: q35\n  - accel: tcg\n\
         \x20 - kernel: {}\n  - initrd: {}\n  - append: \"console=ttyS0 quiet\"\n",
        guest_file("MAQET_GUEST_KERNEL"),
        guest_file("MAQET_GUEST_INITRD"),
    );
    let f = w.write(&format!("{name}.yaml"), &text);
    w.ok(&["add", f.to_str().unwrap()]);
    name
}

#[test]
fn uefi_tpm_vnc_guest() {
    let w = World::new("desk");
    let templates = files_of("/usr/share/OVMF");
    let vm = uefi_guest(&w, "u", "tpm: true\ndisplay: vnc\n");
    let vm_dir = w.data_dir().join("disks").join(&vm);
    // A new VM's variable store is qcow2 (it can hold internal snapshots).
    let nvram = vm_dir.join("efi-vars.qcow2");
    let tpm_unit = format!("maqet-tpm@{vm}.service");

    // First start: the NVRAM copy and TPM state are made, 0600/0700.
    let out = w.cmd().args(["start", &vm]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("efi-vars.qcow2 (UEFI variable store"), "{err}");
    assert_eq!(mode(&nvram), 0o600);
    assert_eq!(image_info(&nvram)["format"], "qcow2");
    assert!(!vm_dir.join("efi-vars.fd").exists());
    assert_eq!(mode(&vm_dir.join("tpm")), 0o700);
    let inode = std::fs::metadata(&nvram).unwrap().ino();

    // The helper runs as its own unit next to the VM, tagged with MAQET_VM.
    assert_eq!(unit_prop(&tpm_unit, "ActiveState"), "active");
    assert_eq!(unit_prop(&tpm_unit, "Slice"), "maqet.slice");
    assert!(unit_prop(&tpm_unit, "LogExtraFields").contains(&format!("MAQET_VM={vm}")));
    // The VM wants the helper (a start and every restart bring it up
    // first) but is not bound to it: see the restart tests.
    assert!(unit_prop(&format!("maqet-vm@{vm}.service"), "Wants").contains(&tpm_unit));
    // swtpm runs under the runner's relay: its journal lines carry the
    // VM's field (journald ignores LogExtraFields= for user units).
    wait_until(
        "swtpm's lines under MAQET_VM",
        Duration::from_secs(10),
        || {
            let o = std::process::Command::new("journalctl")
                .args([
                    "--user",
                    "-o",
                    "json",
                    "--no-pager",
                    "SYSLOG_IDENTIFIER=swtpm",
                ])
                .arg(format!("MAQET_VM={vm}"))
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|r| {
                    r["MESSAGE"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("swtpm started (pid "))
                        && r["MAQET_SOURCE"] == "swtpm"
                })
        },
    );
    let st = w.status(&vm);
    let helpers: Vec<&str> = st["companions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["unit"].as_str().unwrap())
        .collect();
    assert!(helpers.contains(&tpm_unit.as_str()), "{st:#}");
    let human = w.ok(&["status", &vm]);
    assert!(
        human.contains(&format!("helper:  {tpm_unit} active")),
        "{human}"
    );

    // Sockets: private, in the VM's runtime directory; VNC greets.
    let rt = runtime_dir(&vm);
    assert_eq!(mode(&rt), 0o700);
    assert_eq!(mode(&rt.join("tpm.sock")), 0o600);
    assert_eq!(mode(&rt.join("vnc.sock")), 0o600);
    let mut vnc = UnixStream::connect(rt.join("vnc.sock")).unwrap();
    vnc.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut greeting = [0u8; 12];
    vnc.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"RFB 003.008\n");
    drop(vnc);
    let uri = w.ok(&["display", &vm, "--print"]);
    assert_eq!(
        uri.trim(),
        format!("vnc+unix://{}", rt.join("vnc.sock").display())
    );

    // The guest booted through OVMF and sees the TPM.
    let mut c = Console::attach(&w, &vm);
    c.wait_for(READY, BOOT);
    let seen = c.run_within(RUN, "ls -d /sys/firmware/efi /dev/tpm0 /sys/class/tpm/tpm0");
    for p in ["/sys/firmware/efi", "/dev/tpm0", "/sys/class/tpm/tpm0"] {
        assert!(seen.contains(p), "{p} missing in the guest: {seen}");
    }
    // Screendump keeps working with a socket display.
    let shot = w.dir.path().join("s.ppm");
    w.ok(&["qmp", "screendump", &vm, shot.to_str().unwrap()]);
    assert!(std::fs::metadata(&shot).unwrap().len() > 0);

    // No TCP anywhere: neither QEMU nor swtpm holds a TCP socket.
    let qemu = qemu_pids(&vm);
    let swtpm = pids_with("swtpm", &vm_dir.to_string_lossy());
    assert_eq!((qemu.len(), swtpm.len()), (1, 1), "{qemu:?} {swtpm:?}");
    assert_no_tcp(&[qemu[0], swtpm[0]]);

    // swtpm dies: the VM is stopped and ends `failed`, saying why (issue
    // 17.4; it used to end `defined`, as if stopped on request).
    drop(c);
    let rc = std::process::Command::new("kill")
        .args(["-9", &swtpm[0].to_string()])
        .status()
        .unwrap();
    assert!(rc.success());
    let st = w.wait_state(&vm, "failed", Duration::from_secs(90));
    let why = st["last_error"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!("{tpm_unit} failed")) && why.contains("SIGKILL"),
        "{st:#}"
    );
    assert!(qemu_pids(&vm).is_empty());
    assert!(pids_with("swtpm", &vm_dir.to_string_lossy()).is_empty());
    wait_until("the TPM unit to go", Duration::from_secs(10), || {
        !matches!(
            unit_prop(&tpm_unit, "ActiveState").as_str(),
            "active" | "activating" | "deactivating"
        )
    });
    assert!(vm_dir.join("tpm/tpm2-00.permall").is_file());
    let human = w.ok(&["status", &vm]);
    assert!(human.contains(&format!("{tpm_unit} failed")), "{human}");
    // `maqet logs` has the helper's end next to the VM's: the relay saw
    // swtpm killed and exited 128+9, which systemd recorded.
    wait_until("swtpm's end in maqet logs", Duration::from_secs(10), || {
        let logs = w.ok(&["logs", &vm]);
        logs.contains("swtpm was killed by signal 9")
            && logs.contains(&format!(
                "{tpm_unit}: Main process exited, code=exited, status=137"
            ))
    });

    // The firmware wrote its variables on the first boot; they stay, the
    // file is never replaced, and the template is never written.
    let template = templates
        .iter()
        .find(|(p, _)| p.ends_with("OVMF_VARS_4M.fd"))
        .map(|(_, b)| b.clone())
        .unwrap();
    let persisted = nvram_content(&nvram);
    assert_eq!(persisted.len(), template.len());
    assert_ne!(persisted, template, "the firmware wrote nothing");
    let out = w.cmd().args(["start", &vm]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("efi-vars"), "{err}");
    let c = Console::attach(&w, &vm);
    c.wait_for(READY, BOOT);
    drop(c);
    assert_eq!(std::fs::metadata(&nvram).unwrap().ino(), inode);
    assert_ne!(nvram_content(&nvram), template);
    assert_eq!(unit_prop(&tpm_unit, "ActiveState"), "active");

    // A normal stop takes the helper along.
    w.ok(&["stop", &vm]);
    wait_until("the TPM unit to stop", Duration::from_secs(10), || {
        !matches!(
            unit_prop(&tpm_unit, "ActiveState").as_str(),
            "active" | "activating" | "deactivating"
        )
    });
    assert!(pids_with("swtpm", &vm_dir.to_string_lossy()).is_empty());
    assert_eq!(files_of("/usr/share/OVMF"), templates);

    // rm --delete-storage removes the NVRAM copy and the TPM state maqet made.
    w.ok(&["rm", &vm, "--delete-storage"]);
    assert!(!nvram.exists());
    assert!(!vm_dir.exists(), "{}", vm_dir.display());
}

#[test]
fn spice_display_speaks_on_its_socket_only() {
    let w = World::new("dspice");
    let name = w.name("s");
    let f = w.write(
        &format!("{name}.yaml"),
        &format!("name: {name}\nbinary: {QEMU}\nmemory: 64M\ndisplay: spice\nvga: std\narguments:\n  - accel: tcg\n"),
    );
    w.ok(&["add", f.to_str().unwrap()]);
    w.ok(&["start", &name]);
    let sock = runtime_dir(&name).join("spice.sock");
    assert_eq!(mode(&sock), 0o600);
    // A SPICE link message for the main channel; the server answers with
    // its own link header, magic "REDQ".
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut msg = Vec::new();
    for v in [0x5144_4552u32, 2, 2, 18, 0] {
        msg.extend_from_slice(&v.to_le_bytes());
    }
    msg.extend_from_slice(&[1, 0]);
    for v in [0u32, 0, 18] {
        msg.extend_from_slice(&v.to_le_bytes());
    }
    s.write_all(&msg).unwrap();
    let mut magic = [0u8; 4];
    s.read_exact(&mut magic).unwrap();
    assert_eq!(&magic, b"REDQ");
    drop(s);
    assert_eq!(
        w.ok(&["display", &name, "--print"]).trim(),
        format!("spice+unix://{}", sock.display())
    );
    assert_no_tcp(&qemu_pids(&name));

    // No viewer installed: says what to install.
    let o = w
        .cmd()
        .env("PATH", "/nonexistent")
        .args(["display", &name])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("install virt-viewer (remote-viewer) or spice-client-gtk (spicy)"),
        "{err}"
    );
    // A viewer found in PATH is run with the URI (a stand-in records it).
    let bin = w.dir.path().join("viewers");
    std::fs::create_dir_all(&bin).unwrap();
    let seen = w.dir.path().join("viewer-args");
    let viewer = bin.join("remote-viewer");
    std::fs::write(
        &viewer,
        format!("#!/bin/sh\necho \"$@\" > {}\n", seen.display()),
    )
    .unwrap();
    std::fs::set_permissions(&viewer, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = w
        .cmd()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .args(["display", &name])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap().trim(),
        format!("spice+unix://{}", sock.display())
    );
    w.ok(&["stop", &name]);
    let err = w.fails(5, &["display", &name]);
    assert!(err.contains("not running"), "{err}");
}

/// `maqet add` with extra environment; returns (exit code, stderr).
fn add_with(w: &World, env: &[(&str, &str)], file: &Path) -> (i32, String) {
    let mut c = w.cmd();
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.args(["add", file.to_str().unwrap()]).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A clone of a UEFI VM gets its own copy of the source's variable store
/// (0600, recorded as the clone's, so `rm --delete-storage` removes it).
#[test]
fn a_clone_gets_its_own_copy_of_the_uefi_variable_store() {
    let w = World::new("dclone");
    let src = w.add_vm("src", "firmware: uefi\n");
    w.ok(&["start", &src]);
    w.ok(&["stop", &src, "--force"]);
    let src_vars = w.data_dir().join("disks").join(&src).join("efi-vars.qcow2");
    assert!(src_vars.is_file());
    let dst = w.name("dst");
    w.ok(&["clone", &src, &dst]);
    let dst_vars = w.data_dir().join("disks").join(&dst).join("efi-vars.qcow2");
    assert_eq!(
        std::fs::read(&dst_vars).unwrap(),
        std::fs::read(&src_vars).unwrap()
    );
    let (s, d) = (
        std::fs::metadata(&src_vars).unwrap(),
        std::fs::metadata(&dst_vars).unwrap(),
    );
    assert_ne!(s.ino(), d.ino());
    assert_eq!(d.permissions().mode() & 0o777, 0o600);
    let out = w.maqet(&["rm", &dst, "--delete-storage"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!dst_vars.exists(), "{err}");
    assert!(src_vars.is_file());
}

#[test]
fn desktop_keys_that_cannot_work_are_refused() {
    let w = World::new("dbad");
    let empty = w.dir.path().join("no-firmware");
    std::fs::create_dir_all(&empty).unwrap();
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: &[Case] = &[
        ("nofw", "firmware: uefi\n", vec![("MAQET_FIRMWARE_DIRS", empty.to_str().unwrap())], "install ovmf"),
        ("notpm", "tpm: true\n", vec![("MAQET_SWTPM", "/nonexistent/swtpm")], "install swtpm swtpm-tools"),
        ("sbpc", "firmware: uefi\nsecure_boot: true\n", vec![], "needs the q35 machine"),
        ("sbbios", "secure_boot: true\n", vec![], "needs 'firmware: uefi'"),
        (
            "twofw",
            "firmware: uefi\nargs: [-drive, \"if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd\"]\n",
            vec![],
            "remove one of them",
        ),
        ("badfw", "firmware: efi\n", vec![], "expected 'bios' or 'uefi'"),
        // A top-level display never opens TCP (it served VNC on 0.0.0.0
        // and [::] port 5947 without a password).
        (
            "tcpvnc",
            "display: \"vnc=:47\"\n",
            vec![],
            "display: 'vnc=:47' would have QEMU serve VNC on TCP",
        ),
    ];
    for (suffix, extra, env, msg) in cases {
        let name = w.name(suffix);
        let f = w.vm_yaml(&name, extra);
        let (code, err) = add_with(&w, env, &f);
        assert_eq!(code, 4, "{suffix}: {err}");
        assert!(err.contains(msg), "{suffix}: {err}");
        w.fails(3, &["status", &name]);
    }
    // Nothing was created for any of them.
    assert!(!w.data_dir().join("disks").exists());

    // The original's explicit pflash drives keep working with the default BIOS.
    let name = w.name("pflash");
    let f = w.vm_yaml(
        &name,
        "args: [-drive, \"if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd\"]\n",
    );
    let (code, err) = add_with(&w, &[], &f);
    assert_eq!(code, 0, "{err}");
    let info: Value = serde_json::from_str(&w.ok(&["info", &name, "--json"])).unwrap();
    let pflash: Vec<&Value> = info["qemu_argv"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a.as_str().unwrap().contains("if=pflash"))
        .collect();
    assert_eq!(pflash.len(), 1, "{info:#}");
    w.ok(&["start", &name]);
    w.ok(&["stop", &name]);

    // Where it depends on the host, start checks again: firmware gone
    // since `add` → refused, nothing created.
    let name = w.name("gone");
    let f = w.vm_yaml(&name, "firmware: uefi\nargs: [-machine, q35]\n");
    assert_eq!(add_with(&w, &[], &f).0, 0);
    let o = w
        .cmd()
        .env("MAQET_FIRMWARE_DIRS", &empty)
        .args(["start", &name])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("install ovmf"), "{err}");
    assert!(!w.data_dir().join("disks").join(&name).exists());
}

#[test]
fn a_restart_policy_brings_swtpm_back_with_the_vm() {
    let w = World::new("dtpmrs");
    let vm = w.add_vm("r", "tpm: true\nrestart: on-failure\nrestart_sec: 0\n");
    let tpm_unit = format!("maqet-tpm@{vm}.service");
    w.ok(&["start", &vm]);
    let swtpm_pid = || unit_prop(&tpm_unit, "MainPID");
    let first = swtpm_pid();
    assert_ne!(first, "0");
    // QEMU crashes: systemd restarts the VM, and swtpm (stopped with the
    // failed run) comes back before it, with the same state directory.
    let qemu = qemu_pids(&vm);
    assert_eq!(qemu.len(), 1);
    let rc = std::process::Command::new("kill")
        .args(["-9", &qemu[0].to_string()])
        .status()
        .unwrap();
    assert!(rc.success());
    wait_until("the restarted VM", Duration::from_secs(60), || {
        let s = w.status(&vm);
        s["state"] == "running" && s["restarts"].as_u64() >= Some(1)
    });
    assert_eq!(unit_prop(&tpm_unit, "ActiveState"), "active");
    assert_ne!(swtpm_pid(), first);
    // swtpm dies: the VM fails with that cause, and the policy restarts
    // both.
    let second = swtpm_pid();
    let rc = std::process::Command::new("kill")
        .args(["-9", &second])
        .status()
        .unwrap();
    assert!(rc.success());
    wait_until(
        "the VM restarted after swtpm died",
        Duration::from_secs(90),
        || {
            let s = w.status(&vm);
            s["state"] == "running" && s["restarts"].as_u64() >= Some(2)
        },
    );
    assert_eq!(unit_prop(&tpm_unit, "ActiveState"), "active");
    assert_ne!(swtpm_pid(), second);
    w.ok(&["stop", &vm]);
    wait_until("the TPM unit to stop", Duration::from_secs(10), || {
        !matches!(
            unit_prop(&tpm_unit, "ActiveState").as_str(),
            "active" | "activating" | "deactivating"
        )
    });
}

/// UEFI VMs take live snapshots (issue 17.11): the variable store is qcow2,
/// so the whole VM — the store included — is saved and loaded, and the
/// guest booted through OVMF runs on after the load. A VM made before
/// (raw `efi-vars.fd`) is refused with the way out, which converts it.
#[test]
fn a_uefi_vm_takes_live_snapshots_and_an_old_raw_store_converts() {
    let w = World::new("dnvsnap");
    let disk = "storage:\n  - name: d\n    size: 16M\n";
    let vm = uefi_guest(&w, "q", disk);
    let vm_dir = w.data_dir().join("disks").join(&vm);
    w.ok(&["start", &vm]);
    let mut c = Console::attach(&w, &vm);
    c.wait_for(READY, BOOT);
    let said = |args: &[&str]| {
        let o = w.maqet(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{args:?}: {text}");
        text
    };
    let out = said(&["snapshot", "create", &vm, "d", "s1", "--live"]);
    assert!(out.contains("UEFI variable store"), "{out}");
    let listed = image_info(&vm_dir.join("efi-vars.qcow2"));
    assert_eq!(listed["snapshots"][0]["name"], "s1", "{listed:#}");
    // Something to tell the loaded state from the current one.
    assert!(c
        .run_within(RUN, "echo after-save > /tmp/mark; cat /tmp/mark")
        .contains("after-save"));
    w.ok(&["snapshot", "load", &vm, "d", "s1", "--live"]);
    assert!(!c
        .run_within(RUN, "cat /tmp/mark 2>&1")
        .contains("after-save"));
    assert!(c
        .run_within(RUN, "ls -d /sys/firmware/efi")
        .contains("/sys/firmware/efi"));
    drop(c);
    w.ok(&["stop", &vm, "--force"]);

    // A VM made by a maqet before qcow2 stores: its raw copy of the
    // template is there before its first start.
    let old = uefi_guest(&w, "r", disk);
    let old_dir = w.data_dir().join("disks").join(&old);
    std::fs::create_dir_all(&old_dir).unwrap();
    let raw = old_dir.join("efi-vars.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &raw).unwrap();
    std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let info: Value = serde_json::from_str(&w.ok(&["info", &old, "--json"])).unwrap();
    let argv = info["qemu_argv"].to_string();
    assert!(
        argv.contains(&format!(
            "if=pflash,unit=1,format=raw,file={}",
            raw.display()
        )),
        "{argv}"
    );
    w.ok(&["start", &old]);
    let err = w.fails(2, &["snapshot", "create", &old, "d", "s1", "--live"]);
    assert!(
        err.contains("UEFI variable store")
            && err.contains(&format!("maqet storage convert-nvram {old}")),
        "{err}"
    );
    let err = w.fails(5, &["storage", "convert-nvram", &old]);
    assert!(err.contains("is running"), "{err}");
    w.ok(&["stop", &old, "--force"]);
    let out = w.ok(&["storage", "convert-nvram", &old]);
    let qcow2 = old_dir.join("efi-vars.qcow2");
    assert!(out.contains(&qcow2.display().to_string()), "{out}");
    assert_eq!(image_info(&qcow2)["format"], "qcow2");
    assert_eq!(nvram_content(&qcow2), std::fs::read(&raw).unwrap());
    assert!(raw.is_file(), "the raw store is kept");
    w.ok(&["start", &old]);
    let out = said(&["snapshot", "create", &old, "d", "s1", "--live"]);
    assert!(out.contains("UEFI variable store"), "{out}");
    w.ok(&["stop", &old, "--force"]);
    // Converting again says so; a BIOS VM has nothing to convert.
    assert!(w
        .ok(&["storage", "convert-nvram", &old])
        .contains("is qcow2 already"));
    let bios = w.add_vm("b", "");
    let err = w.fails(2, &["storage", "convert-nvram", &bios]);
    assert!(err.contains("does not boot UEFI firmware"), "{err}");
    // rm --delete-storage removes both stores maqet made (the raw one was
    // not maqet's here: it stays).
    w.ok(&["rm", &old, "--delete-storage"]);
    assert!(!qcow2.exists());
}
