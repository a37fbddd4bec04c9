//! Images for VMs: a reference (a catalog name, an `https://` URL or a
//! path) resolved to the files to pull for this host, pulled into the
//! cache, and `base: image:REF` in a definition rewritten to the pulled
//! file and its digest — so a VM keeps using those bytes when the catalog
//! moves on (`apply --set storage.0.base=image:REF` moves it explicitly).

use std::path::{Path, PathBuf};

use serde_json::json;

use maqet_config::{ConfigDocument, Location as ConfigLocation};
use maqet_host::image::{
    self, pull::find_checksums, ArchImage, Cache, Catalog, CatalogEntry, Defaults, Digest,
    FileKind, ImageError, Location, Progress, PullRequest, Pulled, Source, Verify,
};

use super::VmError;

/// How a pull may go.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Accept an image nothing verifies (`--insecure-skip-verify`).
    pub insecure: bool,
    /// Convert a disk to qcow2 (`--qcow2`).
    pub qcow2: bool,
    /// Ask upstream even with a verified copy in the cache (`image pull`).
    pub refresh: bool,
    /// A digest the disk must have (`--digest`), instead of the catalog's way.
    pub digest: Option<Digest>,
    /// The checksum file to read (`--checksums URL`).
    pub checksums: Option<String>,
}

/// The catalog and the cache, with a progress sink and the options.
#[derive(Clone)]
pub struct Images {
    pub catalog: Catalog,
    pub cache: Cache,
    pub progress: Progress,
    pub options: PullOptions,
}

impl Images {
    /// The user's catalog and cache (from the XDG environment).
    pub fn from_env(progress: Progress, options: PullOptions) -> Result<Images, VmError> {
        Ok(Images {
            catalog: Catalog::from_env(),
            cache: Cache::from_env()?,
            progress,
            options,
        })
    }
}

impl std::fmt::Debug for Images {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Images")
            .field("catalog", &self.catalog)
            .field("cache", &self.cache)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What a reference names.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The reference as given.
    pub reference: String,
    /// The catalog entry, for a name.
    pub entry: Option<CatalogEntry>,
    pub image: ArchImage,
}

impl Resolved {
    pub fn defaults(&self) -> Defaults {
        self.entry
            .as_ref()
            .map(|e| e.defaults.clone())
            .unwrap_or_default()
    }
}

/// An image's files in the cache.
#[derive(Debug, Clone)]
pub struct PulledImage {
    pub resolved: Resolved,
    pub disk: Pulled,
    pub kernel: Option<Pulled>,
    pub initrd: Option<Pulled>,
}

/// Whether `reference` is a location rather than a catalog name.
pub fn is_location(reference: &str) -> bool {
    reference.contains("://")
        || reference.starts_with('/')
        || reference.starts_with("./")
        || reference.starts_with("../")
}

/// Resolves `reference` for this host; a relative path is taken from `dir`.
pub fn resolve(images: &Images, reference: &str, dir: &Path) -> Result<Resolved, VmError> {
    let opts = &images.options;
    let (entry, mut image) = if is_location(reference) {
        let location = Location::parse(reference, dir)
            .map_err(|message| ImageError::BadName(format!("{reference}: {message}")))?;
        let image = ArchImage {
            disk: Source {
                location,
                verify: Verify::Nothing,
            },
            kernel: None,
            initrd: None,
            cmdline: None,
        };
        (None, image)
    } else {
        let e = images.catalog.get(reference)?;
        let img = e.for_arch(image::host_arch())?.clone();
        (Some(e), img)
    };
    // The command line's way to verify wins over the catalog's.
    if let Some(d) = &opts.digest {
        image.disk.verify = Verify::Digest(d.clone());
    } else if let Some(c) = &opts.checksums {
        let cl = Location::parse(c, dir)
            .map_err(|message| ImageError::BadName(format!("--checksums {c}: {message}")))?;
        if cl.scheme() != image.disk.location.scheme() {
            return Err(ImageError::Checksums {
                url: image.disk.location.to_string(),
                checksums: cl.to_string(),
                message: format!(
                    "is fetched over {}, the image over {}; both must use the same scheme",
                    cl.scheme(),
                    image.disk.location.scheme()
                ),
            }
            .into());
        }
        image.disk.verify = Verify::Checksums(cl);
    }
    if image.disk.verify == Verify::Nothing && entry.is_none() {
        // A bare URL: the checksum files distributions publish beside it.
        let (found, tried) = find_checksums(&image.disk.location)?;
        match found {
            Some(c) => image.disk.verify = Verify::Checksums(c),
            None if opts.insecure => {}
            None => {
                return Err(ImageError::Unverifiable {
                    url: image.disk.location.to_string(),
                    tried,
                }
                .into())
            }
        }
    }
    Ok(Resolved {
        reference: reference.to_string(),
        entry,
        image,
    })
}

/// Pulls what `resolved` names: the disk, and a kernel and initrd if the
/// image boots without a boot loader.
pub fn pull_resolved(images: &Images, resolved: Resolved) -> Result<PulledImage, VmError> {
    let opts = &images.options;
    let request = |source: &Source, kind: FileKind| PullRequest {
        source: source.clone(),
        kind,
        insecure: opts.insecure,
        refresh: opts.refresh,
        qcow2: opts.qcow2 && kind == FileKind::Disk,
    };
    let get = |s: &Source, kind| image::pull(&images.cache, &request(s, kind), &images.progress);
    let disk = get(&resolved.image.disk, FileKind::Disk)?;
    let kernel = resolved
        .image
        .kernel
        .as_ref()
        .map(|k| get(k, FileKind::File))
        .transpose()?;
    let initrd = resolved
        .image
        .initrd
        .as_ref()
        .map(|k| get(k, FileKind::File))
        .transpose()?;
    Ok(PulledImage {
        resolved,
        disk,
        kernel,
        initrd,
    })
}

/// Resolves and pulls `reference`.
pub fn pull_image(images: &Images, reference: &str, dir: &Path) -> Result<PulledImage, VmError> {
    let r = resolve(images, reference, dir)?;
    pull_resolved(images, r)
}

/// The directory a config value's relative paths are taken from.
fn dir_of(loc: &ConfigLocation) -> PathBuf {
    let p = Path::new(&loc.source);
    match p.parent() {
        Some(d) if p.is_absolute() => d.to_path_buf(),
        _ => std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
    }
}

/// Rewrites every `base: image:REF` of `doc` to the pulled file (with its
/// `sha256:`, and `backing_format: raw` for a raw image); a kernel and
/// initrd of the image become `arguments` items unless the config boots a
/// kernel of its own. Returns what was pulled.
pub fn resolve_in_config(
    images: &Images,
    doc: &mut ConfigDocument,
) -> Result<Vec<PulledImage>, VmError> {
    let mut out = Vec::new();
    for (i, reference, loc) in doc.image_bases() {
        let wrap = |e: VmError| VmError::ImageRef {
            at: loc.to_string(),
            reference: reference.clone(),
            source: Box::new(e),
        };
        let mut images = images.clone();
        // A URL's digest may be pinned beside it, as for any base.
        if is_location(&reference) && images.options.digest.is_none() {
            if let Some(s) = doc
                .storage_field(i, "sha256")
                .and_then(|v| v.as_str().map(String::from))
            {
                let text = if s.contains(':') {
                    s
                } else {
                    format!("sha256:{s}")
                };
                images.options.digest = Some(
                    text.parse::<Digest>()
                        .map_err(|m| wrap(ImageError::BadName(format!("sha256: {m}")).into()))?,
                );
            }
        }
        let pulled = pull_image(&images, &reference, &dir_of(&loc)).map_err(wrap)?;
        let label = format!("{}{reference}", maqet_config::IMAGE_PREFIX);
        doc.set_storage_field(i, "base", json!(pulled.disk.path), &label);
        doc.set_storage_field(i, "sha256", json!(pulled.disk.entry.blob_hex()), &label);
        if pulled.disk.entry.format == "raw" && doc.storage_field(i, "backing_format").is_none() {
            doc.set_storage_field(i, "backing_format", json!("raw"), &label);
        }
        if let Some(k) = &pulled.kernel {
            if !doc.has_argument("kernel") {
                doc.push_argument(json!({ "kernel": k.path }), &label);
                if let Some(initrd) = &pulled.initrd {
                    doc.push_argument(json!({ "initrd": initrd.path }), &label);
                }
                if let Some(c) = &pulled.resolved.image.cmdline {
                    doc.push_argument(json!({ "append": c }), &label);
                }
            }
        }
        out.push(pulled);
    }
    Ok(out)
}
