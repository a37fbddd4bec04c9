//! A VM's saved running state on disk: `DISK_DIR/state.sav` (0600).
//!
//! The file is never trusted torn. The runner writes it under a temporary
//! name (storage/tmp.rs: `.state.sav.maqet-PID.tmp`, flocked while it is
//! written), syncs it once QEMU reports the migration `completed`, records
//! it in the state database (`saved_states`, with the file's identity and
//! size) and only then renames it into place. A start trusts a file only
//! when the record exists and the file at its path is still the recorded
//! one ([`check`], [`open`]); anything else — a killed save's temporary
//! file, a state file without a record, one replaced since — is never
//! loaded, and is deleted ([`delete`], [`delete_leftovers`]) through the
//! same walk that deletes disks (storage/remove.rs: no symlink followed).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::FileType;

use super::identity::{stat_fd, stat_path};
use super::remove::{remove_if_same, Removal};
use super::tmp::{self, TempFile};
use crate::state::{FileIdentity, FileKind, SavedState};

/// The file name of a VM's saved state in its disk directory.
pub const FILE_NAME: &str = "state.sav";

/// Where `vm`'s saved state goes: in its disk directory.
pub fn path_in(disk_dir: &Path) -> PathBuf {
    disk_dir.join(FILE_NAME)
}

/// What every save is given at least, whatever the memory size.
const SAVE_FLOOR: Duration = Duration::from_secs(30);
/// A write rate any disk a desktop VM lives on sustains (a slow USB stick
/// or a busy HDD included): what the budgets below assume.
const SLOW_WRITE: u64 = 32 << 20;
/// QEMU's default memory when the config sets none.
const DEFAULT_MEMORY: u64 = 128 << 20;

/// How long saving a guest of `memory_bytes` may take at worst: a floor
/// plus its whole RAM at [`SLOW_WRITE`] (zero pages cost almost nothing,
/// so a real save is far quicker). An `on_stop: save` VM's unit gets this
/// as its stop timeout, and the runner extends it while the save makes
/// progress.
pub fn save_budget(memory_bytes: Option<u64>) -> Duration {
    SAVE_FLOOR + Duration::from_secs(memory_bytes.unwrap_or(DEFAULT_MEMORY) / SLOW_WRITE)
}

/// How long loading a state file of `size` bytes may take: the same
/// floor and rate (a start that resumes gets at least this).
pub fn load_budget(size: u64) -> Duration {
    SAVE_FLOOR + Duration::from_secs(size / SLOW_WRITE)
}

/// Why a recorded state is not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    #[error("{} is gone (the save was interrupted after it was recorded, or the file was deleted)", path.display())]
    Missing { path: PathBuf },
    #[error("{} is no longer the file maqet saved (it was replaced: another inode or birth time)", path.display())]
    Replaced { path: PathBuf },
    #[error("{} holds {found} bytes where the save wrote {recorded}", path.display())]
    Size {
        path: PathBuf,
        recorded: u64,
        found: u64,
    },
    #[error("{} is not a regular file (it is a symbolic link or something else now)", path.display())]
    NotRegular { path: PathBuf },
    #[error("cannot read {}: {error}", path.display())]
    Unreadable { path: PathBuf, error: String },
}

/// What the file at a path is, for the checks.
struct Seen {
    identity: FileIdentity,
    file_type: FileType,
    size: u64,
}

/// Compares what is at the record's path with the record.
fn compare(rec: &SavedState, seen: Seen) -> Result<(), Untrusted> {
    let path = rec.path.clone();
    if seen.file_type != FileType::RegularFile {
        return Err(Untrusted::NotRegular { path });
    }
    if !rec.identity.matches(&seen.identity) {
        return Err(Untrusted::Replaced { path });
    }
    if seen.size != rec.size {
        return Err(Untrusted::Size {
            path,
            recorded: rec.size,
            found: seen.size,
        });
    }
    Ok(())
}

fn unreadable(path: &Path, e: std::io::Error) -> Untrusted {
    match e.kind() {
        std::io::ErrorKind::NotFound => Untrusted::Missing {
            path: path.to_path_buf(),
        },
        _ => Untrusted::Unreadable {
            path: path.to_path_buf(),
            error: e.to_string(),
        },
    }
}

/// Whether the file at the record's path is the one the save recorded
/// (its name looked at without following a symlink).
pub fn check(rec: &SavedState) -> Result<(), Untrusted> {
    let found = stat_path(&rec.path).map_err(|e| unreadable(&rec.path, e))?;
    let size = std::fs::symlink_metadata(&rec.path)
        .map_err(|e| unreadable(&rec.path, e))?
        .len();
    compare(
        rec,
        Seen {
            identity: found.identity,
            file_type: found.file_type,
            size,
        },
    )
}

/// Opens the recorded file for reading — never through a symlink at its
/// name, never blocking on something that is not a regular file — and
/// checks it on the open descriptor, so what is read is what was recorded.
pub fn open(rec: &SavedState) -> Result<File, Untrusted> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&rec.path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Untrusted::NotRegular {
                path: rec.path.clone(),
            },
            _ => unreadable(&rec.path, e),
        })?;
    let found = stat_fd(&file).map_err(|e| unreadable(&rec.path, e))?;
    let size = file.metadata().map_err(|e| unreadable(&rec.path, e))?.len();
    compare(
        rec,
        Seen {
            identity: found.identity,
            file_type: found.file_type,
            size,
        },
    )?;
    Ok(file)
}

/// A state file being written: a locked temporary file beside the target,
/// removed again if it is dropped before [`Writer::commit`].
#[derive(Debug)]
pub struct Writer {
    temp: TempFile,
    target: PathBuf,
}

impl Writer {
    /// Creates the temporary file for `target` (0600), after removing what
    /// killed saves left for it.
    pub fn create(target: &Path) -> std::io::Result<Writer> {
        delete_leftovers(target);
        let temp = TempFile::create(target)?;
        std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o600))?;
        Ok(Writer {
            temp,
            target: target.to_path_buf(),
        })
    }

    /// The descriptor QEMU writes the state to.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.temp.file_ref().as_fd()
    }

    pub fn temp_path(&self) -> &Path {
        self.temp.path()
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Syncs what QEMU wrote; returns the file's identity and size (what
    /// the record holds). An error (a full disk found at write-back, EIO)
    /// means the state is not complete.
    pub fn finish(&mut self) -> std::io::Result<(FileIdentity, u64)> {
        self.temp.file().sync_all()?;
        let size = self.temp.file().metadata()?.len();
        Ok((self.temp.identity()?, size))
    }

    /// Renames the finished file into place (replacing a state file no
    /// record trusts any more) and syncs the directory, so the name
    /// survives a crash.
    pub fn commit(self) -> std::io::Result<()> {
        self.temp.replace()?;
        if let Some(dir) = self.target.parent() {
            maqet_base::files::sync_dir(dir);
        }
        Ok(())
    }
}

/// Deletes the state file maqet saved at `path` (`identity`), through the
/// deletion walk: kept when it is not that file any more.
pub fn delete(path: &Path, identity: &FileIdentity) -> Removal {
    remove_if_same(path, FileKind::SavedState, Some(identity), &|_| None)
}

/// Deletes the temporary files killed saves left for `target`; returns
/// the paths deleted. One being written (its writer alive) stays.
pub fn delete_leftovers(target: &Path) -> Vec<PathBuf> {
    tmp::leftovers_for(target)
        .into_iter()
        .filter(|l| tmp::remove_leftover(&l.path) == Removal::Deleted)
        .map(|l| l.path)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SaveReason;
    use std::io::Write;

    fn record(path: &Path, identity: FileIdentity, size: u64) -> SavedState {
        SavedState {
            path: path.to_path_buf(),
            size,
            saved_at: 1,
            identity,
            run_state: "running".into(),
            reason: SaveReason::Suspend,
            qemu_version: "7.2.22".into(),
            save_ms: 1,
        }
    }

    #[test]
    fn only_the_recorded_complete_file_is_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let target = path_in(&dir);
        let mut w = Writer::create(&target).unwrap();
        // Nothing under the real name while it is written.
        std::fs::File::from(w.fd().try_clone_to_owned().unwrap())
            .write_all(b"QEVM state")
            .unwrap();
        assert!(!target.exists());
        let mode = std::fs::metadata(w.temp_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (identity, size) = w.finish().unwrap();
        assert_eq!(size, 10);
        let rec = record(&target, identity, size);
        // Recorded, not yet renamed (a kill here): not trusted.
        assert!(matches!(check(&rec), Err(Untrusted::Missing { .. })));
        let temp = w.temp_path().to_path_buf();
        w.commit().unwrap();
        assert!(!temp.exists());
        check(&rec).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut open(&rec).unwrap(), &mut text).unwrap();
        assert_eq!(text, "QEVM state");
        // Grown or cut since: not the saved file.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&target)
            .unwrap()
            .write_all(b"x")
            .unwrap();
        assert!(matches!(
            check(&rec),
            Err(Untrusted::Size { found: 11, .. })
        ));
        assert!(matches!(open(&rec), Err(Untrusted::Size { .. })));
        // Replaced by another file of the same size.
        std::fs::remove_file(&target).unwrap();
        std::fs::write(&target, b"QEVM state").unwrap();
        assert!(matches!(check(&rec), Err(Untrusted::Replaced { .. })));
        // A symlink to the recorded inode is not the recorded name's file.
        std::fs::remove_file(&target).unwrap();
        let real = dir.join("elsewhere");
        std::fs::write(&real, b"QEVM state").unwrap();
        std::os::unix::fs::symlink(&real, &target).unwrap();
        let linked = record(&target, stat_path(&real).unwrap().identity, 10);
        assert!(matches!(check(&linked), Err(Untrusted::NotRegular { .. })));
        assert!(matches!(open(&linked), Err(Untrusted::NotRegular { .. })));
        // Deletion goes by identity and never through the link.
        assert!(matches!(
            delete(&target, &linked.identity),
            Removal::KeptUnproven(_)
        ));
        assert!(real.exists());
    }

    #[test]
    fn budgets_grow_with_memory_from_a_floor() {
        assert_eq!(save_budget(None), Duration::from_secs(34));
        assert_eq!(save_budget(Some(1 << 30)), Duration::from_secs(62));
        assert_eq!(save_budget(Some(16 << 30)), Duration::from_secs(542));
        assert_eq!(load_budget(0), Duration::from_secs(30));
        assert_eq!(load_budget(320 << 20), Duration::from_secs(40));
    }

    #[test]
    fn a_dropped_writer_leaves_nothing_and_leftovers_of_killed_saves_go() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let target = path_in(&dir);
        let w = Writer::create(&target).unwrap();
        let temp = w.temp_path().to_path_buf();
        // Its writer is alive: not a leftover.
        assert!(delete_leftovers(&target).is_empty());
        drop(w);
        assert!(!temp.exists() && !target.exists());
        // A killed save's file (nobody holds its lock) goes with the next save.
        let killed = dir.join(".state.sav.maqet-999999.tmp");
        std::fs::write(&killed, b"torn").unwrap();
        let w = Writer::create(&target).unwrap();
        assert!(!killed.exists());
        // The finished file replaces an untrusted one at the name.
        std::fs::write(&target, b"old, unrecorded").unwrap();
        let mut w = w;
        let (id, _) = w.finish().unwrap();
        w.commit().unwrap();
        assert!(stat_path(&target).unwrap().identity.matches(&id));
        assert_eq!(delete(&target, &id), Removal::Deleted);
        assert_eq!(delete(&target, &id), Removal::AlreadyGone);
    }
}
