//! The vm layer's error: one enum wrapping the lower layers' errors, plus
//! the lifecycle's own refusals. The messages state facts, in one line;
//! what a user can do next in a front end's terms (`maqet …` commands,
//! flags) is that front end's to say: the CLI words each variant in
//! `cli/exit.rs`, with its exit code.

use std::path::PathBuf;

use maqet_base::paths::PathError;
use maqet_base::vmname::{InvalidName, VmName};
use maqet_config::ConfigError;
use maqet_host::ipc::IpcError;
use maqet_host::state::{LockError, StateError};
use maqet_host::storage::StorageError;
use maqet_host::systemd::SystemdError;

use super::owner::OwnerError;
use super::provision::UndoNote;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("no VM named '{name}' in {}", data_dir.display())]
    NoSuchVm { name: String, data_dir: PathBuf },
    #[error("VM '{vm}' is already running")]
    AlreadyRunning { vm: VmName },
    /// The VM's making was interrupted (`VmRecord::incomplete`): nothing
    /// trusts what it has.
    #[error("VM '{vm}' is incomplete: {what}; maqet does not use it")]
    Incomplete { vm: VmName, what: String },
    /// The runner failed before it was ready; `log` is what it logged.
    #[error("VM '{vm}' failed to start: {reason}{}", log.iter().map(|l| format!("; {l}")).collect::<String>())]
    StartFailed {
        vm: VmName,
        unit: String,
        reason: String,
        log: Vec<String>,
    },
    /// Not ready in time; the unit was stopped again.
    #[error("{source}; the VM was stopped again")]
    StartTimeout { vm: VmName, source: SystemdError },
    /// A failed start (or storage step), with what undoing it did.
    #[error("{error}{undo}")]
    Undone { error: Box<VmError>, undo: UndoNote },
    #[error("cannot find maqet-runner next to {} (install both binaries together, or set MAQET_RUNNER)", exe.display())]
    NoRunner { exe: PathBuf },
    #[error("the stored configuration of '{vm}' no longer validates: {source}")]
    StoredConfig {
        vm: String,
        source: Box<ConfigError>,
    },
    /// `add` with no name from `--name` or the files (`file`: the first).
    #[error("{}: the VM has no name (no `name:` key, and none given)", file.display())]
    Unnamed { file: PathBuf },
    /// `add` of a name that is taken; `from_files`: the name came from a file
    /// (so `--name` can choose another).
    #[error("a VM named '{vm}' already exists")]
    Exists { vm: VmName, from_files: bool },
    #[error(
        "VM '{vm}' is running; a running VM keeps the config it was started with, so stop it first"
    )]
    RunningNoApply { vm: VmName },
    /// Every error of a config `apply` would store.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigError>),
    #[error("VM '{vm}' is running; stop it first, or remove it by force")]
    RunningNeedsForce { vm: VmName },
    #[error("{}: not a disk image of VM '{vm}' (its disks: {}); maqet only deletes a VM's own disks", path.display(), list_or_none(disks))]
    NotADisk {
        vm: VmName,
        path: PathBuf,
        disks: Vec<PathBuf>,
    },
    /// Which files running VMs use is unknown, so nothing may be deleted.
    #[error("cannot tell which files running VMs use ({0}); nothing was deleted")]
    UsageUnknown(SystemdError),
    /// `rm --delete-storage` deleted files, then could not commit the
    /// database change that records it: says exactly what is gone.
    #[error("deleted {}, but the database could not record it ({error}); the definition of '{vm}' stays, and removing it again with its storage finishes (it finds those files gone)", list_or_none(deleted))]
    DeletedUnrecorded {
        vm: VmName,
        deleted: Vec<PathBuf>,
        error: Box<StateError>,
    },
    #[error("VM '{vm}' was not removed: {}", failures.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; "))]
    NotRemoved {
        vm: VmName,
        failures: Vec<RemoveFailure>,
    },
    #[error(transparent)]
    Image(#[from] maqet_host::image::ImageError),
    /// An image a definition names (`base: image:REF`) could not be had.
    #[error("{at}: image:{reference}: {source}")]
    ImageRef {
        at: String,
        reference: String,
        source: Box<VmError>,
    },
    #[error(transparent)]
    Attach(#[from] super::attach::AttachError),
    #[error(transparent)]
    Snapshot(#[from] super::snapshot::SnapshotError),
    #[error(transparent)]
    Saved(#[from] super::saved::SavedError),
    #[error(transparent)]
    Clone(#[from] super::clone::CloneError),
    #[error(transparent)]
    Access(#[from] super::access::AccessError),
    #[error(transparent)]
    Nvram(#[from] super::nvram::NvramError),
    #[error(transparent)]
    Guest(#[from] super::agent::GuestError),
    /// An operation on a running VM's QEMU (vm/control.rs).
    #[error(transparent)]
    Control(#[from] super::control::ControlError),
    #[error(transparent)]
    Wait(#[from] super::wait::WaitError),
    #[error(transparent)]
    Segment(#[from] super::segments::SegmentError),
    #[error(transparent)]
    Ports(#[from] super::ports::PortsError),
    #[error(transparent)]
    Agent(#[from] maqet_host::guest_agent::AgentError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Name(#[from] InvalidName),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Systemd(#[from] SystemdError),
    #[error(transparent)]
    Ipc(#[from] IpcError),
    #[error(transparent)]
    Owner(#[from] OwnerError),
    /// Guest provisioning (base digests, cloud-init seed, ports).
    #[error(transparent)]
    Provision(#[from] crate::provision::ProvisionError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl VmError {
    /// `Incomplete` for a record whose making was interrupted.
    pub fn refuse_incomplete(
        vm: &VmName,
        rec: &maqet_host::state::VmRecord,
    ) -> Result<(), VmError> {
        match &rec.incomplete {
            Some(what) => Err(VmError::Incomplete {
                vm: vm.clone(),
                what: what.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The error underneath any undo note.
    pub fn root(&self) -> &VmError {
        match self {
            VmError::Undone { error, .. } => error.root(),
            e => e,
        }
    }
}

/// One file `rm` could not delete.
#[derive(Debug, thiserror::Error)]
pub enum RemoveFailure {
    #[error("cannot delete {}: {error}", path.display())]
    Delete { path: PathBuf, error: String },
    #[error("not deleting {}: {user}", path.display())]
    InUse { path: PathBuf, user: String },
}

pub fn list_or_none(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "none".into();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
