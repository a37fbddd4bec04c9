//! What the vm layer tells the user while it works, as data: the front end
//! decides how to show it (the CLI prints each on stderr as it comes).

use std::path::PathBuf;

use crate::state::FileKind;
use crate::vmname::VmName;

/// Receives notices in the order they happen.
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
    /// Something that did not stop the command but should be known.
    Warning {
        message: String,
    },
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Created { path, what } => write!(f, "created {} ({what})", path.display()),
            Notice::Deleted { path, kind } => {
                write!(f, "deleted {} ({kind}, created by maqet)", path.display())
            }
            Notice::DeletedNamed { path } => {
                write!(f, "deleted {} (named with --delete-file)", path.display())
            }
            Notice::AlreadyGone { path } => write!(f, "{} was already gone", path.display()),
            Notice::KeptNotEmpty { path } => {
                write!(f, "kept {} (directory holds other files)", path.display())
            }
            Notice::Kept { path, why } => write!(f, "kept {} ({why})", path.display()),
            Notice::KeptBrought { path } => write!(
                f,
                "kept {} (you brought it; `--delete-file {}` deletes it)",
                path.display(),
                path.display()
            ),
            Notice::DeletedTpmState { path } => write!(f, "deleted {} (TPM state)", path.display()),
            Notice::DeletedEmptyDir { path } => {
                write!(f, "deleted {} (empty directory of the VM)", path.display())
            }
            Notice::DeletedLeftover { path } => write!(
                f,
                "deleted {} (left half-written by an interrupted maqet command)",
                path.display()
            ),
            Notice::Warning { message } => write!(f, "warning: {message}"),
            Notice::KeptCreated { vm, paths } => {
                let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                write!(
                    f,
                    "kept the files maqet created for '{vm}': {} (`maqet rm --delete-storage` would have deleted them; `maqet storage ls` shows disks no VM uses as unreferenced)",
                    list.join(", ")
                )
            }
        }
    }
}
