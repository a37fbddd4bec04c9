//! The host side: the runner binary, /dev/kvm, QEMU, journald.

use crate::access::Access;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::store::DefinedVm;
use super::{command_output, Finding, Severity};
use crate::config::DEFAULT_BINARY;
use crate::programs::is_executable;

pub fn runner(runner: &Result<PathBuf, String>) -> Finding {
    match runner {
        Ok(p) if is_executable(p) => Finding::ok("runner", format!("runner binary {}", p.display())),
        Ok(p) => Finding::new(
            "runner",
            Severity::Error,
            format!("the runner {} is not an executable file", p.display()),
        )
        .hint("reinstall maqet (maqet and maqet-runner belong in the same directory), or set MAQET_RUNNER"),
        Err(e) => Finding::new("runner", Severity::Error, e.clone())
            .hint("reinstall maqet (maqet and maqet-runner belong in the same directory), or set MAQET_RUNNER"),
    }
}

fn can_read_write(p: &Path) -> bool {
    crate::access::allowed(p, Access::READ_OK | Access::WRITE_OK)
}

/// /dev/kvm: without it VMs run under TCG emulation; `enable_kvm` VMs need it.
pub fn kvm(vms: &[DefinedVm]) -> Finding {
    let kvm = Path::new("/dev/kvm");
    let needing: Vec<&str> = vms
        .iter()
        .filter(|v| v.config.as_ref().is_ok_and(|c| c.enable_kvm))
        .map(|v| v.name.as_str())
        .collect();
    // An `enable_kvm` VM cannot start without KVM; others just run slower.
    let severity = if needing.is_empty() {
        Severity::Warning
    } else {
        Severity::Error
    };
    let who = if needing.is_empty() {
        String::new()
    } else {
        format!("; needed by enable_kvm VMs: {}", needing.join(", "))
    };
    if !kvm.exists() {
        Finding::new(
            "kvm",
            severity,
            format!("/dev/kvm does not exist: VMs can only run under TCG emulation (slow){who}"),
        )
        .hint("enable virtualization in the firmware and load the module: modprobe kvm_intel (or kvm_amd)")
    } else if !can_read_write(kvm) {
        Finding::new(
            "kvm",
            severity,
            format!("no read/write access to /dev/kvm{who}"),
        )
        .hint("add yourself to its group: sudo usermod -aG kvm $USER, then log in again (the user manager too: loginctl terminate-user $USER)")
    } else {
        Finding::ok("kvm", "/dev/kvm is usable")
    }
}

/// `QEMU emulator version 7.2.19 (Debian …)` → `7.2.19 (Debian …)`.
fn version_of(output: &str) -> String {
    let first = output.lines().next().unwrap_or("").trim();
    first
        .split_once(" version ")
        .map_or(first, |(_, v)| v)
        .to_string()
}

/// The QEMU binaries the defined VMs use (or the default one when none is
/// defined), and qemu-img.
pub async fn qemu(vms: &[DefinedVm]) -> Vec<Finding> {
    let mut users: BTreeMap<PathBuf, Vec<&str>> = BTreeMap::new();
    for vm in vms {
        if let Ok(c) = &vm.config {
            users.entry(c.binary.clone()).or_default().push(&vm.name);
        }
    }
    let mut out = Vec::new();
    if users.is_empty() {
        users.insert(PathBuf::from(DEFAULT_BINARY), Vec::new());
    }
    for (bin, names) in &users {
        let used_by = if names.is_empty() {
            "the default binary".to_string()
        } else {
            format!("used by {}", names.join(", "))
        };
        let bin_s = bin.display().to_string();
        out.push(match command_output(&bin_s, &["--version"]).await {
            Ok(v) => Finding::ok("qemu", format!("{bin_s}: QEMU {} ({used_by})", version_of(&v))),
            Err(e) => Finding::new(
                "qemu",
                // The default binary matters only once a VM uses it.
                if names.is_empty() { Severity::Warning } else { Severity::Error },
                format!("{bin_s} ({used_by}) does not run: {e}"),
            )
            .hint("install QEMU (Debian/Ubuntu: apt install qemu-system-x86; Fedora: dnf install qemu-kvm) or set `binary:` in the VM config"),
        });
    }
    out.push(match command_output("qemu-img", &["--version"]).await {
        Ok(v) => Finding::ok("qemu", format!("qemu-img {}", version_of(&v))),
        Err(e) => Finding::new(
            "qemu",
            Severity::Warning,
            format!("qemu-img is not usable ({e}): maqet cannot create disk images or snapshots"),
        )
        .hint("install qemu-utils (Debian/Ubuntu) or qemu-img (Fedora)"),
    });
    out
}

/// This user's journal file, if journald keeps one.
fn user_journal_file() -> Option<PathBuf> {
    let uid = rustix::process::getuid().as_raw();
    let name = format!("user-{uid}.journal");
    for root in ["/var/log/journal", "/run/log/journal"] {
        let Ok(dirs) = std::fs::read_dir(root) else {
            continue;
        };
        for d in dirs.flatten() {
            let p = d.path().join(&name);
            if p.exists() {
                return Some(p);
            }
        }
    }
    None
}

/// `maqet logs` and start-failure messages read the user journal.
pub async fn journal() -> Finding {
    let file = user_journal_file();
    let persistent = Path::new("/var/log/journal").is_dir();
    match command_output(
        "journalctl",
        &["--user", "-n", "1", "-q", "--no-pager", "-o", "cat"],
    )
    .await
    {
        Ok(out) => journal_finding(!out.trim().is_empty(), file.as_deref(), persistent),
        Err(e) => Finding::new(
            "journal",
            Severity::Warning,
            format!("cannot read the user journal: {e}"),
        )
        .hint(JOURNAL_HINT),
    }
}

const JOURNAL_HINT: &str =
    "journald keeps per-user journals only with persistent storage: as root, \
     `mkdir -p /var/log/journal && journalctl --flush` (Storage=auto or persistent in \
     journald.conf); or add yourself to group systemd-journal to read the system journal";

/// What an empty `journalctl --user` means. With persistent storage an
/// account nothing has logged for yet (a fresh one) has no user journal
/// file and no entries: journald makes the file with the first entry, the
/// first `maqet start` writes it — nothing to fix. Without persistent
/// storage the entries never come.
fn journal_finding(entries: bool, file: Option<&Path>, persistent: bool) -> Finding {
    match (entries, file, persistent) {
        (true, Some(p), _) => Finding::ok(
            "journal",
            format!("journalctl --user works (user journal {})", p.display()),
        ),
        (true, None, _) => Finding::ok("journal", "journalctl --user works"),
        (false, None, true) => Finding::new(
            "journal",
            Severity::Info,
            "journalctl --user has no entries yet: nothing has logged for this account (journald makes its user journal with the first entry; the first `maqet start` writes one)",
        )
        .hint("if it stays empty after a VM ran, see `maqet doctor`'s journal check in docs/troubleshooting.md"),
        (false, file, _) => Finding::new(
            "journal",
            Severity::Warning,
            format!(
                "journalctl --user shows no entries{}: `maqet logs` and start-failure messages will be empty",
                if file.is_none() { " and no user journal file exists" } else { "" }
            ),
        )
        .hint(JOURNAL_HINT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_account_without_entries_is_not_a_journal_problem() {
        let fresh = journal_finding(false, None, true);
        assert_eq!(fresh.severity, Severity::Info, "{fresh:?}");
        assert!(fresh
            .message
            .contains("nothing has logged for this account"));
        assert!(!fresh.open());
        // Without persistent storage, or with a file but no entries: broken.
        for f in [
            journal_finding(false, None, false),
            journal_finding(
                false,
                Some(Path::new("/var/log/journal/x/user-1.journal")),
                true,
            ),
        ] {
            assert_eq!(f.severity, Severity::Warning, "{f:?}");
            assert!(f
                .hint
                .as_deref()
                .unwrap()
                .contains("mkdir -p /var/log/journal"));
        }
        assert_eq!(journal_finding(true, None, true).severity, Severity::Ok);
    }

    #[test]
    fn versions() {
        assert_eq!(
            version_of("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u16)\nCopyright"),
            "7.2.19 (Debian 1:7.2+dfsg-7+deb12u16)"
        );
        assert_eq!(version_of("qemu-img version 8.0.0\n"), "8.0.0");
        assert_eq!(version_of("odd"), "odd");
    }
}
