//! Guest provisioning at start (issue 11), without a daemon: the CLI calls
//! [`prepare`] before the VM's units exist (base digests, cloud-init seed,
//! port choice), and the runner calls [`runner_argv`] to add the seed drive
//! and the user-mode NIC to QEMU's command line and the ports to `STATUS=`.

use std::path::{Path, PathBuf};

use crate::cloudinit::{self, CloudInitError, SeedOutcome};
use crate::config::VmConfig;
use crate::paths::{DataDir, PathError};
use crate::ports::{self, PortError, PortPlan};
use crate::state::{FileKind, StateError, Store};
use crate::storage::base::{verify_bases, BaseError};
use crate::storage::disks::canonical_parent;
use crate::vmname::VmName;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Base(#[from] BaseError),
    #[error(transparent)]
    CloudInit(#[from] CloudInitError),
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("VM '{0}' forwards ports but no port plan was published; start it with `maqet start`, which chooses them")]
    NoPlan(String),
}

/// What a start prepared.
#[derive(Debug, Default)]
pub struct Prepared {
    pub seed: Option<SeedOutcome>,
    pub ports: Option<PortPlan>,
}

/// Everything that must hold before the VM's units are created. Nothing
/// here needs undoing on a failed start: the seed and the plan are
/// rewritten by the next start, and a base is never written. The seed's
/// files are recorded in `store` as created by maqet (so `rm
/// --delete-storage` deletes them the way it deletes disks, and plain `rm`
/// keeps them).
pub fn prepare(
    data_dir: &DataDir,
    vm: &VmName,
    cfg: &VmConfig,
    store: &Store,
) -> Result<Prepared, ProvisionError> {
    verify_bases(cfg, &data_dir.disk_dir(vm))?;
    let mut out = Prepared::default();
    if let Some(ci) = &cfg.guest.cloud_init {
        let recorded: Vec<PathBuf> = store
            .created_files(vm.as_str())?
            .into_iter()
            .map(|f| f.path)
            .collect();
        let owned = |p: &Path| recorded.contains(&canonical_parent(p));
        let seed = cloudinit::ensure_seed(data_dir.path(), vm.as_str(), ci, &owned)?;
        for f in &seed.made {
            let kind = if f.directory {
                FileKind::Directory
            } else {
                FileKind::Other
            };
            store.record_created_file(
                vm.as_str(),
                &canonical_parent(&f.path),
                kind,
                Some(f.identity),
            )?;
        }
        out.seed = Some(seed);
    }
    if cfg.guest.wants_network() {
        let plan = ports::plan(&cfg.guest)?;
        ports::write_plan(&ports::plan_path(vm)?, &plan)?;
        out.ports = Some(plan);
    }
    Ok(out)
}

/// QEMU options the runner appends, and the `STATUS=` suffix.
pub fn runner_argv(
    data_dir: &DataDir,
    vm: &VmName,
    cfg: &VmConfig,
) -> Result<(Vec<String>, String), ProvisionError> {
    let mut argv = Vec::new();
    let mut summary = String::new();
    if cfg.guest.cloud_init.is_some() {
        let seed = cloudinit::seed_image(data_dir.path(), vm.as_str());
        // virtio-blk: guests without an AHCI driver still see it.
        argv.extend([
            "-drive".to_string(),
            format!(
                "file={},format=raw,if=virtio,readonly=on,id=maqet-cidata",
                seed.to_string_lossy().replace(',', ",,")
            ),
        ]);
    }
    if cfg.guest.guest_agent {
        argv.extend(crate::guest_agent::qemu_argv(
            &crate::guest_agent::socket_path(vm)?,
        ));
    }
    if cfg.guest.wants_network() {
        let plan = ports::read_plan(&ports::plan_path(vm)?)?
            .ok_or_else(|| ProvisionError::NoPlan(vm.to_string()))?;
        argv.extend(ports::netdev_argv(vm.as_str(), &plan));
        summary = plan.summary();
    }
    Ok((argv, summary))
}

/// The published ports of a VM (None when it forwards none or never
/// started in this session).
pub fn published_ports(vm: &VmName, cfg: &VmConfig) -> Result<Option<PortPlan>, ProvisionError> {
    if !cfg.guest.wants_network() {
        return Ok(None);
    }
    Ok(ports::read_plan(&ports::plan_path(vm)?)?)
}

/// Removes what provisioning kept for a VM that is being removed: its ssh
/// known_hosts (a later VM of the name is another host) and its port plan.
/// The cloud-init seed is a file maqet created, recorded like a disk: plain
/// `rm` keeps it, `rm --delete-storage` deletes it. Returns problems, one
/// line each; none of them should stop an `rm`.
pub fn forget(vm: &VmName, data_dir: &DataDir) -> Vec<String> {
    let mut problems = Vec::new();
    let mut files = vec![crate::ssh::known_hosts_path(data_dir.path(), vm.as_str())];
    files.extend(ports::plan_path(vm).ok());
    for f in files {
        match std::fs::remove_file(&f) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                problems.push(format!("cannot remove {}: {e}", f.display()))
            }
            _ => {}
        }
    }
    problems
}
