//! Plain data types exchanged with the store.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A VM definition to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewVm {
    pub name: String,
    /// The merged config; key order is preserved through the database.
    pub config: serde_json::Value,
    /// Absolute paths of the files the config was built from.
    pub sources: Vec<PathBuf>,
    pub autostart: bool,
}

/// A stored VM definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmRecord {
    pub name: String,
    pub config: serde_json::Value,
    pub sources: Vec<PathBuf>,
    pub autostart: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Set while the definition is still being made (`clone` copying its
    /// disks), saying what: a VM marked so is never started. It stays
    /// marked when the maker was killed, so the half-made VM is refused,
    /// listed (`storage verify`, `doctor`) and cleaned up, never trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
}

/// What kind of file maqet created on a VM's behalf (so `rm` knows what to clean up).
///
/// Stored as its kebab-case name. Adding a kind means a schema version bump, so an older
/// binary refuses the database instead of misreading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    /// A disk image (qemu-img create).
    Disk,
    /// A private copy of UEFI variables.
    EfiVars,
    /// A directory maqet created (e.g. the VM's disk directory).
    Directory,
    /// A VM's saved running state (`state.sav`, schema 4).
    SavedState,
    /// Anything else.
    Other,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Disk => "disk",
            FileKind::EfiVars => "efi-vars",
            FileKind::Directory => "directory",
            FileKind::SavedState => "saved-state",
            FileKind::Other => "other",
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FileKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            FileKind::Disk,
            FileKind::EfiVars,
            FileKind::Directory,
            FileKind::SavedState,
            FileKind::Other,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| format!("unknown file kind '{s}'"))
    }
}

/// Which file a path named when maqet created it: enough to tell later
/// whether the path still names that very file.
///
/// Device and inode say which file it is; the birth time (statx `btime`)
/// tells a reused inode number from the original. Size, mtime and ctime are
/// not used: the guest writes to its disk, so they change while the file
/// stays the same one. `btime_ns` is None where the file system does not
/// report a birth time; then device and inode alone decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    /// Birth time, nanoseconds since the epoch.
    pub btime_ns: Option<i64>,
}

impl FileIdentity {
    /// Whether `now` (the file found at the path today) is this file.
    pub fn matches(&self, now: &FileIdentity) -> bool {
        self.dev == now.dev
            && self.ino == now.ino
            && match (self.btime_ns, now.btime_ns) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// A file maqet created for a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreatedFile {
    pub path: PathBuf,
    pub kind: FileKind,
    /// Unix seconds.
    pub created_at: i64,
    /// None for records written before maqet kept identities (schema 1):
    /// such a file cannot be proven to be the one maqet made, so it is kept.
    pub identity: Option<FileIdentity>,
}

/// Why a VM's state was saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaveReason {
    /// `maqet suspend`: the user asked; the VM stays saved until started.
    Suspend,
    /// systemd stopped the unit of a VM with `on_stop: save` (logout,
    /// shutdown, `systemctl --user stop`): `maqet autostart` resumes it.
    Stop,
}

impl SaveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SaveReason::Suspend => "suspend",
            SaveReason::Stop => "stop",
        }
    }
}

impl FromStr for SaveReason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "suspend" => Ok(SaveReason::Suspend),
            "stop" => Ok(SaveReason::Stop),
            _ => Err(format!("unknown save reason '{s}'")),
        }
    }
}

/// A VM's saved running state as recorded: a row exists only for a save
/// QEMU completed and the runner synced, so the record is what makes a
/// state file trustworthy — together with the file at `path` still being
/// the recorded one (identity and size).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SavedState {
    /// Canonical at the save (the VM's disk directory + `state.sav`).
    pub path: PathBuf,
    /// Bytes, as synced.
    pub size: u64,
    /// Unix seconds.
    pub saved_at: i64,
    #[serde(skip)]
    pub identity: FileIdentity,
    /// `running` or `paused`: what a resume continues.
    pub run_state: String,
    pub reason: SaveReason,
    /// The QEMU that wrote it (`7.2.22`): another QEMU may not read it.
    pub qemu_version: String,
    /// How long the save took, from pausing the guest to the synced file.
    pub save_ms: u64,
}
