//! The typed, validated VM config that the rest of maqet consumes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::Location;

/// Default QEMU binary when a config names none.
pub const DEFAULT_BINARY: &str = "/usr/bin/qemu-system-x86_64";
/// Default seconds between ACPI power-down and `quit` on stop.
pub const DEFAULT_SHUTDOWN_TIMEOUT: f64 = 30.0;
/// Size of a new disk that has neither `size` nor `backing_file`.
pub const DEFAULT_DISK_SIZE: &str = "10G";
/// Range accepted for the top-level `cpu` key.
pub const CPU_RANGE: std::ops::RangeInclusive<u64> = 1..=255;

/// A validated VM config. Built by [`super::ConfigDocument::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct VmConfig {
    /// The config's `name:` (the CLI may override it).
    pub name: Option<String>,
    /// Absolute path of an executable QEMU (PATH already searched).
    pub binary: PathBuf,
    /// Top-level `memory` as written (QEMU `-m` syntax; a bare number is MiB).
    pub memory: Option<String>,
    /// Top-level `cpu` (`-smp N`).
    pub cpu: Option<u32>,
    pub display: Option<String>,
    pub vga: Option<String>,
    /// `args`: argv elements passed as written.
    pub args: Vec<String>,
    /// `arguments` items that produce options, in order.
    pub arguments: Vec<Argument>,
    pub storage: Vec<StorageEntry>,
    /// `enable_kvm: true` renders `-accel kvm` (before any `accel` item of
    /// `arguments`, which then stay as fallbacks).
    pub enable_kvm: bool,
    /// `console: true` connects the first serial port to maqet's console.
    pub console: bool,
    /// Seconds between ACPI power-down and `quit` when stopping (> 0).
    pub shutdown_timeout: f64,
    pub on_reboot: OnReboot,
    /// What a stop by systemd (logout, shutdown, `systemctl --user stop`)
    /// does to the VM.
    pub on_stop: OnStop,
    pub restart: RestartPolicy,
    /// Seconds before systemd restarts the VM (`RestartSec=`, >= 0).
    pub restart_sec: Option<f64>,
    /// Start at login through `maqet-autostart.service`.
    pub autostart: bool,
    /// `qmp_allow_host_exec: true`: the runner forwards QMP commands that
    /// make QEMU run host programs (refused by default).
    pub qmp_allow_host_exec: bool,
    /// `cloud_init`, `ports`, `ssh` (issue 11).
    pub guest: super::guest::GuestSetup,
    /// `networks`: VM-to-VM segments (issue 19).
    pub networks: super::networks::Networks,
    pub resources: Resources,
    /// What the VM actually gets, in bytes: the `arguments` `m` item when it
    /// has a plain size, else `memory`; None when QEMU's default applies.
    pub memory_bytes: Option<u64>,
    /// CPUs the VM gets: the `arguments` `smp` item when it has a count,
    /// else `cpu`.
    pub cpus: Option<u32>,
    /// `firmware`, `secure_boot`, `tpm`, socket displays, as resolved.
    pub desktop: super::desktop::Desktop,
    /// `shares:` (virtiofs), with the virtiofsd that serves them.
    pub shares: super::shares::Shares,
    /// Non-fatal findings, one line each, to show the user.
    pub warnings: Vec<String>,
    /// Argv groups in the merged key order.
    pub(crate) order: Vec<Section>,
}

/// One argv group, rendered where its key sits in the merged mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Memory,
    Cpu,
    Display,
    Vga,
    Args,
    Arguments,
    Storage,
    EnableKvm,
    OnReboot,
}

/// One option from `arguments`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argument {
    /// Option name without dashes (`device`, `nodefaults`).
    pub option: String,
    /// The argv elements it renders to (`["-device", "virtio-net-pci,netdev=n0"]`).
    pub argv: Vec<String>,
    /// Position in the merged `arguments` list.
    pub index: usize,
    pub location: Location,
    /// Written as a string item (`- nodefaults`): such items are passed as
    /// written and not counted as single-instance options.
    pub from_string: bool,
}

/// `on_reboot`: what a guest reboot does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnReboot {
    #[default]
    Restart,
    /// QEMU exits instead (`-no-reboot`).
    Stop,
}

/// `on_stop`: what happens when systemd stops the VM's unit (SIGTERM to
/// the runner). `maqet stop` always powers off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStop {
    /// Power the guest off (ACPI, then `quit` after `shutdown_timeout`).
    #[default]
    Shutdown,
    /// Save the running state to the VM's `state.sav`; the next start
    /// resumes it (`maqet autostart` at the next login).
    Save,
}

/// `restart`: the systemd `Restart=` policy of the VM's service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    #[default]
    No,
    OnFailure,
    Always,
}

impl RestartPolicy {
    /// The value of systemd's `Restart=`.
    pub fn as_systemd(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

/// `resources`: systemd resource limits of the VM's unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// `MemoryMax=` in bytes (disk-size syntax: a bare number is bytes).
    pub memory_max: Option<u64>,
    /// `CPUQuota=` in percent of one CPU (200 = two CPUs).
    pub cpu_quota_percent: Option<u32>,
    /// `CPUWeight=`, 1..=10000.
    pub cpu_weight: Option<u64>,
    /// `IOWeight=`, 1..=10000.
    pub io_weight: Option<u64>,
    /// `TasksMax=`.
    pub tasks_max: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    Qcow2,
    Raw,
    Virtfs,
}

impl StorageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageKind::Qcow2 => "qcow2",
            StorageKind::Raw => "raw",
            StorageKind::Virtfs => "virtfs",
        }
    }
}

/// A disk image format (`format=` and `qemu-img -f`/`-F`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Qcow2,
    Raw,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Raw => "raw",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    Virtio,
    Ide,
    /// Rendered as an `ide-hd` on maqet's own AHCI controller.
    Sata,
    /// Rendered as a `scsi-hd` on maqet's own virtio-scsi controller.
    Scsi,
    /// `if=none`: the drive exists for an explicit `-device` in `arguments`.
    None,
}

impl Interface {
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Virtio => "virtio",
            Interface::Ide => "ide",
            Interface::Sata => "sata",
            Interface::Scsi => "scsi",
            Interface::None => "none",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityModel {
    Passthrough,
    MappedXattr,
    MappedFile,
    None,
}

impl SecurityModel {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityModel::Passthrough => "passthrough",
            SecurityModel::MappedXattr => "mapped-xattr",
            SecurityModel::MappedFile => "mapped-file",
            SecurityModel::None => "none",
        }
    }
}

/// The 9p share of a `virtfs` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Virtfs {
    /// Absolute host directory (created at start when missing).
    pub path: PathBuf,
    pub mount_tag: String,
    pub security_model: SecurityModel,
    pub id: String,
    pub readonly: bool,
    /// Other `options` as rendered `k=v` (or bare `k`) parts, in order.
    pub extra: Vec<String>,
}

/// One `storage` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageEntry {
    /// Position in the merged `storage` list.
    pub index: usize,
    /// Unique per VM; the drive name `snapshot` takes.
    pub name: String,
    pub kind: StorageKind,
    /// Absolute image path from `file:`; None = `<disk_dir>/<name>.<type>`.
    pub file: Option<PathBuf>,
    /// Size in bytes for creating the image; None when a backing file
    /// gives it. Defaults to 10G without a backing file.
    pub size: Option<u64>,
    /// `size` as written (what `qemu-img create` gets).
    pub size_text: Option<String>,
    pub interface: Interface,
    /// `backing_file` as written: relative paths are relative to the
    /// overlay's directory and stay relative inside the image.
    pub backing_file: Option<PathBuf>,
    /// `backing_format` (default qcow2) when there is a backing file.
    pub backing_format: Option<ImageFormat>,
    /// `sha256` of a `base:` image, lowercase hex: checked before the
    /// overlay is created (issue 11).
    pub base_sha256: Option<String>,
    /// `readonly: true`: the guest sees the disk read-only (`readonly=on`).
    pub readonly: bool,
    /// Only for `virtfs`.
    pub virtfs: Option<Virtfs>,
    pub location: Location,
}

impl StorageEntry {
    /// Where the image lives: `file`, else `<disk_dir>/<name>.<type>`. For a
    /// virtfs entry, the shared directory. Every component computes disk
    /// paths through this, so create, start and snapshot agree.
    pub fn path(&self, disk_dir: &Path) -> PathBuf {
        if let Some(v) = &self.virtfs {
            return v.path.clone();
        }
        match &self.file {
            Some(f) => f.clone(),
            None => disk_dir.join(format!("{}.{}", self.name, self.kind.as_str())),
        }
    }

    /// The image format for qcow2/raw entries.
    pub fn format(&self) -> Option<ImageFormat> {
        match self.kind {
            StorageKind::Qcow2 => Some(ImageFormat::Qcow2),
            StorageKind::Raw => Some(ImageFormat::Raw),
            StorageKind::Virtfs => None,
        }
    }

    /// The backing file as a host path (relative ones joined to the
    /// overlay's directory), e.g. to check it exists.
    pub fn backing_path(&self, disk_dir: &Path) -> Option<PathBuf> {
        let b = self.backing_file.as_ref()?;
        if b.is_absolute() {
            return Some(b.clone());
        }
        let overlay = self.path(disk_dir);
        let dir = overlay.parent().unwrap_or(Path::new("/"));
        Some(super::paths::normalize(&dir.join(b)))
    }
}

impl VmConfig {
    pub fn storage(&self) -> &[StorageEntry] {
        &self.storage
    }

    /// systemd's `Restart=` value and `RestartSec=`; None for `restart: no`.
    pub fn restart_policy(&self) -> Option<(String, Option<Duration>)> {
        if self.restart == RestartPolicy::No {
            return None;
        }
        Some((
            self.restart.as_systemd().to_string(),
            self.restart_sec.map(Duration::from_secs_f64),
        ))
    }

    /// The unit's resource-control properties; None when `resources` sets
    /// nothing.
    pub fn resource_limits(&self) -> Option<ResourceLimits> {
        let r = &self.resources;
        if *r == Resources::default() {
            return None;
        }
        Some(ResourceLimits {
            memory_max: r.memory_max,
            // CPUQuota=100% is one CPU second per wall-clock second.
            cpu_quota_per_sec_usec: r.cpu_quota_percent.map(|p| u64::from(p) * 10_000),
            cpu_weight: r.cpu_weight,
            io_weight: r.io_weight,
            tasks_max: r.tasks_max,
        })
    }
}

/// The VM's resource limits, for systemd's resource-control properties
/// (the systemd layer turns them into unit properties); `None` leaves
/// systemd's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceLimits {
    pub memory_max: Option<u64>,
    /// CPU time per second of wall time, in µs (`CPUQuota=50%` → 500000).
    pub cpu_quota_per_sec_usec: Option<u64>,
    pub cpu_weight: Option<u64>,
    pub io_weight: Option<u64>,
    pub tasks_max: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(file: Option<&str>, backing: Option<&str>) -> StorageEntry {
        StorageEntry {
            index: 0,
            name: "hdd".into(),
            kind: StorageKind::Qcow2,
            file: file.map(PathBuf::from),
            size: None,
            size_text: None,
            interface: Interface::Virtio,
            backing_file: backing.map(PathBuf::from),
            backing_format: backing.map(|_| ImageFormat::Qcow2),
            base_sha256: None,
            readonly: false,
            virtfs: None,
            location: Location::default(),
        }
    }

    #[test]
    fn default_disk_path_is_under_disk_dir() {
        assert_eq!(
            disk(None, None).path(Path::new("/data/disks/vm")),
            PathBuf::from("/data/disks/vm/hdd.qcow2")
        );
        assert_eq!(
            disk(Some("/x/y.img"), None).path(Path::new("/d")),
            PathBuf::from("/x/y.img")
        );
    }

    #[test]
    fn backing_path_is_relative_to_overlay() {
        let d = disk(Some("/imgs/o/overlay.qcow2"), Some("../base.qcow2"));
        assert_eq!(
            d.backing_path(Path::new("/d")),
            Some(PathBuf::from("/imgs/base.qcow2"))
        );
        let d = disk(None, Some("base.qcow2"));
        assert_eq!(
            d.backing_path(Path::new("/d")),
            Some(PathBuf::from("/d/base.qcow2"))
        );
        assert_eq!(disk(None, None).backing_path(Path::new("/d")), None);
    }

    #[test]
    fn resource_limits_mapping() {
        let mut r = Resources::default();
        assert_eq!(r, Resources::default());
        r.cpu_quota_percent = Some(150);
        r.memory_max = Some(1 << 30);
        let limits = ResourceLimits {
            memory_max: Some(1 << 30),
            cpu_quota_per_sec_usec: Some(1_500_000),
            cpu_weight: None,
            io_weight: None,
            tasks_max: None,
        };
        let cfg = |resources| VmConfig {
            name: None,
            binary: PathBuf::from("/bin/true"),
            memory: None,
            cpu: None,
            display: None,
            vga: None,
            args: vec![],
            arguments: vec![],
            storage: vec![],
            enable_kvm: false,
            console: false,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            on_reboot: OnReboot::Restart,
            on_stop: OnStop::Shutdown,
            restart: RestartPolicy::No,
            restart_sec: None,
            autostart: false,
            qmp_allow_host_exec: false,
            guest: Default::default(),
            networks: Default::default(),
            resources,
            memory_bytes: None,
            cpus: None,
            desktop: Default::default(),
            shares: Default::default(),
            warnings: vec![],
            order: vec![],
        };
        assert_eq!(cfg(r).resource_limits(), Some(limits));
        let mut c = cfg(Resources::default());
        assert_eq!(c.resource_limits(), None);
        assert_eq!(c.restart_policy(), None);
        c.restart = RestartPolicy::OnFailure;
        c.restart_sec = Some(2.5);
        assert_eq!(
            c.restart_policy(),
            Some(("on-failure".to_string(), Some(Duration::from_millis(2500))))
        );
    }

    #[test]
    fn restart_policy_names() {
        assert_eq!(RestartPolicy::OnFailure.as_systemd(), "on-failure");
        assert_eq!(RestartPolicy::default(), RestartPolicy::No);
    }
}
