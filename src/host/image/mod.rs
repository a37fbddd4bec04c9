//! Cloud images (issue 18): a catalog of the images people reach for,
//! downloads that are used only once verified, and a cache that cannot be
//! poisoned or torn. The vm layer resolves `base: image:NAME` and runs
//! `maqet launch` on top of this; the CLI renders the progress events.
//!
//! - [`catalog`]: one YAML file per image (package and user directories);
//! - [`location`], [`digest`], [`checksums`]: where a file comes from and
//!   how it is verified;
//! - [`http`] (ureq with rustls, proxies from the environment, retries),
//!   [`download`] (resumable with `Range`, streamed through the hashes);
//! - [`decompress`]: `.xz`, `.zst`, `.gz` images;
//! - [`cache`]: `$XDG_CACHE_HOME/maqet/images/` (layout in docs/images.md);
//! - [`pull`]: the whole path from a reference to a verified file.
//!
//! Layer: below the vm layer, beside storage; imports config (the YAML
//! reader, sizes), storage (qemu-img) and leaf helpers only.

pub mod cache;
pub mod catalog;
pub mod checksums;
pub mod decompress;
pub mod digest;
pub mod download;
pub mod http;
pub mod location;
pub mod proxy;
pub mod pull;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::storage::StorageError;
use maqet_config::ConfigError;

pub use cache::{Cache, Entry};
pub use catalog::{ArchImage, Catalog, CatalogEntry, Defaults, Source, Verify};
pub use digest::{Algorithm, Digest};
pub use location::Location;
pub use pull::{pull, FileKind, PullRequest, Pulled};

/// What a pull reports while it works, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
    /// Another maqet is pulling the same URL; this one waits for it.
    Waiting {
        url: String,
    },
    /// Reading the published checksum file.
    Checksums {
        url: String,
    },
    /// The cached copy is used (`why`: it matches the digest, the checksum
    /// file could not be read, …).
    Cached {
        url: String,
        why: String,
    },
    /// The download starts (or resumes at `offset`).
    Start {
        url: String,
        offset: u64,
        total: Option<u64>,
    },
    /// Bytes so far (sent at most every 100 ms, and at the end).
    Progress {
        url: String,
        done: u64,
        total: Option<u64>,
    },
    /// A transient failure; the download is tried again after `delay_ms`.
    Retry {
        url: String,
        attempt: u32,
        delay_ms: u64,
        error: String,
    },
    /// What was downloaded so far cannot be used; starting over.
    Restart {
        url: String,
        why: String,
    },
    Verified {
        url: String,
        digest: String,
        by: String,
    },
    /// Not verified: `--insecure-skip-verify`.
    Unverified {
        url: String,
    },
    Decompressing {
        url: String,
        compression: String,
    },
    Converting {
        url: String,
        from: String,
    },
    Done {
        url: String,
        file: PathBuf,
        size: u64,
    },
}

impl PullEvent {
    pub fn url(&self) -> &str {
        match self {
            PullEvent::Waiting { url }
            | PullEvent::Checksums { url }
            | PullEvent::Cached { url, .. }
            | PullEvent::Start { url, .. }
            | PullEvent::Progress { url, .. }
            | PullEvent::Retry { url, .. }
            | PullEvent::Restart { url, .. }
            | PullEvent::Verified { url, .. }
            | PullEvent::Unverified { url }
            | PullEvent::Decompressing { url, .. }
            | PullEvent::Converting { url, .. }
            | PullEvent::Done { url, .. } => url,
        }
    }
}

/// Receives pull events (from the thread that pulls).
pub type Progress = Arc<dyn Fn(&PullEvent) + Send + Sync>;

/// A progress sink that drops everything.
pub fn no_progress() -> Progress {
    Arc::new(|_| {})
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Every problem of one catalog file, each with file:line:column.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Catalog(Vec<ConfigError>),
    #[error(
        "'{0}' is not an image name (letters, digits, '.', '_', '-'), an https:// URL or a path"
    )]
    BadName(String),
    #[error("no image '{name}' in the catalog{hint} (`maqet image catalog` lists them; looked in {})", dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotInCatalog {
        name: String,
        hint: String,
        dirs: Vec<PathBuf>,
    },
    #[error("image '{name}' has no {arch} build ({}: {})", file.display(), if has.is_empty() { "none".to_string() } else { has.join(", ") })]
    NoArch {
        name: String,
        arch: String,
        file: PathBuf,
        has: Vec<String>,
    },
    #[error("`maqet launch` writes x86_64 VM configs (qemu-system-x86_64), but this host is {0}; pull the image with `maqet image pull` and write the config yourself (docs/images.md)")]
    LaunchArch(String),
    #[error("cannot find the cache directory: neither XDG_CACHE_HOME nor HOME is set")]
    NoCacheDir,
    #[error("{url}: not found (HTTP {status}); check the URL or the catalog entry")]
    NotFound { url: String, status: u16 },
    #[error("{path}: no such file", path = path.display())]
    NoFile { path: PathBuf },
    #[error("{url}: the server answered HTTP {status}{}", if reason.is_empty() { String::new() } else { format!(" ({reason})") })]
    Http {
        url: String,
        status: u16,
        reason: String,
    },
    #[error(
        "{url}: cannot resolve host name '{host}' (check the name, your DNS, or set HTTPS_PROXY)"
    )]
    Dns { url: String, host: String },
    #[error(
        "{url}: TLS failed: {message} (is the system's CA bundle installed and the clock right?)"
    )]
    Tls { url: String, message: String },
    #[error("{url}: the proxy {proxy} failed: {message}")]
    Proxy {
        url: String,
        proxy: String,
        message: String,
    },
    #[error("{url}: {message}")]
    Network { url: String, message: String },
    #[error("{url}: no data for {}s; the connection stalled", .stall.as_secs())]
    Stalled { url: String, stall: Duration },
    #[error("{last} (gave up after {attempts} attempts)")]
    GaveUp {
        url: String,
        attempts: u32,
        last: Box<ImageError>,
    },
    #[error("no space left on the device of {} (the partial download was removed; free some space, or move the cache with XDG_CACHE_HOME)", dir.display())]
    NoSpace { dir: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{url}: digest mismatch: expected {expected}, got {actual}; nothing was kept (the file changed upstream, or the download was damaged or tampered with)")]
    Mismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{url}: cannot be verified: no digest is given and no checksum file lists it (tried {}); pin one with --digest sha256:… or --checksums URL, or accept an unverified image with --insecure-skip-verify", if tried.is_empty() { "nothing".to_string() } else { tried.join(", ") })]
    Unverifiable { url: String, tried: Vec<String> },
    #[error("{url}: the checksum file {checksums} {message}")]
    Checksums {
        url: String,
        checksums: String,
        message: String,
    },
    #[error("{url}: cannot decompress ({compression}): {message}")]
    Decompress {
        url: String,
        compression: String,
        message: String,
    },
    #[error("{url}: the image is {format}; maqet uses qcow2 and raw images directly (pull it with --qcow2 to convert it)")]
    Format { url: String, format: String },
    #[error("{url}: the image refers to another file ({file}); a downloaded image must stand alone, so it is refused")]
    ExternalFile { url: String, file: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{what} is in use: {}; remove those VMs first (`maqet rm NAME`)", users.join("; "))]
    InUse { what: String, users: Vec<String> },
    #[error("'{0}' is not in the image cache (`maqet image ls` lists what is)")]
    NotCached(String),
}

impl From<ConfigError> for ImageError {
    fn from(e: ConfigError) -> Self {
        ImageError::Catalog(vec![e])
    }
}

impl ImageError {
    /// Worth trying again (the network, or a server's temporary trouble).
    pub fn is_transient(&self) -> bool {
        match self {
            ImageError::Network { .. } | ImageError::Stalled { .. } => true,
            ImageError::Http { status, .. } => {
                matches!(status, 408 | 425 | 429) || (500..600).contains(status)
            }
            _ => false,
        }
    }

    /// The error under a [`ImageError::GaveUp`].
    pub fn root(&self) -> &ImageError {
        match self {
            ImageError::GaveUp { last, .. } => last.root(),
            e => e,
        }
    }
}

/// `io` as the error of `path`, with ENOSPC/EDQUOT named for the directory.
pub(crate) fn io_error(path: &std::path::Path, source: std::io::Error) -> ImageError {
    match source.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => ImageError::NoSpace {
            dir: path.parent().unwrap_or(path).to_path_buf(),
        },
        _ => ImageError::Io {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// The host's architecture as `uname -m` names it (the catalog's keys).
pub fn host_arch() -> &'static str {
    std::env::consts::ARCH
}
