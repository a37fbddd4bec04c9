//! QEMU's image locks, seen from outside. QEMU (and qemu-img, qemu-io,
//! qemu-nbd, qemu-storage-daemon) takes open-file-description byte-range
//! locks on every image it opens (block/file-posix.c: bytes 100+ for the
//! permissions it uses, 200+ for those it does not share), held as long as
//! the image is open. So a process maqet knows nothing about — a QEMU
//! started by hand, another user's QEMU on a shared image — still shows
//! that the file is in use.

use std::os::fd::{AsFd, AsRawFd};

use super::identity::FileIdentity;

/// Why the open file `fd` counts as in use: some other open file
/// description holds a byte-range lock on it (`F_OFD_GETLK` for a write
/// lock over the whole file). A probe that fails counts as a lock: when in
/// doubt a file is in use.
pub fn held(fd: &impl AsFd) -> Option<String> {
    // `l_len` 0: to the end of the file, however far it grows.
    let mut fl = byte_range(libc::F_WRLCK, 0, 0);
    // Through libc: rustix offers only F_GETLK, which overlooks the locks
    // of this very process; F_OFD_GETLK sees every other description's.
    // SAFETY: F_OFD_GETLK reads and writes the flock we pass, on a
    // descriptor borrowed for the duration of the call.
    let rc = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if rc != 0 {
        return Some(format!(
            "maqet cannot tell whether a process holds an image lock on it ({})",
            std::io::Error::last_os_error()
        ));
    }
    (fl.l_type != libc::F_UNLCK as libc::c_short).then(|| HOLDER.to_string())
}

/// A `struct flock` for `len` bytes from `start` (0: to the end).
fn byte_range(typ: libc::c_int, start: i64, len: i64) -> libc::flock {
    libc::flock {
        l_type: typ as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start,
        l_len: len,
        l_pid: 0,
    }
}

/// Takes a shared lock on byte 100 through `holder`'s open file
/// description, as QEMU does for the permissions it uses.
#[cfg(test)]
pub(crate) fn lock_as_qemu_does(holder: &impl AsFd) -> std::io::Result<()> {
    let fl = byte_range(libc::F_RDLCK, 100, 1);
    // SAFETY: F_OFD_SETLK only reads the flock we pass; the descriptor is
    // borrowed for the duration of the call.
    let rc = unsafe { libc::fcntl(holder.as_fd().as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// [`held`] for the file at `path` (following symlinks, as QEMU would);
/// when it cannot be opened, whether /proc/locks lists it. None for a
/// path that names nothing.
pub fn held_at(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => held(&f),
        Err(_) => {
            let id = super::identity::stat_followed(path).ok()?;
            listed(&id).then(|| {
                "a process holds a lock on it (listed in /proc/locks; maqet cannot open it to probe)"
                    .to_string()
            })
        }
    }
}

/// What a held lock means for the user.
const HOLDER: &str = "a process holds QEMU's image lock on it (a QEMU or qemu-img that maqet does not manage has it open)";

/// Whether `/proc/locks` lists a lock on the file with this identity: for a
/// file maqet cannot open to probe. The inode number alone decides: the
/// device /proc/locks prints is the file system's, which differs from what
/// `stat` says on btrfs subvolumes, and a false match only keeps a file.
/// An unreadable /proc/locks counts as a lock.
pub fn listed(id: &FileIdentity) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/locks") else {
        return true;
    };
    listed_in(&text, id.ino)
}

fn listed_in(text: &str, ino: u64) -> bool {
    text.lines().any(|l| {
        // `1: OFDLCK ADVISORY READ -1 fe:00:10027617 100 101`; a waiter's
        // line has `->` after the number.
        let f: Vec<&str> = l.split_whitespace().filter(|w| *w != "->").collect();
        f.get(5)
            .and_then(|dev_ino| dev_ino.rsplit(':').next())
            .and_then(|i| i.parse::<u64>().ok())
            == Some(ino)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::identity::stat_path;

    #[test]
    fn an_ofd_lock_of_another_description_is_seen() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("img");
        std::fs::write(&p, vec![0u8; 512]).unwrap();
        let mine = std::fs::File::open(&p).unwrap();
        assert_eq!(held(&mine), None);
        // Another open file description takes a shared lock on byte 100,
        // as QEMU does for the permissions it uses.
        let holder = std::fs::File::open(&p).unwrap();
        lock_as_qemu_does(&holder).unwrap();
        assert!(held(&mine).is_some_and(|w| w.contains("image lock")));
        let id = stat_path(&p).unwrap().identity;
        assert!(listed(&id));
        drop(holder);
        assert_eq!(held(&mine), None);
        assert!(!listed(&id));
    }

    #[test]
    fn proc_locks_lines_are_matched_by_inode() {
        let text = "1: OFDLCK ADVISORY  READ -1 fe:00:10027617 203 203\n";
        assert!(listed_in(text, 10027617));
        assert!(listed_in(
            "2: -> OFDLCK ADVISORY  WRITE -1 fe:00:10027617 100 100\n",
            10027617
        ));
        assert!(!listed_in(
            "1: POSIX  ADVISORY  WRITE 77 fe:00:10027618 0 EOF\n",
            10027617
        ));
    }
}
