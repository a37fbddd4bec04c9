//! Errors of the state store. Every message that concerns the database names its path, so a
//! user seeing it knows which file to inspect, move aside or fix permissions on.

use std::path::PathBuf;

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
        "state database {} is locked by another process (gave up after {timeout_secs} s); \
         retry when the other maqet command has finished",
        path.display()
    )]
    Busy { path: PathBuf, timeout_secs: u64 },

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
    /// Classifies a rusqlite error: lock contention and corruption get their own variants
    /// because the user's remedy differs from a generic failure.
    pub(crate) fn sqlite(path: &std::path::Path, source: rusqlite::Error) -> Self {
        let path = path.to_path_buf();
        match source.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StateError::Busy {
                path,
                timeout_secs: crate::state::store::BUSY_TIMEOUT.as_secs(),
            },
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StateError::Corrupt {
                path,
                detail: source.to_string(),
            },
            _ => StateError::Sqlite { path, source },
        }
    }
}
