//! The identity of a file on disk (device, inode, birth time), read with
//! `statx` without following a final symlink. See [`FileIdentity`] for why
//! these fields and not size or mtime.

use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{statx, AtFlags, FileType, Statx, StatxFlags, CWD};

pub use crate::state::FileIdentity;

/// What `statx` says about one directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub identity: FileIdentity,
    pub file_type: FileType,
}

fn from_statx(s: &Statx) -> Found {
    let btime_ns = StatxFlags::from_bits_retain(s.stx_mask)
        .contains(StatxFlags::BTIME)
        .then(|| s.stx_btime.tv_sec * 1_000_000_000 + i64::from(s.stx_btime.tv_nsec));
    Found {
        identity: FileIdentity {
            dev: rustix::fs::makedev(s.stx_dev_major, s.stx_dev_minor),
            ino: s.stx_ino,
            btime_ns,
        },
        file_type: FileType::from_raw_mode(u32::from(s.stx_mode)),
    }
}

/// `name` inside the directory `dir`, not following a symlink there.
pub fn stat_at(dir: impl AsFd, name: &Path) -> std::io::Result<Found> {
    statx(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS | StatxFlags::BTIME,
    )
    .map(|s| from_statx(&s))
    .map_err(std::io::Error::from)
}

/// The file an open descriptor refers to (a directory opened `O_PATH`
/// too).
pub fn stat_fd(fd: impl AsFd) -> std::io::Result<Found> {
    statx(
        fd,
        "",
        AtFlags::EMPTY_PATH,
        StatxFlags::BASIC_STATS | StatxFlags::BTIME,
    )
    .map(|s| from_statx(&s))
    .map_err(std::io::Error::from)
}

/// `path` (relative to the working directory when relative), not following
/// a final symlink.
pub fn stat_path(path: &Path) -> std::io::Result<Found> {
    stat_at(CWD, path)
}

/// `path`, following symlinks: what QEMU opens when it is given `path`.
pub fn stat_followed(path: &Path) -> std::io::Result<FileIdentity> {
    statx(
        CWD,
        path,
        AtFlags::empty(),
        StatxFlags::BASIC_STATS | StatxFlags::BTIME,
    )
    .map(|s| from_statx(&s).identity)
    .map_err(std::io::Error::from)
}

/// `path`, following symlinks, with its type (`/proc/PID/fd/N` gives the
/// open file itself).
pub fn stat_followed_found(path: &Path) -> std::io::Result<Found> {
    statx(
        CWD,
        path,
        AtFlags::empty(),
        StatxFlags::BASIC_STATS | StatxFlags::BTIME,
    )
    .map(|s| from_statx(&s))
    .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn identity_is_the_inode_and_survives_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("disk.img");
        std::fs::write(&f, "a").unwrap();
        let first = stat_path(&f).unwrap();
        let meta = std::fs::symlink_metadata(&f).unwrap();
        assert_eq!(first.identity.dev, meta.dev());
        assert_eq!(first.identity.ino, meta.ino());
        assert!(first.file_type == FileType::RegularFile);
        // The guest writes to its disk: still the same file.
        std::fs::write(&f, "changed contents, another size").unwrap();
        assert!(first.identity.matches(&stat_path(&f).unwrap().identity));
        // Replaced (a new inode under the same name): not the same file.
        let other = tmp.path().join("other.img");
        std::fs::write(&other, "b").unwrap();
        std::fs::rename(&other, &f).unwrap();
        assert!(!first.identity.matches(&stat_path(&f).unwrap().identity));
    }

    #[test]
    fn a_symlink_is_itself_not_its_target() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, "").unwrap();
        let l = tmp.path().join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        let link = stat_path(&l).unwrap();
        assert!(link.file_type == FileType::Symlink);
        assert_eq!(stat_followed(&l).unwrap(), stat_path(&f).unwrap().identity);
    }

    #[test]
    fn birth_time_tells_a_reused_inode_apart() {
        let a = FileIdentity {
            dev: 1,
            ino: 2,
            btime_ns: Some(10),
        };
        let reused = FileIdentity {
            btime_ns: Some(11),
            ..a
        };
        assert!(!a.matches(&reused));
        // Without a birth time on either side, device and inode decide.
        assert!(a.matches(&FileIdentity {
            btime_ns: None,
            ..a
        }));
        assert!(!a.matches(&FileIdentity { ino: 3, ..a }));
    }
}
