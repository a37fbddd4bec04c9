//! Reading a unit's journal through journalctl (the journal's own reader;
//! its file format is not ours to parse).

use std::process::Command;
use std::time::Duration;

/// The warning-and-worse lines of one run of a unit, oldest first. The
/// runner logs QEMU's stderr at warning level, so a failed start shows
/// QEMU's own message. Retries briefly: journald may still be writing.
pub fn problems_of_invocation(unit: &str, invocation_id: &str, max: usize) -> Vec<String> {
    let mut args = vec![
        "--user".to_string(),
        "--no-pager".into(),
        "-o".into(),
        "cat".into(),
        "-p".into(),
        "warning".into(),
        "-n".into(),
        max.to_string(),
    ];
    if invocation_id.is_empty() {
        args.extend(["-u".into(), unit.to_string()]);
    } else {
        args.push(format!("_SYSTEMD_INVOCATION_ID={invocation_id}"));
    }
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

/// Replaces this process with journalctl for `maqet logs`.
pub fn exec_logs(unit: &str, follow: bool, lines: Option<u32>) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("journalctl");
    cmd.args(["--user", "-u", unit, "-o", "short-iso"]);
    if follow {
        cmd.arg("-f");
    } else {
        cmd.arg("--no-pager");
    }
    if let Some(n) = lines {
        cmd.arg(format!("--lines={n}"));
    }
    cmd.exec()
}
