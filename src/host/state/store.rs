//! The `Store`: one SQLite connection plus the database path (for error messages).

use std::fs::{self, DirBuilder, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{
    ffi, params, Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior,
};

use super::schema;
use super::types::{CreatedFile, FileIdentity, FileKind, NewVm, SavedState, VmRecord};
use super::StateError;

/// Free space in the database file that [`Store::reclaim`] gives back.
pub(crate) const RECLAIM_AT: i64 = 1 << 20;

/// How long a statement waits for another process's lock before failing with `Busy`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const VM_COLUMNS: &str = "name, config, sources, autostart, created_at, updated_at, incomplete";

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
        create_private_file(path)?;
        // Several processes setting up a fresh file at once (switching it to WAL, creating
        // the tables) can get SQLITE_BUSY without SQLite's busy handler being consulted.
        // Every setup step is idempotent, so retry it within the same busy timeout: a racing
        // `add` then reaches its INSERT and gets "exists" rather than "locked".
        let deadline = Instant::now() + BUSY_TIMEOUT;
        let mut attempt: u64 = 0;
        loop {
            match Store::open_writable(path) {
                Err(StateError::Busy { .. }) if Instant::now() < deadline => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(5 + (attempt * 7) % 40));
                }
                other => return other,
            }
        }
    }

    fn open_writable(path: &Path) -> Result<Store, StateError> {
        let conn = Connection::open_with_flags(
            path,
            // No SQLITE_OPEN_URI: a path starting with "file:" is a path, not a URI.
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StateError::sqlite(path, e, None))?;
        configure(&conn, path, true)?;
        schema::migrate(&conn, path)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// [`Store::open`] of a database that exists; `None` when there is none, so a command
    /// that needs a defined VM (`start`) creates nothing for an unknown one.
    pub fn open_existing(path: &Path) -> Result<Option<Store>, StateError> {
        match path.try_exists() {
            Ok(true) => Store::open(path).map(Some),
            Ok(false) => Ok(None),
            Err(source) => Err(StateError::io(path, path, source)),
        }
    }

    /// Opens an existing database for reading; `None` when the file does not exist, so
    /// read-only commands (`ls`, `show`) never create state.
    ///
    /// A database from an older maqet is migrated first (through a short read-write
    /// connection): refusing every read after an upgrade would only confuse.
    ///
    /// In a directory this user cannot write (or on a full disk), SQLite cannot create the
    /// -wal and -shm files a WAL reader needs; the file is then read as `immutable`, which
    /// needs neither. That is only safe when no -wal file with data exists: every open
    /// connection keeps one, so none can be writing, and no committed transaction is
    /// waiting in it to be checkpointed.
    pub fn open_read_only(path: &Path) -> Result<Option<Store>, StateError> {
        match path.try_exists() {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(source) => return Err(StateError::io(path, path, source)),
        }
        // A read-only file or directory: do not even try the normal open, which would leave
        // a -shm file with the database's read-only mode behind, and that breaks every later
        // writer once the database is writable again.
        let can_write = writable(path) && writable(&dir_of(path));
        let (mut conn, version) = if !can_write && !wal_has_data(path) {
            open_reader(path, true)?
        } else {
            match open_reader(path, false) {
                Err(e @ (StateError::ReadOnly { .. } | StateError::NoSpace { .. }))
                    if !wal_has_data(path) =>
                {
                    tracing::debug!(db = %path.display(), error = %e, "reading the state database as immutable");
                    open_reader(path, true)?
                }
                other => other?,
            }
        };
        if version < schema::SCHEMA_VERSION {
            match Store::open(path) {
                Ok(store) => drop(store),
                // No tables at all (e.g. left by an `add` that failed on a full disk): no
                // VMs, which needs no write to say.
                Err(StateError::NoSpace { .. } | StateError::ReadOnly { .. }) if version == 0 => {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
            // Reopen: this connection may have cached the old schema.
            conn = open_reader(path, false)?.0;
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
        self.insert(vm, None)
    }

    /// Inserts a VM definition marked incomplete (`why`: what is still
    /// being made) until [`Store::mark_complete`].
    pub fn insert_incomplete_vm(&self, vm: &NewVm, why: &str) -> Result<VmRecord, StateError> {
        self.insert(vm, Some(why))
    }

    /// Clears a VM's incomplete mark: everything it needs is made.
    pub fn mark_complete(&self, name: &str) -> Result<(), StateError> {
        self.write(|tx| {
            let changed = tx
                .execute(
                    "UPDATE vms SET incomplete = NULL, updated_at = ?2 WHERE name = ?1",
                    params![name, unix_now()],
                )
                .map_err(|e| self.sql_err(e))?;
            found(changed, name)
        })
    }

    fn insert(&self, vm: &NewVm, incomplete: Option<&str>) -> Result<VmRecord, StateError> {
        let config = json_text(&vm.config);
        let sources = self.sources_text(&vm.sources)?;
        let now = unix_now();
        self.write(|tx| {
            tx.execute(
                &format!("INSERT INTO vms ({VM_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)"),
                params![vm.name, config, sources, vm.autostart, now, incomplete],
            )
            .map_err(|e| {
                if constraint(&e) == Some(ffi::SQLITE_CONSTRAINT_PRIMARYKEY) {
                    StateError::Exists(vm.name.clone())
                } else {
                    self.sql_err(e)
                }
            })?;
            self.read_vm(tx, &vm.name)
        })
    }

    /// Returns the VM named `name`, or `NotFound`.
    pub fn get_vm(&self, name: &str) -> Result<VmRecord, StateError> {
        self.read_vm(&self.conn, name)
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

    /// Replaces a VM's config and sources, and sets the autostart flag unless `autostart` is
    /// `None` (`maqet apply`), in one transaction; bumps `updated_at`.
    pub fn update_config(
        &self,
        name: &str,
        config: &serde_json::Value,
        sources: &[PathBuf],
        autostart: Option<bool>,
    ) -> Result<VmRecord, StateError> {
        let config = json_text(config);
        let sources = self.sources_text(sources)?;
        self.write(|tx| {
            let changed = tx
                .execute(
                    "UPDATE vms SET config = ?2, sources = ?3, \
                     autostart = coalesce(?4, autostart), updated_at = ?5 WHERE name = ?1",
                    params![name, config, sources, autostart, unix_now()],
                )
                .map_err(|e| self.sql_err(e))?;
            found(changed, name)?;
            self.read_vm(tx, name)
        })
        .inspect(|_| self.reclaim())
    }

    /// Sets the autostart flag; bumps `updated_at`.
    pub fn set_autostart(&self, name: &str, on: bool) -> Result<(), StateError> {
        self.write(|tx| {
            let changed = tx
                .execute(
                    "UPDATE vms SET autostart = ?2, updated_at = ?3 WHERE name = ?1",
                    params![name, on, unix_now()],
                )
                .map_err(|e| self.sql_err(e))?;
            found(changed, name)
        })
    }

    /// Deletes a VM definition and (by cascade) its created-file records. The files
    /// themselves are the caller's to remove: read `created_files` first.
    pub fn delete_vm(&self, name: &str) -> Result<(), StateError> {
        self.write(|tx| self.delete_vm_in(tx, name))?;
        self.reclaim();
        Ok(())
    }

    fn delete_vm_in(&self, conn: &Connection, name: &str) -> Result<(), StateError> {
        let changed = conn
            .execute("DELETE FROM vms WHERE name = ?1", [name])
            .map_err(|e| self.sql_err(e))?;
        found(changed, name)
    }

    /// Gives the space of deleted rows back to the filesystem once at
    /// least [`RECLAIM_AT`] of the file is free: SQLite only reuses free
    /// pages, so a database that once held a huge config stayed that big
    /// (and every reader paid for it). `VACUUM` rewrites the file, then a
    /// TRUNCATE checkpoint empties the -wal file it went through. This
    /// works on databases of any maqet version (no auto_vacuum mode is
    /// needed, which an existing file could only get through a VACUUM
    /// anyway). Best effort: the change itself is committed already, so a
    /// failure (another writer, a full disk) is logged and left for the
    /// next delete.
    pub fn reclaim(&self) {
        let free = || -> rusqlite::Result<i64> {
            self.conn.query_row(
                "SELECT freelist_count * page_size FROM pragma_freelist_count(), pragma_page_size()",
                [],
                |r| r.get(0),
            )
        };
        match free() {
            Ok(bytes) if bytes >= RECLAIM_AT => {}
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(db = %self.path.display(), error = %e, "cannot read the free space");
                return;
            }
        }
        let done = self.conn.execute_batch("VACUUM").and_then(|()| {
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        });
        if let Err(e) = done {
            tracing::warn!(db = %self.path.display(), error = %e, "could not give the space of deleted definitions back");
        }
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
        self.write(|tx| self.record_created_in(tx, vm, path, kind, identity))
    }

    fn record_created_in(
        &self,
        conn: &Connection,
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
        conn.execute(
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

    /// Records `vm`'s saved state — the row that makes the file trusted —
    /// and the file as created by maqet (so `rm --delete-storage` deletes
    /// it like a disk), in one transaction; replaces an earlier record.
    pub fn record_saved_state(&self, vm: &str, s: &SavedState) -> Result<(), StateError> {
        let text = path_text(&s.path)?;
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO saved_states (vm_name, path, size, saved_at, dev, ino, \
                 btime_ns, run_state, reason, qemu_version, save_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    vm,
                    text,
                    s.size as i64,
                    s.saved_at,
                    s.identity.dev as i64,
                    s.identity.ino as i64,
                    s.identity.btime_ns,
                    s.run_state,
                    s.reason.as_str(),
                    s.qemu_version,
                    s.save_ms as i64,
                ],
            )
            .map_err(|e| {
                if constraint(&e) == Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) {
                    StateError::NotFound(vm.to_owned())
                } else {
                    self.sql_err(e)
                }
            })?;
            self.record_created_in(tx, vm, &s.path, FileKind::SavedState, Some(s.identity))
        })
    }

    /// `vm`'s saved state, if one is recorded (complete by construction;
    /// whether the file is still the recorded one is the caller's check).
    pub fn saved_state(&self, vm: &str) -> Result<Option<SavedState>, StateError> {
        let mut all = self.saved_where(Some(vm))?;
        Ok(all.pop().map(|(_, s)| s))
    }

    /// Every VM's saved state, by VM name (for `ls`: one query).
    pub fn saved_states(&self) -> Result<Vec<(String, SavedState)>, StateError> {
        self.saved_where(None)
    }

    fn saved_where(&self, vm: Option<&str>) -> Result<Vec<(String, SavedState)>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT vm_name, path, size, saved_at, dev, ino, btime_ns, run_state, reason, \
                 qemu_version, save_ms FROM saved_states \
                 WHERE ?1 IS NULL OR vm_name = ?1 ORDER BY vm_name",
            )
            .map_err(|e| self.sql_err(e))?;
        let rows = stmt
            .query_map([vm], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    FileIdentity {
                        dev: r.get::<_, i64>(4)? as u64,
                        ino: r.get::<_, i64>(5)? as u64,
                        btime_ns: r.get(6)?,
                    },
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, String>(9)?,
                    r.get::<_, i64>(10)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.sql_err(e))?;
        rows.into_iter()
            .map(
                |(name, path, size, saved_at, identity, run_state, reason, qemu, ms)| {
                    let reason = reason.parse().map_err(|detail| StateError::Corrupt {
                        path: self.path.clone(),
                        detail: format!("saved state of VM '{name}': {detail}"),
                    })?;
                    let state = SavedState {
                        path: PathBuf::from(path),
                        size: size as u64,
                        saved_at,
                        identity,
                        run_state,
                        reason,
                        qemu_version: qemu,
                        save_ms: ms as u64,
                    };
                    Ok((name, state))
                },
            )
            .collect()
    }

    /// Forgets `vm`'s saved state, so nothing trusts the file any more
    /// (it stays recorded as a created file until it is deleted). The
    /// runner does this before a resumed guest runs: from then on the
    /// disks move on from the state. Forgetting none is not an error.
    pub fn forget_saved_state(&self, vm: &str) -> Result<(), StateError> {
        self.write(|tx| {
            tx.execute("DELETE FROM saved_states WHERE vm_name = ?1", [vm])
                .map_err(|e| self.sql_err(e))?;
            Ok(())
        })
    }

    /// Files recorded for `vm`, in the order they were recorded (delete in reverse, so files
    /// go before the directories holding them).
    pub fn created_files(&self, vm: &str) -> Result<Vec<CreatedFile>, StateError> {
        // One read transaction: the existence check and the listing see the same snapshot.
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.sql_err(e))?;
        self.created_files_in(&tx, vm)
    }

    fn created_files_in(
        &self,
        conn: &Connection,
        vm: &str,
    ) -> Result<Vec<CreatedFile>, StateError> {
        self.require_vm(conn, vm)?;
        let mut stmt = conn
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
        self.write(|tx| self.forget_in(tx, vm, path))
    }

    fn forget_in(&self, conn: &Connection, vm: &str, path: &Path) -> Result<(), StateError> {
        let text = path_text(path)?;
        let changed = conn
            .execute(
                "DELETE FROM created_files WHERE vm_name = ?1 AND path = ?2",
                params![vm, text],
            )
            .map_err(|e| self.sql_err(e))?;
        if changed == 0 {
            self.require_vm(conn, vm)?;
        }
        Ok(())
    }

    /// Takes the database's write lock now (waiting up to the busy
    /// timeout for another writer) and holds it until the returned
    /// transaction is committed or dropped (rolled back). `rm
    /// --delete-storage` takes it before it deletes anything, so a busy
    /// database stops it while nothing is deleted yet.
    pub fn begin_write(&self) -> Result<WriteTx<'_>, StateError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| self.sql_err(e))?;
        Ok(WriteTx { tx, store: self })
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

    /// Runs `f` in one IMMEDIATE transaction and commits it: every write goes through here.
    ///
    /// IMMEDIATE takes the write lock up front, so waiting for another writer goes through
    /// the busy timeout (a deferred transaction that later upgrades its lock gets
    /// SQLITE_BUSY at once in WAL mode). The COMMIT's result is checked: a full disk or an
    /// I/O error fails the command instead of being lost with a dropped statement, and on
    /// any error the transaction rolls back, leaving the previous state intact.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| self.sql_err(e))?;
        let out = f(&tx)?;
        tx.commit().map_err(|e| self.sql_err(e))?;
        Ok(out)
    }

    fn read_vm(&self, conn: &Connection, name: &str) -> Result<VmRecord, StateError> {
        conn.query_row(
            &format!("SELECT {VM_COLUMNS} FROM vms WHERE name = ?1"),
            [name],
            RawVm::from_row,
        )
        .optional()
        .map_err(|e| self.sql_err(e))?
        .ok_or_else(|| StateError::NotFound(name.to_owned()))?
        .into_record(&self.path)
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
        sql_error(&self.conn, &self.path, e)
    }
}

/// A write transaction holding the database's write lock (see
/// [`Store::begin_write`]); dropped without [`WriteTx::commit`], it rolls
/// back.
pub struct WriteTx<'a> {
    tx: Transaction<'a>,
    store: &'a Store,
}

impl WriteTx<'_> {
    /// As [`Store::created_files`], inside the transaction.
    pub fn created_files(&self, vm: &str) -> Result<Vec<CreatedFile>, StateError> {
        self.store.created_files_in(&self.tx, vm)
    }

    /// As [`Store::forget_created_file`], inside the transaction.
    pub fn forget_created_file(&self, vm: &str, path: &Path) -> Result<(), StateError> {
        self.store.forget_in(&self.tx, vm, path)
    }

    /// As [`Store::delete_vm`], inside the transaction.
    pub fn delete_vm(&self, name: &str) -> Result<(), StateError> {
        self.store.delete_vm_in(&self.tx, name)
    }

    /// Commits; its error (a full disk, an I/O error) is the caller's to
    /// report with what was done meanwhile. A definition deleted inside
    /// gives its space back as [`Store::delete_vm`]'s does.
    pub fn commit(self) -> Result<(), StateError> {
        let store = self.store;
        self.tx.commit().map_err(|e| store.sql_err(e))?;
        store.reclaim();
        Ok(())
    }
}

/// Classifies an error of a statement on `conn`, with the OS error of its last failed
/// system call (what tells "no space left" from other I/O errors).
pub(crate) fn sql_error(conn: &Connection, path: &Path, e: rusqlite::Error) -> StateError {
    // SAFETY: the handle is valid while `conn` lives; sqlite3_system_errno only reads it.
    let errno = unsafe { ffi::sqlite3_system_errno(conn.handle()) };
    StateError::sqlite(path, e, Some(errno))
}

/// Creates the database's directory (0700) and file (0600) if missing, and tightens a file
/// others can read.
fn create_private_file(path: &Path) -> Result<(), StateError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| StateError::io(path, parent, e))?;
    }
    // SQLite writes through existing -wal and -shm files even in a read-only directory, so
    // whether a write worked would depend on what an earlier reader left behind. A writer
    // needs the directory anyway (to create those files, and to remove them on close).
    let dir = dir_of(path);
    if !writable(&dir) {
        return Err(StateError::ReadOnly {
            path: path.to_path_buf(),
            reason: format!("the directory {} is not writable", dir.display()),
            dir,
        });
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
        .map_err(|e| StateError::io(path, path, e))?;
    let mode = file
        .metadata()
        .map_err(|e| StateError::io(path, path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(db = %path.display(), mode = format!("{:o}", mode & 0o777), "state database was readable by others; setting mode 0600");
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(|e| StateError::io(path, path, e))?;
    }
    Ok(())
}

/// A read-only connection and the schema version; `immutable` reads the file without
/// locks, -wal or -shm.
fn open_reader(path: &Path, immutable: bool) -> Result<(Connection, i64), StateError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if immutable {
        Connection::open_with_flags(
            format!("file:{}?immutable=1", uri_path(path)),
            flags | OpenFlags::SQLITE_OPEN_URI,
        )
    } else {
        Connection::open_with_flags(path, flags)
    }
    .map_err(|e| StateError::sqlite(path, e, None))?;
    configure(&conn, path, false)?;
    // Opening is lazy: read now, so a missing -shm or -wal shows here and not mid-command.
    let version = schema::check_version(&conn, path)?;
    Ok((conn, version))
}

/// Whether this process may write `path` (permissions and read-only mounts).
fn writable(path: &Path) -> bool {
    maqet_base::access::allowed(path, maqet_base::access::Access::WRITE_OK)
}

/// The directory holding the database.
pub(crate) fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether the -wal file beside `path` exists and is not empty (or cannot be checked).
fn wal_has_data(path: &Path) -> bool {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    match fs::metadata(&wal) {
        Ok(m) => m.len() > 0,
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// `path` percent-encoded for a SQLite URI (every byte but unreserved ones and '/').
pub(crate) fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Per-connection settings, the busy timeout first: every later statement may wait for a
/// lock. WAL lets readers (`maqet ls`) proceed while a writer commits. synchronous=FULL
/// makes each COMMIT fsync the WAL, so an error the kernel reports only at write-back
/// (ENOSPC or EIO on NFS, thin provisioning, a failing disk) fails that COMMIT, instead of
/// surfacing at a later checkpoint or close whose errors nobody sees.
fn configure(conn: &Connection, path: &Path, writable: bool) -> Result<(), StateError> {
    let sql_err = |e| sql_error(conn, path, e);
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
        conn.pragma_update(None, "synchronous", "FULL")
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
    incomplete: Option<String>,
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
            incomplete: r.get(6)?,
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
            incomplete: self.incomplete,
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

/// SQLite stores integers signed.
fn unix_now() -> i64 {
    maqet_base::time::now_unix() as i64
}

#[cfg(test)]
pub(crate) fn open_reader_for_tests(
    path: &Path,
    immutable: bool,
) -> Result<Connection, StateError> {
    open_reader(path, immutable).map(|(conn, _)| conn)
}

#[cfg(test)]
impl Store {
    /// Raw access for tests that need to fake old, new or damaged databases.
    pub(crate) fn conn_for_tests(&self) -> &Connection {
        &self.conn
    }
}
