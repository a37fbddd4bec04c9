//! Guest provisioning at start (issue 11), without a daemon: the CLI calls
//! [`prepare`] before the VM's units exist (base digests, cloud-init seed,
//! port choice), and the runner calls [`runner_argv`] to add the seed drive,
//! the NIC (user-mode, or on passt's socket) and the NICs on VM-to-VM
//! networks to QEMU's command line and the ports to `STATUS=`.

use std::path::{Path, PathBuf};

use maqet_base::paths::{DataDir, PathError, VmRuntime};
use maqet_base::vmname::VmName;
use maqet_config::VmConfig;
use maqet_host::cloudinit::{self, CloudInitError, SeedOutcome};
use maqet_host::ports::{self, PortError, PortPlan};
use maqet_host::state::{FileKind, StateError, Store};
use maqet_host::storage::base::{verify_bases, BaseError};
use maqet_host::storage::disks::canonical_parent;

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
    runtime: &VmRuntime,
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
        ports::write_plan(&runtime.ports(), &plan)?;
        out.ports = Some(plan);
    }
    Ok(out)
}

/// Where the forwarded ports of a command line come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// The plan the start published (the runner: it must be there).
    Published,
    /// The published plan while there is one (the VM runs), else the plan
    /// as far as the config decides it, the ssh port a start would choose
    /// shown as [`ports::CHOSEN_AT_START`] (`maqet info`).
    PublishedOrPlanned,
}

/// QEMU's whole command line for `vm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuCommand {
    pub argv: Vec<String>,
    /// The forwards it carries (None without maqet's network).
    pub ports: Option<PortPlan>,
    /// Placeholders in `argv` for what a start decides.
    pub chosen_at_start: Vec<&'static str>,
}

/// QEMU's command line exactly as the runner runs it — the one function
/// that renders it, for the runner and for `maqet info`: the config's own
/// options (QMP and console on the runner's fds), then what provisioning
/// adds: the cloud-init seed drive, the guest-agent channel, maqet's
/// user-mode network with its forwards and NIC, a NIC per `networks:`
/// segment.
pub fn qemu_command(
    data_dir: &DataDir,
    vm: &VmName,
    cfg: &VmConfig,
    runtime: &VmRuntime,
    ports: Ports,
) -> Result<QemuCommand, ProvisionError> {
    let ctx = maqet_config::RenderContext {
        vm_name: vm.to_string(),
        qmp_fd: maqet_base::units::QMP_FD,
        console_fd: Some(maqet_base::units::CONSOLE_FD),
        disk_dir: data_dir.disk_dir(vm),
        runtime_dir: runtime.dir(),
    };
    let mut argv = cfg.render_argv(&ctx);
    let (extra, plan) = runner_argv(data_dir, vm, cfg, runtime, ports)?;
    argv.extend(extra);
    let chosen_at_start = match &plan {
        Some(p) if p.forwards.iter().any(|f| f.host_port == 0) => vec![ports::CHOSEN_AT_START],
        _ => Vec::new(),
    };
    Ok(QemuCommand {
        argv,
        ports: plan,
        chosen_at_start,
    })
}

/// The QEMU options provisioning adds, and the forwards they carry.
fn runner_argv(
    data_dir: &DataDir,
    vm: &VmName,
    cfg: &VmConfig,
    runtime: &VmRuntime,
    source: Ports,
) -> Result<(Vec<String>, Option<PortPlan>), ProvisionError> {
    let mut argv = Vec::new();
    let mut plan = None;
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
        argv.extend(maqet_host::guest_agent::qemu_argv(&runtime.agent()));
    }
    if cfg.guest.wants_network() {
        let published = ports::read_plan(&runtime.ports())?;
        let p = match (published, source) {
            (Some(p), _) => p,
            (None, Ports::Published) => return Err(ProvisionError::NoPlan(vm.to_string())),
            (None, Ports::PublishedOrPlanned) => ports::planned(&cfg.guest),
        };
        // Automatic forwards of an earlier run are the guest's listeners
        // of then: the runner finds them again.
        let p = p.without_auto();
        match cfg.guest.network.passt() {
            // The forwards are passt's (its unit's argv), not QEMU's.
            Some(_) => argv.extend(maqet_host::companion::passt::netdev_argv(
                vm.as_str(),
                &runtime.passt_socket(),
            )),
            None => argv.extend(ports::netdev_argv(vm.as_str(), &p)),
        }
        plan = Some(p);
    }
    // After maqet's user-mode NIC, so that one stays the guest's first.
    for (i, n) in cfg.networks.segments.iter().enumerate() {
        let rt = segment_runtime(runtime, &n.name)?;
        let mac = n
            .mac
            .clone()
            .unwrap_or_else(|| ports::segment_mac(vm.as_str(), n.name.as_str()));
        argv.extend(maqet_host::companion::switch::qemu_args(i, &rt, &mac));
    }
    Ok((argv, plan))
}

/// The switch files of `segment` beside the VMs' runtime root of `runtime`
/// (`…/maqet/vm/NAME` → `…/maqet/net/SEGMENT`).
pub fn segment_runtime(
    runtime: &VmRuntime,
    segment: &maqet_base::netname::NetName,
) -> Result<maqet_base::paths::SegmentRuntime, ProvisionError> {
    let vm_root = runtime
        .dir()
        .parent()
        .map(Path::to_path_buf)
        .ok_or(PathError::NoRuntimeDir)?;
    let root = vm_root.parent().unwrap_or(&vm_root).join("net");
    Ok(maqet_base::paths::SegmentRuntime::at(&root, segment))
}

/// The published ports of a VM (None when it forwards none or never
/// started in this session).
pub fn published_ports(vm: &VmName, cfg: &VmConfig) -> Result<Option<PortPlan>, ProvisionError> {
    if !cfg.guest.wants_network() {
        return Ok(None);
    }
    Ok(ports::read_plan(&VmRuntime::locate(vm)?.ports())?)
}

/// Removes what provisioning kept for a VM that is being removed: its ssh
/// known_hosts (a later VM of the name is another host). The cloud-init
/// seed is a file maqet created, recorded like a disk: plain `rm` keeps
/// it, `rm --delete-storage` deletes it; the port plan lives in the VM's
/// runtime directory, which `rm` clears. Returns problems, one line each;
/// none of them should stop an `rm`.
pub fn forget(vm: &VmName, data_dir: &DataDir) -> Vec<String> {
    let mut problems = Vec::new();
    let files = vec![maqet_host::ssh::known_hosts_path(
        data_dir.path(),
        vm.as_str(),
    )];
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
