//! Schema migrations: an ordered list of SQL steps, each keyed by the version it produces.
//!
//! Append new steps; never edit a released one. The version lives in `schema_version`.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::store::sql_error;
use super::StateError;

struct Migration {
    version: i64,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        // STRICT and the CHECKs make SQLite itself reject rows this code could not read back.
        sql: "
        CREATE TABLE vms (
            name       TEXT NOT NULL PRIMARY KEY,
            config     TEXT NOT NULL CHECK (json_valid(config)),
            sources    TEXT NOT NULL CHECK (json_type(sources) = 'array'),
            autostart  INTEGER NOT NULL DEFAULT 0 CHECK (autostart IN (0, 1)),
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE created_files (
            vm_name    TEXT NOT NULL REFERENCES vms(name) ON DELETE CASCADE ON UPDATE CASCADE,
            path       TEXT NOT NULL,
            kind       TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            UNIQUE (vm_name, path)
        ) STRICT;
    ",
    },
    Migration {
        version: 2,
        // The identity of each created file (see `FileIdentity`); NULL for
        // older records, which are then never deleted.
        sql: "
        ALTER TABLE created_files ADD COLUMN dev INTEGER;
        ALTER TABLE created_files ADD COLUMN ino INTEGER;
        ALTER TABLE created_files ADD COLUMN btime_ns INTEGER;
    ",
    },
    Migration {
        version: 3,
        // NULL: a complete definition. Text: what is still being made (a
        // `clone` copying disks); such a VM is never started, and whatever
        // made it being killed leaves it marked (see `VmRecord::incomplete`).
        sql: "
        ALTER TABLE vms ADD COLUMN incomplete TEXT;
    ",
    },
    Migration {
        version: 4,
        // A VM's saved running state (`maqet suspend`, `on_stop: save`):
        // written by the runner only once QEMU reported the migration
        // `completed` and the file was synced, so a row means "complete";
        // the file's identity tells the recorded file from anything found
        // at the path later. At most one per VM; it goes with the VM.
        sql: "
        CREATE TABLE saved_states (
            vm_name      TEXT NOT NULL PRIMARY KEY
                         REFERENCES vms(name) ON DELETE CASCADE ON UPDATE CASCADE,
            path         TEXT NOT NULL,
            size         INTEGER NOT NULL CHECK (size >= 0),
            saved_at     INTEGER NOT NULL,
            dev          INTEGER NOT NULL,
            ino          INTEGER NOT NULL,
            btime_ns     INTEGER,
            run_state    TEXT NOT NULL CHECK (run_state IN ('running', 'paused')),
            reason       TEXT NOT NULL CHECK (reason IN ('suspend', 'stop')),
            qemu_version TEXT NOT NULL,
            save_ms      INTEGER NOT NULL CHECK (save_ms >= 0)
        ) STRICT;
    ",
    },
];

/// The schema version this binary writes and fully understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Reads the schema version: 0 for an empty database (no tables at all).
pub(crate) fn read_version(conn: &Connection, path: &Path) -> Result<i64, StateError> {
    let sql_err = |e| sql_error(conn, path, e);
    // One statement, so one snapshot: as two, a migration committed by another process in
    // between made a fresh database look like someone else's ("tables, but no
    // schema_version").
    let (has_version_table, tables): (bool, i64) = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master \
             WHERE type = 'table' AND name = 'schema_version'), \
             (SELECT count(*) FROM sqlite_master)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sql_err)?;
    if !has_version_table {
        // Refuse to add our tables to someone else's database.
        if tables > 0 {
            return Err(StateError::Corrupt {
                path: path.to_path_buf(),
                detail: "it is a SQLite database, but not maqet's (no schema_version table)".into(),
            });
        }
        return Ok(0);
    }
    let version: Option<i64> = conn
        .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .optional()
        .map_err(sql_err)?
        .flatten();
    Ok(version.unwrap_or(0))
}

fn check_not_newer(version: i64, path: &Path) -> Result<(), StateError> {
    if version > SCHEMA_VERSION {
        return Err(StateError::SchemaTooNew {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Fails with `SchemaTooNew` if the database is newer than this binary; returns the version.
pub(crate) fn check_version(conn: &Connection, path: &Path) -> Result<i64, StateError> {
    let version = read_version(conn, path)?;
    check_not_newer(version, path)?;
    Ok(version)
}

/// Brings the database to `SCHEMA_VERSION`. Safe to call concurrently from several processes:
/// the steps run in one IMMEDIATE transaction (taking the write lock up front) and the version
/// is re-read inside it, so only the first caller applies them.
pub(crate) fn migrate(conn: &Connection, path: &Path) -> Result<(), StateError> {
    // Fast path without the write lock: every CLI invocation opens the store.
    if check_version(conn, path)? == SCHEMA_VERSION {
        return Ok(());
    }
    let sql_err = |e| sql_error(conn, path, e);
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(sql_err)?;
    let current = check_version(&tx, path)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(sql_err)?;
    for step in MIGRATIONS.iter().filter(|m| m.version > current) {
        tracing::info!(db = %path.display(), version = step.version, "migrating state database");
        tx.execute_batch(step.sql).map_err(sql_err)?;
    }
    tx.execute("DELETE FROM schema_version", [])
        .map_err(sql_err)?;
    tx.execute(
        "INSERT INTO schema_version (version) VALUES (?1)",
        [SCHEMA_VERSION],
    )
    .map_err(sql_err)?;
    tx.commit().map_err(sql_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_versions_increase_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "migration list must be 1, 2, 3, …");
        }
    }
}
