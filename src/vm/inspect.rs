//! `maqet inspect VM`: everything about one VM in one place — its state
//! and live usage, the unit's properties, cgroup and processes, the
//! control socket, and the disks of its config with their resolved paths.
//! Gathered here; the front end only renders an [`Inspection`].

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value as Json};
use zbus::zvariant::OwnedValue;

use maqet_base::paths;
use maqet_base::vmname::VmName;
use maqet_config::{ConfigDocument, StorageEntry, StorageKind, VmConfig};
use maqet_host::systemd::{json::to_json, Systemd, SERVICE_IFACE, SOCKET_IFACE};

use super::view::{qemu_pid, StatusReport};
use super::{Runners, VmError, Vms};

/// The service properties `inspect` shows (D-Bus names, as
/// `systemctl --user show` prints them).
const SERVICE_PROPS: &[&str] = &[
    "Id",
    "Description",
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "Type",
    "MainPID",
    "ExecMainPID",
    "ExecMainCode",
    "ExecMainStatus",
    "StatusText",
    "InvocationID",
    "ActiveEnterTimestamp",
    "InactiveEnterTimestamp",
    "NRestarts",
    "Restart",
    "RestartUSec",
    "SuccessExitStatus",
    "RestartPreventExitStatus",
    "KillMode",
    "TimeoutStopUSec",
    "WatchdogUSec",
    "Slice",
    "ControlGroup",
    "CPUAccounting",
    "MemoryAccounting",
    "TasksAccounting",
    "MemoryCurrent",
    "MemoryMax",
    "CPUUsageNSec",
    "CPUQuotaPerSecUSec",
    "CPUWeight",
    "IOWeight",
    "TasksCurrent",
    "TasksMax",
];

#[derive(Debug, Serialize)]
pub struct Process {
    pub pid: u32,
    pub command: String,
    pub cgroup: String,
}

#[derive(Debug, Serialize)]
pub struct SocketFile {
    pub path: String,
    pub exists: bool,
    pub is_socket: bool,
    /// Octal permission bits, e.g. "0600".
    pub mode: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Listen {
    /// `Stream`, `Datagram`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub address: String,
}

#[derive(Debug, Serialize)]
pub struct SocketInfo {
    pub unit: String,
    /// `null` when the socket unit is not loaded.
    pub active_state: Option<String>,
    /// The unit's `Listen=`.
    pub listen: Vec<Listen>,
    /// The unit's `SocketMode=`, octal.
    pub socket_mode: Option<String>,
    pub file: SocketFile,
}

#[derive(Debug, Serialize)]
pub struct Disk {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub interface: Option<String>,
    pub path: String,
    pub exists: bool,
    /// Apparent size of the image file.
    pub size_bytes: Option<u64>,
    pub backing_file: Option<String>,
    pub backing_exists: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct Inspection {
    #[serde(flatten)]
    pub status: StatusReport,
    pub autostart: bool,
    pub restart_policy: String,
    pub restart_sec: Option<f64>,
    /// `shutdown` or `save`: what a stop by systemd does (`on_stop`).
    pub on_stop: &'static str,
    /// The service's properties as systemd reports them (`null` for
    /// unset/infinite 64-bit values); `{}` when the unit is not loaded.
    pub properties: Map<String, Json>,
    pub cgroup: Option<String>,
    pub processes: Vec<Process>,
    pub sockets: Vec<SocketInfo>,
    pub disks: Vec<Disk>,
    /// Why `disks` is empty although the config has storage: the stored
    /// config no longer validates.
    pub config_error: Option<String>,
}

impl<R: Runners> Vms<Systemd, R> {
    /// `maqet inspect VM`: everything about VM `name` in one place.
    pub async fn inspect(&self, vm: &VmName) -> Result<Inspection, VmError> {
        let rec = self.record(vm)?;
        let sd = &self.units;
        let unit = vm.service_unit();
        let st = self.unit_of(vm).await?;
        let mut status = StatusReport::new(vm, st.as_ref());
        status.companions = self.companions(vm).await;
        status.set_saved(
            self.saved_state(vm)?
                .as_ref()
                .map(super::saved::SavedView::of),
        );
        // A unit of the same name from another data directory is not this VM's.
        let raw = match st {
            Some(_) => sd.unit_properties(&unit, SERVICE_IFACE).await?,
            None => None,
        };
        let processes = match &raw {
            Some(_) => sd.unit_processes(&unit).await.unwrap_or_default(),
            None => Vec::new(),
        };
        if let Some(runner) = status.runner_pid {
            status.qemu_pid = qemu_pid(&processes, runner);
            status.fill_usage(Some(&processes));
        }
        let (cfg, config_error) =
            match ConfigDocument::from_stored(&rec.config).and_then(|d| d.validate()) {
                Ok(c) => (Some(c), None),
                Err(e) => (None, Some(e.to_string())),
            };
        // The ports this run published, as `status` shows them (changed
        // while it runs by `ports add|rm` and `ports: auto`).
        if status.runner_pid.is_some() {
            status.ports = cfg.as_ref().and_then(|c| {
                crate::provision::guest::published_ports(vm, c)
                    .ok()
                    .flatten()
            });
        }
        let properties = pick(raw.as_ref(), SERVICE_PROPS);
        let cgroup = properties
            .get("ControlGroup")
            .and_then(Json::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_string);
        Ok(Inspection {
            status,
            autostart: rec.autostart,
            restart_policy: cfg
                .as_ref()
                .map_or("no", |c| c.restart.as_systemd())
                .to_string(),
            restart_sec: cfg.as_ref().and_then(|c| c.restart_sec),
            on_stop: match cfg.as_ref().map(|c| c.on_stop) {
                Some(maqet_config::OnStop::Save) => "save",
                _ => "shutdown",
            },
            properties,
            cgroup,
            processes: processes
                .into_iter()
                .map(|(cgroup, pid, command)| Process {
                    pid,
                    command,
                    cgroup,
                })
                .collect(),
            sockets: vec![socket_info(sd, vm).await?],
            disks: cfg
                .as_ref()
                .map(|c| disks(c, &self.disk_dir(vm)))
                .unwrap_or_default(),
            config_error,
        })
    }
}

fn pick(raw: Option<&HashMap<String, OwnedValue>>, names: &[&str]) -> Map<String, Json> {
    let mut m = Map::new();
    if let Some(raw) = raw {
        for n in names {
            if let Some(v) = raw.get(*n) {
                m.insert(n.to_string(), to_json(v));
            }
        }
    }
    m
}

async fn socket_info(sd: &Systemd, vm: &VmName) -> Result<SocketInfo, VmError> {
    let unit = vm.socket_unit();
    let raw = sd.unit_properties(&unit, SOCKET_IFACE).await?;
    let get = |k: &str| raw.as_ref().and_then(|r| r.get(k));
    let listen = get("Listen")
        .and_then(|v| <Vec<(String, String)>>::try_from(v.try_clone().ok()?).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|(kind, address)| Listen { kind, address })
        .collect();
    let socket_mode = get("SocketMode")
        .and_then(|v| u32::try_from(v).ok())
        .map(|m| format!("{m:04o}"));
    let active_state = get("ActiveState").and_then(|v| String::try_from(v.try_clone().ok()?).ok());
    let path = paths::VmRuntime::locate(vm)?.control();
    Ok(SocketInfo {
        unit,
        active_state,
        listen,
        socket_mode,
        file: socket_file(&path),
    })
}

fn socket_file(path: &Path) -> SocketFile {
    let meta = std::fs::symlink_metadata(path).ok();
    SocketFile {
        path: path.display().to_string(),
        exists: meta.is_some(),
        is_socket: meta.as_ref().is_some_and(|m| m.file_type().is_socket()),
        mode: meta.map(|m| format!("{:04o}", m.permissions().mode() & 0o7777)),
    }
}

fn disks(cfg: &VmConfig, disk_dir: &Path) -> Vec<Disk> {
    cfg.storage()
        .iter()
        .map(|e: &StorageEntry| {
            let path = e.path(disk_dir);
            let meta = std::fs::metadata(&path).ok();
            let backing = e.backing_path(disk_dir);
            Disk {
                name: e.name.clone(),
                kind: e.kind.as_str().to_string(),
                interface: (e.kind != StorageKind::Virtfs)
                    .then(|| e.interface.as_str().to_string()),
                path: path.display().to_string(),
                exists: meta.is_some(),
                size_bytes: meta.filter(|m| m.is_file()).map(|m| m.len()),
                backing_exists: backing.as_ref().map(|b| b.exists()),
                backing_file: backing.map(|b| b.display().to_string()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_resolve_paths_sizes_and_missing_images() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = "binary: /bin/sh\nstorage:\n  - {name: a, type: raw, size: 64K}\n  - {name: b, type: qcow2, size: 1M}\n";
        let cfg = ConfigDocument::from_yaml_str(yaml, "x.yaml", dir.path())
            .unwrap()
            .validate()
            .unwrap();
        std::fs::write(dir.path().join("a.raw"), [0u8; 512]).unwrap();
        let d = disks(&cfg, dir.path());
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].name, "a");
        assert_eq!(d[0].kind, "raw");
        assert!(d[0].exists);
        assert_eq!(d[0].size_bytes, Some(512));
        assert_eq!(d[1].path, dir.path().join("b.qcow2").display().to_string());
        assert!(!d[1].exists);
        assert_eq!(d[1].size_bytes, None);
        assert!(d[1].interface.is_some());
    }

    #[test]
    fn socket_file_reports_mode_and_kind() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let none = socket_file(&dir.path().join("absent.sock"));
        assert!(!none.exists && !none.is_socket && none.mode.is_none());
        let sock = dir.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
        let f = socket_file(&sock);
        assert!(f.exists && f.is_socket);
        assert_eq!(f.mode.as_deref(), Some("0600"));
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"").unwrap();
        assert!(!socket_file(&plain).is_socket);
    }

    #[test]
    fn pick_keeps_only_the_named_properties() {
        let mut raw = HashMap::new();
        raw.insert("Id".to_string(), OwnedValue::from(7u32));
        raw.insert("Other".to_string(), OwnedValue::from(1u32));
        let m = pick(Some(&raw), &["Id", "MainPID"]);
        assert_eq!(m.len(), 1);
        assert_eq!(m["Id"], Json::from(7));
        assert!(pick(None, SERVICE_PROPS).is_empty());
    }
}
