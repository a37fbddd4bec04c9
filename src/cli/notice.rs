//! How the CLI words the vm layer's notices (one line each, on stderr as
//! they come): the library says what happened, this says it to a user of
//! `maqet`, with the commands that follow from it.

use crate::vm::Notice;

/// The line shown for `n`.
pub fn line(n: &Notice) -> String {
    match n {
        Notice::Created { path, what } => format!("created {} ({what})", path.display()),
        Notice::Deleted { path, kind } => {
            format!("deleted {} ({kind}, created by maqet)", path.display())
        }
        Notice::DeletedNamed { path } => {
            format!("deleted {} (named with --delete-file)", path.display())
        }
        Notice::AlreadyGone { path } => format!("{} was already gone", path.display()),
        Notice::KeptNotEmpty { path } => {
            format!("kept {} (directory holds other files)", path.display())
        }
        Notice::Kept { path, why } => format!("kept {} ({why})", path.display()),
        Notice::KeptBrought { path } => format!(
            "kept {} (you brought it; `--delete-file {}` deletes it)",
            path.display(),
            path.display()
        ),
        Notice::DeletedTpmState { path } => format!("deleted {} (TPM state)", path.display()),
        Notice::DeletedEmptyDir { path } => {
            format!("deleted {} (empty directory of the VM)", path.display())
        }
        Notice::DeletedLeftover { path } => format!(
            "deleted {} (left half-written by an interrupted maqet command)",
            path.display()
        ),
        Notice::KeptCreated { vm, paths } => {
            let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            format!(
                "kept the files maqet created for '{vm}': {} (`maqet rm --delete-storage` would have deleted them; `maqet storage ls` shows disks no VM uses as unreferenced)",
                list.join(", ")
            )
        }
        Notice::SkippedInvalid { vm, error } => format!(
            "warning: the stored configuration of '{vm}' no longer validates: {error} (fix it with `maqet apply`)"
        ),
        Notice::NoKvm => "warning: /dev/kvm is not usable here, so the VM runs under TCG emulation (slow); `maqet doctor` says why".into(),
        Notice::Autostart { vm, on: true } => format!("{vm} will be started by `maqet autostart`"),
        Notice::Autostart { vm, on: false } => {
            format!("{vm} will no longer be started by `maqet autostart`")
        }
        Notice::Waiting { what, timeout, .. } => format!(
            "started; waiting for {} (up to {}s)",
            what.name(),
            timeout.as_secs()
        ),
        Notice::AutostartUnitDisabled { unit } => format!(
            "note: {unit} is not enabled, so nothing runs `maqet autostart` at login; \
             install units/{unit} and run `systemctl --user enable {unit}`"
        ),
        Notice::Resuming { vm, saved_at, size } => format!(
            "resuming '{vm}' from its saved state (saved {}, {}; `maqet start --fresh {vm}` would boot it afresh)",
            crate::time::rfc3339_utc((*saved_at).max(0) as u64),
            crate::cli::output::human_bytes(*size),
        ),
        Notice::Discarded { vm, path } => format!(
            "discarded the saved state of '{vm}' ({}); it boots afresh",
            path.display()
        ),
        Notice::Warning { message } => format!("warning: {message}"),
    }
}

/// Shows a notice of the vm layer (progress, kept files) on stderr.
pub fn print(n: Notice) {
    eprintln!("{}", line(&n));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmname::VmName;

    /// The notices carry data; the `maqet` commands are this renderer's.
    #[test]
    fn notices_are_worded_with_the_commands_that_follow() {
        let vm = VmName::new("web").unwrap();
        assert_eq!(
            line(&Notice::KeptCreated {
                vm: vm.clone(),
                paths: vec!["/d/a.qcow2".into(), "/d/b".into()],
            }),
            "kept the files maqet created for 'web': /d/a.qcow2, /d/b (`maqet rm --delete-storage` would have deleted them; `maqet storage ls` shows disks no VM uses as unreferenced)"
        );
        assert_eq!(
            line(&Notice::KeptBrought { path: "/x".into() }),
            "kept /x (you brought it; `--delete-file /x` deletes it)"
        );
        assert_eq!(
            line(&Notice::SkippedInvalid {
                vm: "old".into(),
                error: "memory: not a size".into(),
            }),
            "warning: the stored configuration of 'old' no longer validates: memory: not a size (fix it with `maqet apply`)"
        );
        assert_eq!(
            line(&Notice::Autostart { vm, on: true }),
            "web will be started by `maqet autostart`"
        );
        assert_eq!(
            line(&Notice::AutostartUnitDisabled {
                unit: "maqet-autostart.service".into()
            }),
            "note: maqet-autostart.service is not enabled, so nothing runs `maqet autostart` at login; install units/maqet-autostart.service and run `systemctl --user enable maqet-autostart.service`"
        );
    }
}
