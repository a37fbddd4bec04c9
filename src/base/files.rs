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
use std::path::{Path, PathBuf};

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
    open_checked(path, false)
}

/// [`open_regular`] that also takes a block device: a disk image.
pub fn open_image(path: &Path) -> io::Result<File> {
    open_checked(path, true)
}

fn open_checked(path: &Path, block_ok: bool) -> io::Result<File> {
    if let Some(e) = not_regular(path, block_ok) {
        return Err(refused(e));
    }
    let file = open_nonblocking(path)?;
    let m = file.metadata()?;
    if !(m.is_file() || (block_ok && m.file_type().is_block_device())) {
        // Replaced between the two looks.
        return Err(refused(NotRegular { kind: kind(&m) }));
    }
    Ok(file)
}

/// Opens any file for reading without blocking in `open()`: a FIFO
/// without a writer then reads as empty instead of hanging, while a pipe
/// with one (`maqet add <(generate)`) reads as usual. The descriptor is
/// blocking again once open.
pub fn open_nonblocking(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
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

/// A file another process (QEMU) writes under a temporary name beside
/// its destination, moved into place only when that is allowed: where
/// nothing exists yet, or (`replace`) over a regular file. So a screendump
/// can never write into a disk image, a FIFO or a device, whatever the
/// destination turns out to be. The temporary file is removed unless
/// [`commit`](Self::commit) moved it.
#[derive(Debug)]
pub struct NewFile {
    temp: PathBuf,
    dest: PathBuf,
    replace: bool,
    done: bool,
}

/// Why a [`NewFile`] cannot go to its destination.
#[derive(Debug, thiserror::Error)]
pub enum NewFileError {
    /// Replaced only when the caller asks to (the CLI's `--force`).
    #[error("{} exists (only a regular file is replaced, and only when asked to)", .0.display())]
    Exists(PathBuf),
    #[error("{}: {source}; it is never replaced", path.display())]
    NotRegular { path: PathBuf, source: NotRegular },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl NewFile {
    /// Checks `dest` and creates the empty temporary file beside it.
    pub fn create(dest: &Path, replace: bool) -> Result<NewFile, NewFileError> {
        Self::allowed(dest, replace)?;
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| NewFileError::Io { path, source }
        };
        let dir = dest
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        for n in 0..100u32 {
            let temp = dir.join(format!(".{name}.maqet-{}-{n}.tmp", std::process::id()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o666)
                .open(&temp)
            {
                Ok(_) => {
                    return Ok(NewFile {
                        temp,
                        dest: dest.to_path_buf(),
                        replace,
                        done: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(&temp)(e)),
            }
        }
        Err(io_err(dir)(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free temporary name",
        )))
    }

    /// Where the writer writes.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// Moves the written file to its destination: by a hard link, which
    /// fails if something appeared there meanwhile, or with `replace` by a
    /// rename over a regular file (checked again just before).
    pub fn commit(mut self) -> Result<(), NewFileError> {
        let io_err = |source| NewFileError::Io {
            path: self.dest.clone(),
            source,
        };
        Self::allowed(&self.dest, self.replace)?;
        let exists = std::fs::symlink_metadata(&self.dest).is_ok();
        if self.replace && exists {
            std::fs::rename(&self.temp, &self.dest).map_err(io_err)?;
        } else {
            match std::fs::hard_link(&self.temp, &self.dest) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(NewFileError::Exists(self.dest.clone()))
                }
                other => other.map_err(io_err)?,
            }
            let _ = std::fs::remove_file(&self.temp);
        }
        self.done = true;
        Ok(())
    }

    fn allowed(dest: &Path, replace: bool) -> Result<(), NewFileError> {
        match std::fs::symlink_metadata(dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(NewFileError::Io {
                path: dest.to_path_buf(),
                source,
            }),
            Ok(m) if !m.is_file() => Err(NewFileError::NotRegular {
                path: dest.to_path_buf(),
                source: NotRegular { kind: kind(&m) },
            }),
            Ok(_) if replace => Ok(()),
            Ok(_) => Err(NewFileError::Exists(dest.to_path_buf())),
        }
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Makes a FIFO at `p` (0600). For the tests of every crate that must
/// refuse one (a `#[cfg(test)]` item would not reach the other crates).
pub fn mkfifo(p: &Path) -> io::Result<()> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )?;
    Ok(())
}

/// fsync a directory so a rename or link in it survives a crash (best
/// effort: the file itself is synced already).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn special_files_are_refused_at_once() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("f");
        mkfifo(&fifo).unwrap();
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
        assert!(open_image(&fifo).is_err());
        assert!(open_image(&f).is_ok());
    }

    #[test]
    fn a_fifo_without_a_writer_reads_as_empty_one_with_a_writer_as_usual() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("f");
        mkfifo(&fifo).unwrap();
        let mut text = String::new();
        open_nonblocking(&fifo)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "");
        // With a writer (`maqet add <(generate)`): opened before the text
        // comes, read to the end as from a blocking pipe. `keeper` lets the
        // writer's open return at once; it never reads.
        let _keeper = open_nonblocking(&fifo).unwrap();
        use std::io::Write;
        let mut writer = OpenOptions::new().write(true).open(&fifo).unwrap();
        let mut r = open_nonblocking(&fifo).unwrap();
        let late = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            writer.write_all(b"name: x\n").unwrap();
        });
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        late.join().unwrap();
        assert_eq!(got, "name: x\n");
    }

    #[test]
    fn a_new_file_goes_only_where_nothing_is_or_with_replace_over_a_regular_file() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("shot.ppm");
        let f = NewFile::create(&dest, false).unwrap();
        std::fs::write(f.path(), "P6").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "P6");
        // Exists: refused without replace, before anything is written.
        let e = NewFile::create(&dest, false).unwrap_err();
        assert!(matches!(e, NewFileError::Exists(_)), "{e}");
        assert!(e.to_string().contains("exists"), "{e}");
        let f = NewFile::create(&dest, true).unwrap();
        std::fs::write(f.path(), "P6 new").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "P6 new");
        // Never a FIFO, a device or a directory, not even with replace.
        let fifo = d.path().join("fifo");
        mkfifo(&fifo).unwrap();
        for (p, replace) in [
            (&fifo, true),
            (&fifo, false),
            (&d.path().to_path_buf(), true),
        ] {
            let e = NewFile::create(p, replace).unwrap_err();
            assert!(matches!(e, NewFileError::NotRegular { .. }), "{e}");
        }
        // Something appearing meanwhile is not overwritten.
        let late = d.path().join("late.ppm");
        let f = NewFile::create(&late, false).unwrap();
        std::fs::write(&late, "theirs").unwrap();
        assert!(matches!(f.commit(), Err(NewFileError::Exists(_))));
        assert_eq!(std::fs::read_to_string(&late).unwrap(), "theirs");
        // No temporary file is left behind, whatever happened.
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
