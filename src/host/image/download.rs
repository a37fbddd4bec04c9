//! One file to a partial download in the cache, hashed on the way in.
//!
//! The body is read on a thread of its own and handed over in chunks, so
//! reading the network and writing + hashing overlap (two cores: the
//! download keeps up with curl), and a connection that delivers nothing
//! for [`STALL`] is given up on without waiting for a read that may never
//! return. Transient failures are retried with back-off, each retry
//! resuming with `Range` where the file stands; a server that answers a
//! range request with the whole file (no `Range` support, or `If-Range`
//! saw a changed file) makes the download start over cleanly. What is on
//! disk is always a prefix of what the server sent, under the partial
//! name, so a killed pull leaves something the next one resumes, never a
//! file that passes for complete.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::digest::{Algorithm, Digest, Hashers};
use super::location::Location;
use super::{http, io_error, ImageError, Progress, PullEvent};

/// Bytes per chunk handed from the reading thread.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the threads.
const IN_FLIGHT: usize = 16;
/// A connection that delivers nothing for this long is broken.
pub const STALL: Duration = Duration::from_secs(60);
/// Attempts before a transient failure is final; the waits between them
/// double from one second (1, 2, 4, 8 s).
const ATTEMPTS: u32 = 5;
/// Progress events are sent at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// What a finished download is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub size: u64,
    pub sha256: Digest,
    /// The digest of the other algorithm asked for (sha512), if any.
    pub other: Option<Digest>,
    /// Some bytes came from an earlier, interrupted download.
    pub resumed: bool,
}

impl Downloaded {
    /// This download's digest of `alg`.
    pub fn digest(&self, alg: Algorithm) -> Option<&Digest> {
        match alg {
            Algorithm::Sha256 => Some(&self.sha256),
            _ => self.other.as_ref().filter(|d| d.alg == alg),
        }
    }
}

/// Kept beside a partial download: what it is a prefix of.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct PartialMeta {
    url: String,
    /// `ETag` or `Last-Modified` of the response it came from.
    validator: Option<String>,
    total: Option<u64>,
}

/// The partial file `partial` and its `.json` note.
fn meta_path(partial: &Path) -> PathBuf {
    partial.with_extension("json")
}

/// Removes a partial download and its note.
pub fn discard(partial: &Path) {
    let _ = std::fs::remove_file(partial);
    let _ = std::fs::remove_file(meta_path(partial));
}

struct State<'a> {
    url: String,
    partial: &'a Path,
    file: File,
    offset: u64,
    hashers: Hashers,
    also: Option<Algorithm>,
    meta: PartialMeta,
    resumed: bool,
    progress: &'a Progress,
    last_event: Instant,
}

/// Downloads `src` into `partial`, resuming what an earlier attempt left
/// there; hashes with sha256 and `also`.
pub fn download(
    src: &Location,
    partial: &Path,
    also: Option<Algorithm>,
    progress: &Progress,
) -> Result<Downloaded, ImageError> {
    let url = src.to_string();
    let old: Option<PartialMeta> = std::fs::read(meta_path(partial))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(partial)
        .map_err(|e| io_error(partial, e))?;
    let mut st = State {
        url: url.clone(),
        partial,
        file,
        offset: 0,
        hashers: Hashers::new(also),
        also,
        meta: PartialMeta {
            url: url.clone(),
            ..Default::default()
        },
        resumed: false,
        progress,
        last_event: Instant::now(),
    };
    // Only a partial of this very URL (from the network) is resumed;
    // a local copy is simply made again.
    match old {
        Some(m) if m.url == url && matches!(src, Location::Url(_)) => {
            st.meta = m;
            st.rehash_existing()?;
        }
        _ => st.restart()?,
    }
    let mut attempt = 1;
    loop {
        let result = match src {
            Location::Url(u) => st.http_attempt(u),
            Location::File(p) => st.local_copy(p),
        };
        match result {
            Ok(()) => break,
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                let delay = Duration::from_secs(1 << (attempt - 1));
                (st.progress)(&PullEvent::Retry {
                    url: url.clone(),
                    attempt,
                    delay_ms: delay.as_millis() as u64,
                    error: e.to_string(),
                });
                std::thread::sleep(delay);
                attempt += 1;
            }
            Err(e) if e.is_transient() => {
                return Err(ImageError::GaveUp {
                    url,
                    attempts: attempt,
                    last: Box::new(e),
                })
            }
            Err(e) => return Err(e),
        }
    }
    st.file.sync_all().map_err(|e| io_error(partial, e))?;
    (st.progress)(&PullEvent::Progress {
        url,
        done: st.offset,
        total: Some(st.offset),
    });
    let (sha256, other) = st.hashers.finish();
    Ok(Downloaded {
        size: st.offset,
        sha256,
        other,
        resumed: st.resumed,
    })
}

impl State<'_> {
    fn io(&self, e: std::io::Error) -> ImageError {
        io_error(self.partial, e)
    }

    /// Hashes what an earlier download left, to continue after it.
    fn rehash_existing(&mut self) -> Result<(), ImageError> {
        let mut buf = vec![0u8; CHUNK];
        self.file.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
        loop {
            let n = self.file.read(&mut buf).map_err(|e| self.io(e))?;
            if n == 0 {
                break;
            }
            self.hashers.update(&buf[..n]);
            self.offset += n as u64;
        }
        self.resumed = self.offset > 0;
        Ok(())
    }

    /// Empties the partial file and starts the hashes afresh.
    fn restart(&mut self) -> Result<(), ImageError> {
        self.file.set_len(0).map_err(|e| self.io(e))?;
        self.file.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
        self.offset = 0;
        self.hashers = Hashers::new(self.also);
        self.resumed = false;
        self.meta = PartialMeta {
            url: self.url.clone(),
            ..Default::default()
        };
        self.save_meta()
    }

    fn save_meta(&self) -> Result<(), ImageError> {
        let path = meta_path(self.partial);
        let text = serde_json::to_vec(&self.meta).expect("plain data serializes");
        std::fs::write(&path, text).map_err(|e| io_error(&path, e))
    }

    fn http_attempt(&mut self, url: &str) -> Result<(), ImageError> {
        let mut resp = http::get(url, self.offset, self.meta.validator.as_deref())?;
        match resp.status {
            206 if resp.range_start == Some(self.offset) => {}
            // Asked for the rest of a file we have whole (or the file
            // shrank): start over, once, without a range.
            416 => {
                self.restart_with(url, "the server has no bytes past what was downloaded")?;
                resp = http::get(url, 0, None)?;
            }
            _ if self.offset > 0 => {
                // 200 to a range request: no Range support, or If-Range
                // saw another version. The body is the whole file.
                let why = if resp.status == 200 {
                    "the server sent the whole file instead of the rest (no Range support, or the file changed)"
                } else {
                    "the server sent another range than asked for"
                };
                self.restart_with(url, why)?;
                if resp.status != 200 {
                    resp = http::get(url, 0, None)?;
                }
            }
            _ => {}
        }
        if resp.status == 416 {
            return Err(ImageError::Http {
                url: url.to_string(),
                status: 416,
                reason: "Range Not Satisfiable, also without a range".into(),
            });
        }
        if self.offset == 0 || self.meta.validator.is_none() {
            self.meta.validator = resp.validator.clone();
        }
        self.meta.total = resp.total;
        self.save_meta()?;
        (self.progress)(&PullEvent::Start {
            url: url.to_string(),
            offset: self.offset,
            total: resp.total,
        });
        self.stream(resp.body, resp.total)
    }

    fn restart_with(&mut self, url: &str, why: &str) -> Result<(), ImageError> {
        (self.progress)(&PullEvent::Restart {
            url: url.to_string(),
            why: why.to_string(),
        });
        self.restart()
    }

    fn local_copy(&mut self, path: &Path) -> Result<(), ImageError> {
        self.restart()?;
        let f = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ImageError::NoFile {
                path: path.to_path_buf(),
            },
            _ => ImageError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        let total = f.metadata().ok().map(|m| m.len());
        (self.progress)(&PullEvent::Start {
            url: self.url.clone(),
            offset: 0,
            total,
        });
        self.stream(Box::new(f), None).map_err(|e| match e {
            // A local file that cannot be read is not a network blip.
            ImageError::Network { message, .. } => ImageError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(message),
            },
            e => e,
        })
    }

    /// Appends the body to the partial file through the hashes.
    fn stream(
        &mut self,
        mut body: Box<dyn Read + Send>,
        total: Option<u64>,
    ) -> Result<(), ImageError> {
        self.file
            .seek(SeekFrom::Start(self.offset))
            .map_err(|e| self.io(e))?;
        let (tx, rx) = sync_channel::<std::io::Result<Vec<u8>>>(IN_FLIGHT);
        let (spare_tx, spare_rx) = channel::<Vec<u8>>();
        // Detached: a read that never returns must not hold the download.
        std::thread::spawn(move || loop {
            let mut buf = spare_rx.try_recv().unwrap_or_default();
            buf.resize(CHUNK, 0);
            match body.read(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send(Ok(buf)).is_err() || n == 0 {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        });
        let url = self.url.clone();
        loop {
            let buf = match rx.recv_timeout(STALL) {
                Ok(Ok(buf)) => buf,
                Ok(Err(e)) => return Err(http::read_error(&url, e)),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(ImageError::Stalled { url, stall: STALL })
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(http::read_error(
                        &url,
                        std::io::ErrorKind::UnexpectedEof.into(),
                    ))
                }
            };
            if buf.is_empty() {
                break;
            }
            self.file.write_all(&buf).map_err(|e| self.io(e))?;
            self.hashers.update(&buf);
            self.offset += buf.len() as u64;
            let _ = spare_tx.send(buf);
            if self.last_event.elapsed() >= PROGRESS_EVERY {
                self.last_event = Instant::now();
                (self.progress)(&PullEvent::Progress {
                    url: url.clone(),
                    done: self.offset,
                    total,
                });
            }
        }
        match total {
            Some(t) if self.offset < t => Err(ImageError::Network {
                url,
                message: format!(
                    "the server closed the connection after {} of {t} bytes",
                    self.offset
                ),
            }),
            Some(t) if self.offset > t => Err(ImageError::Http {
                url,
                status: 200,
                reason: format!("sent {} bytes of a {t}-byte file", self.offset),
            }),
            _ => Ok(()),
        }
    }
}
