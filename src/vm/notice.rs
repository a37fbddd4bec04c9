//! What the vm layer tells the user while it works, as data: the front end
//! words and shows it (the CLI prints each on stderr as it comes,
//! `cli/notice.rs`).

use std::path::PathBuf;

use maqet_base::vmname::VmName;
use maqet_host::state::FileKind;

/// Receives notices in the order they happen. `Send + Sync`, so the vm
/// layer's futures that hold it are `Send`: a multi-threaded front end
/// may spawn them.
pub type Notify<'a> = &'a (dyn Fn(Notice) + Send + Sync);

/// Drops every notice (for callers that only want the result).
pub fn quiet(_: Notice) {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Storage made before a start (or by `storage create`).
    Created {
        path: PathBuf,
        what: String,
    },
    /// A file maqet created, deleted by `rm --delete-storage`.
    Deleted {
        path: PathBuf,
        kind: FileKind,
    },
    DeletedNamed {
        path: PathBuf,
    },
    AlreadyGone {
        path: PathBuf,
    },
    KeptNotEmpty {
        path: PathBuf,
    },
    /// Kept because something uses it, or it cannot be proven ours.
    Kept {
        path: PathBuf,
        why: String,
    },
    /// A disk the user brought; `rm` deletes it only when named.
    KeptBrought {
        path: PathBuf,
    },
    /// `rm` without `--delete-storage` keeps what maqet created.
    KeptCreated {
        vm: VmName,
        paths: Vec<PathBuf>,
    },
    /// A file swtpm wrote into the TPM state directory maqet made.
    DeletedTpmState {
        path: PathBuf,
    },
    /// A temporary file a killed maqet command left (storage/tmp.rs).
    DeletedLeftover {
        path: PathBuf,
    },
    /// The VM's own directory in the data directory, empty, that an earlier
    /// VM of the name had made.
    DeletedEmptyDir {
        path: PathBuf,
    },
    /// A start resumes the VM's saved running state.
    Resuming {
        vm: VmName,
        saved_at: i64,
        size: u64,
    },
    /// `start --fresh` discarded the VM's saved running state.
    Discarded {
        vm: VmName,
        path: PathBuf,
    },
    /// A VM whose stored config no longer validates was left out (of a
    /// listing over every VM); `error` says why.
    SkippedInvalid {
        vm: String,
        error: String,
    },
    /// `/dev/kvm` is not usable, so a VM made now runs under TCG.
    NoKvm,
    /// The VM's autostart flag was set (`on`) or cleared.
    Autostart {
        vm: VmName,
        on: bool,
    },
    /// `vm` started; now waiting up to `timeout` for it to be ready as
    /// `what` says.
    Waiting {
        vm: VmName,
        what: super::wait::Readiness,
        timeout: std::time::Duration,
    },
    /// The unit that runs autostart at login (`unit`) is not enabled.
    AutostartUnitDisabled {
        unit: String,
    },
    /// Something that did not stop the command but should be known.
    Warning {
        message: String,
    },
}
