//! Errors of the state store. Every message that concerns the database names its path, so a
//! user seeing it knows which file to inspect, move aside or fix permissions on.

use std::path::{Path, PathBuf};

use super::store::dir_of;

use rusqlite::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// No VM with this name is defined.
    #[error("no VM named '{0}' is defined (see `maqet ls`)")]
    NotFound(String),

    /// A VM with this name is already defined.
    #[error(
        "a VM named '{0}' is already defined (remove it first, or update it with `maqet apply`)"
    )]
    Exists(String),

    /// Any other SQLite failure.
    #[error("state database {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// Filesystem failure around the database (creating its directory, setting its mode).
    #[error("state database {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not a SQLite database, is damaged, or holds data this code cannot read.
    #[error(
        "state database {} is corrupt: {detail} \
         (move it aside and re-add the VMs, or repair it with the sqlite3 tool)",
        path.display()
    )]
    Corrupt { path: PathBuf, detail: String },

    /// Another process held the database lock for longer than the busy timeout.
    #[error(
        "state database {} is busy: another process (probably another maqet command) held its \
         lock for more than {timeout_secs} s; nothing was changed, retry when it has finished",
        path.display()
    )]
    Busy { path: PathBuf, timeout_secs: u64 },

    /// The filesystem holding the database is full (SQLITE_FULL, ENOSPC, EDQUOT).
    #[error(
        "state database {}: no space left on device in {}; nothing was changed. Free space on \
         that filesystem (see `df {}`) or use another data directory (--data-dir)",
        path.display(), dir.display(), dir.display()
    )]
    NoSpace { path: PathBuf, dir: PathBuf },

    /// The database (or its directory, where SQLite creates the -wal and -shm files) cannot
    /// be written: read-only file system, or no write permission.
    #[error(
        "state database {} cannot be written: {reason}; nothing was changed. A command that \
         changes VMs needs write access to it, to its -wal and -shm files and to {} (where \
         SQLite creates them); read-only commands such as `maqet ls` still work",
        path.display(), dir.display()
    )]
    ReadOnly {
        path: PathBuf,
        dir: PathBuf,
        reason: String,
    },

    /// The operating system reported an I/O error while reading or writing the database.
    #[error(
        "state database {}: I/O error: {detail}; nothing was changed (check the filesystem \
         and the kernel log)",
        path.display()
    )]
    DiskIo { path: PathBuf, detail: String },

    /// The database was written by a newer maqet with a schema this binary does not know.
    #[error(
        "state database {} has schema version {found}, but this maqet only knows versions up to \
         {supported}; upgrade maqet (or point it at another database)",
        path.display()
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    /// A path that cannot be stored faithfully (not UTF-8, or relative).
    #[error("cannot record path {}: {reason}", path.display())]
    InvalidPath { path: PathBuf, reason: &'static str },
}

impl StateError {
    /// Classifies a rusqlite error. `errno` is the OS error of the connection's last failed
    /// system call (`sqlite3_system_errno`), consulted only for I/O and open failures: it is
    /// what tells a full disk or a read-only directory from a failing one, and each has
    /// another remedy.
    pub(crate) fn sqlite(path: &Path, source: rusqlite::Error, errno: Option<i32>) -> Self {
        let code = source.sqlite_error_code();
        // Only these codes record an errno; for any other it would be stale.
        let os_related = matches!(
            code,
            Some(ErrorCode::SystemIoFailure | ErrorCode::CannotOpen)
        );
        if let Some(e) = errno.filter(|e| *e != 0 && os_related) {
            if let Some(err) = Self::from_errno(path, e) {
                return err;
            }
        }
        let path = path.to_path_buf();
        match code {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StateError::Busy {
                path,
                timeout_secs: crate::state::store::BUSY_TIMEOUT.as_secs(),
            },
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StateError::Corrupt {
                path,
                detail: source.to_string(),
            },
            Some(ErrorCode::DiskFull) => StateError::NoSpace {
                dir: dir_of(&path),
                path,
            },
            Some(ErrorCode::ReadOnly) => StateError::ReadOnly {
                dir: dir_of(&path),
                path,
                reason: source.to_string(),
            },
            Some(ErrorCode::SystemIoFailure) => StateError::DiskIo {
                detail: match errno.filter(|e| *e != 0) {
                    Some(e) => format!("{source} ({})", std::io::Error::from_raw_os_error(e)),
                    None => source.to_string(),
                },
                path,
            },
            _ => StateError::Sqlite { path, source },
        }
    }

    /// Classifies a failed filesystem call on `what` (the database `db`, or its directory).
    pub(crate) fn io(db: &Path, what: &Path, source: std::io::Error) -> Self {
        source
            .raw_os_error()
            .and_then(|e| Self::from_errno(db, e))
            .unwrap_or_else(|| StateError::Io {
                path: what.to_path_buf(),
                source,
            })
    }

    /// The errors whose remedy is not "look at the disk": a full filesystem or quota, and a
    /// file or directory that cannot be written.
    fn from_errno(path: &Path, errno: i32) -> Option<Self> {
        let path = path.to_path_buf();
        let dir = dir_of(&path);
        match errno {
            libc::ENOSPC | libc::EDQUOT => Some(StateError::NoSpace { path, dir }),
            libc::EROFS | libc::EACCES | libc::EPERM => Some(StateError::ReadOnly {
                path,
                dir,
                reason: std::io::Error::from_raw_os_error(errno).to_string(),
            }),
            _ => None,
        }
    }
}
