//! `maqet doctor`: is this user's session fit to run VMs, and is anything
//! left over? Each check yields findings with a severity and a fix hint;
//! with `fix`, the safe repairs are made and reported.
//!
//! Checks (docs/troubleshooting.md explains each finding):
//! - `session`  the user manager over the session bus; `XDG_RUNTIME_DIR`
//! - `runner`   the maqet-runner binary the units will run
//! - `linger`   whether VMs survive the end of the last login session
//! - `kvm`      access to /dev/kvm
//! - `qemu`     the QEMU binaries the VMs use, and qemu-img, with versions
//! - `journal`  journald keeps this user's journal (`maqet logs`)
//! - `cgroups`  whether `resources:` limits can be enforced (delegated
//!   cgroup v2 controllers)
//! - `database` SQLite integrity of maqet.db
//! - `config`   every stored VM config still validates
//! - `units`    unit files (maqet.slice, maqet-autostart.service, a
//!   forbidden `maqet-vm@.service`), failed and leftover `maqet-vm@` units
//! - `firmware`, `swtpm`, `viewer`  UEFI firmware (QEMU descriptors),
//!   swtpm and a viewer for `maqet display`, with the packages to install
//! - `virtiofsd`, `userns`, `passt`  the helpers of `shares:` and
//!   `network: passt`, and whether virtiofsd can sandbox itself
//! - `sockets`  runtime files in `$XDG_RUNTIME_DIR/maqet/vm` (a VM's
//!   directory, an older layout's sockets and port plans) without a live VM
//! - `leftovers` VMs an interrupted `clone` left incomplete, temporary files
//!   a killed command left (storage/tmp.rs)
//! - `sockets`  socket files in `$XDG_RUNTIME_DIR/maqet/vm` without a unit
//! - `images`   the image cache's size, unverified entries and unfinished
//!   downloads; VMs whose base image is gone from the cache
//!
//! Safe repairs only: reset-failed of failed units (they hold no
//! processes), removal of runtime files of VMs that do not run (sockets
//! only when nothing listens) and of temporary files no process writes any
//! more. A running unit, and anything of a running VM, is never touched.

mod cgroups;
mod desktop;
mod helpers;
mod host;
mod images;
mod leftovers;
mod runtime;
mod session;
mod store;
mod units;

use std::path::PathBuf;

use serde::Serialize;

use crate::paths::DataDir;

pub use units::{AUTOSTART_UNIT, SLICE_UNIT};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Ok,
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub severity: Severity,
    pub message: String,
    /// What the user can do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// `--fix` can repair it.
    pub fixable: bool,
    /// What `--fix` did about it (then the finding is resolved).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
}

impl Finding {
    pub fn new(check: &'static str, severity: Severity, message: impl Into<String>) -> Self {
        Finding {
            check,
            severity,
            message: message.into(),
            hint: None,
            fixable: false,
            fixed: None,
        }
    }

    pub fn ok(check: &'static str, message: impl Into<String>) -> Self {
        Self::new(check, Severity::Ok, message)
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn fixable(mut self) -> Self {
        self.fixable = true;
        self
    }

    /// Whether it still needs attention (a fixed finding does not).
    pub fn open(&self) -> bool {
        self.fixed.is_none() && self.severity >= Severity::Warning
    }
}

/// What the checks need to know about the caller.
#[derive(Debug, Clone)]
pub struct DoctorInput {
    pub data_dir: DataDir,
    /// The runner binary the CLI would put into units, or why none was found.
    pub runner: Result<PathBuf, String>,
    pub fix: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// No error left (warnings allowed).
    pub ok: bool,
    pub errors: usize,
    pub warnings: usize,
    pub findings: Vec<Finding>,
}

impl Report {
    fn new(findings: Vec<Finding>) -> Report {
        let count = |s| {
            findings
                .iter()
                .filter(|f| f.severity == s && f.fixed.is_none())
                .count()
        };
        let errors = count(Severity::Error);
        Report {
            ok: errors == 0,
            errors,
            warnings: count(Severity::Warning),
            findings,
        }
    }
}

/// Runs every check (and, with `input.fix`, the safe repairs).
pub async fn run(input: &DoctorInput) -> Report {
    let mut f = Vec::new();
    let sd = session::check(&mut f).await;
    f.push(host::runner(&input.runner));
    f.push(session::linger().await);
    let vms = store::check(&input.data_dir, &mut f);
    leftovers::check(&input.data_dir, &vms, input.fix, &mut f);
    f.push(host::kvm(&vms));
    f.extend(host::qemu(&vms).await);
    f.push(host::journal().await);
    desktop::check(&mut f);
    helpers::check(&mut f);
    images::check(&vms, &mut f);
    match &sd {
        Some(sd) => {
            f.push(cgroups::check(sd, &vms).await);
            units::unit_files(sd, &vms, &mut f).await;
            let loaded = units::vm_units(sd, &input.data_dir, &vms, input.fix, &mut f).await;
            runtime::check(sd, &loaded, input.fix, &mut f).await;
        }
        None => f.push(Finding::new(
            "units",
            Severity::Info,
            "unit checks skipped: the user manager is unreachable",
        )),
    }
    Report::new(f)
}

/// Runs a helper program with a time limit; its stdout, or why it failed.
pub(crate) async fn command_output(program: &str, args: &[&str]) -> Result<String, String> {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(std::time::Duration::from_secs(10), child).await {
        Err(_) => Err(format!("`{program}` did not finish within 10 s")),
        Ok(Err(e)) => Err(format!("cannot run `{program}`: {e}")),
        Ok(Ok(out)) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Ok(Ok(out)) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let err = err.trim();
            Err(format!(
                "`{program} {}` failed ({}){}",
                args.join(" "),
                out.status,
                if err.is_empty() {
                    String::new()
                } else {
                    format!(": {err}")
                }
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_open_findings() {
        let mut fixed = Finding::new("units", Severity::Warning, "failed unit");
        fixed.fixed = Some("reset".into());
        let r = Report::new(vec![
            Finding::ok("session", "fine"),
            Finding::new("linger", Severity::Warning, "off"),
            fixed,
        ]);
        assert!(r.ok);
        assert_eq!((r.errors, r.warnings), (0, 1));
        let r = Report::new(vec![Finding::new("database", Severity::Error, "corrupt")]);
        assert!(!r.ok);
        assert!(r.findings[0].open());
    }
}
