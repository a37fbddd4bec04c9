//! Reading a VM's journal through journalctl (the journal's own reader;
//! its file format is not ours to parse).
//!
//! Records are matched by the runner's `MAQET_VM=` field as well as by unit:
//! journald cannot attach `_SYSTEMD_USER_UNIT` to the last lines of a
//! process that has already exited, which is exactly when they matter.
//!
//! Unit names are per user, so two data directories' VMs of one name share
//! `maqet-vm@NAME`'s journal. The runner (and the relay of a companion)
//! tags its records `MAQET_DATA_DIR=`; `maqet logs` shows a data
//! directory's own records and the runs (invocations) they belong to, and
//! leaves out the runs another data directory's records claim.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use maqet_base::vmname::VmName;

/// The journal field naming the data directory whose VM a record is about.
pub const DATA_DIR_FIELD: &str = "MAQET_DATA_DIR";

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

/// Why one runner's VM failed, for `status`/`ls`: the runner's own account
/// when it decided the VM failed (`MAQET_FAILURE=true`: a helper died,
/// internal-error, QEMU ended by a signal), else QEMU's last line on
/// stderr, else the runner's last warning. No retries: the run ended long
/// enough ago for journald to have it.
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
    last(&["MAQET_FAILURE=true"])
        .or_else(|| last(&["MAQET_SOURCE=qemu"]))
        .or_else(|| last(&[]))
}

/// One journal record of a VM, as far as whose run it is goes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tagged {
    /// `MAQET_DATA_DIR=`; None from a runner older than the field.
    pub data_dir: Option<String>,
    /// `_SYSTEMD_INVOCATION_ID=`: the unit run the record came from.
    pub invocation: Option<String>,
}

/// The runs (invocation IDs) whose records `maqet logs` from `data_dir`
/// shows: those its records name, and those no record names a data
/// directory for (runs of a runner older than the field); never a run
/// only another data directory's records name.
pub fn runs_to_show(records: &[Tagged], data_dir: &str) -> BTreeSet<String> {
    // Per run: whether a record named this data directory, and whether one named another.
    let mut runs: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for r in records {
        let Some(inv) = r.invocation.as_deref() else {
            continue;
        };
        let e = runs.entry(inv).or_default();
        match r.data_dir.as_deref() {
            Some(d) if d == data_dir => e.0 = true,
            Some(_) => e.1 = true,
            None => {}
        }
    }
    runs.into_iter()
        .filter(|(_, (ours, theirs))| *ours || !*theirs)
        .map(|(inv, _)| inv.to_string())
        .collect()
}

/// journalctl match terms for `maqet logs`: this data directory's tagged
/// records, plus every record of the runs in `runs` — the processes'
/// (`_SYSTEMD_INVOCATION_ID`) and the manager's lines about them
/// (`USER_INVOCATION_ID`).
pub fn logs_matches(vm: &VmName, data_dir: &str, runs: &BTreeSet<String>) -> Vec<String> {
    let mut m = vec![
        format!("MAQET_VM={vm}"),
        format!("{DATA_DIR_FIELD}={data_dir}"),
    ];
    if !runs.is_empty() {
        for field in ["_SYSTEMD_INVOCATION_ID", "USER_INVOCATION_ID"] {
            m.push("+".into());
            m.extend(runs.iter().map(|r| format!("{field}={r}")));
        }
    }
    m
}

/// The tagged records of `vm` in the user's journal.
pub fn tagged_records(vm: &VmName) -> std::io::Result<Vec<Tagged>> {
    let out = Command::new("journalctl")
        .args(["--user", "--no-pager", "-o", "json"])
        .arg(format!(
            "--output-fields={DATA_DIR_FIELD},_SYSTEMD_INVOCATION_ID"
        ))
        .arg(format!("MAQET_VM={vm}"))
        .output()
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot run journalctl: {e}")))?;
    let text = |v: &serde_json::Value, k: &str| v.get(k).and_then(|s| s.as_str()).map(String::from);
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| Tagged {
            data_dir: text(&v, DATA_DIR_FIELD),
            invocation: text(&v, "_SYSTEMD_INVOCATION_ID"),
        })
        .collect())
}

/// Replaces this process with journalctl for `maqet logs`: `matches` from
/// [`logs_matches`].
pub fn exec_logs(matches: &[String], follow: bool, lines: Option<u32>) -> std::io::Error {
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
    cmd.args(matches);
    cmd.exec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(dir: Option<&str>, inv: Option<&str>) -> Tagged {
        Tagged {
            data_dir: dir.map(String::from),
            invocation: inv.map(String::from),
        }
    }

    #[test]
    fn runs_named_by_another_data_directory_are_left_out() {
        let records = [
            rec(Some("/a"), Some("r1")),
            rec(None, Some("r1")),
            rec(Some("/b"), Some("r2")),
            rec(None, Some("r2")),
            // An older runner's run: no record names a directory.
            rec(None, Some("r3")),
            // Lines after a process exited carry no invocation.
            rec(Some("/b"), None),
        ];
        let runs = runs_to_show(&records, "/a");
        assert_eq!(runs.into_iter().collect::<Vec<_>>(), ["r1", "r3"]);
        let runs = runs_to_show(&records, "/b");
        assert_eq!(runs.into_iter().collect::<Vec<_>>(), ["r2", "r3"]);
    }

    #[test]
    fn matches_are_our_tagged_records_or_our_runs() {
        let vm = VmName::new("web").unwrap();
        let runs: BTreeSet<String> = ["r1".to_string(), "r3".to_string()].into();
        assert_eq!(
            logs_matches(&vm, "/a b", &runs),
            [
                "MAQET_VM=web",
                "MAQET_DATA_DIR=/a b",
                "+",
                "_SYSTEMD_INVOCATION_ID=r1",
                "_SYSTEMD_INVOCATION_ID=r3",
                "+",
                "USER_INVOCATION_ID=r1",
                "USER_INVOCATION_ID=r3",
            ]
        );
        // No run known: no empty alternative (journalctl would reject it).
        assert_eq!(
            logs_matches(&vm, "/a", &BTreeSet::new()),
            ["MAQET_VM=web", "MAQET_DATA_DIR=/a"]
        );
    }
}
