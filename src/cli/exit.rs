//! Exit codes and the CLI's error type. Library errors are mapped here,
//! once, to a message and a documented code.

use crate::config::ConfigError;
use crate::files::NewFileError;
use crate::guest_agent::AgentError;
use crate::image::ImageError;
use crate::ipc::IpcError;
use crate::paths::PathError;
use crate::state::{LockError, StateError};
use crate::storage::StorageError;
use crate::systemd::SystemdError;
use crate::vm::class::{self, ErrorClass};
use crate::vm::clone::CloneError;
use crate::vm::control::DeviceError;
use crate::vm::provision::ProvisionError;
use crate::vm::provision::UndoNote;
use crate::vm::{ControlError, OwnerError, VmError};
use crate::vmname::InvalidName;

/// Documented in `maqet --help` and docs/cli.md.
pub mod code {
    pub const OK: i32 = 0;
    /// The operation failed (a VM failed to start, an I/O error, …).
    pub const FAILURE: i32 = 1;
    /// Bad command-line usage (clap uses 2 as well).
    pub const USAGE: i32 = 2;
    /// Also for a drive, snapshot, image or port forward that does not exist.
    pub const NO_SUCH_VM: i32 = 3;
    pub const INVALID_CONFIG: i32 = 4;
    /// Exists already, already running, running when it must not be, a
    /// change refused while the VM has a saved state, or the unit belongs
    /// to another data directory's VM of that name.
    pub const CONFLICT: i32 = 5;
    /// QEMU answered a QMP command with an error.
    pub const QMP_ERROR: i32 = 6;
    /// Also when the state database stayed locked by another process (retryable).
    pub const TIMEOUT: i32 = 7;
    /// No user session: systemd --user or the session bus is unreachable.
    pub const NO_SESSION: i32 = 8;

    /// The exit code of a class of failure (the vm layer classifies).
    pub fn of(class: super::ErrorClass) -> i32 {
        use super::ErrorClass as C;
        match class {
            C::Failure => FAILURE,
            C::Usage => USAGE,
            C::NotFound => NO_SUCH_VM,
            C::InvalidConfig => INVALID_CONFIG,
            C::Conflict => CONFLICT,
            C::Qmp => QMP_ERROR,
            C::Timeout => TIMEOUT,
            C::NoSession => NO_SESSION,
        }
    }
}

/// How severe an exit code is, for a command over several VMs whose exit
/// code is its worst VM's: success < conflict (already running, not
/// running) < no such VM < usage < invalid configuration < QMP error <
/// timeout < failure < no user session. An unknown code counts as failure.
pub fn severity(c: i32) -> u8 {
    match c {
        code::OK => 0,
        code::CONFLICT => 1,
        code::NO_SUCH_VM => 2,
        code::USAGE => 3,
        code::INVALID_CONFIG => 4,
        code::QMP_ERROR => 5,
        code::TIMEOUT => 6,
        code::NO_SESSION => 8,
        _ => 7,
    }
}

/// The most severe of `codes` ([`severity`]); `OK` for none.
pub fn worst(codes: impl IntoIterator<Item = i32>) -> i32 {
    codes
        .into_iter()
        .max_by_key(|c| severity(*c))
        .unwrap_or(code::OK)
}

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  failure (e.g. the VM failed to start)
  2  usage error
  3  no such VM (or no such drive, snapshot, image or port forward)
  4  invalid configuration
  5  conflict (exists, already running, running when it must not be, saved when it must not be, or runs from another data directory)
  6  QMP error reported by QEMU
  7  timeout (also: the state database stayed locked by another process)
  8  no user session (systemd --user or the session bus unreachable)";

#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

impl CliError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
    }
    pub fn failure(message: impl Into<String>) -> Self {
        Self::new(code::FAILURE, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(code::CONFLICT, message)
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(code::USAGE, message)
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::new(code::INVALID_CONFIG, e.to_string())
    }
}

impl From<InvalidName> for CliError {
    fn from(e: InvalidName) -> Self {
        CliError::new(code::USAGE, e.to_string())
    }
}

impl From<PathError> for CliError {
    fn from(e: PathError) -> Self {
        CliError::new(code::of(class::path(&e)), e.to_string())
    }
}

impl From<StateError> for CliError {
    fn from(e: StateError) -> Self {
        CliError::new(code::of(class::state(&e)), e.to_string())
    }
}

impl From<LockError> for CliError {
    fn from(e: LockError) -> Self {
        CliError::new(code::of(class::lock(&e)), e.to_string())
    }
}

impl From<SystemdError> for CliError {
    fn from(e: SystemdError) -> Self {
        CliError::new(code::of(class::systemd(&e)), e.to_string())
    }
}

impl From<IpcError> for CliError {
    fn from(e: IpcError) -> Self {
        CliError::new(code::of(class::ipc(&e)), e.to_string())
    }
}

impl From<OwnerError> for CliError {
    fn from(e: OwnerError) -> Self {
        CliError::new(code::of(class::owner(&e)), e.to_string())
    }
}

impl From<VmError> for CliError {
    fn from(e: VmError) -> Self {
        CliError::new(code::of(e.class()), vm_message(&e))
    }
}

/// A vm-layer error as `maqet` says it: the library's fact, and where a
/// `maqet` command or flag is the way on, that command.
pub fn vm_message(e: &VmError) -> String {
    match e {
        VmError::NoSuchVm { .. } => {
            format!("{e} (see `maqet ls`, or define it with `maqet add`)")
        }
        VmError::AlreadyRunning { vm } => format!("{e} (see `maqet status {vm}`)"),
        VmError::Incomplete { vm, .. } => format!(
            "{e}. `maqet rm --delete-storage {vm}` removes it (so does the next `maqet clone` to this name)"
        ),
        VmError::StartFailed {
            vm,
            unit,
            reason,
            log,
        } => format!(
            "VM '{vm}' failed to start: {reason}{}\n(full log: maqet logs {vm}; unit: systemctl --user status {unit})",
            log.iter().map(|l| format!("\n  {l}")).collect::<String>()
        ),
        VmError::StartTimeout { vm, .. } => format!("{e} (see `maqet logs {vm}`)"),
        VmError::Undone { error, undo } => format!("{}{}", vm_message(error), undo_lines(undo)),
        VmError::StoredConfig { .. } => format!("{e} (fix it with `maqet apply`)"),
        VmError::Unnamed { file } => format!(
            "{}: the VM has no name: add a `name:` key or pass --name NAME",
            file.display()
        ),
        VmError::Exists { vm, from_files } => format!(
            "{e}; remove it with `maqet rm {vm}` or choose another name{}",
            if *from_files { " with --name" } else { "" }
        ),
        VmError::RunningNoApply { vm } => format!(
            "VM '{vm}' is running; stop it first with `maqet stop {vm}`, then apply (a running VM keeps the config it was started with)"
        ),
        VmError::RunningNeedsForce { vm } => format!(
            "VM '{vm}' is running; stop it first (`maqet stop {vm}`) or use `maqet rm --force {vm}`"
        ),
        VmError::NotADisk { .. } => format!("--delete-file {e}"),
        VmError::DeletedUnrecorded { vm, deleted, error } => format!(
            "deleted {}, but the database could not record it ({error}); the definition of '{vm}' stays: run `maqet rm --delete-storage {vm}` again to finish (it finds those files gone)",
            crate::vm::error::list_or_none(deleted)
        ),
        VmError::NotRemoved { vm, failures } => format!(
            "VM '{vm}' was not removed:{}",
            failures
                .iter()
                .map(|f| format!("\n  {f}"))
                .collect::<String>()
        ),
        VmError::ImageRef {
            at,
            reference,
            source,
        } => format!("{at}: image:{reference}: {}", vm_message(source)),
        VmError::Control(c) => control_message(c),
        VmError::Clone(CloneError::NotUndone { error, undo }) => format!(
            "{}; removing what the clone had made failed as well: {}",
            vm_message(error),
            vm_message(undo)
        ),
        _ => e.to_string(),
    }
}

/// What undoing a failed start did, one parenthesised line per fact under
/// the error.
fn undo_lines(undo: &UndoNote) -> String {
    let list = |ps: &mut dyn Iterator<Item = &std::path::PathBuf>| {
        ps.map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    match undo {
        UndoNote::Nothing => {}
        UndoNote::KeptAll { paths, why } => out.push_str(&format!(
            "\n(kept what this start created: {}; {})",
            list(&mut paths.iter()),
            vm_message(why)
        )),
        UndoNote::Done(u) => {
            if !u.removed.is_empty() {
                out.push_str(&format!(
                    "\n(removed what this start created: {})",
                    list(&mut u.removed.iter())
                ));
            }
            for (p, why) in &u.kept {
                out.push_str(&format!(
                    "\n(kept {}, which this start created: {why}; it is no longer recorded as created by maqet)",
                    p.display()
                ));
            }
            for p in &u.problems {
                out.push_str(&format!("\n  {p}"));
            }
        }
    }
    out
}

impl From<ControlError> for CliError {
    fn from(e: ControlError) -> Self {
        CliError::new(code::of(class::control(&e)), control_message(&e))
    }
}

fn control_message(e: &ControlError) -> String {
    match e {
        // QEMU's class and words, marked as QEMU's.
        ControlError::Qmp { .. } => format!("QMP error: {e}"),
        ControlError::Paused { vm } => format!("{e} (`maqet qmp resume {vm}`)"),
        ControlError::CannotReboot { vm, .. } => format!("{e}, or use `maqet reset {vm}`"),
        ControlError::RebootTimeout { vm, .. } => {
            format!("{e}; `maqet reset {vm}` resets it at once")
        }
        ControlError::Device(DeviceError::Reserved { key }) => format!(
            "'{key}' is not a property here: give the driver as DRIVER and the id with --id"
        ),
        ControlError::NoQmpSocket { vm } => {
            format!("{e}; restart the VM with `maqet restart {vm}` to get it")
        }
        ControlError::File(NewFileError::Exists(path)) => format!(
            "{} exists; give --force to replace it (only a regular file is replaced)",
            path.display()
        ),
        ControlError::NoDisplayServer { vm } => format!(
            "VM '{vm}' has no display server: set `display: vnc` or `display: spice` in its config (maqet apply), then restart it; `maqet qmp screendump {vm} FILE` works with any display"
        ),
        _ => e.to_string(),
    }
}

impl From<ProvisionError> for CliError {
    fn from(e: ProvisionError) -> Self {
        CliError::new(code::of(class::provision(&e)), e.to_string())
    }
}

impl From<ImageError> for CliError {
    fn from(e: ImageError) -> Self {
        CliError::new(code::of(class::image(&e)), e.to_string())
    }
}

impl From<AgentError> for CliError {
    fn from(e: AgentError) -> Self {
        CliError::new(code::of(class::agent(&e)), e.to_string())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::failure(e.to_string())
    }
}

impl From<StorageError> for CliError {
    fn from(e: StorageError) -> Self {
        CliError::new(code::of(class::storage(&e)), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::access::AccessError;
    use crate::vm::agent::GuestError;

    #[test]
    fn the_worst_code_is_the_most_severe_not_the_highest() {
        assert_eq!(worst([]), code::OK);
        assert_eq!(worst([code::OK, code::CONFLICT]), code::CONFLICT);
        assert_eq!(worst([code::CONFLICT, code::NO_SUCH_VM]), code::NO_SUCH_VM);
        assert_eq!(
            worst([code::TIMEOUT, code::FAILURE, code::OK]),
            code::FAILURE
        );
        assert_eq!(worst([code::FAILURE, code::NO_SESSION]), code::NO_SESSION);
    }

    #[test]
    fn ownership_refusals_are_conflicts_and_a_missing_socket_a_failure() {
        let other = CliError::from(OwnerError::OtherDataDir {
            vm: "twin".into(),
            unit: "maqet-vm@twin.service".into(),
            other: "/srv/a".into(),
            ours: "/srv/b".into(),
        });
        assert_eq!(other.code, code::CONFLICT);
        assert!(other.message.contains("/srv/a") && other.message.contains("/srv/b"));
        let missing = CliError::from(OwnerError::SocketMissing {
            vm: "web".into(),
            unit: "maqet-vm@web.service".into(),
            pid: 42,
            socket: "/run/user/1/maqet/vm/web.sock".into(),
        });
        assert_eq!(missing.code, code::FAILURE);
        assert!(
            missing.message.contains("is running") && !missing.message.contains("not running"),
            "{}",
            missing.message
        );
        let not = CliError::from(OwnerError::NotRunning { vm: "web".into() });
        assert_eq!(not.code, code::CONFLICT);
    }

    #[test]
    fn ssh_ports_and_guest_on_a_stopped_vm_are_conflicts_with_a_hint() {
        let vm = crate::vmname::VmName::new("web").unwrap();
        for e in [
            VmError::Access(AccessError::NotRunning { vm: vm.clone() }),
            VmError::Guest(GuestError::NotRunning { vm: vm.clone() }),
        ] {
            let c = CliError::from(e);
            assert_eq!(c.code, code::CONFLICT, "{}", c.message);
            assert!(c.message.contains("`maqet start web`"), "{}", c.message);
        }
    }

    #[test]
    fn an_undo_of_nothing_adds_nothing_to_the_cli_message() {
        use crate::vm::provision::UndoNote;
        let vm = crate::vmname::VmName::new("web").unwrap();
        let e = VmError::Undone {
            error: Box::new(VmError::AlreadyRunning { vm }),
            undo: UndoNote::Nothing,
        };
        let cli = CliError::from(e);
        assert_eq!(cli.code, code::CONFLICT);
        assert_eq!(
            cli.message,
            "VM 'web' is already running (see `maqet status web`)"
        );
    }

    /// The library states facts; `maqet` commands and flags in a message
    /// are the CLI's, added here, with the wording users saw before.
    #[test]
    fn vm_errors_are_facts_and_the_cli_adds_the_way_on() {
        use crate::storage::Undone;
        use crate::vm::provision::UndoNote;
        use crate::vm::RemoveFailure;
        let vm = crate::vmname::VmName::new("web").unwrap();
        let cases: Vec<(VmError, &str)> = vec![
            (
                VmError::NoSuchVm {
                    name: "web".into(),
                    data_dir: "/d".into(),
                },
                "no VM named 'web' in /d (see `maqet ls`, or define it with `maqet add`)",
            ),
            (
                VmError::AlreadyRunning { vm: vm.clone() },
                "VM 'web' is already running (see `maqet status web`)",
            ),
            (
                VmError::Incomplete {
                    vm: vm.clone(),
                    what: "a clone".into(),
                },
                "VM 'web' is incomplete: a clone; maqet does not use it. `maqet rm --delete-storage web` removes it (so does the next `maqet clone` to this name)",
            ),
            (
                VmError::StartFailed {
                    vm: vm.clone(),
                    unit: "maqet-vm@web.service".into(),
                    reason: "exit-code".into(),
                    log: vec!["qemu: no".into(), "bye".into()],
                },
                "VM 'web' failed to start: exit-code\n  qemu: no\n  bye\n(full log: maqet logs web; unit: systemctl --user status maqet-vm@web.service)",
            ),
            (
                VmError::Unnamed { file: "/f.yaml".into() },
                "/f.yaml: the VM has no name: add a `name:` key or pass --name NAME",
            ),
            (
                VmError::Exists {
                    vm: vm.clone(),
                    from_files: true,
                },
                "a VM named 'web' already exists; remove it with `maqet rm web` or choose another name with --name",
            ),
            (
                VmError::RunningNoApply { vm: vm.clone() },
                "VM 'web' is running; stop it first with `maqet stop web`, then apply (a running VM keeps the config it was started with)",
            ),
            (
                VmError::RunningNeedsForce { vm: vm.clone() },
                "VM 'web' is running; stop it first (`maqet stop web`) or use `maqet rm --force web`",
            ),
            (
                VmError::NotADisk {
                    vm: vm.clone(),
                    path: "/x".into(),
                    disks: vec![],
                },
                "--delete-file /x: not a disk image of VM 'web' (its disks: none); maqet only deletes a VM's own disks",
            ),
            (
                VmError::NotRemoved {
                    vm: vm.clone(),
                    failures: vec![RemoveFailure::InUse {
                        path: "/a".into(),
                        user: "VM 'x' uses it".into(),
                    }],
                },
                "VM 'web' was not removed:\n  not deleting /a: VM 'x' uses it",
            ),
            (
                VmError::Undone {
                    error: Box::new(VmError::AlreadyRunning { vm: vm.clone() }),
                    undo: UndoNote::Done(Undone {
                        removed: vec!["/d/a.qcow2".into()],
                        kept: vec![("/d/b".into(), "VM 'x' uses it".into())],
                        problems: vec!["cannot delete /d/c".into()],
                    }),
                },
                "VM 'web' is already running (see `maqet status web`)\n(removed what this start created: /d/a.qcow2)\n(kept /d/b, which this start created: VM 'x' uses it; it is no longer recorded as created by maqet)\n  cannot delete /d/c",
            ),
        ];
        for (e, said) in cases {
            let fact = e.to_string();
            assert!(
                !fact.contains("`maqet") && !fact.contains("maqet logs") && !fact.contains("--"),
                "the library words a front end's commands: {fact}"
            );
            assert!(!fact.contains('\n'), "one line: {fact}");
            assert_eq!(CliError::from(e).message, said);
        }
    }

    #[test]
    fn qemu_operations_keep_their_words_and_codes() {
        use crate::vm::control::{ControlError, DeviceError};
        let vm = crate::vmname::VmName::new("web").unwrap();
        let cases: Vec<(ControlError, i32, &str)> = vec![
            (
                ControlError::Qmp {
                    command: "device_del".into(),
                    class: Some("GenericError".into()),
                    message: "Device 'rng0' not found".into(),
                },
                code::QMP_ERROR,
                "QMP error: GenericError: Device 'rng0' not found",
            ),
            (
                ControlError::Paused { vm: vm.clone() },
                code::CONFLICT,
                "VM 'web' is paused; resume it first (`maqet qmp resume web`)",
            ),
            (
                ControlError::CannotReboot {
                    vm: vm.clone(),
                    state: "paused".into(),
                },
                code::CONFLICT,
                "VM 'web' is paused, so its guest cannot take a reboot request; resume it first, or use `maqet reset web`",
            ),
            (
                ControlError::RebootTimeout {
                    vm: vm.clone(),
                    waited: std::time::Duration::from_secs(30),
                },
                code::TIMEOUT,
                "the guest of VM 'web' did not reboot within 30s of Ctrl-Alt-Delete (it may ignore it); `maqet reset web` resets it at once",
            ),
            (
                ControlError::NoDisplay { vm: vm.clone() },
                code::QMP_ERROR,
                "VM 'web' has no display to take a screendump from (QEMU: there is no console); give it a display device, e.g. `vga: std`",
            ),
            (
                ControlError::Device(DeviceError::Reserved { key: "id".into() }),
                code::USAGE,
                "'id' is not a property here: give the driver as DRIVER and the id with --id",
            ),
            (
                ControlError::StillAttached {
                    vm: vm.clone(),
                    id: "rng0".into(),
                    waited: std::time::Duration::from_secs(10),
                },
                code::TIMEOUT,
                "device 'rng0' is still in VM 'web' after 10s: the guest has not released it (hot-unplug needs the guest's cooperation, e.g. ACPI PCI hotplug); QEMU removes it once the guest does",
            ),
            (
                ControlError::NoQmpSocket { vm: vm.clone() },
                code::CONFLICT,
                "the runner of VM 'web' serves no QMP socket (its unit was created without one); restart the VM with `maqet restart web` to get it",
            ),
            (
                ControlError::NoDisplayServer { vm: vm.clone() },
                code::FAILURE,
                "VM 'web' has no display server: set `display: vnc` or `display: spice` in its config (maqet apply), then restart it; `maqet qmp screendump web FILE` works with any display",
            ),
            (
                ControlError::File(NewFileError::Exists("/s.png".into())),
                code::CONFLICT,
                "/s.png exists; give --force to replace it (only a regular file is replaced)",
            ),
        ];
        for (e, c, said) in cases {
            assert!(!e.to_string().contains("`maqet"), "{e}");
            let cli = CliError::from(VmError::from(e));
            assert_eq!((cli.code, cli.message.as_str()), (c, said));
        }
    }
}
