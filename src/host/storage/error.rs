//! Errors of disk and snapshot handling. Each message says what failed,
//! on which drive or file, and what to do about it.

use std::path::PathBuf;

use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("qemu-img not found (looked for {tried}); install it (Debian: apt install qemu-utils) or set MAQET_QEMU_IMG to its path")]
    QemuImgMissing { tried: String },

    /// qemu-img ran and failed; `stderr` is its own explanation.
    #[error("`{command}` failed: {stderr}")]
    QemuImg { command: String, stderr: String },

    /// qemu-img could not take the image's lock. `user` names the running
    /// VM that has it open when the caller found one; otherwise it is some
    /// other process (not necessarily a VM).
    #[error("`{command}` failed: {stderr} ({})", lock_holder(.user.as_deref()))]
    Locked {
        command: String,
        stderr: String,
        path: PathBuf,
        user: Option<String>,
    },

    /// A disk image that is a FIFO, socket, character device or
    /// directory: qemu-img (and QEMU) would block opening it or read a
    /// device, so it is refused before either runs.
    #[error("{}: it is {kind}, not a disk image (a regular file or a block device)", path.display())]
    NotAnImage { path: PathBuf, kind: &'static str },

    /// qemu-img did not finish within its deadline and was killed.
    #[error("`{command}` did not finish within {}s and was stopped (is the image on a hung file system?)", limit.as_secs())]
    QemuImgTimeout {
        command: String,
        limit: std::time::Duration,
    },

    #[error("qemu-img printed something maqet cannot read for {path}: {message}")]
    BadInfo { path: PathBuf, message: String },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("VM '{vm}' has no disk named '{drive}' (disks: {})", list_or_none(.available))]
    DriveNotFound {
        vm: String,
        drive: String,
        available: Vec<String>,
    },

    #[error("drive '{drive}' is {format}; only qcow2 images can hold snapshots (convert it: qemu-img convert -O qcow2 …)")]
    NotSnapshottable { drive: String, format: String },

    #[error("drive '{drive}' has no image yet ({}); it is created at the VM's first start, or now with `maqet storage create {vm}`", path.display())]
    DiskMissing {
        vm: String,
        drive: String,
        path: PathBuf,
    },

    #[error("invalid snapshot name '{name}': {reason}")]
    InvalidName { name: String, reason: &'static str },

    /// A live job would pick another snapshot: QEMU matches IDs first.
    #[error("snapshot name '{tag}' is the ID of another snapshot on drive(s) {}, and QEMU would load or delete that one instead; nothing was changed (use the other snapshot's name, or stop the VM and work on one disk with `maqet snapshot`, which refuses the same clash per disk)", drives.join(", "))]
    AmbiguousTag { tag: String, drives: Vec<String> },

    #[error("snapshot '{tag}' already exists on {place}; add --overwrite to replace it")]
    SnapshotExists { tag: String, place: String },

    #[error("no snapshot '{tag}' on {place} (snapshots: {})", list_or_none(.available))]
    SnapshotNotFound {
        tag: String,
        place: String,
        available: Vec<String>,
    },

    /// A live snapshot must cover every writable disk; these cannot hold one.
    #[error("a live snapshot of VM '{vm}' must cover every writable disk, and {} cannot hold internal snapshots; nothing was changed. Take disk-only snapshots of the qcow2 drives with the VM stopped, or convert the raw disks to qcow2", drives.join(", "))]
    LiveUnsupported { vm: String, drives: Vec<String> },

    #[error("drive '{drive}' ({}) is not attached to the running VM '{vm}'; was the config changed after it started? Restart the VM", path.display())]
    NotAttached {
        vm: String,
        drive: String,
        path: PathBuf,
    },

    #[error("snapshot '{tag}' has no VM state (it is a disk-only snapshot); load it with the VM stopped: maqet stop {vm} && maqet snapshot load {vm} DRIVE {tag}")]
    NoVmState { vm: String, tag: String },

    #[error("snapshot '{tag}' is missing on {}: a live load needs it on every writable disk; nothing was changed", drives.join(", "))]
    IncompleteSnapshot { tag: String, drives: Vec<String> },

    #[error("drive '{drive}' (interface {interface}) cannot be hot-plugged: {why}")]
    NotHotpluggable {
        drive: String,
        interface: String,
        why: String,
    },

    /// A QMP command was answered with an error.
    #[error("QMP {command}: {message}")]
    Qmp { command: String, message: String },

    /// A QMP job ended with an error (QEMU's own words).
    #[error("{what} failed: {message}")]
    Job { what: String, message: String },

    /// QEMU was busy past the runner's QMP timeout (e.g. while saving RAM).
    #[error("QEMU did not answer {command} in time")]
    QmpTimeout { command: String },

    /// A live snapshot's thaw of the guest's file systems failed: the
    /// guest may still be frozen. `done` says how the job itself ended.
    #[error("{done}, but thawing the file systems of VM '{vm}' failed: {error}; they may still be frozen: run `maqet guest {vm} fsthaw`")]
    Thaw {
        vm: String,
        done: String,
        error: String,
    },

    /// The runner could not be reached or did not answer.
    #[error("{0}")]
    Runner(String),

    #[error("{0}")]
    State(#[from] StateError),
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn lock_holder(user: Option<&str>) -> String {
    match user {
        Some(u) => format!("{u}; stop that VM first, or use --live if it is this VM"),
        None => "no running VM uses it: another process holds its lock, such as another maqet command (`storage create`, `snapshot`) working on it or a QEMU outside maqet; try again once it has finished".into(),
    }
}

impl StorageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }
}
