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
    let updated = store.update_config("web", &new_config, &sources, false).unwrap();
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
    assert!(nf(store.update_config("ghost", &json!({}), &[], false).map(drop)));
    assert!(nf(store.set_autostart("ghost", true)));
    assert!(nf(store.delete_vm("ghost")));
    assert!(nf(store.record_created_file(
        "ghost",
        Path::new("/d.qcow2"),
        FileKind::Disk
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
        .record_created_file("vm", d, FileKind::Directory)
        .unwrap();
    store
        .record_created_file("vm", disk, FileKind::Other)
        .unwrap();
    // Recording again is harmless and may correct the kind.
    store
        .record_created_file("vm", disk, FileKind::Disk)
        .unwrap();
    let files = store.created_files("vm").unwrap();
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
        .record_created_file("vm", Path::new("disk.qcow2"), FileKind::Disk)
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
        .record_created_file("vm", Path::new("/x.qcow2"), FileKind::Disk)
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
                        .record_created_file(&name, Path::new("/d"), FileKind::Disk)
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
