//! Deleting one recorded file only if the path still names the very file
//! maqet created, without ever following a symlink.
//!
//! The parent directories are opened one by one from `/` with
//! `O_PATH|O_DIRECTORY|O_NOFOLLOW` (an `openat` chain); the entry is then
//! examined with `statx(AT_SYMLINK_NOFOLLOW)` on that directory fd and
//! removed with `unlinkat` on the same fd. A directory on the way that was
//! replaced by a symlink stops the walk, so an unlink can never land in a
//! directory the path did not name when the file was created (recorded
//! paths are canonical at creation). Before the unlink, a file is opened
//! through the same fd and probed for an image lock (storage/locks.rs): a
//! process maqet does not know about — a QEMU started by hand, another
//! user's — keeps it too.
//!
//! Files another program makes inside a directory maqet made (swtpm's state
//! files) go through [`remove_inside`]: the directory must still be the one
//! maqet recorded, and only regular files of the names given are removed.

use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{openat, unlinkat, AtFlags, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;

use super::identity::{stat_at, stat_fd, FileIdentity, Found};
use super::locks;
use crate::state::FileKind;

/// Why a recorded file stays, or what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Deleted,
    AlreadyGone,
    /// A directory that still holds files maqet did not create.
    KeptNotEmpty,
    /// Something uses it; the text says what (`VM 'x' uses it`).
    KeptInUse(String),
    /// maqet cannot prove it is the file it created; the text says why.
    KeptUnproven(String),
    Failed(String),
}

/// Opens the directory `dir` (absolute, normalized) through an `openat`
/// chain from `/` that follows no symlink. `Err` is a [`Removal`] saying
/// why nothing can be deleted there.
pub(crate) fn open_dir_nofollow(dir: &Path) -> Result<OwnedFd, Removal> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut fd = openat(CWD, "/", flags, Mode::empty())
        .map_err(|e| Removal::Failed(format!("cannot open /: {e}")))?;
    let mut walked = std::path::PathBuf::from("/");
    for c in dir.components() {
        let name = match c {
            Component::RootDir => continue,
            Component::Normal(n) => n,
            _ => {
                return Err(Removal::KeptUnproven(format!(
                    "the recorded path {} is not normalized",
                    dir.display()
                )))
            }
        };
        walked.push(name);
        fd = match openat(&fd, name, flags, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::NOENT) => return Err(Removal::AlreadyGone),
            // ELOOP: a symlink under O_NOFOLLOW; ENOTDIR: not a directory.
            Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                return Err(Removal::KeptUnproven(format!(
                    "{} is no longer the directory maqet created the file in (it is now a symbolic link or not a directory); maqet does not follow it",
                    walked.display()
                )))
            }
            Err(e) => {
                return Err(Removal::Failed(format!(
                    "cannot open {}: {e}",
                    walked.display()
                )))
            }
        };
    }
    Ok(fd)
}

/// Deletes `path` if it is still the file `expected` describes and
/// `in_use` (given the file's identity) names no user of it.
pub fn remove_if_same(
    path: &Path,
    kind: FileKind,
    expected: Option<&FileIdentity>,
    in_use: &dyn Fn(&FileIdentity) -> Option<String>,
) -> Removal {
    let Some(expected) = expected else {
        return Removal::KeptUnproven(
            "recorded by an older maqet without the file's identity, so it cannot be proven to be the file maqet created; delete it yourself if it is".into(),
        );
    };
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Removal::KeptUnproven(format!("{} names no file", path.display()));
    };
    if !path.is_absolute() {
        return Removal::KeptUnproven(format!("{} is not an absolute path", path.display()));
    }
    let dir = match open_dir_nofollow(parent) {
        Ok(fd) => fd,
        Err(r) => return r,
    };
    let found = match stat_at(&dir, Path::new(name)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Removal::AlreadyGone,
        Err(e) => return Removal::Failed(format!("cannot examine it: {e}")),
    };
    let want_dir = kind == FileKind::Directory;
    if found.file_type == FileType::Symlink {
        return Removal::KeptUnproven(
            "it is now a symbolic link, not the file maqet created".into(),
        );
    }
    if (found.file_type == FileType::Directory) != want_dir || !expected.matches(&found.identity) {
        return Removal::KeptUnproven(
            "it is no longer the file maqet created (it was replaced: another inode or birth time)"
                .into(),
        );
    }
    if let Some(user) = in_use(&found.identity) {
        return Removal::KeptInUse(user);
    }
    if !want_dir {
        if let Some(why) = lock_on(&dir, name, &found) {
            return Removal::KeptInUse(why);
        }
    }
    let flags = if want_dir {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    match unlinkat(&dir, name, flags) {
        Ok(()) => Removal::Deleted,
        Err(Errno::NOENT) => Removal::AlreadyGone,
        Err(Errno::NOTEMPTY) | Err(Errno::EXIST) if want_dir => Removal::KeptNotEmpty,
        Err(e) => Removal::Failed(e.to_string()),
    }
}

/// Why the regular file `name` in `dir` (found as `found`) counts as in use
/// by a process holding a byte-range lock on it; a file that cannot be
/// opened to probe is looked up in /proc/locks instead.
fn lock_on(dir: &OwnedFd, name: &std::ffi::OsStr, found: &Found) -> Option<String> {
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => match stat_fd(&fd) {
            Ok(now) if found.identity.matches(&now.identity) => locks::held(&fd),
            _ => Some("it changed while maqet looked at it".into()),
        },
        Err(_) => locks::listed(&found.identity).then(|| {
            "a process holds a lock on it (listed in /proc/locks; maqet cannot open it to probe)"
                .to_string()
        }),
    }
}

/// Removes `dir` if it is an empty directory, reached without following a
/// symlink: for a directory of maqet's own data directory that belongs to
/// one VM by its name (`disks/VM`, `cloud-init/VM`) but that an earlier VM
/// of the name made, so no record proves it. An empty directory holds
/// nothing to lose; one that holds anything stays.
pub fn remove_empty_dir(dir: &Path) -> Removal {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Removal::KeptUnproven(format!("{} names no directory", dir.display()));
    };
    if !dir.is_absolute() {
        return Removal::KeptUnproven(format!("{} is not an absolute path", dir.display()));
    }
    let fd = match open_dir_nofollow(parent) {
        Ok(fd) => fd,
        Err(r) => return r,
    };
    match stat_at(&fd, Path::new(name)) {
        Ok(f) if f.file_type == FileType::Directory => {}
        Ok(_) => return Removal::KeptUnproven("it is not a directory".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Removal::AlreadyGone,
        Err(e) => return Removal::Failed(format!("cannot examine it: {e}")),
    }
    match unlinkat(&fd, name, AtFlags::REMOVEDIR) {
        Ok(()) => Removal::Deleted,
        Err(Errno::NOENT) => Removal::AlreadyGone,
        Err(Errno::NOTEMPTY) | Err(Errno::EXIST) => Removal::KeptNotEmpty,
        Err(e) => Removal::Failed(e.to_string()),
    }
}

/// Deletes the regular files `names` from the directory `dir` — files
/// another program made in a directory maqet created and recorded as
/// `expected` — reached without following a symlink, only while `dir` is
/// still that directory. Each file is probed for locks and checked with
/// `in_use` like any deletion. `Err`: why nothing in it may be touched.
pub fn remove_inside(
    dir: &Path,
    expected: Option<&FileIdentity>,
    names: &[&str],
    in_use: &dyn Fn(&FileIdentity) -> Option<String>,
) -> Result<Vec<(PathBuf, Removal)>, Removal> {
    let Some(expected) = expected else {
        return Err(Removal::KeptUnproven(
            "recorded by an older maqet without the directory's identity, so it cannot be proven to be the directory maqet created".into(),
        ));
    };
    if !dir.is_absolute() {
        return Err(Removal::KeptUnproven(format!(
            "{} is not an absolute path",
            dir.display()
        )));
    }
    let fd = open_dir_nofollow(dir)?;
    let me = stat_fd(&fd).map_err(|e| Removal::Failed(format!("cannot examine it: {e}")))?;
    if !expected.matches(&me.identity) {
        return Err(Removal::KeptUnproven(
            "it is no longer the directory maqet created (it was replaced: another inode)".into(),
        ));
    }
    let mut out = Vec::new();
    for n in names {
        let path = dir.join(n);
        let found = match stat_at(&fd, Path::new(n)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.push((path, Removal::Failed(format!("cannot examine it: {e}"))));
                continue;
            }
        };
        let outcome = if found.file_type != FileType::RegularFile {
            Removal::KeptUnproven("it is not a regular file".into())
        } else if let Some(user) = in_use(&found.identity) {
            Removal::KeptInUse(user)
        } else if let Some(why) = lock_on(&fd, std::ffi::OsStr::new(n), &found) {
            Removal::KeptInUse(why)
        } else {
            match unlinkat(&fd, *n, AtFlags::empty()) {
                Ok(()) => Removal::Deleted,
                Err(Errno::NOENT) => continue,
                Err(e) => Removal::Failed(e.to_string()),
            }
        };
        out.push((path, outcome));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::identity::stat_path;

    fn id(p: &Path) -> FileIdentity {
        stat_path(p).unwrap().identity
    }

    fn unused(_: &FileIdentity) -> Option<String> {
        None
    }

    #[test]
    fn deletes_the_same_file_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let f = dir.join("a.img");
        std::fs::write(&f, "a").unwrap();
        let recorded = id(&f);
        // Replaced after creation: kept.
        std::fs::remove_file(&f).unwrap();
        std::fs::write(dir.join("b"), "user's").unwrap();
        std::fs::rename(dir.join("b"), &f).unwrap();
        let r = remove_if_same(&f, FileKind::Disk, Some(&recorded), &unused);
        assert!(
            matches!(r, Removal::KeptUnproven(ref why) if why.contains("replaced")),
            "{r:?}"
        );
        assert!(f.exists());
        // The very file: deleted.
        let now = id(&f);
        assert_eq!(
            remove_if_same(&f, FileKind::Disk, Some(&now), &unused),
            Removal::Deleted
        );
        assert!(!f.exists());
        assert_eq!(
            remove_if_same(&f, FileKind::Disk, Some(&now), &unused),
            Removal::AlreadyGone
        );
    }

    #[test]
    fn never_goes_through_a_symlinked_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let made = root.join("disks");
        std::fs::create_dir(&made).unwrap();
        let disk = made.join("d.img");
        std::fs::write(&disk, "").unwrap();
        let recorded = id(&disk);
        // The user's own directory, holding a file of the same name: the
        // same inode even, through a hard link.
        let user = root.join("user");
        std::fs::create_dir(&user).unwrap();
        std::fs::hard_link(&disk, user.join("d.img")).unwrap();
        std::fs::remove_file(&disk).unwrap();
        std::fs::remove_dir(&made).unwrap();
        std::os::unix::fs::symlink(&user, &made).unwrap();
        let r = remove_if_same(&disk, FileKind::Disk, Some(&recorded), &unused);
        assert!(
            matches!(r, Removal::KeptUnproven(ref why) if why.contains("symbolic link")),
            "{r:?}"
        );
        assert!(user.join("d.img").exists());
        // The directory record itself is now a symlink: kept as well.
        let r = remove_if_same(&made, FileKind::Directory, Some(&recorded), &unused);
        assert!(matches!(r, Removal::KeptUnproven(_)), "{r:?}");
        assert!(made.is_symlink());
    }

    #[test]
    fn a_file_another_process_holds_an_image_lock_on_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let f = dir.join("img");
        std::fs::write(&f, vec![0u8; 512]).unwrap();
        let fid = id(&f);
        // As QEMU does: a shared lock on byte 100 of an open description.
        let holder = std::fs::File::open(&f).unwrap();
        locks::lock_as_qemu_does(&holder).unwrap();
        let r = remove_if_same(&f, FileKind::Disk, Some(&fid), &unused);
        assert!(
            matches!(r, Removal::KeptInUse(ref why) if why.contains("image lock")),
            "{r:?}"
        );
        assert!(f.exists());
        drop(holder);
        assert_eq!(
            remove_if_same(&f, FileKind::Disk, Some(&fid), &unused),
            Removal::Deleted
        );
    }

    #[test]
    fn files_inside_a_recorded_directory_go_only_while_it_is_that_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let tpm = root.join("tpm");
        std::fs::create_dir(&tpm).unwrap();
        let recorded = id(&tpm);
        std::fs::write(tpm.join("state"), "s").unwrap();
        std::fs::write(tpm.join("mine.txt"), "m").unwrap();
        // Replaced by a copy: nothing in it is touched.
        std::fs::rename(&tpm, root.join("old")).unwrap();
        std::fs::create_dir(&tpm).unwrap();
        std::fs::write(tpm.join("state"), "copy").unwrap();
        let e = remove_inside(&tpm, Some(&recorded), &["state"], &unused).unwrap_err();
        assert!(
            matches!(e, Removal::KeptUnproven(ref w) if w.contains("replaced")),
            "{e:?}"
        );
        assert!(tpm.join("state").exists());
        // Replaced by a symlink to the original: not followed.
        std::fs::remove_dir_all(&tpm).unwrap();
        std::os::unix::fs::symlink(root.join("old"), &tpm).unwrap();
        let e = remove_inside(&tpm, Some(&recorded), &["state"], &unused).unwrap_err();
        assert!(matches!(e, Removal::KeptUnproven(_)), "{e:?}");
        assert!(root.join("old/state").exists());
        // The very directory: its named regular files go, nothing else.
        std::fs::remove_file(&tpm).unwrap();
        std::fs::rename(root.join("old"), &tpm).unwrap();
        std::os::unix::fs::symlink(tpm.join("mine.txt"), tpm.join("link")).unwrap();
        let out =
            remove_inside(&tpm, Some(&recorded), &["state", "gone", "link"], &unused).unwrap();
        assert_eq!(out[0], (tpm.join("state"), Removal::Deleted));
        assert!(matches!(out[1].1, Removal::KeptUnproven(_)), "{out:?}");
        assert_eq!(out.len(), 2);
        assert!(tpm.join("mine.txt").exists() && tpm.join("link").is_symlink());
    }

    #[test]
    fn only_an_empty_real_directory_is_removed_without_a_record() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let d = root.join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("f"), "").unwrap();
        assert_eq!(remove_empty_dir(&d), Removal::KeptNotEmpty);
        std::os::unix::fs::symlink(&d, root.join("l")).unwrap();
        std::fs::remove_file(d.join("f")).unwrap();
        assert!(matches!(
            remove_empty_dir(&root.join("l")),
            Removal::KeptUnproven(_)
        ));
        assert!(matches!(
            remove_empty_dir(&root.join("l/x")),
            Removal::KeptUnproven(_)
        ));
        assert_eq!(remove_empty_dir(&d), Removal::Deleted);
        assert_eq!(remove_empty_dir(&d), Removal::AlreadyGone);
    }

    #[test]
    fn in_use_and_unproven_and_full_directories_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let f = dir.join("f");
        std::fs::write(&f, "").unwrap();
        let fid = id(&f);
        let r = remove_if_same(&f, FileKind::Disk, Some(&fid), &|i| {
            (*i == fid).then(|| "VM 'other' uses it".to_string())
        });
        assert_eq!(r, Removal::KeptInUse("VM 'other' uses it".into()));
        let r = remove_if_same(&f, FileKind::Disk, None, &unused);
        assert!(
            matches!(r, Removal::KeptUnproven(ref why) if why.contains("older maqet")),
            "{r:?}"
        );
        let did = id(&dir);
        assert_eq!(
            remove_if_same(&dir, FileKind::Directory, Some(&did), &unused),
            Removal::KeptNotEmpty
        );
        // A file recorded as a directory (or the reverse) is not ours.
        let r = remove_if_same(&f, FileKind::Directory, Some(&fid), &unused);
        assert!(matches!(r, Removal::KeptUnproven(_)), "{r:?}");
        assert!(f.exists());
    }
}
