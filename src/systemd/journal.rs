//! Reading a VM's journal through journalctl (the journal's own reader;
//! its file format is not ours to parse).
//!
//! Records are matched by the runner's `MAQET_VM=` field as well as by unit:
//! journald cannot attach `_SYSTEMD_USER_UNIT` to the last lines of a
//! process that has already exited, which is exactly when they matter.

use std::process::Command;
use std::time::Duration;

use crate::vmname::VmName;

/// journalctl match terms for everything about one VM: the runner's
/// records, the unit's output, and the manager's lines about the unit.
pub fn vm_matches(vm: &VmName) -> Vec<String> {
    let unit = vm.service_unit();
    let mut m = vec![
        format!("MAQET_VM={vm}"),
        "+".into(),
        format!("_SYSTEMD_USER_UNIT={unit}"),
        "+".into(),
        format!("USER_UNIT={unit}"),
    ];
    // Companion units: their relayed lines carry MAQET_VM=, but systemd's
    // own lines about them (started, exited) carry only the unit.
    let tpm = crate::companion::tpm::service_unit(vm);
    m.extend([
        "+".into(),
        format!("_SYSTEMD_USER_UNIT={tpm}"),
        "+".into(),
        format!("USER_UNIT={tpm}"),
    ]);
    m
}

/// The warning-and-worse lines one runner process logged, oldest first.
/// The runner logs QEMU's stderr at warning level, so a failed start shows
/// QEMU's own message. Retries briefly: journald may still be writing.
pub fn problems_of_runner(vm: &VmName, runner_pid: u32, max: usize) -> Vec<String> {
    if runner_pid == 0 {
        return Vec::new();
    }
    let args = [
        "--user".to_string(),
        "--no-pager".into(),
        "-o".into(),
        "cat".into(),
        "-p".into(),
        "warning".into(),
        "-n".into(),
        max.to_string(),
        format!("MAQET_VM={vm}"),
        format!("_PID={runner_pid}"),
    ];
    for _ in 0..10 {
        if let Ok(out) = Command::new("journalctl").args(&args).output() {
            let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with("-- "))
                .map(str::to_string)
                .collect();
            if !lines.is_empty() {
                return lines;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Vec::new()
}

/// QEMU's last line on stderr under one runner (else the runner's last
/// warning), for `status`/`ls` of a VM that failed: no retries, the run
/// ended long enough ago for journald to have it.
pub fn last_error_of_runner(vm: &VmName, runner_pid: u32) -> Option<String> {
    if runner_pid == 0 {
        return None;
    }
    let last = |extra: &[&str]| -> Option<String> {
        let out = Command::new("journalctl")
            .args([
                "--user",
                "--no-pager",
                "-o",
                "cat",
                "-p",
                "warning",
                "-n",
                "1",
            ])
            .arg(format!("MAQET_VM={vm}"))
            .arg(format!("_PID={runner_pid}"))
            .args(extra)
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .rfind(|l| !l.trim().is_empty() && !l.starts_with("-- "))
            .map(str::to_string)
    };
    last(&["MAQET_SOURCE=qemu"]).or_else(|| last(&[]))
}

/// Replaces this process with journalctl for `maqet logs`.
pub fn exec_logs(vm: &VmName, follow: bool, lines: Option<u32>) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("journalctl");
    cmd.args(["--user", "-o", "short-iso"]);
    if follow {
        cmd.arg("-f");
    } else {
        cmd.arg("--no-pager");
    }
    if let Some(n) = lines {
        cmd.arg(format!("--lines={n}"));
    }
    cmd.args(vm_matches(vm));
    cmd.exec()
}
