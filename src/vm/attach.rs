//! `maqet storage attach VM FILE|SPEC`: one more `storage:` disk in the
//! VM's stored definition (the record `maqet apply` updates), validated
//! like any config; with `--live`, hot-plugged into the running VM first,
//! and recorded only once QEMU has it, so a failed hot-plug changes
//! nothing. A SPEC naming a new image gets it created the way `storage:`
//! disks are: at the next start, or now for a live attach (and deleted
//! again if the hot-plug fails).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};

use maqet_base::vmname::VmName;
use maqet_config::canonical;
use maqet_config::{ConfigDocument, StorageEntry, VmConfig};
use maqet_host::state::VmRecord;
use maqet_host::storage::hotplug;
use maqet_host::storage::identity::stat_followed;
use maqet_host::storage::verify::argument_disks;
use maqet_host::storage::{self as st, Provisioned, QemuImg, References};

use super::{stored_config, Runners, UnitManager, VmError, Vms};

/// The disk to attach.
#[derive(Debug, Clone, PartialEq)]
pub enum AttachSource {
    /// An existing image (absolute path).
    File(PathBuf),
    /// A `storage:` entry, as `config::parse_disk_spec` gives it.
    Spec(Map<String, Json>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttachRequest {
    pub source: AttachSource,
    pub live: bool,
    pub readonly: bool,
    /// `qcow2` or `raw` (the entry's `type`); a FILE's is probed without it.
    pub format: Option<String>,
    /// The entry's `interface`.
    pub interface: Option<String>,
}

/// What attach did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub drive: String,
    pub path: PathBuf,
    /// Hot-plugged into the running VM.
    pub live: bool,
    /// The image does not exist yet: the next start creates it.
    pub created_at_start: bool,
    /// Images created now (a live attach of a new disk).
    pub created: Vec<PathBuf>,
    /// Every other VM of this data directory whose definition names the
    /// image — directly, as a `base:`, or down a backing chain — one
    /// sentence each ("VM 'b' uses it as the base of its disk 'root'"):
    /// not an error — QEMU's image locks keep them from running at once —
    /// but worth saying.
    pub shared_with: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("{}: no such file; to create a new disk give a spec such as name=data,size=1G", path.display())]
    NoSuchFile { path: PathBuf },
    #[error("{}: the image is {format}; storage disks are qcow2 or raw (convert it: qemu-img convert -O qcow2 …)", path.display())]
    UnsupportedFormat { path: PathBuf, format: String },
    #[error("--{flag} {flag_value} contradicts {key}={spec_value} in the spec; give it once")]
    Contradiction {
        flag: &'static str,
        flag_value: String,
        key: &'static str,
        spec_value: String,
    },
    #[error("VM '{vm}' already has a disk named '{name}'; choose another name (e.g. name=NEW in a spec: file=PATH,name=NEW)")]
    DuplicateName { vm: VmName, name: String },
    #[error("VM '{vm}' already uses {} as {other}; nothing was changed", path.display())]
    DuplicatePath {
        vm: VmName,
        path: PathBuf,
        other: String,
    },
    #[error("not attaching {}: {user}; stop that VM first", path.display())]
    InUse { path: PathBuf, user: String },
    #[error("VM '{vm}' is running: attach with --live to hot-plug the disk and record it, or stop it first (`maqet stop {vm}`)")]
    RunningNeedsLive { vm: VmName },
    #[error("VM '{vm}' is not running, so there is nothing to hot-plug into; attach without --live to add the disk to its definition")]
    NotRunning { vm: VmName },
    #[error("drive '{drive}' is hot-plugged into VM '{vm}', but recording it in the definition failed ({error}); it is gone at the next start unless you add it again with `maqet storage attach {vm}` while stopped")]
    NotRecorded {
        vm: VmName,
        drive: String,
        error: String,
    },
}

/// The definition with the disk added, validated and checked.
struct Change {
    vm: VmName,
    sources: Vec<PathBuf>,
    /// The definition before: what a running VM was started with.
    old: VmConfig,
    /// With the new entry: its `VmConfig` and the JSON to store.
    new: VmConfig,
    json: Json,
    added: StorageEntry,
    path: PathBuf,
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// Attaches a disk to `vm` (see the module doc).
    pub async fn attach(&self, vm: &VmName, req: AttachRequest) -> Result<Attached, VmError> {
        self.record(vm)?;
        // A start cannot slip in between the running check and the write.
        let _lock = self.lock(vm, super::LOCK_WAIT)?;
        let rec = self.record(vm)?;
        let c = self.change(vm.clone(), &rec, &req)?;
        let running = self.is_running(&c.vm).await?;
        match (running, req.live) {
            (true, false) => return Err(AttachError::RunningNeedsLive { vm: c.vm }.into()),
            (false, true) => return Err(AttachError::NotRunning { vm: c.vm }.into()),
            _ => {}
        }
        if !running {
            self.refuse_saved(&c.vm, "`storage attach` (a disk more)")?;
        }
        self.refuse_in_use(&c.vm, &c.path, &c.new).await?;
        let shared_with = self.defined_users(&c.vm, &c.path)?;
        if running {
            return Ok(Attached {
                shared_with,
                ..self.hot_plug(c).await?
            });
        }
        self.store()?
            .update_config(c.vm.as_str(), &c.json, &c.sources, None)?;
        Ok(Attached {
            drive: c.added.name.clone(),
            created_at_start: !c.path.exists(),
            path: c.path,
            live: false,
            created: Vec::new(),
            shared_with,
        })
    }

    /// Which other VMs of this data directory name `path` in their
    /// definitions (rendered argv, `base:` files, backing chains).
    fn defined_users(&self, vm: &VmName, path: &Path) -> Result<Vec<String>, VmError> {
        if !path.exists() {
            return Ok(Vec::new());
        }
        let mut refs = References::default();
        let binary = self.add_defined(&mut refs, &self.store()?, Some(vm))?;
        if let Ok(img) = QemuImg::find(binary.as_deref()) {
            refs.add_backing_chains(&img);
        }
        Ok(refs.users_of_path(path))
    }

    /// The stored definition plus the requested entry.
    fn change(&self, vm: VmName, rec: &VmRecord, req: &AttachRequest) -> Result<Change, VmError> {
        let old = stored_config(rec)?;
        let disk_dir = self.disk_dir(&vm);
        let entry = entry_for(&vm, req, &old)?;
        let mut doc = ConfigDocument::from_stored(&rec.config)?;
        let mut list = match doc.get("storage") {
            Some(Json::Array(a)) => a,
            _ => Vec::new(),
        };
        list.push(Json::Object(entry));
        doc.set("storage", Json::Array(list), "maqet storage attach");
        let new = doc.validate()?;
        let added = new.storage().last().expect("just added").clone();
        let path = added.path(&disk_dir);
        refuse_duplicate(&vm, &old, &disk_dir, self.data_dir.qemu_cwd(), &path)?;
        Ok(Change {
            vm,
            sources: rec.sources.clone(),
            old,
            json: doc.to_json(),
            new,
            added,
            path,
        })
    }

    /// Creates the image if it is new, hot-plugs it, then records it; a
    /// failure on the way deletes what was created and records nothing.
    async fn hot_plug(&self, c: Change) -> Result<Attached, VmError> {
        let plan = hotplug::plan(&c.added, c.path.clone(), &c.old)?;
        let disk_dir = self.disk_dir(&c.vm);
        let mut one = c.new.clone();
        one.storage = vec![c.added.clone()];
        maqet_host::storage::base::verify_bases(&one, &disk_dir)
            .map_err(crate::provision::ProvisionError::from)?;
        let store = self.store()?;
        let mut done = Provisioned::default();
        if let Err(e) = st::provision(c.vm.as_str(), &one, &disk_dir, &store, &mut done) {
            return Err(self.undone(&c.vm, done, store, e.into()).await);
        }
        let plugged = async {
            let mut client = self.runner(&c.vm).await?;
            Ok::<(), VmError>(hotplug::plug(&mut client, &plan).await?)
        }
        .await;
        if let Err(e) = plugged {
            return Err(self.undone(&c.vm, done, store, e).await);
        }
        store
            .update_config(c.vm.as_str(), &c.json, &c.sources, None)
            .map_err(|e| AttachError::NotRecorded {
                vm: c.vm.clone(),
                drive: c.added.name.clone(),
                error: e.to_string(),
            })?;
        Ok(Attached {
            drive: c.added.name,
            path: c.path,
            live: true,
            created_at_start: false,
            created: done.created.into_iter().map(|c| c.path).collect(),
            shared_with: Vec::new(),
        })
    }

    /// A running QEMU (of any data directory, this VM's own excepted)
    /// that uses `path`, directly or down a backing chain, is a refusal.
    async fn refuse_in_use(&self, vm: &VmName, path: &Path, cfg: &VmConfig) -> Result<(), VmError> {
        if !path.exists() {
            return Ok(());
        }
        let ours = self.data_dir.path().to_string_lossy().into_owned();
        let mut refs = References::default();
        let running = self.running_processes().await?;
        let own = |p: &super::refs::RunningProcess| p.vm == vm.as_str() && p.data_dir == ours;
        for p in running.iter().filter(|p| !own(p)) {
            refs.add_argv(&p.argv, p.cwd.as_deref(), &p.user);
        }
        // A disk hot-plugged elsewhere, or a QEMU maqet does not manage.
        let own_pids: Vec<u32> = running.iter().filter(|p| own(p)).map(|p| p.pid).collect();
        refs.add_open_files(
            &|pid| {
                running
                    .iter()
                    .find(|p| p.pid == pid)
                    .map(|p| p.user.clone())
            },
            &own_pids,
        );
        if let Ok(img) = QemuImg::find(Some(&cfg.binary)) {
            refs.add_backing_chains(&img);
        }
        match refs.user_of_path(path) {
            Some(user) => Err(AttachError::InUse {
                path: path.to_path_buf(),
                user,
            }
            .into()),
            None => Ok(()),
        }
    }
}

/// The `storage:` entry the request describes.
fn entry_for(
    vm: &VmName,
    req: &AttachRequest,
    old: &VmConfig,
) -> Result<Map<String, Json>, VmError> {
    let mut entry = match &req.source {
        AttachSource::Spec(m) => m.clone(),
        AttachSource::File(p) => {
            if !p.exists() {
                return Err(AttachError::NoSuchFile { path: p.clone() }.into());
            }
            let mut m = Map::new();
            m.insert("name".into(), Json::String(name_from_file(p)));
            m.insert(
                "file".into(),
                Json::String(p.to_string_lossy().into_owned()),
            );
            if req.format.is_none() {
                let chain = QemuImg::find(Some(&old.binary))?.info(p)?;
                let format = chain.first().map(|i| i.format.clone()).unwrap_or_default();
                if format != "qcow2" && format != "raw" {
                    return Err(AttachError::UnsupportedFormat {
                        path: p.clone(),
                        format,
                    }
                    .into());
                }
                m.insert("type".into(), Json::String(format));
            }
            m
        }
    };
    for (flag, key, value) in [
        ("format", "type", &req.format),
        ("if", "interface", &req.interface),
    ] {
        let Some(value) = value else { continue };
        match entry.get(key).and_then(Json::as_str) {
            Some(given) if given != value => {
                return Err(AttachError::Contradiction {
                    flag,
                    flag_value: value.clone(),
                    key,
                    spec_value: given.to_string(),
                }
                .into())
            }
            _ => {
                entry.insert(key.into(), Json::String(value.clone()));
            }
        }
    }
    if req.readonly {
        entry.insert("readonly".into(), Json::Bool(true));
    }
    if let Some(name) = entry.get("name").and_then(Json::as_str) {
        if old.storage().iter().any(|e| e.name == name) {
            return Err(AttachError::DuplicateName {
                vm: vm.clone(),
                name: name.to_string(),
            }
            .into());
        }
    }
    Ok(entry)
}

/// A drive name from a file name: its stem, with characters a name may
/// not hold replaced by `-`, at most 64 long.
pub fn name_from_file(p: &Path) -> String {
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "disk".into()
    } else {
        name
    }
}

/// The VM's definition names `path` already: as another `storage:` disk
/// or base, or in `arguments` (same file by path or by inode).
fn refuse_duplicate(
    vm: &VmName,
    old: &VmConfig,
    disk_dir: &Path,
    qemu_cwd: &Path,
    path: &Path,
) -> Result<(), VmError> {
    let mut known: Vec<(PathBuf, String)> = Vec::new();
    for e in old.storage() {
        known.push((e.path(disk_dir), format!("its disk '{}'", e.name)));
        if let Some(b) = e.backing_path(disk_dir) {
            known.push((b, format!("the base of its disk '{}'", e.name)));
        }
    }
    for d in argument_disks(old, qemu_cwd) {
        known.push((d.path, format!("a disk in {}", d.label)));
    }
    let id = stat_followed(path).ok();
    let want = canonical(path);
    for (p, what) in known {
        let same_inode = id.is_some_and(|id| stat_followed(&p).is_ok_and(|o| o.matches(&id)));
        if canonical(&p) == want || same_inode {
            return Err(AttachError::DuplicatePath {
                vm: vm.clone(),
                path: path.to_path_buf(),
                other: what,
            }
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_file_stem() {
        assert_eq!(name_from_file(Path::new("/d/data disk.qcow2")), "data-disk");
        assert_eq!(name_from_file(Path::new("/d/x.img")), "x");
        assert_eq!(name_from_file(Path::new("/")), "disk");
    }
}
