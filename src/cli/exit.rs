//! Exit codes and the CLI's error type. Library errors are mapped here,
//! once, to a message and a documented code.

use crate::cloudinit::CloudInitError;
use crate::config::ConfigError;
use crate::guest_agent::AgentError;
use crate::image::ImageError;
use crate::ipc::{ErrorKind, IpcError};
use crate::paths::PathError;
use crate::ports::PortError;
use crate::provision::ProvisionError;
use crate::state::{LockError, StateError};
use crate::storage::StorageError;
use crate::systemd::SystemdError;
use crate::vm::access::AccessError;
use crate::vm::agent::GuestError;
use crate::vm::clone::CloneError;
use crate::vm::nvram::NvramError;
use crate::vm::wait::WaitError;
use crate::vm::{AttachError, OwnerError, SavedError, VmError};
use crate::vmname::InvalidName;

/// Documented in `maqet --help` and docs/cli.md.
pub mod code {
    pub const OK: i32 = 0;
    /// The operation failed (a VM failed to start, an I/O error, …).
    pub const FAILURE: i32 = 1;
    /// Bad command-line usage (clap uses 2 as well).
    pub const USAGE: i32 = 2;
    /// Also for a drive, snapshot or image that does not exist.
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
  3  no such VM (or no such drive, snapshot or image)
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
        CliError::new(path_code(&e), e.to_string())
    }
}

fn path_code(e: &PathError) -> i32 {
    match e {
        PathError::NoRuntimeDir => code::NO_SESSION,
        _ => code::USAGE,
    }
}

impl From<StateError> for CliError {
    fn from(e: StateError) -> Self {
        let c = match &e {
            StateError::NotFound(_) => code::NO_SUCH_VM,
            StateError::Exists(_) => code::CONFLICT,
            StateError::Busy { .. } => code::TIMEOUT,
            // No space, read-only, I/O error, corrupt: the previous state is intact.
            _ => code::FAILURE,
        };
        CliError::new(c, e.to_string())
    }
}

impl From<LockError> for CliError {
    fn from(e: LockError) -> Self {
        let c = match &e {
            LockError::Busy { .. } => code::CONFLICT,
            LockError::Io { .. } => code::FAILURE,
        };
        CliError::new(c, e.to_string())
    }
}

impl From<SystemdError> for CliError {
    fn from(e: SystemdError) -> Self {
        let c = match &e {
            SystemdError::NoSession { .. } => code::NO_SESSION,
            SystemdError::AlreadyRunning { .. } => code::CONFLICT,
            SystemdError::Timeout { .. } => code::TIMEOUT,
            _ => code::FAILURE,
        };
        CliError::new(c, e.to_string())
    }
}

impl From<IpcError> for CliError {
    fn from(e: IpcError) -> Self {
        let c = match &e {
            IpcError::NotRunning { .. } => code::CONFLICT,
            IpcError::Timeout(_) => code::TIMEOUT,
            IpcError::Remote(b) => match b.kind {
                ErrorKind::Qmp => code::QMP_ERROR,
                ErrorKind::Timeout => code::TIMEOUT,
                ErrorKind::BadRequest | ErrorKind::Policy => code::USAGE,
                _ => code::FAILURE,
            },
            _ => code::FAILURE,
        };
        CliError::new(c, e.to_string())
    }
}

impl From<OwnerError> for CliError {
    fn from(e: OwnerError) -> Self {
        match e {
            OwnerError::Systemd(e) => e.into(),
            OwnerError::Ipc(e) => e.into(),
            OwnerError::Path(e) => e.into(),
            e @ (OwnerError::OtherDataDir { .. }
            | OwnerError::NotRunning { .. }
            | OwnerError::Stopping { .. }) => CliError::conflict(e.to_string()),
            e @ OwnerError::SocketMissing { .. } => CliError::failure(e.to_string()),
        }
    }
}

impl From<VmError> for CliError {
    fn from(e: VmError) -> Self {
        let message = e.to_string();
        let c = match e {
            VmError::Undone { error, .. } => CliError::from(*error).code,
            VmError::NoSuchVm { .. } => code::NO_SUCH_VM,
            VmError::AlreadyRunning { .. }
            | VmError::Incomplete { .. }
            | VmError::RunningNeedsForce { .. }
            | VmError::Exists { .. }
            | VmError::RunningNoApply { .. } => code::CONFLICT,
            VmError::Unnamed { .. } | VmError::Invalid(_) => code::INVALID_CONFIG,
            VmError::StartTimeout { .. } => code::TIMEOUT,
            VmError::StoredConfig { .. } => code::INVALID_CONFIG,
            VmError::NotADisk { .. } => code::USAGE,
            VmError::StartFailed { .. }
            | VmError::NoRunner { .. }
            | VmError::UsageUnknown(_)
            | VmError::DeletedUnrecorded { .. }
            | VmError::NotRemoved { .. } => code::FAILURE,
            VmError::Attach(e) => attach_code(&e),
            // Both are the VM's state not fitting the request.
            VmError::Snapshot(_) => code::CONFLICT,
            VmError::Saved(e) => match e {
                SavedError::SaveFailed { .. } => code::FAILURE,
                SavedError::Refused { .. }
                | SavedError::AlreadySaved { .. }
                | SavedError::Running { .. }
                | SavedError::OldRunner { .. } => code::CONFLICT,
            },
            VmError::Clone(e) => match e {
                CloneError::Io { .. }
                | CloneError::LeftoverStays { .. }
                | CloneError::NotUndone { .. } => code::FAILURE,
                CloneError::Exists(_)
                | CloneError::SharedFile { .. }
                | CloneError::SharedArgument { .. }
                | CloneError::NoBase { .. }
                | CloneError::SourceIncomplete { .. }
                | CloneError::Running { .. } => code::CONFLICT,
            },
            // Not running is a conflict (exit 5) with a hint, as for every
            // other command that needs a running VM.
            VmError::Access(e) => match e {
                AccessError::NoSshServer { .. } => code::TIMEOUT,
                AccessError::BadUser { .. } => code::USAGE,
                AccessError::NotRunning { .. } => code::CONFLICT,
                AccessError::NoPorts { .. }
                | AccessError::NoSshPort { .. }
                | AccessError::KnownHostsDir { .. } => code::FAILURE,
            },
            VmError::Guest(GuestError::NotRunning { .. }) => code::CONFLICT,
            VmError::Nvram(NvramError::Running { .. }) => code::CONFLICT,
            VmError::Nvram(NvramError::NotUefi { .. }) => code::USAGE,
            VmError::Guest(GuestError::NoChannel { .. }) => code::FAILURE,
            VmError::Image(e) => CliError::from(e).code,
            VmError::Wait(e) => match e {
                WaitError::Timeout { .. } => code::TIMEOUT,
                WaitError::NotRunning { .. } => code::CONFLICT,
                WaitError::NoChannel { .. } => code::USAGE,
                WaitError::CloudInitFailed { .. } => code::FAILURE,
            },
            VmError::ImageRef { source, .. } => CliError::from(*source).code,
            VmError::Agent(e) => CliError::from(e).code,
            VmError::Config(e) => CliError::from(e).code,
            VmError::Name(e) => CliError::from(e).code,
            VmError::Path(e) => CliError::from(e).code,
            VmError::State(e) => CliError::from(e).code,
            VmError::Lock(e) => CliError::from(e).code,
            VmError::Storage(e) => CliError::from(e).code,
            VmError::Systemd(e) => CliError::from(e).code,
            VmError::Ipc(e) => CliError::from(e).code,
            VmError::Owner(e) => CliError::from(e).code,
            VmError::Provision(e) => CliError::from(e).code,
            VmError::Io(e) => CliError::from(e).code,
        };
        CliError::new(c, message)
    }
}

fn attach_code(e: &AttachError) -> i32 {
    match e {
        AttachError::NoSuchFile { .. } => code::USAGE,
        AttachError::UnsupportedFormat { .. } | AttachError::Contradiction { .. } => code::USAGE,
        AttachError::DuplicateName { .. }
        | AttachError::DuplicatePath { .. }
        | AttachError::InUse { .. }
        | AttachError::RunningNeedsLive { .. }
        | AttachError::NotRunning { .. } => code::CONFLICT,
        AttachError::NotRecorded { .. } => code::FAILURE,
    }
}

impl From<ProvisionError> for CliError {
    fn from(e: ProvisionError) -> Self {
        let e = match e {
            ProvisionError::State(s) => return CliError::from(s),
            e => e,
        };
        let c = match &e {
            ProvisionError::Ports(PortError::Taken { .. }) => code::CONFLICT,
            ProvisionError::Ports(PortError::Privileged { .. }) => code::INVALID_CONFIG,
            // The config names keys that are not there (at add, apply or start).
            ProvisionError::CloudInit(
                CloudInitError::NoKeys { .. }
                | CloudInitError::NotAKey { .. }
                | CloudInitError::Read { .. },
            ) => code::INVALID_CONFIG,
            ProvisionError::Path(p) => path_code(p),
            _ => code::FAILURE,
        };
        CliError::new(c, e.to_string())
    }
}

impl From<ImageError> for CliError {
    fn from(e: ImageError) -> Self {
        let c = match e.root() {
            ImageError::Catalog(_) => code::INVALID_CONFIG,
            ImageError::BadName(_) | ImageError::NoCacheDir | ImageError::LaunchArch(_) => {
                code::USAGE
            }
            ImageError::NotInCatalog { .. }
            | ImageError::NoArch { .. }
            | ImageError::NotCached(_) => code::NO_SUCH_VM,
            ImageError::InUse { .. } => code::CONFLICT,
            _ => code::FAILURE,
        };
        CliError::new(c, e.to_string())
    }
}

impl From<AgentError> for CliError {
    fn from(e: AgentError) -> Self {
        let c = match &e {
            AgentError::Timeout(_) => code::TIMEOUT,
            AgentError::Path(p) => path_code(p),
            _ => code::FAILURE,
        };
        CliError::new(c, e.to_string())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::failure(e.to_string())
    }
}

impl From<StorageError> for CliError {
    fn from(e: StorageError) -> Self {
        let c = match &e {
            StorageError::DriveNotFound { .. } | StorageError::SnapshotNotFound { .. } => {
                code::NO_SUCH_VM
            }
            StorageError::NotSnapshottable { .. }
            | StorageError::InvalidName { .. }
            | StorageError::AmbiguousTag { .. }
            | StorageError::LiveUnsupported { .. }
            | StorageError::NotHotpluggable { .. }
            | StorageError::NoVmState { .. } => code::USAGE,
            StorageError::SnapshotExists { .. }
            | StorageError::NotAttached { .. }
            | StorageError::Locked { .. } => code::CONFLICT,
            StorageError::Qmp { .. } | StorageError::Job { .. } => code::QMP_ERROR,
            StorageError::QmpTimeout { .. } | StorageError::QemuImgTimeout { .. } => code::TIMEOUT,
            StorageError::State(StateError::NotFound(_)) => code::NO_SUCH_VM,
            StorageError::State(StateError::Busy { .. }) => code::TIMEOUT,
            _ => code::FAILURE,
        };
        CliError::new(c, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
