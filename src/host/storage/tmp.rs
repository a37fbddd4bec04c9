//! Temporary files: how maqet writes a file that must never be seen half
//! made. The content goes to `.NAME.maqet-PID.tmp` beside the target
//! (same directory, so a hard link can put it into place), and only a
//! complete file is linked to NAME — never over an existing one.
//!
//! The writer holds an exclusive `flock` on the temporary file for as long
//! as it lives. The kernel drops that lock with the process however it
//! ends, so a temporary file nobody holds locked is the leftover of a run
//! that was killed (`kill -9`, a power cut of the CLI): [`leftovers`] lists
//! those, [`remove_leftover`] deletes one — walked like every deletion
//! (storage/remove.rs), never through a symlink, only while it is still an
//! unlocked regular file of that name that no process holds an image lock
//! on. Only the temporary name is ever removed: after a crash between the
//! link and the clean-up it is a second name of a finished file, which
//! stays.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{openat, unlinkat, AtFlags, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use super::identity::{stat_at, stat_fd, stat_path, FileIdentity};
use super::locks;
use super::remove::{open_dir_nofollow, Removal};

/// The part of a temporary name between the target's name and `.tmp`.
const MARK: &str = ".maqet-";

/// A temporary file being written; removed again when dropped (after
/// [`TempFile::link`] it is a second name of the target, so only the name
/// goes).
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    target: PathBuf,
    file: File,
    /// Renamed into place: no temporary name left to remove.
    moved: bool,
}

impl TempFile {
    /// Creates the temporary file for `target` (mode 0600, new) and locks
    /// it.
    pub fn create(target: &Path) -> std::io::Result<TempFile> {
        let dir = target.parent().unwrap_or(Path::new("/"));
        let name = target.file_name().unwrap_or(OsStr::new("file"));
        let pid = std::process::id();
        for n in 0u32.. {
            let path = dir.join(temp_name(name, pid, n));
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(f) => f,
                // A leftover of an earlier process with this PID (or a
                // second file of ours): the next number.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => continue,
                Err(e) => return Err(e),
            };
            let t = TempFile {
                path,
                target: target.to_path_buf(),
                file,
                moved: false,
            };
            flock(&t.file)?;
            return Ok(t);
        }
        unreachable!("the loop returns")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// The open file, to lend its descriptor (QEMU writes a saved state
    /// through it).
    pub fn file_ref(&self) -> &File {
        &self.file
    }

    /// The file's identity (device, inode, birth time): the target's once
    /// it is linked.
    pub fn identity(&self) -> std::io::Result<FileIdentity> {
        stat_path(&self.path).map(|f| f.identity)
    }

    /// Links the finished file to its target name. `Ok(false)`: the target
    /// exists (someone else made it meanwhile); nothing was replaced.
    pub fn link(&self) -> std::io::Result<bool> {
        match std::fs::hard_link(&self.path, &self.target) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }
    /// Renames the finished file over its target, replacing what is there
    /// (for files maqet regenerates, such as the cloud-init seed; never for
    /// a disk). Returns the file's identity.
    pub fn replace(mut self) -> std::io::Result<FileIdentity> {
        self.file.sync_all()?;
        let id = self.identity()?;
        std::fs::rename(&self.path, &self.target)?;
        self.moved = true;
        Ok(id)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.moved {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn temp_name(name: &OsStr, pid: u32, n: u32) -> OsString {
    let mut s = OsString::from(".");
    s.push(name);
    s.push(MARK);
    s.push(pid.to_string());
    if n > 0 {
        s.push(format!("-{n}"));
    }
    s.push(".tmp");
    s
}

/// The target name a temporary name was made for (`.NAME.maqet-PID.tmp`
/// or `.NAME.maqet-PID-N.tmp`); None for any other name.
pub fn target_of(name: &OsStr) -> Option<OsString> {
    let b = name.as_bytes();
    let inner = b.strip_prefix(b".")?.strip_suffix(b".tmp")?;
    let at = inner
        .windows(MARK.len())
        .rposition(|w| w == MARK.as_bytes())?;
    let (target, tail) = (&inner[..at], &inner[at + MARK.len()..]);
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    let ok = match tail.iter().position(|c| *c == b'-') {
        Some(i) => digits(&tail[..i]) && digits(&tail[i + 1..]),
        None => digits(tail),
    };
    (ok && !target.is_empty()).then(|| OsStr::from_bytes(target).to_os_string())
}

/// A temporary file a killed run left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub path: PathBuf,
    /// The file it was to become.
    pub target: PathBuf,
}

/// The temporary files in `dir` that nobody is writing any more (their
/// lock is free). A directory that cannot be read has none to list.
pub fn leftovers(dir: &Path) -> Vec<Leftover> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Leftover> = entries
        .flatten()
        .filter_map(|e| {
            let target = target_of(&e.file_name())?;
            let path = e.path();
            // A symlink or a directory of that name is not maqet's.
            let ty = e.file_type().ok()?;
            (ty.is_file() && !being_written(&path)).then(|| Leftover {
                target: dir.join(target),
                path,
            })
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The leftovers in `dir` made for `target`.
pub fn leftovers_for(target: &Path) -> Vec<Leftover> {
    let dir = target.parent().unwrap_or(Path::new("/"));
    leftovers(dir)
        .into_iter()
        .filter(|l| l.target == target)
        .collect()
}

/// Whether a live writer holds the temporary file's lock (or it cannot be
/// told: then it counts as being written).
fn being_written(path: &Path) -> bool {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => flock(&f).is_err(),
        Err(_) => true,
    }
}

/// Takes the writer's lock (exclusive, without waiting).
fn flock(f: &impl AsFd) -> std::io::Result<()> {
    Ok(rustix::fs::flock(
        f,
        FlockOperation::NonBlockingLockExclusive,
    )?)
}

/// Deletes a leftover temporary file: reached without following a symlink,
/// still a regular file of a temporary name, its writer gone (its lock is
/// taken here and held through the unlink) and no image lock on it.
pub fn remove_leftover(path: &Path) -> Removal {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Removal::KeptUnproven(format!("{} names no file", path.display()));
    };
    if target_of(name).is_none() || !path.is_absolute() {
        return Removal::KeptUnproven("not a temporary file of maqet's".into());
    }
    let dir = match open_dir_nofollow(dir) {
        Ok(fd) => fd,
        Err(r) => return r,
    };
    let found = match stat_at(&dir, Path::new(name)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Removal::AlreadyGone,
        Err(e) => return Removal::Failed(format!("cannot examine it: {e}")),
    };
    if found.file_type != FileType::RegularFile {
        return Removal::KeptUnproven("it is not a regular file".into());
    }
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match openat(&dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Removal::AlreadyGone,
        Err(e) => return Removal::Failed(format!("cannot open it: {e}")),
    };
    match stat_fd(&fd) {
        Ok(now) if found.identity.matches(&now.identity) => {}
        _ => return Removal::KeptUnproven("it changed while maqet looked at it".into()),
    }
    if flock(&fd).is_err() {
        return Removal::KeptInUse("a maqet command is still writing it".into());
    }
    if let Some(why) = locks::held(&fd) {
        return Removal::KeptInUse(why);
    }
    match unlinkat(&dir, name, AtFlags::empty()) {
        Ok(()) => Removal::Deleted,
        Err(Errno::NOENT) => Removal::AlreadyGone,
        Err(e) => Removal::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn names_are_recognised_exactly() {
        let t = |s: &str| target_of(OsStr::new(s)).map(|o| o.to_string_lossy().into_owned());
        assert_eq!(t(".hdd.qcow2.maqet-123.tmp").as_deref(), Some("hdd.qcow2"));
        assert_eq!(t(".a.maqet-b.maqet-7-2.tmp").as_deref(), Some("a.maqet-b"));
        for not in [
            "hdd.qcow2.maqet-123.tmp",
            ".hdd.qcow2.maqet-.tmp",
            ".hdd.qcow2.maqet-12x.tmp",
            ".hdd.qcow2.maqet-1-.tmp",
            "..maqet-1.tmp",
            ".hdd.qcow2.tmp",
        ] {
            assert_eq!(t(not), None, "{not}");
        }
        assert_eq!(
            temp_name(OsStr::new("x.img"), 42, 0),
            OsString::from(".x.img.maqet-42.tmp")
        );
        assert_eq!(
            temp_name(OsStr::new("x.img"), 42, 3),
            OsString::from(".x.img.maqet-42-3.tmp")
        );
    }

    #[test]
    fn a_live_writer_is_not_a_leftover_and_a_dead_one_is() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let target = dir.join("disk.img");
        let mut t = TempFile::create(&target).unwrap();
        t.file().write_all(b"half").unwrap();
        // Ours, locked: being written.
        assert!(leftovers(&dir).is_empty());
        assert!(matches!(
            remove_leftover(t.path()),
            Removal::KeptInUse(ref w) if w.contains("still writing")
        ));
        // A killed run: the file stays, the lock goes with the process.
        let left = dir.join(".disk.img.maqet-999999.tmp");
        std::fs::write(&left, b"torn").unwrap();
        assert_eq!(
            leftovers(&dir),
            [Leftover {
                path: left.clone(),
                target: target.clone()
            }]
        );
        assert_eq!(leftovers_for(&dir.join("other.img")), []);
        assert_eq!(remove_leftover(&left), Removal::Deleted);
        assert!(!left.exists());
        assert_eq!(remove_leftover(&left), Removal::AlreadyGone);
        // Linked into place: the target is the same file; dropping the
        // temporary file removes only its own name.
        let id = t.identity().unwrap();
        assert!(t.link().unwrap());
        let temp = t.path().to_path_buf();
        drop(t);
        assert!(!temp.exists());
        assert_eq!(std::fs::read(&target).unwrap(), b"half");
        assert!(id.matches(&stat_path(&target).unwrap().identity));
        // Never over an existing file.
        let t2 = TempFile::create(&target).unwrap();
        assert!(!t2.link().unwrap());
    }

    #[test]
    fn symlinks_and_other_names_are_never_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        std::fs::write(dir.join("mine.txt"), b"x").unwrap();
        let link = dir.join(".mine.txt.maqet-1.tmp");
        std::os::unix::fs::symlink(dir.join("mine.txt"), &link).unwrap();
        assert!(leftovers(&dir).is_empty());
        assert!(matches!(remove_leftover(&link), Removal::KeptUnproven(_)));
        assert!(matches!(
            remove_leftover(&dir.join("mine.txt")),
            Removal::KeptUnproven(_)
        ));
        assert!(link.is_symlink() && dir.join("mine.txt").exists());
    }
}
