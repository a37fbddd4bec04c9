//! What kind of failure an error is, for every front end to act on the
//! same way: the CLI turns a class into its exit code (`cli/exit.rs`), a
//! remote front end sends it with the message. One home for the judgement
//! "already running is a conflict, a locked database is a timeout" — kept
//! out of the CLI so the library's tests can state it too.

use maqet_base::files::NewFileError;
use maqet_base::paths::PathError;
use maqet_host::cloudinit::CloudInitError;
use maqet_host::guest_agent::AgentError;
use maqet_host::image::ImageError;
use maqet_host::ipc::{ErrorKind, IpcError};
use maqet_host::ports::PortError;
use maqet_host::state::{LockError, StateError};
use maqet_host::storage::StorageError;
use maqet_host::systemd::SystemdError;

use super::access::AccessError;
use super::agent::GuestError;
use super::clone::CloneError;
use super::nvram::NvramError;
use super::ports::PortsError;
use super::provision::ProvisionError;
use super::wait::WaitError;
use super::{AttachError, ControlError, OwnerError, SavedError, SegmentError, VmError};

/// The kinds of failure, each one exit code of `maqet` (docs/cli.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// The operation failed (a VM failed to start, an I/O error, …).
    Failure,
    /// A request that cannot be right as given (a bad name, flag or path).
    Usage,
    /// No such VM — or drive, snapshot, image or port forward.
    NotFound,
    InvalidConfig,
    /// Exists already, already running, running when it must not be, a
    /// change refused while the VM has a saved state, or the unit belongs
    /// to another data directory's VM of that name.
    Conflict,
    /// QEMU answered a QMP command with an error.
    Qmp,
    /// Also when the state database stayed locked by another process.
    Timeout,
    /// No user session: systemd --user or the session bus is unreachable.
    NoSession,
}

impl VmError {
    /// What kind of failure this is.
    pub fn class(&self) -> ErrorClass {
        vm(self)
    }
}

pub fn path(e: &PathError) -> ErrorClass {
    match e {
        PathError::NoRuntimeDir => ErrorClass::NoSession,
        _ => ErrorClass::Usage,
    }
}

pub fn state(e: &StateError) -> ErrorClass {
    match e {
        StateError::NotFound(_) => ErrorClass::NotFound,
        StateError::Exists(_) => ErrorClass::Conflict,
        StateError::Busy { .. } => ErrorClass::Timeout,
        // No space, read-only, I/O error, corrupt: the previous state is intact.
        _ => ErrorClass::Failure,
    }
}

pub fn lock(e: &LockError) -> ErrorClass {
    match e {
        LockError::Busy { .. } => ErrorClass::Conflict,
        LockError::Io { .. } => ErrorClass::Failure,
    }
}

pub fn systemd(e: &SystemdError) -> ErrorClass {
    match e {
        SystemdError::NoSession { .. } => ErrorClass::NoSession,
        SystemdError::AlreadyRunning { .. } => ErrorClass::Conflict,
        SystemdError::Timeout { .. } => ErrorClass::Timeout,
        _ => ErrorClass::Failure,
    }
}

pub fn ipc(e: &IpcError) -> ErrorClass {
    match e {
        IpcError::NotRunning { .. } => ErrorClass::Conflict,
        IpcError::Timeout(_) => ErrorClass::Timeout,
        IpcError::Remote(b) => match b.kind {
            ErrorKind::Qmp => ErrorClass::Qmp,
            ErrorKind::Timeout => ErrorClass::Timeout,
            ErrorKind::BadRequest | ErrorKind::Policy => ErrorClass::Usage,
            ErrorKind::Conflict => ErrorClass::Conflict,
            ErrorKind::NotFound => ErrorClass::NotFound,
            _ => ErrorClass::Failure,
        },
        _ => ErrorClass::Failure,
    }
}

pub fn owner(e: &OwnerError) -> ErrorClass {
    match e {
        OwnerError::Systemd(e) => systemd(e),
        OwnerError::Ipc(e) => ipc(e),
        OwnerError::Path(e) => path(e),
        OwnerError::OtherDataDir { .. }
        | OwnerError::NotRunning { .. }
        | OwnerError::Stopping { .. } => ErrorClass::Conflict,
        OwnerError::SocketMissing { .. } => ErrorClass::Failure,
    }
}

/// The exit code of a vm-layer error.
fn vm(e: &VmError) -> ErrorClass {
    match e {
        VmError::Undone { error, .. } => vm(error),
        VmError::NoSuchVm { .. } => ErrorClass::NotFound,
        VmError::AlreadyRunning { .. }
        | VmError::Incomplete { .. }
        | VmError::RunningNeedsForce { .. }
        | VmError::Exists { .. }
        | VmError::RunningNoApply { .. } => ErrorClass::Conflict,
        VmError::Unnamed { .. } | VmError::Invalid(_) => ErrorClass::InvalidConfig,
        VmError::StartTimeout { .. } => ErrorClass::Timeout,
        VmError::StoredConfig { .. } => ErrorClass::InvalidConfig,
        VmError::NotADisk { .. } => ErrorClass::Usage,
        VmError::StartFailed { .. }
        | VmError::NoRunner { .. }
        | VmError::UsageUnknown(_)
        | VmError::DeletedUnrecorded { .. }
        | VmError::NotRemoved { .. } => ErrorClass::Failure,
        VmError::Attach(e) => attach(e),
        // Both are the VM's state not fitting the request.
        VmError::Snapshot(_) => ErrorClass::Conflict,
        VmError::Saved(e) => match e {
            SavedError::SaveFailed { .. } => ErrorClass::Failure,
            SavedError::Refused { .. }
            | SavedError::AlreadySaved { .. }
            | SavedError::Running { .. }
            | SavedError::OldRunner { .. } => ErrorClass::Conflict,
        },
        VmError::Clone(e) => match e {
            CloneError::Io { .. }
            | CloneError::LeftoverStays { .. }
            | CloneError::NotUndone { .. } => ErrorClass::Failure,
            CloneError::Exists(_)
            | CloneError::SharedFile { .. }
            | CloneError::SharedArgument { .. }
            | CloneError::NoBase { .. }
            | CloneError::SourceIncomplete { .. }
            | CloneError::Running { .. } => ErrorClass::Conflict,
        },
        // Not running is a conflict (exit 5) with a hint, as for every
        // other command that needs a running VM.
        VmError::Access(e) => match e {
            AccessError::NoSshServer { .. } => ErrorClass::Timeout,
            AccessError::BadUser { .. } => ErrorClass::Usage,
            AccessError::NotRunning { .. } => ErrorClass::Conflict,
            AccessError::NoPorts { .. }
            | AccessError::NoSshPort { .. }
            | AccessError::KnownHostsDir { .. } => ErrorClass::Failure,
        },
        VmError::Guest(GuestError::NotRunning { .. }) => ErrorClass::Conflict,
        VmError::Nvram(NvramError::Running { .. }) => ErrorClass::Conflict,
        VmError::Nvram(NvramError::NotUefi { .. }) => ErrorClass::Usage,
        VmError::Guest(GuestError::NoChannel { .. }) => ErrorClass::Failure,
        VmError::Control(e) => control(e),
        VmError::Image(e) => image(e),
        VmError::Wait(e) => match e {
            WaitError::Timeout { .. } => ErrorClass::Timeout,
            WaitError::NotRunning { .. } => ErrorClass::Conflict,
            WaitError::NoChannel { .. } => ErrorClass::Usage,
            WaitError::CloudInitFailed { .. } => ErrorClass::Failure,
        },
        VmError::Segment(e) => match e {
            SegmentError::Busy { .. } | SegmentError::Stopping { .. } => ErrorClass::Conflict,
            SegmentError::NoSwitch { .. } => ErrorClass::InvalidConfig,
            SegmentError::Io { .. } => ErrorClass::Failure,
        },
        VmError::Ports(e) => match e {
            PortsError::NotRunning { .. } | PortsError::Outdated { .. } => ErrorClass::Conflict,
            PortsError::NotInDefinition { .. } => ErrorClass::NotFound,
            PortsError::NotSaved { .. } => ErrorClass::Failure,
        },
        VmError::ImageRef { source, .. } => vm(source),
        VmError::Agent(e) => agent(e),
        VmError::Config(_) => ErrorClass::InvalidConfig,
        VmError::Name(_) => ErrorClass::Usage,
        VmError::Path(e) => path(e),
        VmError::State(e) => state(e),
        VmError::Lock(e) => lock(e),
        VmError::Storage(e) => storage(e),
        VmError::Systemd(e) => systemd(e),
        VmError::Ipc(e) => ipc(e),
        VmError::Owner(e) => owner(e),
        VmError::Provision(e) => provision(e),
        VmError::Io(_) => ErrorClass::Failure,
    }
}

pub fn control(e: &ControlError) -> ErrorClass {
    match e {
        ControlError::Qmp { .. } | ControlError::NoDisplay { .. } | ControlError::NoPng { .. } => {
            ErrorClass::Qmp
        }
        ControlError::Paused { .. }
        | ControlError::GuestStopped { .. }
        | ControlError::CannotReboot { .. }
        | ControlError::NoQmpSocket { .. } => ErrorClass::Conflict,
        ControlError::RebootTimeout { .. } | ControlError::StillAttached { .. } => {
            ErrorClass::Timeout
        }
        ControlError::BadPath { .. } | ControlError::Keys(_) | ControlError::Device(_) => {
            ErrorClass::Usage
        }
        ControlError::File(NewFileError::Exists(_)) => ErrorClass::Conflict,
        ControlError::File(NewFileError::NotRegular { .. }) => ErrorClass::Usage,
        ControlError::File(NewFileError::Io { .. })
        | ControlError::StoppedBeforeRemoval { .. }
        | ControlError::NoDisplayServer { .. } => ErrorClass::Failure,
    }
}

pub fn attach(e: &AttachError) -> ErrorClass {
    match e {
        AttachError::NoSuchFile { .. } => ErrorClass::Usage,
        AttachError::UnsupportedFormat { .. } | AttachError::Contradiction { .. } => {
            ErrorClass::Usage
        }
        AttachError::DuplicateName { .. }
        | AttachError::DuplicatePath { .. }
        | AttachError::InUse { .. }
        | AttachError::RunningNeedsLive { .. }
        | AttachError::NotRunning { .. } => ErrorClass::Conflict,
        AttachError::NotRecorded { .. } => ErrorClass::Failure,
    }
}

pub fn provision(e: &ProvisionError) -> ErrorClass {
    match e {
        ProvisionError::State(s) => state(s),
        ProvisionError::Ports(PortError::Taken { .. }) => ErrorClass::Conflict,
        ProvisionError::Ports(PortError::Privileged { .. }) => ErrorClass::InvalidConfig,
        // The config names keys that are not there (at add, apply or start).
        ProvisionError::CloudInit(
            CloudInitError::NoKeys { .. }
            | CloudInitError::NotAKey { .. }
            | CloudInitError::Read { .. },
        ) => ErrorClass::InvalidConfig,
        ProvisionError::Path(p) => path(p),
        _ => ErrorClass::Failure,
    }
}

pub fn image(e: &ImageError) -> ErrorClass {
    match e.root() {
        ImageError::Catalog(_) => ErrorClass::InvalidConfig,
        ImageError::BadName(_) | ImageError::NoCacheDir | ImageError::LaunchArch(_) => {
            ErrorClass::Usage
        }
        ImageError::NotInCatalog { .. } | ImageError::NoArch { .. } | ImageError::NotCached(_) => {
            ErrorClass::NotFound
        }
        ImageError::InUse { .. } => ErrorClass::Conflict,
        _ => ErrorClass::Failure,
    }
}

pub fn agent(e: &AgentError) -> ErrorClass {
    match e {
        AgentError::Timeout(_) => ErrorClass::Timeout,
        AgentError::Path(p) => path(p),
        _ => ErrorClass::Failure,
    }
}

pub fn storage(e: &StorageError) -> ErrorClass {
    match e {
        StorageError::DriveNotFound { .. } | StorageError::SnapshotNotFound { .. } => {
            ErrorClass::NotFound
        }
        StorageError::NotSnapshottable { .. }
        | StorageError::InvalidName { .. }
        | StorageError::AmbiguousTag { .. }
        | StorageError::LiveUnsupported { .. }
        | StorageError::NotHotpluggable { .. }
        | StorageError::NoVmState { .. } => ErrorClass::Usage,
        StorageError::SnapshotExists { .. }
        | StorageError::NotAttached { .. }
        | StorageError::Locked { .. } => ErrorClass::Conflict,
        StorageError::Qmp { .. } | StorageError::Job { .. } => ErrorClass::Qmp,
        StorageError::QmpTimeout { .. } | StorageError::QemuImgTimeout { .. } => {
            ErrorClass::Timeout
        }
        StorageError::State(StateError::NotFound(_)) => ErrorClass::NotFound,
        StorageError::State(StateError::Busy { .. }) => ErrorClass::Timeout,
        _ => ErrorClass::Failure,
    }
}
