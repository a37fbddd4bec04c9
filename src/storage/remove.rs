//! Deleting one recorded file only if the path still names the very file
//! maqet created, without ever following a symlink.
//!
//! The parent directories are opened one by one from `/` with
//! `O_PATH|O_DIRECTORY|O_NOFOLLOW` (an `openat` chain); the entry is then
//! examined with `statx(AT_SYMLINK_NOFOLLOW)` on that directory fd and
//! removed with `unlinkat` on the same fd. A directory on the way that was
//! replaced by a symlink stops the walk, so an unlink can never land in a
//! directory the path did not name when the file was created (recorded
//! paths are canonical at creation).

use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use rustix::fs::{openat, unlinkat, AtFlags, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;

use super::identity::{stat_at, FileIdentity};
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
fn open_dir_nofollow(dir: &Path) -> Result<OwnedFd, Removal> {
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
