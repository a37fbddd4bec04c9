//! Making a VM's storage exist before QEMU starts, and removing what maqet
//! made when the VM goes.
//!
//! - A qcow2/raw entry whose image is missing is created with qemu-img
//!   (mode 0600; qcow2 overlays get their backing file), under a temporary
//!   name in the target directory and then linked into place without
//!   replacing anything, so two concurrent starts never both "create" it.
//! - A missing virtfs directory is created; shares are checked for access.
//! - Everything created is recorded in the DB (`created_files`) with its
//!   identity (device, inode, birth time), so `rm --delete-storage` removes
//!   exactly that, only while it is still that file and unused, and a
//!   failed start can undo exactly what it did (docs/storage.md).

use maqet_base::access::{allowed, Access};
use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::identity::{stat_path, FileIdentity};
use super::qemu_img::QemuImg;
use super::refs::References;
use super::remove::{remove_if_same, Removal};
use super::tmp::{self, TempFile};
use super::StorageError;
use crate::state::{FileKind, Store, WriteTx};
use maqet_config::{StorageEntry, VmConfig};

/// Something this run created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// Canonical at creation (see `remove`: deletion walks it without
    /// following symlinks).
    pub path: PathBuf,
    pub kind: FileKind,
    /// For messages: `qcow2, 2.0G`, `qcow2 overlay on base.qcow2`, `directory`.
    pub what: String,
    pub identity: FileIdentity,
}

/// What [`provision`] created, in creation order.
#[derive(Debug, Default)]
pub struct Provisioned {
    pub created: Vec<Created>,
}

/// What undoing a start did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Undone {
    pub removed: Vec<PathBuf>,
    /// Files left in place, with the reason (e.g. a running VM uses it).
    pub kept: Vec<(PathBuf, String)>,
    /// Errors, one line each.
    pub problems: Vec<String>,
}

impl Provisioned {
    /// Deletes what was created (newest first) unless it changed or `refs`
    /// names a user, and forgets every record: whatever stays is no longer
    /// this VM's creation. An undo must not hide the error that caused it,
    /// so problems are returned, not raised.
    pub fn undo(self, vm: &str, store: &Store, refs: &References) -> Undone {
        let mut out = Undone::default();
        for c in self.created.into_iter().rev() {
            match remove_if_same(&c.path, c.kind, Some(&c.identity), &|id| refs.user_of(id)) {
                Removal::Deleted => out.removed.push(c.path.clone()),
                Removal::AlreadyGone => {}
                Removal::KeptNotEmpty => out
                    .kept
                    .push((c.path.clone(), "directory holds other files".into())),
                Removal::KeptInUse(why) | Removal::KeptUnproven(why) => {
                    out.kept.push((c.path.clone(), why))
                }
                Removal::Failed(e) => out
                    .problems
                    .push(format!("cannot remove {}: {e}", c.path.display())),
            }
            if let Err(e) = store.forget_created_file(vm, &c.path) {
                out.problems.push(e.to_string());
            }
        }
        out
    }
}

/// Creates what the VM's storage needs and records it for `vm` (which must
/// exist in `store`), adding each creation to `done`. On error, `done`
/// holds what was created so far: the caller undoes it (with the
/// references it can see).
pub fn provision(
    vm: &str,
    cfg: &VmConfig,
    disk_dir: &Path,
    store: &Store,
    done: &mut Provisioned,
) -> Result<(), StorageError> {
    let mut img: Option<QemuImg> = None;
    for e in cfg.storage() {
        let path = e.path(disk_dir);
        if let Some(fs) = &e.virtfs {
            if !path.exists() {
                make_dirs(vm, &path, store, done, 0o755)?;
            }
            check_share(e, &path, fs.readonly)?;
            continue;
        }
        let Some(format) = e.format() else { continue };
        if path.exists() || path.is_symlink() {
            continue;
        }
        let parent = path.parent().unwrap_or(Path::new("/"));
        if !parent.exists() {
            if parent.starts_with(disk_dir) {
                ensure_private_dir(vm, disk_dir, parent, store, done)?;
            } else {
                make_dirs(vm, parent, store, done, 0o755)?;
            }
        }
        if img.is_none() {
            img = Some(QemuImg::find(Some(&cfg.binary))?);
        }
        let img = img.as_ref().expect("just set");
        let backing = e.backing_file.as_deref().map(|b| {
            (
                b,
                e.backing_format.unwrap_or(maqet_config::ImageFormat::Qcow2),
            )
        });
        let path = canonical_parent(&path);
        if let Some(identity) = create_image(img, &path, format, e.size, backing)? {
            let what = match (backing, &e.size_text) {
                (Some((b, _)), _) => format!("{} overlay on {}", format.as_str(), b.display()),
                (None, Some(s)) => format!("{}, {s}", format.as_str()),
                (None, None) => format.as_str().to_string(),
            };
            // Listed before it is recorded: if recording fails (full disk, lock timeout),
            // the undo still removes the file instead of leaving it unrecorded.
            done.created.push(Created {
                path: path.clone(),
                kind: FileKind::Disk,
                what,
                identity,
            });
            store.record_created_file(vm, &path, FileKind::Disk, Some(identity))?;
        }
    }
    Ok(())
}

/// Creates `dir` (inside the VM's own `disk_dir`) private (0700), and
/// missing parents, recording each; DATA_DIR/disks is shared by all VMs:
/// made, never recorded.
pub fn ensure_private_dir(
    vm: &str,
    disk_dir: &Path,
    dir: &Path,
    store: &Store,
    done: &mut Provisioned,
) -> Result<(), StorageError> {
    if dir.exists() {
        return Ok(());
    }
    if let Some(all) = disk_dir.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(all)
            .map_err(|e| StorageError::io(all, e))?;
    }
    make_dirs(vm, dir, store, done, 0o700)
}

/// Creates `dir` and missing parents; records each one created.
fn make_dirs(
    vm: &str,
    dir: &Path,
    store: &Store,
    done: &mut Provisioned,
    mode: u32,
) -> Result<(), StorageError> {
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.exists() {
        missing.push(cur.to_path_buf());
        match cur.parent() {
            Some(p) => cur = p,
            None => break,
        }
    }
    for d in missing.into_iter().rev() {
        match DirBuilder::new().mode(mode).create(&d) {
            Ok(()) => {
                let d = canonical_parent(&d);
                let identity = stat_path(&d).map_err(|e| StorageError::io(&d, e))?.identity;
                // Listed first, so a failed record still gets it undone.
                done.created.push(Created {
                    path: d.clone(),
                    kind: FileKind::Directory,
                    what: "directory".into(),
                    identity,
                });
                store.record_created_file(vm, &d, FileKind::Directory, Some(identity))?;
            }
            // Someone else made it meanwhile: not ours.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StorageError::io(d, e)),
        }
    }
    Ok(())
}

/// A 9p share must be a directory QEMU can read (and write unless
/// read-only), or the guest fails in confusing ways later.
fn check_share(e: &StorageEntry, path: &Path, readonly: bool) -> Result<(), StorageError> {
    let bad = |msg: String| {
        StorageError::io(
            path,
            std::io::Error::other(format!("storage '{}' (virtfs): {msg}", e.name)),
        )
    };
    let meta = fs::metadata(path).map_err(|err| StorageError::io(path, err))?;
    if !meta.is_dir() {
        return Err(bad("not a directory".into()));
    }
    if !allowed(path, Access::READ_OK | Access::EXEC_OK) {
        return Err(bad("not readable by you".into()));
    }
    if !readonly && !allowed(path, Access::WRITE_OK) {
        return Err(bad(
            "not writable by you (set options: {readonly: true} to share it read-only)".into(),
        ));
    }
    Ok(())
}

/// `path` with its directory resolved (symlinks and `..`), the file name
/// kept: how a created file is recorded, so that deleting it later can
/// walk that exact directory chain without following anything.
pub fn canonical_parent(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// Creates the image at `path` unless it appears meanwhile; the created
/// file's identity when this call created it. qemu-img writes a temporary
/// file (storage/tmp.rs) that is linked into place only when complete, so a
/// killed run never leaves a torn image under the real name; what such a
/// run left for this path is removed first.
fn create_image(
    img: &QemuImg,
    path: &Path,
    format: maqet_config::ImageFormat,
    size: Option<u64>,
    backing: Option<(&Path, maqet_config::ImageFormat)>,
) -> Result<Option<FileIdentity>, StorageError> {
    for left in tmp::leftovers_for(path) {
        tmp::remove_leftover(&left.path);
    }
    // Made 0600 before qemu-img writes into it; qemu-img keeps the mode
    // (and the inode) of an existing file.
    let t = TempFile::create(path).map_err(|e| StorageError::io(path, e))?;
    img.create(t.path(), format, size, backing)?;
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o600))
        .map_err(|e| StorageError::io(t.path(), e))?;
    // The identity is taken before the link: the linked name is the same
    // inode, and nobody else can have touched it yet.
    let identity = t.identity().map_err(|e| StorageError::io(t.path(), e))?;
    match t.link() {
        Ok(true) => Ok(Some(identity)),
        Ok(false) => Ok(None),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Deletes the files recorded as created for `vm`, newest first, each only
/// if it is still the file maqet made and `in_use` names no user of it.
/// Records are forgotten, inside the caller's transaction (which holds the
/// database's write lock from before the first deletion), for what is gone.
pub fn delete_created(
    vm: &str,
    tx: &WriteTx,
    in_use: &dyn Fn(&FileIdentity) -> Option<String>,
) -> Result<Vec<(PathBuf, FileKind, Removal)>, StorageError> {
    let mut out = Vec::new();
    for f in tx.created_files(vm)?.into_iter().rev() {
        let outcome = remove_if_same(&f.path, f.kind, f.identity.as_ref(), in_use);
        if matches!(outcome, Removal::Deleted | Removal::AlreadyGone) {
            tx.forget_created_file(vm, &f.path)?;
        }
        out.push((f.path, f.kind, outcome));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::NewVm;
    use maqet_config::ConfigDocument;

    fn store(dir: &Path) -> Store {
        let s = Store::open(&dir.join("db/maqet.db")).unwrap();
        s.insert_vm(&NewVm {
            name: "vm".into(),
            config: serde_json::json!({}),
            sources: vec![],
            autostart: false,
        })
        .unwrap();
        s
    }

    fn config(dir: &Path, body: &str) -> VmConfig {
        let text = format!("binary: /bin/sh\n{body}");
        ConfigDocument::from_yaml_str(&text, "t.yaml", dir)
            .unwrap()
            .validate()
            .unwrap()
    }

    #[test]
    fn creates_records_and_undoes() {
        if QemuImg::find(None).is_err() {
            eprintln!("note: no qemu-img here; skipping");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let st = store(&dir);
        let disks = dir.join("data/disks/vm");
        let cfg = config(
            &dir,
            "storage:\n  - {name: a, size: 1M}\n  - {name: b, type: raw, size: 64K, file: sub/b.img}\n  - {name: s, type: virtfs, path: share}\n",
        );
        let mut p = Provisioned::default();
        provision("vm", &cfg, &disks, &st, &mut p).unwrap();
        let paths: Vec<_> = p.created.iter().map(|c| c.path.clone()).collect();
        assert_eq!(
            paths,
            [
                disks.clone(),
                disks.join("a.qcow2"),
                dir.join("sub"),
                dir.join("sub/b.img"),
                dir.join("share"),
            ]
        );
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&disks.join("a.qcow2")), 0o600);
        assert_eq!(mode(&dir.join("sub/b.img")), 0o600);
        assert_eq!(mode(&disks), 0o700);
        assert_eq!(fs::metadata(dir.join("sub/b.img")).unwrap().len(), 65536);
        let recorded: Vec<_> = st
            .created_files("vm")
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(recorded, paths);
        // No temporary files left beside the images.
        assert_eq!(fs::read_dir(&disks).unwrap().count(), 1);
        // A second run finds everything in place.
        let mut again = Provisioned::default();
        provision("vm", &cfg, &disks, &st, &mut again).unwrap();
        assert!(again.created.is_empty());
        let undone = p.undo("vm", &st, &References::default());
        assert!(
            undone.problems.is_empty() && undone.kept.is_empty(),
            "{undone:?}"
        );
        assert_eq!(undone.removed.len(), 5);
        assert!(!disks.exists() && !dir.join("sub").exists());
        assert!(dir.join("data/disks").is_dir());
        assert!(st.created_files("vm").unwrap().is_empty());
    }

    #[test]
    fn failed_creation_leaves_nothing() {
        if QemuImg::find(None).is_err() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let st = store(&dir);
        // The second disk's backing file vanished after validation.
        fs::write(dir.join("base.qcow2"), "x").unwrap();
        let cfg = config(
            &dir,
            "storage:\n  - {name: a, size: 1M, file: new/a.qcow2}\n  - {name: o, file: o.qcow2, backing_file: base.qcow2}\n",
        );
        fs::remove_file(dir.join("base.qcow2")).unwrap();
        let mut p = Provisioned::default();
        let e = provision("vm", &cfg, &dir.join("disks"), &st, &mut p).unwrap_err();
        assert!(e.to_string().contains("qemu-img"), "{e}");
        assert!(p
            .undo("vm", &st, &References::default())
            .problems
            .is_empty());
        assert!(!dir.join("new").exists());
        assert!(!dir.join("o.qcow2").exists());
        assert!(st.created_files("vm").unwrap().is_empty());
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from("db")], "{left:?}");
    }

    /// A file or directory whose record cannot be written (here: a read-only store) is
    /// removed again, not left behind unrecorded.
    #[test]
    fn failed_record_undoes_the_creation() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        drop(store(&dir));
        let ro = Store::open_read_only(&dir.join("db/maqet.db"))
            .unwrap()
            .unwrap();
        let cfg = config(
            &dir,
            "storage:\n  - {name: s, type: virtfs, path: share/deep}\n",
        );
        let mut done = Provisioned::default();
        let e = provision("vm", &cfg, &dir.join("disks"), &ro, &mut done).unwrap_err();
        assert!(e.to_string().contains("cannot be written"), "{e}");
        // Listed before its record was attempted, so the caller's undo finds it.
        assert_eq!(done.created.len(), 1, "{:?}", done.created.len());
        done.undo("vm", &ro, &crate::storage::refs::References::default());
        assert!(!dir.join("share").exists());
    }

    #[test]
    fn delete_created_keeps_what_others_use_and_full_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let st = store(&dir);
        let d = dir.join("d");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("a.img"), "a").unwrap();
        fs::write(d.join("shared.img"), "s").unwrap();
        fs::write(d.join("gone.img"), "g").unwrap();
        let id = |p: &Path| stat_path(p).unwrap().identity;
        for (p, k) in [
            (d.clone(), FileKind::Directory),
            (d.join("a.img"), FileKind::Disk),
            (d.join("shared.img"), FileKind::Disk),
            (d.join("gone.img"), FileKind::Disk),
        ] {
            st.record_created_file("vm", &p, k, Some(id(&p))).unwrap();
        }
        // Recorded before identities existed.
        fs::write(d.join("old.img"), "o").unwrap();
        st.record_created_file("vm", &d.join("old.img"), FileKind::Disk, None)
            .unwrap();
        fs::remove_file(d.join("gone.img")).unwrap();
        let shared = d.join("shared.img");
        let shared_id = id(&shared);
        let tx = st.begin_write().unwrap();
        let out = delete_created("vm", &tx, &|i| {
            (*i == shared_id).then(|| "VM 'other' uses it".to_string())
        })
        .unwrap();
        tx.commit().unwrap();
        let outcomes: Vec<_> = out
            .iter()
            .map(|(p, _, r)| (p.file_name().unwrap().to_owned(), r.clone()))
            .collect();
        assert!(
            matches!(&outcomes[0].1, Removal::KeptUnproven(_)),
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes[1..],
            [
                ("gone.img".into(), Removal::AlreadyGone),
                (
                    "shared.img".into(),
                    Removal::KeptInUse("VM 'other' uses it".into())
                ),
                ("a.img".into(), Removal::Deleted),
                ("d".into(), Removal::KeptNotEmpty),
            ]
        );
        assert!(shared.exists() && !d.join("a.img").exists() && d.join("old.img").exists());
        let left: Vec<_> = st
            .created_files("vm")
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(left, [d.clone(), shared, d.join("old.img")]);
    }
}
