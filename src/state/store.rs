//! The `Store`: one SQLite connection plus the database path (for error messages).

use std::fs::{self, DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{ffi, params, Connection, OpenFlags, OptionalExtension, Row};

use super::schema;
use super::types::{CreatedFile, FileIdentity, FileKind, NewVm, VmRecord};
use super::StateError;

/// How long a statement waits for another process's lock before failing with `Busy`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const VM_COLUMNS: &str = "name, config, sources, autostart, created_at, updated_at";

/// SQLite store of VM definitions. `Send`, not `Sync`: open one per thread or task.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it to the current schema.
    ///
    /// Missing parent directories are created with mode 0700 and a new database file with
    /// mode 0600: VM configs may hold secrets (e.g. passwords in QEMU arguments).
    pub fn open(path: &Path) -> Result<Store, StateError> {
        let io_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StateError::Io { path: p, source }
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_err(parent))?;
        }
        // Create the file ourselves so its mode does not depend on SQLite's default (0644).
        // SQLite gives the -wal and -shm files the database file's mode.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io_err(path))?;
        let mode = file.metadata().map_err(io_err(path))?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(db = %path.display(), mode = format!("{:o}", mode & 0o777), "state database was readable by others; setting mode 0600");
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err(path))?;
        }
        drop(file);

        let mut conn = Connection::open_with_flags(
            path,
            // No SQLITE_OPEN_URI: a path starting with "file:" is a path, not a URI.
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StateError::sqlite(path, e))?;
        configure(&conn, path, true)?;
        schema::migrate(&mut conn, path)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing database for reading; `None` when the file does not exist, so
    /// read-only commands (`ls`, `show`) never create state.
    ///
    /// A database from an older maqet is migrated first (through a short read-write
    /// connection): refusing every read after an upgrade would only confuse.
    pub fn open_read_only(path: &Path) -> Result<Option<Store>, StateError> {
        match path.try_exists() {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
        let open = || {
            Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| StateError::sqlite(path, e))
        };
        let mut conn = open()?;
        configure(&conn, path, false)?;
        if schema::check_version(&conn, path)? < schema::SCHEMA_VERSION {
            drop(Store::open(path)?);
            // Reopen: this connection may have cached the old schema.
            conn = open()?;
            configure(&conn, path, false)?;
        }
        Ok(Some(Store {
            conn,
            path: path.to_path_buf(),
        }))
    }

    /// The database file this store uses.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Inserts a new VM definition; `Exists` if the name is taken.
    pub fn insert_vm(&self, vm: &NewVm) -> Result<VmRecord, StateError> {
        let config = json_text(&vm.config);
        let sources = self.sources_text(&vm.sources)?;
        let now = unix_now();
        self.conn
            .query_row(
                &format!(
                    "INSERT INTO vms ({VM_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?5) \
                     RETURNING {VM_COLUMNS}"
                ),
                params![vm.name, config, sources, vm.autostart, now],
                RawVm::from_row,
            )
            .map_err(|e| {
                if constraint(&e) == Some(ffi::SQLITE_CONSTRAINT_PRIMARYKEY) {
                    StateError::Exists(vm.name.clone())
                } else {
                    self.sql_err(e)
                }
            })?
            .into_record(&self.path)
    }

    /// Returns the VM named `name`, or `NotFound`.
    pub fn get_vm(&self, name: &str) -> Result<VmRecord, StateError> {
        self.conn
            .query_row(
                &format!("SELECT {VM_COLUMNS} FROM vms WHERE name = ?1"),
                [name],
                RawVm::from_row,
            )
            .optional()
            .map_err(|e| self.sql_err(e))?
            .ok_or_else(|| StateError::NotFound(name.to_owned()))?
            .into_record(&self.path)
    }

    /// All VMs, oldest first (ties broken by name, for a stable `ls`).
    pub fn list_vms(&self) -> Result<Vec<VmRecord>, StateError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {VM_COLUMNS} FROM vms ORDER BY created_at, name"
            ))
            .map_err(|e| self.sql_err(e))?;
        let raws = stmt
            .query_map([], RawVm::from_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.sql_err(e))?;
        raws.into_iter()
            .map(|raw| raw.into_record(&self.path))
            .collect()
    }

    /// Replaces a VM's config and sources (e.g. `maqet apply`); bumps `updated_at`.
    pub fn update_config(
        &self,
        name: &str,
        config: &serde_json::Value,
        sources: &[PathBuf],
    ) -> Result<VmRecord, StateError> {
        let config = json_text(config);
        let sources = self.sources_text(sources)?;
        self.conn
            .query_row(
                &format!(
                    "UPDATE vms SET config = ?2, sources = ?3, updated_at = ?4 \
                     WHERE name = ?1 RETURNING {VM_COLUMNS}"
                ),
                params![name, config, sources, unix_now()],
                RawVm::from_row,
            )
            .optional()
            .map_err(|e| self.sql_err(e))?
            .ok_or_else(|| StateError::NotFound(name.to_owned()))?
            .into_record(&self.path)
    }

    /// Sets the autostart flag; bumps `updated_at`.
    pub fn set_autostart(&self, name: &str, on: bool) -> Result<(), StateError> {
        let changed = self
            .conn
            .execute(
                "UPDATE vms SET autostart = ?2, updated_at = ?3 WHERE name = ?1",
                params![name, on, unix_now()],
            )
            .map_err(|e| self.sql_err(e))?;
        found(changed, name)
    }

    /// Deletes a VM definition and (by cascade) its created-file records. The files
    /// themselves are the caller's to remove: read `created_files` first.
    pub fn delete_vm(&self, name: &str) -> Result<(), StateError> {
        let changed = self
            .conn
            .execute("DELETE FROM vms WHERE name = ?1", [name])
            .map_err(|e| self.sql_err(e))?;
        found(changed, name)
    }

    /// Records that maqet created `path` for `vm`, with the identity of the file it made.
    /// Recording the same path again replaces its kind and identity (it is a new creation;
    /// the first creation time is kept). `path` must be absolute.
    pub fn record_created_file(
        &self,
        vm: &str,
        path: &Path,
        kind: FileKind,
        identity: Option<FileIdentity>,
    ) -> Result<(), StateError> {
        let text = path_text(path)?;
        // SQLite integers are i64: dev and ino are stored bit for bit.
        let (dev, ino, btime) = match identity {
            Some(i) => (Some(i.dev as i64), Some(i.ino as i64), i.btime_ns),
            None => (None, None, None),
        };
        self.conn
            .execute(
                "INSERT INTO created_files (vm_name, path, kind, created_at, dev, ino, btime_ns) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (vm_name, path) DO UPDATE SET kind = excluded.kind, \
                 dev = excluded.dev, ino = excluded.ino, btime_ns = excluded.btime_ns",
                params![vm, text, kind.as_str(), unix_now(), dev, ino, btime],
            )
            .map_err(|e| {
                if constraint(&e) == Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) {
                    StateError::NotFound(vm.to_owned())
                } else {
                    self.sql_err(e)
                }
            })?;
        Ok(())
    }

    /// Files recorded for `vm`, in the order they were recorded (delete in reverse, so files
    /// go before the directories holding them).
    pub fn created_files(&self, vm: &str) -> Result<Vec<CreatedFile>, StateError> {
        // One read transaction: the existence check and the listing see the same snapshot.
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.sql_err(e))?;
        self.require_vm(&tx, vm)?;
        let mut stmt = tx
            .prepare(
                "SELECT path, kind, created_at, dev, ino, btime_ns FROM created_files \
                 WHERE vm_name = ?1 ORDER BY rowid",
            )
            .map_err(|e| self.sql_err(e))?;
        let rows = stmt
            .query_map([vm], |r| {
                let identity = match (r.get::<_, Option<i64>>(3)?, r.get::<_, Option<i64>>(4)?) {
                    (Some(dev), Some(ino)) => Some(FileIdentity {
                        dev: dev as u64,
                        ino: ino as u64,
                        btime_ns: r.get(5)?,
                    }),
                    _ => None,
                };
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    identity,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.sql_err(e))?;
        rows.into_iter()
            .map(|(path, kind, created_at, identity)| {
                let kind = kind.parse().map_err(|detail| StateError::Corrupt {
                    path: self.path.clone(),
                    detail: format!("created file {path} of VM '{vm}': {detail}"),
                })?;
                Ok(CreatedFile {
                    path: PathBuf::from(path),
                    kind,
                    created_at,
                    identity,
                })
            })
            .collect()
    }

    /// Forgets a created-file record (e.g. after deleting the file). Forgetting a path that
    /// was never recorded is not an error; an unknown VM is.
    pub fn forget_created_file(&self, vm: &str, path: &Path) -> Result<(), StateError> {
        let text = path_text(path)?;
        let changed = self
            .conn
            .execute(
                "DELETE FROM created_files WHERE vm_name = ?1 AND path = ?2",
                params![vm, text],
            )
            .map_err(|e| self.sql_err(e))?;
        if changed == 0 {
            self.require_vm(&self.conn, vm)?;
        }
        Ok(())
    }

    /// Runs SQLite's integrity and foreign-key checks; returns the problems (empty = healthy).
    pub fn integrity_check(&self) -> Result<Vec<String>, StateError> {
        let mut problems = Vec::new();
        let mut stmt = self
            .conn
            .prepare("PRAGMA integrity_check")
            .map_err(|e| self.sql_err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.sql_err(e))?;
        problems.extend(rows.into_iter().filter(|m| m != "ok"));

        let mut stmt = self
            .conn
            .prepare("PRAGMA foreign_key_check")
            .map_err(|e| self.sql_err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(format!(
                    "row {} of table {} refers to a missing row of table {}",
                    r.get::<_, Option<i64>>(1)?
                        .map_or_else(|| "?".to_owned(), |id| id.to_string()),
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.sql_err(e))?;
        problems.extend(rows);
        Ok(problems)
    }

    fn require_vm(&self, conn: &Connection, vm: &str) -> Result<(), StateError> {
        let exists: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM vms WHERE name = ?1)",
                [vm],
                |r| r.get(0),
            )
            .map_err(|e| self.sql_err(e))?;
        if exists {
            Ok(())
        } else {
            Err(StateError::NotFound(vm.to_owned()))
        }
    }

    fn sources_text(&self, sources: &[PathBuf]) -> Result<String, StateError> {
        let texts = sources
            .iter()
            .map(|p| path_text(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(json_text(&serde_json::json!(texts)))
    }

    fn sql_err(&self, e: rusqlite::Error) -> StateError {
        StateError::sqlite(&self.path, e)
    }
}

/// Per-connection settings. WAL lets readers (`maqet ls`) proceed while a writer commits;
/// NORMAL sync is durable enough in WAL mode (a power cut may lose the last commit, never
/// corrupt the file).
fn configure(conn: &Connection, path: &Path, writable: bool) -> Result<(), StateError> {
    let sql_err = |e| StateError::sqlite(path, e);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_err)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(sql_err)?;
    if writable {
        // journal_mode is persistent in the file, so read-only connections inherit it.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(sql_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(db = %path.display(), %mode, "filesystem does not support WAL; using another journal mode");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql_err)?;
    }
    Ok(())
}

/// A row as stored, before JSON decoding (decoding errors are `Corrupt`, not SQLite errors).
struct RawVm {
    name: String,
    config: String,
    sources: String,
    autostart: bool,
    created_at: i64,
    updated_at: i64,
}

impl RawVm {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<RawVm> {
        Ok(RawVm {
            name: r.get(0)?,
            config: r.get(1)?,
            sources: r.get(2)?,
            autostart: r.get(3)?,
            created_at: r.get(4)?,
            updated_at: r.get(5)?,
        })
    }

    fn into_record(self, db: &Path) -> Result<VmRecord, StateError> {
        let corrupt = |what: &str, e: serde_json::Error| StateError::Corrupt {
            path: db.to_path_buf(),
            detail: format!("VM '{}': {what}: {e}", self.name),
        };
        let config = serde_json::from_str(&self.config)
            .map_err(|e| corrupt("config is not valid JSON", e))?;
        let sources: Vec<PathBuf> = serde_json::from_str(&self.sources)
            .map_err(|e| corrupt("sources is not a JSON array of paths", e))?;
        Ok(VmRecord {
            name: self.name,
            config,
            sources,
            autostart: self.autostart,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Compact JSON; `serde_json`'s `preserve_order` keeps object keys in insertion order.
fn json_text(value: &serde_json::Value) -> String {
    value.to_string()
}

/// Paths are stored as text and compared textually, so they must be UTF-8 and absolute
/// (a relative path would mean something else from another working directory).
fn path_text(path: &Path) -> Result<&str, StateError> {
    let invalid = |reason| StateError::InvalidPath {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_absolute() {
        return Err(invalid("the path must be absolute"));
    }
    path.to_str()
        .ok_or_else(|| invalid("the path is not valid UTF-8"))
}

/// The extended result code of a constraint violation, if `e` is one.
fn constraint(e: &rusqlite::Error) -> Option<i32> {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Some(f.extended_code)
        }
        _ => None,
    }
}

fn found(changed: usize, name: &str) -> Result<(), StateError> {
    if changed == 0 {
        Err(StateError::NotFound(name.to_owned()))
    } else {
        Ok(())
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
impl Store {
    /// Raw access for tests that need to fake old, new or damaged databases.
    pub(crate) fn conn_for_tests(&self) -> &Connection {
        &self.conn
    }
}
