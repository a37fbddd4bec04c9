//! Files that must be regular files (a config's user-data and ssh keys,
//! disk images, screendump targets), checked and opened without ever
//! blocking. `open()` of a FIFO blocks until the other end opens it, a
//! read from one until something is written, and opening a device can do
//! anything (a watchdog starts counting); so the kind is looked at before
//! the open, the open is non-blocking and never takes a terminal as the
//! controlling one, and the kind is checked again on the open file.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// A file that is something other than what was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("it is {kind}, not a regular file")]
pub struct NotRegular {
    pub kind: &'static str,
}

/// "a FIFO", "a directory", … for messages.
pub fn kind(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "a special file"
    }
}

/// What is wrong with `path` where a regular file is meant (`block_ok`:
/// or a block device, for disk images): `None` when it is one, or does
/// not exist (the caller reports a missing file in its own words).
pub fn not_regular(path: &Path, block_ok: bool) -> Option<NotRegular> {
    let m = std::fs::metadata(path).ok()?;
    let t = m.file_type();
    (!(t.is_file() || (block_ok && t.is_block_device()))).then(|| NotRegular { kind: kind(&m) })
}

fn refused(e: NotRegular) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

/// Opens a regular file for reading without blocking on anything else
/// (see the module comment); other kinds are an `InvalidInput` error
/// whose text is [`NotRegular`]'s.
pub fn open_regular(path: &Path) -> io::Result<File> {
    if let Some(e) = not_regular(path, false) {
        return Err(refused(e));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let m = file.metadata()?;
    if !m.is_file() {
        // Replaced between the two looks.
        return Err(refused(NotRegular { kind: kind(&m) }));
    }
    // O_NONBLOCK means nothing for a regular file's reads; clear it anyway,
    // so the descriptor behaves as a plain open's would.
    rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::empty())?;
    Ok(file)
}

/// The whole of a regular file of at most `max` bytes, as text.
pub fn read_regular(path: &Path, max: u64) -> io::Result<String> {
    let mut text = String::new();
    open_regular(path)?
        .take(max + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is larger than {max} bytes"),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn mkfifo(p: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    #[test]
    fn special_files_are_refused_at_once() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("f");
        mkfifo(&fifo);
        let t = Instant::now();
        let e = read_regular(&fifo, 100).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5), "it blocked");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(e.to_string(), "it is a FIFO, not a regular file");
        assert_eq!(
            not_regular(&fifo, true),
            Some(NotRegular { kind: "a FIFO" })
        );
        assert_eq!(
            not_regular(d.path(), false).map(|e| e.kind),
            Some("a directory")
        );
        assert_eq!(
            not_regular(Path::new("/dev/null"), true).map(|e| e.kind),
            Some("a character device")
        );
        assert!(open_regular(Path::new("/dev/null")).is_err());
        assert_eq!(not_regular(&d.path().join("missing"), false), None);
        let f = d.path().join("r");
        std::fs::write(&f, "hello").unwrap();
        assert_eq!(read_regular(&f, 5).unwrap(), "hello");
        assert!(read_regular(&f, 4).is_err());
        // Through a symlink, as the file itself.
        let l = d.path().join("l");
        std::os::unix::fs::symlink(&fifo, &l).unwrap();
        assert!(read_regular(&l, 100).is_err());
    }
}
