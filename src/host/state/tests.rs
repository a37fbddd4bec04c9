//! Store tests against real database files in temporary directories.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

fn db_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("nested/state/maqet.db")
}

fn new_vm(name: &str) -> NewVm {
    NewVm {
        name: name.into(),
        config: json!({"zeta": 1, "alpha": {"memory": "1G", "cpu": 2}, "mid": [1, 2]}),
        sources: vec![PathBuf::from(format!("/etc/maqet/{name}.yaml"))],
        autostart: false,
    }
}

#[test]
fn open_creates_private_dirs_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.path(), path);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&dir.path().join("nested")), 0o700);
    let journal: String = store
        .conn_for_tests()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
}

#[test]
fn open_tightens_a_world_readable_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maqet.db");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    Store::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn crud_round_trip_preserves_json_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir)).unwrap();

    let vm = new_vm("web");
    let inserted = store.insert_vm(&vm).unwrap();
    assert_eq!(inserted.name, "web");
    assert_eq!(inserted.config, vm.config);
    assert_eq!(inserted.sources, vm.sources);
    assert!(!inserted.autostart);
    assert_eq!(inserted.created_at, inserted.updated_at);

    let got = store.get_vm("web").unwrap();
    assert_eq!(got, inserted);
    // Key order survives the round trip (serde_json preserve_order + text storage).
    assert_eq!(
        got.config.to_string(),
        r#"{"zeta":1,"alpha":{"memory":"1G","cpu":2},"mid":[1,2]}"#
    );

    let new_config = json!({"b": 2, "a": 1});
    let sources = vec![PathBuf::from("/a.yaml"), PathBuf::from("/b.yaml")];
    let updated = store
        .update_config("web", &new_config, &sources, None)
        .unwrap();
    assert_eq!(updated.config.to_string(), r#"{"b":2,"a":1}"#);
    assert_eq!(updated.sources, sources);
    assert_eq!(updated.created_at, inserted.created_at);
    assert!(updated.updated_at >= inserted.updated_at);

    store.set_autostart("web", true).unwrap();
    assert!(store.get_vm("web").unwrap().autostart);
    store.set_autostart("web", false).unwrap();
    assert!(!store.get_vm("web").unwrap().autostart);

    store.delete_vm("web").unwrap();
    assert!(matches!(store.get_vm("web"), Err(StateError::NotFound(n)) if n == "web"));
    assert!(store.list_vms().unwrap().is_empty());
}

#[test]
fn list_is_ordered_by_creation_then_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir)).unwrap();
    for name in ["c", "a", "b"] {
        store.insert_vm(&new_vm(name)).unwrap();
    }
    // Force distinct creation times: "c" oldest, then "a" and "b" tied.
    store
        .conn_for_tests()
        .execute_batch(
            "UPDATE vms SET created_at = 100 WHERE name = 'c';
             UPDATE vms SET created_at = 200 WHERE name IN ('a', 'b');",
        )
        .unwrap();
    let names: Vec<_> = store
        .list_vms()
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, ["c", "a", "b"]);
}

#[test]
fn duplicate_insert_is_exists() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir)).unwrap();
    store.insert_vm(&new_vm("dup")).unwrap();
    let err = store.insert_vm(&new_vm("dup")).unwrap_err();
    assert!(
        matches!(&err, StateError::Exists(n) if n == "dup"),
        "{err:?}"
    );
    assert!(err.to_string().contains("'dup' is already defined"));
}

#[test]
fn missing_vm_is_not_found_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir)).unwrap();
    let nf = |r: Result<(), StateError>| matches!(r, Err(StateError::NotFound(n)) if n == "ghost");
    assert!(nf(store.get_vm("ghost").map(drop)));
    assert!(nf(store
        .update_config("ghost", &json!({}), &[], None)
        .map(drop)));
    assert!(nf(store.set_autostart("ghost", true)));
    assert!(nf(store.delete_vm("ghost")));
    assert!(nf(store.record_created_file(
        "ghost",
        Path::new("/d.qcow2"),
        FileKind::Disk,
        None
    )));
    assert!(nf(store.created_files("ghost").map(drop)));
    assert!(nf(store.forget_created_file("ghost", Path::new("/d.qcow2"))));
}

#[test]
fn created_files_are_idempotent_and_ordered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir)).unwrap();
    store.insert_vm(&new_vm("vm")).unwrap();
    let d = Path::new("/data/disks/vm");
    let disk = Path::new("/data/disks/vm/root.qcow2");
    store
        .record_created_file("vm", d, FileKind::Directory, None)
        .unwrap();
    store
        .record_created_file("vm", disk, FileKind::Other, None)
        .unwrap();
    // Recording again is harmless and may correct the kind.
    let id = FileIdentity {
        dev: u64::MAX - 1, // bigger than i64::MAX: stored bit for bit
        ino: 42,
        btime_ns: Some(1_700_000_000_123_456_789),
    };
    store
        .record_created_file("vm", disk, FileKind::Disk, Some(id))
        .unwrap();
    let files = store.created_files("vm").unwrap();
    assert_eq!(files[0].identity, None);
    assert_eq!(files[1].identity, Some(id));
    assert_eq!(files.len(), 2);
    assert_eq!(
        (files[0].path.as_path(), files[0].kind),
        (d, FileKind::Directory)
    );
    assert_eq!(
        (files[1].path.as_path(), files[1].kind),
        (disk, FileKind::Disk)
    );

    store.forget_created_file("vm", disk).unwrap();
    store.forget_created_file("vm", disk).unwrap(); // already gone: fine
    assert_eq!(store.created_files("vm").unwrap().len(), 1);
}

#[test]
fn relative_and_non_utf8_paths_are_refused() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir)).unwrap();
    store.insert_vm(&new_vm("vm")).unwrap();
    let err = store
        .record_created_file("vm", Path::new("disk.qcow2"), FileKind::Disk, None)
        .unwrap_err();
    assert!(matches!(err, StateError::InvalidPath { .. }), "{err:?}");
    let bad = Path::new(std::ffi::OsStr::from_bytes(b"/tmp/\xff.yaml"));
    let mut vm = new_vm("other");
    vm.sources = vec![bad.to_path_buf()];
    assert!(matches!(
        store.insert_vm(&vm),
        Err(StateError::InvalidPath { .. })
    ));
}

#[test]
fn delete_cascades_to_created_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir)).unwrap();
    store.insert_vm(&new_vm("vm")).unwrap();
    store
        .record_created_file("vm", Path::new("/x.qcow2"), FileKind::Disk, None)
        .unwrap();
    store.delete_vm("vm").unwrap();
    let left: i64 = store
        .conn_for_tests()
        .query_row("SELECT count(*) FROM created_files", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    // Re-adding the name starts with no stale file records.
    store.insert_vm(&new_vm("vm")).unwrap();
    assert!(store.created_files("vm").unwrap().is_empty());
    assert!(store.integrity_check().unwrap().is_empty());
}

#[test]
fn migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    Store::open(&path)
        .unwrap()
        .insert_vm(&new_vm("kept"))
        .unwrap();
    let store = Store::open(&path).unwrap();
    assert_eq!(store.get_vm("kept").unwrap().name, "kept");
    let rows: Vec<i64> = store
        .conn_for_tests()
        .prepare("SELECT version FROM schema_version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, [SCHEMA_VERSION]);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = Store::open(&path).unwrap();
    store
        .conn_for_tests()
        .execute(
            "UPDATE schema_version SET version = ?1",
            [SCHEMA_VERSION + 1],
        )
        .unwrap();
    drop(store);
    for err in [
        Store::open(&path).unwrap_err(),
        Store::open_read_only(&path).unwrap_err(),
    ] {
        assert!(
            matches!(err, StateError::SchemaTooNew { found, supported, .. }
                if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("upgrade maqet"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
}

#[test]
fn foreign_sqlite_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
}

#[test]
fn garbage_file_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maqet.db");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("maqet.db"), "{err}");
}

#[test]
fn read_only_open_never_creates_and_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    assert!(Store::open_read_only(&path).unwrap().is_none());
    assert!(!dir.path().join("nested").exists());

    Store::open(&path)
        .unwrap()
        .insert_vm(&new_vm("vm"))
        .unwrap();
    // The writer closed: WAL files are gone and the reader must cope with that.
    let ro = Store::open_read_only(&path).unwrap().unwrap();
    assert_eq!(ro.list_vms().unwrap().len(), 1);
    let err = ro.insert_vm(&new_vm("nope")).unwrap_err();
    assert!(matches!(err, StateError::ReadOnly { .. }), "{err:?}");
}

#[test]
fn read_only_open_migrates_an_old_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maqet.db");
    std::fs::write(&path, b"").unwrap(); // an empty file is schema version 0
    let ro = Store::open_read_only(&path).unwrap().unwrap();
    assert!(ro.list_vms().unwrap().is_empty());
}

#[test]
fn concurrent_stores_on_one_file_both_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    // Two stores open at once, interleaving writes.
    let a = Store::open(&path).unwrap();
    let b = Store::open(&path).unwrap();
    a.insert_vm(&new_vm("from-a")).unwrap();
    b.insert_vm(&new_vm("from-b")).unwrap();
    b.set_autostart("from-a", true).unwrap();
    assert!(a.get_vm("from-a").unwrap().autostart);
    assert_eq!(a.list_vms().unwrap().len(), 2);
    drop((a, b));

    // Several threads opening (and racing the migration on a fresh file) and writing.
    let fresh = dir.path().join("race/maqet.db");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let fresh = fresh.clone();
            std::thread::spawn(move || {
                let store = Store::open(&fresh).unwrap();
                for i in 0..25 {
                    let name = format!("t{t}-{i}");
                    store.insert_vm(&new_vm(&name)).unwrap();
                    store
                        .record_created_file(&name, Path::new("/d"), FileKind::Disk, None)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let store = Store::open(&fresh).unwrap();
    assert_eq!(store.list_vms().unwrap().len(), 100);
    assert!(store.integrity_check().unwrap().is_empty());
}

#[test]
fn corrupt_row_is_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir)).unwrap();
    store.insert_vm(&new_vm("vm")).unwrap();
    // Sources must be paths (strings); numbers pass the CHECK but not decoding.
    store
        .conn_for_tests()
        .execute("UPDATE vms SET sources = '[1]'", [])
        .unwrap();
    let err = store.get_vm("vm").unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("VM 'vm'"), "{err}");
}

#[test]
fn file_kind_names_round_trip() {
    for kind in [
        FileKind::Disk,
        FileKind::EfiVars,
        FileKind::Directory,
        FileKind::Other,
    ] {
        assert_eq!(kind.as_str().parse::<FileKind>(), Ok(kind));
        assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
    }
    assert!("floppy".parse::<FileKind>().is_err());
}

#[test]
fn records_from_schema_1_have_no_identity() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    {
        // A database as the first release wrote it.
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (1);
             CREATE TABLE vms (name TEXT NOT NULL PRIMARY KEY, config TEXT NOT NULL,
                 sources TEXT NOT NULL, autostart INTEGER NOT NULL DEFAULT 0,
                 created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL) STRICT;
             CREATE TABLE created_files (
                 vm_name TEXT NOT NULL REFERENCES vms(name) ON DELETE CASCADE ON UPDATE CASCADE,
                 path TEXT NOT NULL, kind TEXT NOT NULL, created_at INTEGER NOT NULL,
                 UNIQUE (vm_name, path)) STRICT;
             INSERT INTO vms VALUES ('vm', '{}', '[]', 0, 1, 1);
             INSERT INTO created_files VALUES ('vm', '/old.qcow2', 'disk', 1);",
        )
        .unwrap();
    }
    let store = Store::open(&db).unwrap();
    let files = store.created_files("vm").unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path, Path::new("/old.qcow2"));
    assert_eq!(files[0].identity, None);
}

// ---- error mapping: which failure gets which remedy

fn sqlite_failure(code: i32, msg: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some(msg.into()))
}

#[test]
fn full_disk_is_no_space_naming_the_data_directory() {
    let db = Path::new("/srv/maqet/maqet.db");
    let full = sqlite_failure(rusqlite::ffi::SQLITE_FULL, "database or disk is full");
    let err = StateError::sqlite(db, full, None);
    assert!(
        matches!(&err, StateError::NoSpace { dir, .. } if dir == Path::new("/srv/maqet")),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("no space left on device"), "{text}");
    assert!(text.contains("/srv/maqet/maqet.db"), "{text}");
    assert!(text.contains("df /srv/maqet"), "{text}");

    // SQLite reports a failed -shm or WAL write as a generic I/O error; the OS error tells.
    for errno in [libc::ENOSPC, libc::EDQUOT] {
        let io = sqlite_failure(rusqlite::ffi::SQLITE_IOERR_SHMSIZE, "disk I/O error");
        let err = StateError::sqlite(db, io, Some(errno));
        assert!(
            matches!(err, StateError::NoSpace { .. }),
            "{errno}: {err:?}"
        );
    }
    let err = StateError::io(
        db,
        Path::new("/srv/maqet"),
        std::io::Error::from_raw_os_error(libc::ENOSPC),
    );
    assert!(matches!(err, StateError::NoSpace { .. }), "{err:?}");
}

#[test]
fn unwritable_file_or_directory_is_read_only() {
    let db = Path::new("/srv/maqet/maqet.db");
    let ro = sqlite_failure(
        rusqlite::ffi::SQLITE_READONLY,
        "attempt to write a readonly database",
    );
    assert!(matches!(
        StateError::sqlite(db, ro, None),
        StateError::ReadOnly { .. }
    ));
    for errno in [libc::EACCES, libc::EPERM, libc::EROFS] {
        let cant = sqlite_failure(
            rusqlite::ffi::SQLITE_CANTOPEN,
            "unable to open database file",
        );
        let err = StateError::sqlite(db, cant, Some(errno));
        assert!(
            matches!(err, StateError::ReadOnly { .. }),
            "{errno}: {err:?}"
        );
        assert!(err.to_string().contains("`maqet ls` still work"), "{err}");
        let err = StateError::io(db, db, std::io::Error::from_raw_os_error(errno));
        assert!(
            matches!(err, StateError::ReadOnly { .. }),
            "{errno}: {err:?}"
        );
    }
}

#[test]
fn other_failures_keep_their_own_kind() {
    let db = Path::new("/srv/maqet/maqet.db");
    let busy = sqlite_failure(rusqlite::ffi::SQLITE_BUSY, "database is locked");
    let err = StateError::sqlite(db, busy, Some(libc::ENOSPC));
    assert!(matches!(err, StateError::Busy { .. }), "{err:?}");
    assert!(err.to_string().contains("another process"), "{err}");

    let eio = sqlite_failure(rusqlite::ffi::SQLITE_IOERR_WRITE, "disk I/O error");
    let err = StateError::sqlite(db, eio, Some(libc::EIO));
    assert!(matches!(err, StateError::DiskIo { .. }), "{err:?}");
    assert!(err.to_string().contains("Input/output error"), "{err}");

    // A stale errno must not turn a constraint error into "no space".
    let pk = sqlite_failure(rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY, "UNIQUE");
    let err = StateError::sqlite(db, pk, Some(libc::ENOSPC));
    assert!(matches!(err, StateError::Sqlite { .. }), "{err:?}");

    let err = StateError::io(db, db, std::io::Error::from_raw_os_error(libc::ENOENT));
    assert!(matches!(err, StateError::Io { .. }), "{err:?}");
}

/// A database that cannot grow (max_page_count stands in for a full disk): every write
/// fails with `NoSpace` and leaves the previous state as it was.
#[test]
fn failed_writes_leave_the_previous_state_intact() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir)).unwrap();
    store.insert_vm(&new_vm("old")).unwrap();
    let before = store.get_vm("old").unwrap();
    let pages: i64 = store
        .conn_for_tests()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    store
        .conn_for_tests()
        .execute_batch(&format!("PRAGMA max_page_count = {pages}"))
        .unwrap();
    let big = json!({ "blob": "x".repeat(64 * 1024) });

    let mut vm = new_vm("new");
    vm.config = big.clone();
    let err = store.insert_vm(&vm).unwrap_err();
    assert!(matches!(err, StateError::NoSpace { .. }), "{err:?}");
    let err = store
        .update_config("old", &big, &[], Some(true))
        .unwrap_err();
    assert!(matches!(err, StateError::NoSpace { .. }), "{err:?}");

    let names: Vec<_> = store
        .list_vms()
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, ["old"]);
    let after = store.get_vm("old").unwrap();
    assert_eq!(
        (after.config, after.autostart),
        (before.config, before.autostart)
    );
}

#[test]
fn apply_updates_config_and_autostart_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir)).unwrap();
    store.insert_vm(&new_vm("vm")).unwrap();
    let rec = store
        .update_config("vm", &json!({"memory": "2G"}), &[], Some(true))
        .unwrap();
    assert!(rec.autostart);
    assert_eq!(rec.config, json!({"memory": "2G"}));
    assert!(store.get_vm("vm").unwrap().autostart);
    // None keeps the flag (set by `maqet enable`, say) as it is.
    let rec = store
        .update_config("vm", &json!({"memory": "4G"}), &[], None)
        .unwrap();
    assert!(rec.autostart);
    assert_eq!(rec.config, json!({"memory": "4G"}));
}

/// Many connections creating one fresh database and adding the same name: one wins, every
/// other gets `Exists` (never `Busy` from the racing setup).
#[test]
fn racing_adds_on_a_fresh_database_get_exists() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("r{round}/maqet.db"));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    Store::open(&path)?.insert_vm(&new_vm("same")).map(drop)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(()) | Err(StateError::Exists(_)))),
            "{results:?}"
        );
        assert_eq!(Store::open(&path).unwrap().list_vms().unwrap().len(), 1);
    }
}

#[test]
fn uri_paths_are_percent_encoded() {
    assert_eq!(
        super::store::uri_path(Path::new("/a b/x?y#z%/maqet.db")),
        "/a%20b/x%3Fy%23z%25/maqet.db"
    );
}

/// A reader of a database it cannot write (here: a -wal-less file opened as immutable)
/// sees the data and creates no -wal or -shm file beside it.
#[test]
fn immutable_reader_sees_data_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    Store::open(&path)
        .unwrap()
        .insert_vm(&new_vm("vm"))
        .unwrap();
    let conn = super::store::open_reader_for_tests(&path, true).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM vms", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    let side: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(side, [std::ffi::OsString::from("maqet.db")]);
}

/// A huge definition removed (or replaced by a small one) gives its space
/// back: the file and its -wal shrink instead of staying at their peak.
#[test]
fn space_of_deleted_definitions_is_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = Store::open(&path).unwrap();
    store.insert_vm(&new_vm("small")).unwrap();
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let on_disk = || size(&path) + size(&path.with_extension("db-wal"));
    let baseline = on_disk();
    let big = |name: &str| NewVm {
        config: json!({"args": ["x".repeat(8 << 20)]}),
        ..new_vm(name)
    };
    store.insert_vm(&big("huge")).unwrap();
    store
        .conn_for_tests()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    assert!(size(&path) > 8 << 20, "{}", size(&path));
    store.delete_vm("huge").unwrap();
    assert!(
        on_disk() < baseline + (1 << 20),
        "{} bytes left after rm (baseline {baseline})",
        on_disk()
    );
    // apply replacing a huge config with a small one: the same.
    store.insert_vm(&big("again")).unwrap();
    store
        .update_config("again", &json!({"memory": "1G"}), &[], None)
        .unwrap();
    assert!(on_disk() < baseline + (1 << 20), "{}", on_disk());
    assert_eq!(store.list_vms().unwrap().len(), 2);
    assert!(store.integrity_check().unwrap().is_empty());
}

#[test]
fn an_incomplete_vm_stays_marked_until_completed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir)).unwrap();
    store.insert_vm(&new_vm("web")).unwrap();
    assert_eq!(store.get_vm("web").unwrap().incomplete, None);
    let rec = store
        .insert_incomplete_vm(&new_vm("copy"), "a clone being copied")
        .unwrap();
    assert_eq!(rec.incomplete.as_deref(), Some("a clone being copied"));
    // Seen by every reader, as another process after a kill would.
    drop(store);
    let reader = Store::open_read_only(&db_in(&dir)).unwrap().unwrap();
    assert_eq!(
        reader.get_vm("copy").unwrap().incomplete.as_deref(),
        Some("a clone being copied")
    );
    let json = serde_json::to_value(reader.get_vm("web").unwrap()).unwrap();
    assert!(json.get("incomplete").is_none(), "{json}");
    let store = Store::open(&db_in(&dir)).unwrap();
    store.mark_complete("copy").unwrap();
    assert_eq!(store.get_vm("copy").unwrap().incomplete, None);
    assert!(matches!(
        store.mark_complete("nope"),
        Err(StateError::NotFound(_))
    ));
}

#[test]
fn a_write_transaction_holds_the_lock_and_rolls_back_unless_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = Store::open(&path).unwrap();
    store.insert_vm(&new_vm("web")).unwrap();
    let f = Path::new("/d/web.qcow2");
    store
        .record_created_file("web", f, FileKind::Disk, None)
        .unwrap();
    let tx = store.begin_write().unwrap();
    tx.forget_created_file("web", f).unwrap();
    assert!(tx.created_files("web").unwrap().is_empty());
    // Another writer waits out the busy timeout and is refused meanwhile.
    let other = Store::open(&path).unwrap();
    assert!(matches!(
        other.set_autostart("web", true),
        Err(StateError::Busy { .. })
    ));
    drop(tx);
    assert_eq!(store.created_files("web").unwrap().len(), 1, "rolled back");
    let tx = store.begin_write().unwrap();
    tx.forget_created_file("web", f).unwrap();
    tx.delete_vm("web").unwrap();
    tx.commit().unwrap();
    assert!(matches!(store.get_vm("web"), Err(StateError::NotFound(_))));
}

fn saved(path: &str) -> SavedState {
    SavedState {
        path: PathBuf::from(path),
        size: 123_456,
        saved_at: 1_700_000_000,
        identity: FileIdentity {
            dev: u64::MAX - 3,
            ino: 77,
            btime_ns: None,
        },
        run_state: "running".into(),
        reason: SaveReason::Stop,
        qemu_version: "7.2.22".into(),
        save_ms: 420,
    }
}

#[test]
fn a_saved_state_is_recorded_with_its_file_and_goes_with_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir)).unwrap();
    store.insert_vm(&new_vm("vm")).unwrap();
    store.insert_vm(&new_vm("other")).unwrap();
    assert_eq!(store.saved_state("vm").unwrap(), None);
    let s = saved("/data/disks/vm/state.sav");
    store.record_saved_state("vm", &s).unwrap();
    assert_eq!(store.saved_state("vm").unwrap(), Some(s.clone()));
    assert_eq!(store.saved_state("other").unwrap(), None);
    // The file is one maqet created: `rm --delete-storage` deletes it.
    let files = store.created_files("vm").unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(
        (files[0].path.as_path(), files[0].kind, files[0].identity),
        (s.path.as_path(), FileKind::SavedState, Some(s.identity))
    );
    // A new save replaces the record (one state per VM).
    let mut again = s.clone();
    again.identity.ino = 78;
    again.reason = SaveReason::Suspend;
    store.record_saved_state("vm", &again).unwrap();
    assert_eq!(
        store.saved_states().unwrap(),
        [("vm".to_string(), again.clone())]
    );
    assert_eq!(
        store.created_files("vm").unwrap()[0].identity,
        Some(again.identity)
    );
    // Forgetting the state keeps the file recorded (it is still to be deleted).
    store.forget_saved_state("vm").unwrap();
    store.forget_saved_state("vm").unwrap();
    assert_eq!(store.saved_state("vm").unwrap(), None);
    assert_eq!(store.created_files("vm").unwrap().len(), 1);
    // No state for a VM that does not exist; one of a removed VM goes with it.
    assert!(matches!(
        store.record_saved_state("ghost", &s),
        Err(StateError::NotFound(_))
    ));
    store
        .record_saved_state("other", &saved("/data/disks/other/state.sav"))
        .unwrap();
    store.delete_vm("other").unwrap();
    assert!(store.saved_states().unwrap().is_empty());
}
