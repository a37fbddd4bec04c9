//! The image cache as VMs see it: which cached files VMs use (`image ls`),
//! and removing what none uses (`image rm`, `image prune`).
//!
//! "Uses" is the deletion rule of disks (docs/storage.md): a file named on
//! the rendered command line of a defined VM, on the real command line of
//! a running QEMU (any data directory), or down the backing chain of any
//! of those. The cache is per user while definitions are per data
//! directory, so every data directory that resolved an image here
//! (recorded in the cache's `data-dirs`) is asked as well.

use std::path::{Path, PathBuf};

use serde::Serialize;

use maqet_base::paths::DataDir;
use maqet_host::image::cache::{Blob, Entry};
use maqet_host::image::{Cache, Catalog, ImageError, Location};
use maqet_host::state::Store;
use maqet_host::storage::{QemuImg, References};

use super::refs::running_processes;
use super::{Runners, UnitManager, VmError, Vms};

/// One cached file with what points at it.
#[derive(Debug, Clone, Serialize)]
pub struct CachedImage {
    /// The URL it was pulled from (`None`: no entry names it any more).
    pub url: Option<String>,
    /// Catalog names whose image (or kernel/initrd) is this URL.
    pub names: Vec<String>,
    pub file: PathBuf,
    pub sha256: String,
    pub size: u64,
    pub format: Option<String>,
    /// `verified`, `unverified`, or `orphan` (a blob without an entry).
    pub status: &'static str,
    /// The digest that matched and what vouched for it.
    pub verified_digest: Option<String>,
    pub verified_by: Option<String>,
    pub pulled: Option<u64>,
    /// Who uses it (`VM 'x' uses it`, …).
    pub used_by: Vec<String>,
}

/// An unfinished download.
#[derive(Debug, Clone, Serialize)]
pub struct PartialDownload {
    pub url: String,
    pub file: PathBuf,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheListing {
    pub dir: PathBuf,
    pub images: Vec<CachedImage>,
    pub partial: Vec<PartialDownload>,
    /// Bytes under the cache directory.
    pub total: u64,
}

/// What `prune` (or `rm`) did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pruned {
    pub removed: Vec<PathBuf>,
    pub freed: u64,
    /// Kept files and who uses each.
    pub kept: Vec<(PathBuf, String)>,
}

/// Catalog names by location text.
fn names_by_url(catalog: &Catalog) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in catalog.list().into_iter().flatten() {
        for img in e.arch.values() {
            out.push((img.disk.location.to_string(), e.name.clone()));
            for (what, s) in [("kernel", &img.kernel), ("initrd", &img.initrd)] {
                if let Some(s) = s {
                    out.push((s.location.to_string(), format!("{} ({what})", e.name)));
                }
            }
        }
    }
    out
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// Everything VMs use that could be in the cache: this data
    /// directory's definitions, those of every data directory the cache
    /// recorded, running QEMUs, and the backing chains of all.
    pub async fn image_references(&self, cache: &Cache) -> Result<References, VmError> {
        let mut refs = References::default();
        let mut binary = None;
        let mut dirs = vec![self.data_dir.clone()];
        for d in cache.users() {
            if d != self.data_dir.path() {
                dirs.push(DataDir::resolve(Some(&d))?);
            }
        }
        for dir in dirs {
            let Some(store) = Store::open_read_only(&dir.db_path())? else {
                continue;
            };
            let other = Vms::new(dir, None::<maqet_host::systemd::Systemd>);
            if let Some(b) = other.add_defined(&mut refs, &store, None)? {
                binary.get_or_insert(b);
            }
        }
        for p in running_processes(&self.units).await? {
            refs.add_argv(&p.argv, p.cwd.as_deref(), &p.user);
        }
        if let Ok(img) = QemuImg::find(binary.as_deref()) {
            refs.add_backing_chains(&img);
        }
        Ok(refs)
    }

    /// `maqet image ls`.
    pub async fn cached_images(
        &self,
        cache: &Cache,
        catalog: &Catalog,
    ) -> Result<CacheListing, VmError> {
        let refs = self.image_references(cache).await?;
        let names = names_by_url(catalog);
        let mut images = Vec::new();
        let mut partial = Vec::new();
        let blobs = cache.blobs();
        let mut named_blobs = Vec::new();
        for (dir, entry) in cache.url_dirs() {
            let part = dir.join("data.partial");
            if let Ok(m) = std::fs::metadata(&part) {
                partial.push(PartialDownload {
                    url: std::fs::read_to_string(dir.join("url"))
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                    file: part,
                    size: m.len(),
                });
            }
            let Some(e) = entry else { continue };
            let Some(blob) = blobs.iter().find(|b| b.sha256 == e.blob_hex()) else {
                continue;
            };
            named_blobs.push(blob.sha256.clone());
            images.push(describe(Some(&e), blob, &names, &refs));
        }
        for b in &blobs {
            if !named_blobs.contains(&b.sha256) {
                images.push(describe(None, b, &names, &refs));
            }
        }
        Ok(CacheListing {
            dir: cache.root().to_path_buf(),
            images,
            partial,
            total: cache.size(),
        })
    }

    /// `maqet image rm REF…`: the cached files of each reference (a catalog
    /// name, a URL, or a digest prefix of 12+ hex digits), refused as a
    /// whole while any VM uses one of them. `wait` is called before waiting
    /// for pulls in progress to finish.
    pub async fn remove_images(
        &self,
        cache: &Cache,
        catalog: &Catalog,
        references: &[String],
        wait: &dyn Fn(),
    ) -> Result<Pruned, VmError> {
        let _lock = cache.exclusive(wait)?;
        let mut targets: Vec<Target> = Vec::new();
        let blobs = cache.blobs();
        let dirs = cache.url_dirs();
        for r in references {
            let found = targets_of(cache, catalog, &dirs, &blobs, r)?;
            if found.is_empty() {
                return Err(ImageError::NotCached(r.clone()).into());
            }
            targets.extend(found);
        }
        let refs = self.image_references(cache).await?;
        let users: Vec<String> = targets
            .iter()
            .filter_map(|(_, b)| b.as_ref())
            .filter_map(|b| {
                refs.user_of_path(&b.path)
                    .map(|u| format!("{}: {u}", b.path.display()))
            })
            .collect();
        if !users.is_empty() {
            return Err(ImageError::InUse {
                what: references.join(", "),
                users,
            }
            .into());
        }
        let mut done = Pruned::default();
        for (dir, blob) in targets {
            if let Some(d) = dir {
                cache.forget(&d);
            }
            if let Some(b) = blob {
                // Another URL may name the same content: keep it for that one.
                let still_named = cache
                    .url_dirs()
                    .iter()
                    .any(|(_, e)| e.as_ref().is_some_and(|e| e.blob_hex() == b.sha256));
                if !still_named && remove(&b.path) {
                    done.freed += b.size;
                    done.removed.push(b.path);
                }
            }
        }
        Ok(done)
    }

    /// `maqet image prune`: every cached file no VM uses, entries whose
    /// file is gone, and unfinished downloads nobody is running.
    pub async fn prune_images(
        &self,
        cache: &Cache,
        dry_run: bool,
        wait: &dyn Fn(),
    ) -> Result<Pruned, VmError> {
        let _lock = cache.exclusive(wait)?;
        let refs = self.image_references(cache).await?;
        let mut done = Pruned::default();
        for b in cache.blobs() {
            if let Some(u) = refs.user_of_path(&b.path) {
                done.kept.push((b.path, u));
            } else if dry_run || remove(&b.path) {
                done.freed += b.size;
                done.removed.push(b.path);
            }
        }
        for (dir, entry) in cache.url_dirs() {
            let partial = dir.join("data.partial");
            let part_size = std::fs::metadata(&partial).map(|m| m.len()).ok();
            let blob_gone = entry.as_ref().is_none_or(|e| {
                done.removed.contains(&cache.blob_path(e.blob_hex()))
                    || !cache.blob_path(e.blob_hex()).exists()
            });
            if !blob_gone && part_size.is_none() {
                continue;
            }
            // No pull runs: each holds the cache's lock shared, and this
            // holds it alone.
            if let Some(size) = part_size {
                done.freed += size;
                done.removed.push(partial.clone());
            }
            if !dry_run {
                if blob_gone {
                    cache.forget(&dir);
                } else {
                    maqet_host::image::download::discard(&partial);
                }
            }
        }
        Ok(done)
    }
}

fn describe(
    e: Option<&Entry>,
    b: &Blob,
    names: &[(String, String)],
    refs: &References,
) -> CachedImage {
    let url = e.map(|e| e.url.clone());
    CachedImage {
        names: names
            .iter()
            .filter(|(u, _)| Some(u) == url.as_ref())
            .map(|(_, n)| n.clone())
            .collect(),
        url,
        file: b.path.clone(),
        sha256: b.sha256.clone(),
        size: b.size,
        format: e.map(|e| e.format.clone()),
        status: match e {
            None => "orphan",
            Some(e) if e.verified.is_some() => "verified",
            Some(_) => "unverified",
        },
        verified_digest: e.and_then(|e| e.verified.as_ref().map(|v| v.digest.clone())),
        verified_by: e.and_then(|e| e.verified.as_ref().map(|v| v.by.clone())),
        pulled: e.map(|e| e.pulled),
        used_by: refs.user_of_path(&b.path).into_iter().collect(),
    }
}

/// A URL directory (when one names it) and a cached file, to remove.
type Target = (Option<PathBuf>, Option<Blob>);

/// The URL directories and blobs reference `r` names.
fn targets_of(
    cache: &Cache,
    catalog: &Catalog,
    dirs: &[(PathBuf, Option<Entry>)],
    blobs: &[Blob],
    r: &str,
) -> Result<Vec<Target>, VmError> {
    let blob_of = |e: &Entry| blobs.iter().find(|b| b.sha256 == e.blob_hex()).cloned();
    let hex = r.strip_prefix("sha256:").unwrap_or(r).to_ascii_lowercase();
    if hex.len() >= 12 && hex.len() <= 64 && hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        let matching: Vec<&Blob> = blobs
            .iter()
            .filter(|b| b.sha256.starts_with(&hex))
            .collect();
        if matching.len() > 1 {
            return Err(ImageError::BadName(format!(
                "{r}: names {} cached files; give more digits",
                matching.len()
            ))
            .into());
        }
        return Ok(matching
            .into_iter()
            .map(|b| {
                let dir = dirs
                    .iter()
                    .find(|(_, e)| e.as_ref().is_some_and(|e| e.blob_hex() == b.sha256))
                    .map(|(d, _)| d.clone());
                (dir, Some(b.clone()))
            })
            .collect());
    }
    let locations: Vec<Location> = if super::images::is_location(r) {
        let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
        vec![Location::parse(r, &cwd).map_err(|m| ImageError::BadName(format!("{r}: {m}")))?]
    } else {
        let e = catalog.get(r)?;
        e.arch
            .values()
            .flat_map(|img| {
                std::iter::once(img.disk.location.clone())
                    .chain(img.kernel.iter().map(|k| k.location.clone()))
                    .chain(img.initrd.iter().map(|k| k.location.clone()))
            })
            .collect()
    };
    Ok(locations
        .iter()
        .filter_map(|l| {
            let dir = cache.url_dir(l);
            let (d, e) = dirs.iter().find(|(d, _)| *d == dir)?;
            Some((Some(d.clone()), e.as_ref().and_then(blob_of)))
        })
        .collect())
}

/// Deletes a cached file; false when it could not be.
fn remove(p: &Path) -> bool {
    match std::fs::remove_file(p) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            tracing::warn!("cannot remove {}: {e}", p.display());
            false
        }
    }
}
