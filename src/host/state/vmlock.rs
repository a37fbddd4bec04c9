//! A per-VM lock that makes `start` and `rm` of one VM exclusive.
//!
//! `start` holds it from reading the definition until the unit is ready
//! (or the failed start is undone), `rm` from its checks until the
//! definition is deleted. So `rm` either sees the VM running (and refuses,
//! or stops it with `--force`), or `start` finds no definition: a VM that
//! runs is always one maqet knows. The lock is `flock(2)` on
//! `DATA_DIR/locks/NAME.lock`: the kernel releases it when the holder
//! exits, however it ends.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use maqet_base::paths::DataDir;
use maqet_base::vmname::VmName;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot lock VM '{vm}' ({path}): {source}")]
    Io {
        vm: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("VM '{vm}' is busy: another maqet process has been starting or removing it for {waited:?} (lock {path})")]
    Busy {
        vm: String,
        path: PathBuf,
        waited: Duration,
    },
}

/// Held while alive; dropping it releases the lock.
#[derive(Debug)]
pub struct VmLock {
    file: File,
    path: PathBuf,
}

/// How often a waiting process tries again; flock itself cannot time out.
const RETRY: Duration = Duration::from_millis(20);

impl VmLock {
    pub fn path_of(data_dir: &DataDir, vm: &VmName) -> PathBuf {
        data_dir
            .path()
            .join("locks")
            .join(format!("{}.lock", vm.as_str()))
    }

    /// Takes the lock, waiting up to `wait` for another holder.
    pub fn acquire(data_dir: &DataDir, vm: &VmName, wait: Duration) -> Result<VmLock, LockError> {
        let path = Self::path_of(data_dir, vm);
        let io = |source| LockError::Io {
            vm: vm.to_string(),
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let deadline = Instant::now() + wait;
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&path)
                .map_err(io)?;
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                // `rm` unlinks the file while holding it: a lock on an
                // unlinked file excludes nobody, so take the new one.
                Ok(()) if same_file(&file, &path) => return Ok(VmLock { file, path }),
                Ok(()) => continue,
                Err(rustix::io::Errno::WOULDBLOCK) => {}
                Err(e) => return Err(io(e.into())),
            }
            if Instant::now() >= deadline {
                return Err(LockError::Busy {
                    vm: vm.to_string(),
                    path,
                    waited: wait,
                });
            }
            std::thread::sleep(RETRY);
        }
    }

    /// Removes the lock file (the VM is gone), still holding the lock so
    /// that a waiter notices and locks a fresh file.
    pub fn remove_file(&self) {
        if same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, DataDir, VmName) {
        let t = tempfile::tempdir().unwrap();
        let dd = DataDir::resolve(Some(t.path())).unwrap();
        (t, dd, VmName::new("web").unwrap())
    }

    #[test]
    fn second_holder_waits_and_gives_up_with_busy() {
        let (_t, dd, vm) = setup();
        let held = VmLock::acquire(&dd, &vm, Duration::ZERO).unwrap();
        let e = VmLock::acquire(&dd, &vm, Duration::from_millis(50)).unwrap_err();
        assert!(matches!(e, LockError::Busy { .. }), "{e}");
        assert!(e.to_string().contains("VM 'web' is busy"), "{e}");
        drop(held);
        VmLock::acquire(&dd, &vm, Duration::ZERO).unwrap();
    }

    #[test]
    fn a_removed_lock_file_is_replaced_not_shared() {
        let (_t, dd, vm) = setup();
        let held = VmLock::acquire(&dd, &vm, Duration::ZERO).unwrap();
        held.remove_file();
        assert!(!VmLock::path_of(&dd, &vm).exists());
        // A new holder gets a new file while the old one is still held.
        let second = VmLock::acquire(&dd, &vm, Duration::ZERO).unwrap();
        assert!(VmLock::path_of(&dd, &vm).exists());
        drop(second);
        drop(held);
    }
}
