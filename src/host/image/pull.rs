//! A pull: from a source (location + how to verify it) to a verified file
//! in the cache.
//!
//! Under the URL's lock: a cached file that still answers the
//! verification is used as it is (a pinned digest is checked without the
//! network; a checksum file is read again by an explicit `image pull`,
//! and when it cannot be read the cached copy is used with a note). Else
//! the file is downloaded (resuming a partial one), its digest compared
//! with the expected one — a mismatch keeps nothing, and a resumed
//! download that fails is tried once more from the start — then a disk is
//! decompressed, checked by `qemu-img info` (qcow2 or raw, no backing or
//! data file of its own), converted if asked, and committed to `blobs/`
//! before its entry is written.

use std::path::{Path, PathBuf};

use super::cache::{Cache, Entry, Verified};
use super::catalog::{Source, Verify};
use super::checksums;
use super::decompress::{self, Compression, DecompressError};
use super::digest::{Algorithm, Digest};
use super::download::{self, Downloaded};
use super::location::Location;
use super::{http, io_error, ImageError, Progress, PullEvent};
use crate::storage::QemuImg;

/// What the pulled file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A disk image: decompressed, vetted by qemu-img, maybe converted.
    Disk,
    /// A kernel or initrd: used as downloaded.
    File,
}

#[derive(Debug, Clone)]
pub struct PullRequest {
    pub source: Source,
    pub kind: FileKind,
    /// Accept a file nothing verifies; its entry says so.
    pub insecure: bool,
    /// Ask upstream even when the cache has a verified copy (`image pull`).
    pub refresh: bool,
    /// Store a disk converted to qcow2.
    pub qcow2: bool,
}

#[derive(Debug, Clone)]
pub struct Pulled {
    pub entry: Entry,
    /// The file in `blobs/`.
    pub path: PathBuf,
    /// Nothing was downloaded.
    pub cached: bool,
    /// Why the cached copy was used when upstream could not be asked.
    pub note: Option<String>,
}

/// Largest checksum file read.
const CHECKSUMS_LIMIT: u64 = 16 << 20;
/// Attempts at a checksum file.
const CHECKSUM_ATTEMPTS: u32 = 3;

/// Pulls `req` into `cache`.
pub fn pull(cache: &Cache, req: &PullRequest, progress: &Progress) -> Result<Pulled, ImageError> {
    let loc = &req.source.location;
    let url = loc.to_string();
    let _shared = cache.shared()?;
    let _lock = cache.lock_url(loc, &|| progress(&PullEvent::Waiting { url: url.clone() }))?;
    let cached = cache.entry(loc);
    let use_cached = |e: &Entry, why: String, note: Option<String>| {
        progress(&PullEvent::Cached {
            url: url.clone(),
            why,
        });
        Ok(Pulled {
            path: cache.blob_path(e.blob_hex()),
            entry: e.clone(),
            cached: true,
            note,
        })
    };
    let expect: Option<(Digest, String)> = match &req.source.verify {
        Verify::Digest(d) => {
            if let Some(e) = cached.as_ref().filter(|e| e.matches(d)) {
                return use_cached(e, format!("it has the pinned digest {d}"), None);
            }
            Some((d.clone(), "the pinned digest".into()))
        }
        Verify::Checksums(cl) => {
            if let Some(e) = cached
                .as_ref()
                .filter(|e| e.verified.is_some() && !req.refresh)
            {
                return use_cached(e, "verified when it was pulled".into(), None);
            }
            progress(&PullEvent::Checksums {
                url: cl.to_string(),
            });
            match fetch_checksums(cl) {
                Ok(text) => {
                    let d = digest_in(&text, loc, cl)?;
                    if let Some(e) = cached.as_ref().filter(|e| e.matches(&d)) {
                        return use_cached(e, format!("it is up to date ({d})"), None);
                    }
                    Some((d, cl.to_string()))
                }
                Err(err) => match cached.as_ref().filter(|e| e.verified.is_some()) {
                    Some(e) => {
                        let note = format!(
                            "could not read {cl} ({err}); using the copy verified when it was pulled ({})",
                            maqet_base::time::rfc3339_utc(e.pulled)
                        );
                        return use_cached(e, "upstream could not be asked".into(), Some(note));
                    }
                    None => return Err(err),
                },
            }
        }
        Verify::Nothing => {
            if !req.insecure {
                return Err(ImageError::Unverifiable {
                    url,
                    tried: Vec::new(),
                });
            }
            if let Some(e) = cached.as_ref().filter(|_| !req.refresh) {
                return use_cached(e, "in the cache (unverified)".into(), None);
            }
            None
        }
    };
    let partial = cache.partial_path(loc);
    let also = expect.as_ref().map(|(d, _)| d.alg);
    let fetch = || {
        download::download(loc, &partial, also, progress).inspect_err(|e| {
            // A partial download is worth keeping, unless it filled the disk.
            if matches!(e, ImageError::NoSpace { .. }) {
                download::discard(&partial);
            }
        })
    };
    let mut dl = fetch()?;
    let verified = match &expect {
        Some((want, by)) => {
            if let Err(mismatch) = check(&dl, want, &url) {
                download::discard(&partial);
                if !dl.resumed {
                    return Err(mismatch);
                }
                // The resumed part may belong to another version of the file.
                progress(&PullEvent::Restart {
                    url: url.clone(),
                    why: "the resumed download did not verify".into(),
                });
                dl = fetch()?;
                if let Err(mismatch) = check(&dl, want, &url) {
                    download::discard(&partial);
                    return Err(mismatch);
                }
            }
            progress(&PullEvent::Verified {
                url: url.clone(),
                digest: want.to_string(),
                by: by.clone(),
            });
            Some(Verified {
                digest: want.to_string(),
                by: by.clone(),
            })
        }
        None => {
            progress(&PullEvent::Unverified { url: url.clone() });
            None
        }
    };
    let result = finish(cache, req, &partial, &dl, verified, progress);
    download::discard(&partial);
    result
}

/// The digest a checksum file gives for `loc`.
fn digest_in(text: &str, loc: &Location, checksums: &Location) -> Result<Digest, ImageError> {
    let name = loc.file_name();
    let err = |message: String| ImageError::Checksums {
        url: loc.to_string(),
        checksums: checksums.to_string(),
        message,
    };
    checksums::find(text, &name, loc.is_prefix_of(checksums))
        .map_err(err)?
        .ok_or_else(|| err(format!("has no line for {name}")))
}

fn check(dl: &Downloaded, want: &Digest, url: &str) -> Result<(), ImageError> {
    match dl.digest(want.alg) {
        Some(got) if got == want => Ok(()),
        got => Err(ImageError::Mismatch {
            url: url.to_string(),
            expected: want.to_string(),
            actual: got.map_or_else(|| "nothing".to_string(), Digest::to_string),
        }),
    }
}

/// A checksum file's text (small; retried like a download).
fn fetch_checksums(cl: &Location) -> Result<String, ImageError> {
    let bytes = match cl {
        Location::File(p) => std::fs::read(p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ImageError::NoFile { path: p.clone() },
            _ => io_error(p, e),
        })?,
        Location::Url(u) => {
            let mut attempt = 1;
            loop {
                match http::get_small(u, CHECKSUMS_LIMIT) {
                    Ok(Some(b)) => break b,
                    Ok(None) => {
                        return Err(ImageError::NotFound {
                            url: u.clone(),
                            status: 404,
                        })
                    }
                    Err(e) if e.is_transient() && attempt < CHECKSUM_ATTEMPTS => {
                        std::thread::sleep(std::time::Duration::from_secs(attempt as u64));
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// For a bare URL or file: the first published checksum file beside it
/// that lists it (`FILE.sha256`, `FILE.sha512`, `SHA256SUMS`,
/// `SHA512SUMS`), and every place tried. A missing file is the next
/// candidate; a server that cannot be reached is the error it is (the
/// image would not download either).
pub fn find_checksums(loc: &Location) -> Result<(Option<Location>, Vec<String>), ImageError> {
    let candidates = [
        loc.with_suffix(".sha256"),
        loc.with_suffix(".sha512"),
        loc.sibling("SHA256SUMS"),
        loc.sibling("SHA512SUMS"),
    ];
    let mut tried = Vec::new();
    for c in candidates {
        tried.push(c.to_string());
        let text = match &c {
            Location::File(p) => std::fs::read(p).ok(),
            Location::Url(u) => match http::get_small(u, CHECKSUMS_LIMIT) {
                Ok(t) => t,
                // Not a checksum file (a 403, a huge file): the next one.
                Err(ImageError::Http { .. } | ImageError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            },
        };
        if let Some(t) = text {
            if digest_in(&String::from_utf8_lossy(&t), loc, &c).is_ok() {
                return Ok((Some(c), tried));
            }
        }
    }
    Ok((None, tried))
}

/// Decompresses, vets and converts the verified download, then commits it.
fn finish(
    cache: &Cache,
    req: &PullRequest,
    partial: &Path,
    dl: &Downloaded,
    verified: Option<Verified>,
    progress: &Progress,
) -> Result<Pulled, ImageError> {
    let loc = &req.source.location;
    let url = loc.to_string();
    let dir = cache.url_dir(loc);
    let tmp = dir.join("blob.tmp");
    let _ = std::fs::remove_file(&tmp);
    let compression = match req.kind {
        FileKind::Disk => Compression::of_name(&loc.file_name()),
        FileKind::File => None,
    };
    let (mut size, mut sha) = (dl.size, dl.sha256.clone());
    match compression {
        Some(c) => {
            let derr = |message: String| ImageError::Decompress {
                url: url.clone(),
                compression: c.name().into(),
                message,
            };
            if !decompress::has_magic(partial, c).map_err(|e| io_error(partial, e))? {
                return Err(derr(format!(
                    "the file is named like {} data but is not",
                    c.name()
                )));
            }
            progress(&PullEvent::Decompressing {
                url: url.clone(),
                compression: c.name().into(),
            });
            (size, sha) = decompress::decompress(c, partial, &tmp).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                match e {
                    DecompressError::Data(m) => derr(m),
                    DecompressError::Read(e) => io_error(partial, e),
                    DecompressError::Write(e) => io_error(&tmp, e),
                }
            })?;
        }
        None => std::fs::rename(partial, &tmp).map_err(|e| io_error(&tmp, e))?,
    }
    let remove_tmp = |e: ImageError| {
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_file(tmp.with_extension("qcow2"));
        e
    };
    let mut virtual_size = None;
    let (format, converted_from) = match req.kind {
        FileKind::File => ("file".to_string(), None),
        FileKind::Disk => {
            let img = QemuImg::find(None).map_err(|e| remove_tmp(e.into()))?;
            let info = img.probe(&tmp).map_err(|e| remove_tmp(e.into()))?;
            virtual_size = Some(info.virtual_size);
            if let Some(f) = info.external_file() {
                return Err(remove_tmp(ImageError::ExternalFile {
                    url,
                    file: f.to_string(),
                }));
            }
            match info.format.as_str() {
                "qcow2" => ("qcow2".to_string(), None),
                "raw" if !req.qcow2 => ("raw".to_string(), None),
                other if req.qcow2 => {
                    progress(&PullEvent::Converting {
                        url: url.clone(),
                        from: other.to_string(),
                    });
                    let out = tmp.with_extension("qcow2");
                    img.convert_to_qcow2(&tmp, other, &out)
                        .map_err(|e| remove_tmp(e.into()))?;
                    std::fs::rename(&out, &tmp).map_err(|e| remove_tmp(io_error(&tmp, e)))?;
                    let hex = crate::storage::base::sha256_file(&tmp)
                        .map_err(|e| remove_tmp(io_error(&tmp, e)))?;
                    sha = Digest::new(Algorithm::Sha256, &hex).expect("sha256 hex");
                    size = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
                    ("qcow2".to_string(), Some(other.to_string()))
                }
                other => {
                    return Err(remove_tmp(ImageError::Format {
                        url,
                        format: other.to_string(),
                    }))
                }
            }
        }
    };
    let path = cache.commit_blob(&tmp, &sha).map_err(remove_tmp)?;
    let entry = Entry {
        url: url.clone(),
        blob: sha.to_string(),
        size,
        format,
        virtual_size,
        download_digest: dl.sha256.to_string(),
        download_size: dl.size,
        compression: compression.map(|c| c.name().to_string()),
        verified,
        converted_from,
        pulled: maqet_base::time::now_unix(),
    };
    cache.write_entry(loc, &entry)?;
    progress(&PullEvent::Done {
        url,
        file: path.clone(),
        size,
    });
    Ok(Pulled {
        entry,
        path,
        cached: false,
        note: None,
    })
}
