//! Definitions: `add` (files merged and validated, or `--empty`: QEMU's
//! defaults) and `apply` (stored config ← files ← flags, refused while the
//! VM runs). Only the database changes; no unit is touched.

use std::path::PathBuf;

use serde_json::{json, Value as Json};

use maqet_base::paths::DataDir;
use maqet_base::vmname::VmName;
use maqet_config::{diff, Change, ConfigDocument, ConfigError};
use maqet_host::state::{NewVm, StateError, Store};

use super::images::{resolve_in_config, Images};
use super::{Notice, Notify, Runners, UnitManager, VmError, Vms};

/// What `add` defines the VM from.
#[derive(Debug, Clone)]
pub enum Source {
    /// YAML files merged left to right; `name` overrides their `name:`.
    Files {
        files: Vec<PathBuf>,
        name: Option<VmName>,
    },
    /// No file: an empty config, so QEMU's own defaults (what `add` stores
    /// for a file holding only `name:`).
    Empty { name: VmName },
}

/// A VM `add` stored.
#[derive(Debug, Clone)]
pub struct Defined {
    pub vm: VmName,
    /// The canonical paths of the files it was merged from.
    pub sources: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

/// What `apply` merges on top of a stored config, in this order: files,
/// then the flags, then `--set` pairs.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub files: Vec<PathBuf>,
    /// Resolves `base: image:REF` in the result (without it such a base is
    /// refused).
    pub images: Option<Images>,
    pub memory: Option<String>,
    pub cpu: Option<String>,
    pub binary: Option<String>,
    pub enable_kvm: bool,
    /// `(KEY, YAML VALUE)`; dotted keys reach into mappings and lists.
    pub set: Vec<(String, String)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
            && self.memory.is_none()
            && self.cpu.is_none()
            && self.binary.is_none()
            && !self.enable_kvm
            && self.set.is_empty()
    }
}

/// What `apply` did: every changed value (none: the VM is unchanged and
/// nothing was written).
#[derive(Debug, Clone)]
pub struct Applied {
    pub vm: VmName,
    pub changes: Vec<Change>,
}

/// `maqet add`: resolves `base: image:REF` through `images` (pulling what
/// the cache lacks), validates, then stores the VM in `data_dir`. Config
/// warnings are sent to `notify` (before the store is written, so a
/// refused name still shows them) and returned.
pub fn define(
    data_dir: &DataDir,
    source: &Source,
    images: Option<&Images>,
    notify: Notify,
) -> Result<Defined, VmError> {
    let (mut doc, name) = match source {
        Source::Files { files, name } => {
            let doc = ConfigDocument::load_files(files)?;
            (doc, name.clone())
        }
        Source::Empty { name } => (ConfigDocument::empty(), Some(name.clone())),
    };
    // Held until the definition is stored, so no `image prune` takes the
    // pulled files away in between.
    let _cache = resolve_images(images, &mut doc)?;
    // Validated first: a bad `name:` is reported with its file:line:column.
    let config = doc.validate()?;
    let vm = match (name, doc.name()) {
        (Some(n), _) => n,
        (None, Some(n)) => VmName::new(n)?,
        (None, None) => {
            return Err(VmError::Unnamed {
                file: match source {
                    Source::Files { files, .. } => files.first().cloned().unwrap_or_default(),
                    Source::Empty { .. } => PathBuf::new(),
                },
            })
        }
    };
    check_keys(&config)?;
    let defined = insert(
        data_dir,
        &doc,
        &config,
        vm,
        matches!(source, Source::Files { .. }),
        notify,
    )?;
    record_cache_user(images, &doc, data_dir);
    Ok(defined)
}

/// Stores a validated document as VM `vm`; its warnings go to `notify`
/// first. `from_files`: the name came from a file (the refusal of a taken
/// name then suggests `--name`).
pub(crate) fn insert(
    data_dir: &DataDir,
    doc: &ConfigDocument,
    config: &maqet_config::VmConfig,
    vm: VmName,
    from_files: bool,
    notify: Notify,
) -> Result<Defined, VmError> {
    for w in &config.warnings {
        notify(Notice::Warning { message: w.clone() });
    }
    let store = Store::open(&data_dir.db_path())?;
    store
        .insert_vm(&NewVm {
            name: vm.to_string(),
            config: doc.to_json(),
            sources: doc.sources().to_vec(),
            autostart: config.autostart,
        })
        .map_err(|e| match e {
            StateError::Exists(_) => VmError::Exists {
                vm: vm.clone(),
                from_files,
            },
            other => other.into(),
        })?;
    Ok(Defined {
        vm,
        sources: doc.sources().to_vec(),
        warnings: config.warnings.clone(),
    })
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// `maqet apply`: merges `changes` on top of the stored config of
    /// `name`, validates the result with every error reported, and stores
    /// it when something changed. Refused while the VM runs (a running VM
    /// keeps the config it was started with).
    pub async fn apply(
        &self,
        vm: &VmName,
        changes: &Changes,
        notify: Notify<'_>,
    ) -> Result<Applied, VmError> {
        self.record(vm)?;
        // Read, merge and write under the VM's lock: two applies at once
        // would otherwise both merge onto the same old config and the second
        // write would drop the first's change; a start cannot slip in
        // between the running check and the write either.
        let _lock = self.lock(vm, super::LOCK_WAIT)?;
        let rec = self.record(vm)?;
        if self.is_running(vm).await? {
            return Err(VmError::RunningNoApply { vm: vm.clone() });
        }
        let mut doc = ConfigDocument::from_stored(&rec.config)?;
        let layer = ConfigDocument::load_files(&changes.files)?;
        if let Some(n) = layer.name().filter(|n| *n != vm.as_str()) {
            notify(Notice::Warning {
                message: format!(
                    "{}: name '{n}' is ignored; apply does not rename VM '{vm}'",
                    layer
                        .name_location()
                        .map(|l| l.to_string())
                        .unwrap_or_default()
                ),
            });
        }
        doc.merge(layer);
        set_flags(&mut doc, changes)?;
        // Pulls block: off the runtime's thread.
        let images = changes.images.clone();
        let (doc, cache_guard) = tokio::task::spawn_blocking(move || {
            let r = resolve_images(images.as_ref(), &mut doc);
            r.map(|g| (doc, g))
        })
        .await
        .map_err(|e| VmError::Io(std::io::Error::other(e.to_string())))??;
        let cfg = doc.validate_all().map_err(VmError::Invalid)?;
        check_keys(&cfg)?;
        // A saved state belongs to the machine as it is: only changes that
        // leave QEMU's command line alone (unit settings, autostart, …).
        if let Ok(old) = super::stored_config(&rec) {
            if !super::saved::same_machine(&self.data_dir, vm, &old, &cfg) {
                self.refuse_saved(vm, "`apply` of this change (it alters QEMU's command line)")?;
            }
        }
        for w in &cfg.warnings {
            notify(Notice::Warning { message: w.clone() });
        }
        let old = if rec.config.is_null() {
            json!({})
        } else {
            rec.config.clone()
        };
        let new = doc.to_json();
        let diffs = diff(&old, &new);
        if diffs.is_empty() {
            return Ok(Applied {
                vm: vm.clone(),
                changes: diffs,
            });
        }
        let mut sources = rec.sources.clone();
        for s in doc.sources() {
            if !sources.contains(s) {
                sources.push(s.clone());
            }
        }
        // The flag follows the config only when this apply changes `autostart`: otherwise a
        // `maqet enable` would be undone by any unrelated change.
        let autostart = (old.get("autostart") != new.get("autostart")).then_some(cfg.autostart);
        self.store()?
            .update_config(vm.as_str(), &new, &sources, autostart)?;
        record_cache_user(changes.images.as_ref(), &doc, &self.data_dir);
        drop(cache_guard);
        Ok(Applied {
            vm: vm.clone(),
            changes: diffs,
        })
    }
}

/// The SSH public keys a `cloud_init` seed will carry are there now: a
/// missing `~/.ssh/*.pub` or key file is refused at `add`/`apply`, not
/// found at the first `start` (which reads them again, and the runner never
/// does: a seed already made keeps working).
fn check_keys(cfg: &maqet_config::VmConfig) -> Result<(), VmError> {
    if let Some(ci) = &cfg.guest.cloud_init {
        maqet_host::cloudinit::authorized_keys(ci)
            .map_err(crate::provision::ProvisionError::from)?;
    }
    Ok(())
}

/// Resolves the document's image references; the cache's shared lock is
/// held by the returned guard.
fn resolve_images(
    images: Option<&Images>,
    doc: &mut ConfigDocument,
) -> Result<Option<maqet_host::image::cache::CacheLock>, VmError> {
    if doc.image_bases().is_empty() {
        return Ok(None);
    }
    let images = images.ok_or(maqet_host::image::ImageError::NoCacheDir)?;
    let guard = images.cache.shared()?;
    resolve_in_config(images, doc)?;
    Ok(Some(guard))
}

/// Notes the data directory as a user of the cache when the stored config
/// points into it (so `image prune` of any data directory asks this one).
pub(crate) fn record_cache_user(images: Option<&Images>, doc: &ConfigDocument, data_dir: &DataDir) {
    let Some(images) = images else { return };
    let root = images.cache.root().to_string_lossy().into_owned();
    if doc.to_json().to_string().contains(&root) {
        if let Err(e) = images.cache.record_user(data_dir.path()) {
            tracing::warn!(
                "cannot note {} as a user of the image cache: {e}",
                data_dir.path().display()
            );
        }
    }
}

/// The flags of `apply`, after its files.
fn set_flags(doc: &mut ConfigDocument, c: &Changes) -> Result<(), ConfigError> {
    if let Some(m) = &c.memory {
        doc.set_yaml("memory", m, "--memory")?;
    }
    if let Some(cpu) = &c.cpu {
        doc.set_yaml("cpu", cpu, "--cpu")?;
    }
    if let Some(b) = &c.binary {
        doc.set("binary", Json::from(b.as_str()), "--binary");
    }
    if c.enable_kvm {
        doc.set("enable_kvm", json!(true), "--enable-kvm");
    }
    for (k, v) in &c.set {
        doc.set_path(k, v)?;
    }
    Ok(())
}
