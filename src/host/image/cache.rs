//! The image cache, `$XDG_CACHE_HOME/maqet/images/`:
//!
//! ```text
//! by-url-sha256/SHA256(URL)/   one directory per URL (Lima's layout)
//!     url                      the URL, for people
//!     lock                     flock: one pull of a URL at a time
//!     entry.json               the verified result: digests, how it was
//!                              verified, the file it became (written last)
//!     data.partial, data.json  a download in progress and what it is a
//!                              prefix of (resumed with Range)
//! blobs/sha256/HEX             the images, named by their content (0444);
//!                              a VM's `base:` points here
//! lock                         flock: pulls share it, `rm`/`prune` take it alone
//! data-dirs                    data directories that resolved images here,
//!                              so `prune` can ask each whose VMs use what
//! ```
//!
//! Data is named by content, not by URL, because a URL's content moves
//! (Debian's `latest/`): a new download never replaces the bytes an
//! existing VM's overlay was made on. Nothing is in `blobs/` or
//! `entry.json` unless it was verified (or the user skipped that, which
//! the entry records), and both appear by rename or link, so a killed pull
//! leaves only a partial file that the next pull resumes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::digest::{Algorithm, Digest};
use super::location::Location;
use super::{io_error, ImageError};

/// How a cached file was verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// The digest that matched (of the file as downloaded).
    pub digest: String,
    /// `digest pinned in …`, or the checksum file's URL.
    pub by: String,
}

/// One URL's cached result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub url: String,
    /// `sha256:HEX` of the file VMs use (decompressed, converted).
    pub blob: String,
    pub size: u64,
    /// `qcow2`, `raw`; `file` for a kernel or initrd.
    pub format: String,
    /// The disk's size as the guest sees it.
    #[serde(default)]
    pub virtual_size: Option<u64>,
    /// sha256 of the bytes as downloaded.
    pub download_digest: String,
    pub download_size: u64,
    pub compression: Option<String>,
    /// `None`: pulled with `--insecure-skip-verify`.
    pub verified: Option<Verified>,
    /// The format before `--qcow2` converted it.
    pub converted_from: Option<String>,
    /// Seconds since the epoch.
    pub pulled: u64,
}

impl Entry {
    /// Whether the downloaded file had digest `d`.
    pub fn matches(&self, d: &Digest) -> bool {
        match d.alg {
            Algorithm::Sha256 => self.download_digest == d.to_string(),
            _ => self
                .verified
                .as_ref()
                .is_some_and(|v| v.digest == d.to_string()),
        }
    }

    /// The blob's sha256 hex.
    pub fn blob_hex(&self) -> &str {
        self.blob.strip_prefix("sha256:").unwrap_or(&self.blob)
    }
}

/// A held `flock`; dropping it releases the lock.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    root: PathBuf,
}

/// A file in `blobs/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub sha256: String,
    pub path: PathBuf,
    pub size: u64,
}

impl Cache {
    /// `$XDG_CACHE_HOME/maqet/images` (else `~/.cache/maqet/images`).
    pub fn from_env() -> Result<Cache, ImageError> {
        maqet_base::paths::cache_home()
            .map(|c| Cache::at(c.join("maqet/images")))
            .ok_or(ImageError::NoCacheDir)
    }

    pub fn at(root: PathBuf) -> Cache {
        Cache { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `by-url-sha256/SHA256(location)`.
    pub fn url_dir(&self, loc: &Location) -> PathBuf {
        let hex: String = Sha256::digest(loc.to_string().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.root.join("by-url-sha256").join(hex)
    }

    pub fn blob_path(&self, sha256_hex: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(sha256_hex)
    }

    /// Where `loc` is being downloaded to.
    pub fn partial_path(&self, loc: &Location) -> PathBuf {
        self.url_dir(loc).join("data.partial")
    }

    fn mkdir(&self, dir: &Path) -> Result<(), ImageError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| io_error(&dir.join("."), e))
    }

    fn lock_file(
        &self,
        path: &Path,
        shared: bool,
        wait: &dyn Fn(),
    ) -> Result<CacheLock, ImageError> {
        use rustix::fs::{flock, FlockOperation as Op};
        if let Some(dir) = path.parent() {
            self.mkdir(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| io_error(path, e))?;
        let (nb, block) = if shared {
            (Op::NonBlockingLockShared, Op::LockShared)
        } else {
            (Op::NonBlockingLockExclusive, Op::LockExclusive)
        };
        if flock(&file, nb).is_err() {
            wait();
            flock(&file, block).map_err(|e| io_error(path, e.into()))?;
        }
        Ok(CacheLock { _file: file })
    }

    /// The pull lock of one URL (`wait` is called before blocking on it).
    pub fn lock_url(&self, loc: &Location, wait: &dyn Fn()) -> Result<CacheLock, ImageError> {
        let dir = self.url_dir(loc);
        self.mkdir(&dir)?;
        let url_file = dir.join("url");
        if !url_file.exists() {
            let _ = std::fs::write(&url_file, format!("{loc}\n"));
        }
        self.lock_file(&dir.join("lock"), false, wait)
    }

    /// Held by every pull and every definition that points at a blob, so
    /// `prune` cannot take a blob from under them.
    pub fn shared(&self) -> Result<CacheLock, ImageError> {
        self.lock_file(&self.root.join("lock"), true, &|| {})
    }

    /// Held by `rm` and `prune` while they delete.
    pub fn exclusive(&self, wait: &dyn Fn()) -> Result<CacheLock, ImageError> {
        self.lock_file(&self.root.join("lock"), false, wait)
    }

    /// `loc`'s entry, if one was written and its blob is still there.
    pub fn entry(&self, loc: &Location) -> Option<Entry> {
        let e = read_entry(&self.url_dir(loc).join("entry.json"))?;
        self.blob_path(e.blob_hex()).is_file().then_some(e)
    }

    /// Writes `loc`'s entry (atomically, durably).
    pub fn write_entry(&self, loc: &Location, e: &Entry) -> Result<(), ImageError> {
        let dir = self.url_dir(loc);
        let path = dir.join("entry.json");
        let tmp = dir.join("entry.json.tmp");
        let text = serde_json::to_vec_pretty(e).expect("plain data serializes");
        let io = |err| io_error(&path, err);
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(&text).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        maqet_base::files::sync_dir(&dir);
        Ok(())
    }

    /// Removes `loc`'s entry (not its blob).
    pub fn forget(&self, loc_dir: &Path) {
        let _ = std::fs::remove_dir_all(loc_dir);
    }

    /// Moves a verified file into `blobs/` under its sha256 (read-only).
    /// A blob of that content already there is kept and `file` dropped.
    pub fn commit_blob(&self, file: &Path, sha256: &Digest) -> Result<PathBuf, ImageError> {
        let dst = self.blob_path(&sha256.hex);
        self.mkdir(dst.parent().expect("blobs/sha256"))?;
        let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o444));
        match std::fs::hard_link(file, &dst) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(&dst, e)),
        }
        let _ = std::fs::remove_file(file);
        maqet_base::files::sync_dir(dst.parent().expect("blobs/sha256"));
        Ok(dst)
    }

    /// Every URL directory with its entry (`None`: no complete download).
    pub fn url_dirs(&self) -> Vec<(PathBuf, Option<Entry>)> {
        let mut out: Vec<(PathBuf, Option<Entry>)> =
            std::fs::read_dir(self.root.join("by-url-sha256"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|d| {
                    let p = d.path();
                    let e = read_entry(&p.join("entry.json"));
                    (p, e)
                })
                .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Every file in `blobs/`.
    pub fn blobs(&self) -> Vec<Blob> {
        let mut out: Vec<Blob> = std::fs::read_dir(self.root.join("blobs/sha256"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|d| {
                let sha256 = d.file_name().to_string_lossy().into_owned();
                let meta = d.metadata().ok().filter(|m| m.is_file())?;
                (Digest::new(Algorithm::Sha256, &sha256).is_some()).then(|| Blob {
                    sha256,
                    path: d.path(),
                    size: meta.len(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        out
    }

    /// Bytes under the cache (blobs, partial downloads, the rest).
    pub fn size(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            match std::fs::symlink_metadata(p) {
                Ok(m) if m.is_dir() => std::fs::read_dir(p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| walk(&e.path()))
                    .sum(),
                Ok(m) => m.len(),
                Err(_) => 0,
            }
        }
        walk(&self.root)
    }

    /// Notes that `data_dir` defined VMs on images of this cache.
    pub fn record_user(&self, data_dir: &Path) -> Result<(), ImageError> {
        if self.users().iter().any(|d| d == data_dir) {
            return Ok(());
        }
        self.mkdir(&self.root)?;
        let path = self.root.join("data-dirs");
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        // One short line per write: appends do not interleave.
        f.write_all(format!("{}\n", data_dir.display()).as_bytes())
            .map_err(|e| io_error(&path, e))
    }

    /// The data directories [`Cache::record_user`] noted, that still exist.
    pub fn users(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_to_string(self.root.join("data-dirs"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

fn read_entry(path: &Path) -> Option<Entry> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(blob: &str) -> Entry {
        Entry {
            url: "https://h/x.qcow2".into(),
            blob: format!("sha256:{blob}"),
            size: 3,
            format: "qcow2".into(),
            virtual_size: None,
            download_digest: format!("sha256:{blob}"),
            download_size: 3,
            compression: None,
            verified: None,
            converted_from: None,
            pulled: 1,
        }
    }

    #[test]
    fn entries_count_only_with_their_blob_and_blobs_are_by_content() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::at(d.path().join("images"));
        let loc = Location::Url("https://h/x.qcow2".into());
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let _l = c.lock_url(&loc, &|| panic!("nobody holds it")).unwrap();
        c.write_entry(&loc, &entry(hex)).unwrap();
        assert_eq!(c.entry(&loc), None, "no blob yet");
        let tmp = c.url_dir(&loc).join("blob.tmp");
        std::fs::write(&tmp, b"abc").unwrap();
        let digest = Digest::new(Algorithm::Sha256, hex).unwrap();
        let blob = c.commit_blob(&tmp, &digest).unwrap();
        assert!(!tmp.exists());
        assert_eq!(blob, c.blob_path(hex));
        let mode = std::fs::metadata(&blob).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o444);
        assert_eq!(c.entry(&loc).unwrap().blob_hex(), hex);
        // The same content again: the existing blob stays.
        std::fs::write(&tmp, b"abc").unwrap();
        assert_eq!(c.commit_blob(&tmp, &digest).unwrap(), blob);
        assert_eq!(c.blobs().len(), 1);
        assert_eq!(c.url_dirs().len(), 1);
        assert!(c.size() >= 3);
        let e = entry(hex);
        assert!(e.matches(&digest));
        let sha512 = Digest::new(Algorithm::Sha512, &"a".repeat(128)).unwrap();
        assert!(!e.matches(&sha512), "unverified entries know no sha512");
    }

    #[test]
    fn a_second_locker_waits_and_users_are_recorded_once() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::at(d.path().join("images"));
        let loc = Location::Url("https://h/y".into());
        let held = c.lock_url(&loc, &|| {}).unwrap();
        let c2 = c.clone();
        let loc2 = loc.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let waited = std::sync::atomic::AtomicBool::new(false);
            let _l = c2
                .lock_url(&loc2, &|| {
                    waited.store(true, std::sync::atomic::Ordering::SeqCst)
                })
                .unwrap();
            tx.send(waited.load(std::sync::atomic::Ordering::SeqCst))
                .unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_err());
        drop(held);
        assert!(rx.recv().unwrap(), "the second pull was told it waits");
        t.join().unwrap();
        c.record_user(d.path()).unwrap();
        c.record_user(d.path()).unwrap();
        assert_eq!(c.users(), [d.path().to_path_buf()]);
    }
}
