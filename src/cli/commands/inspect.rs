//! `maqet inspect VM [--json]`: everything about one VM in one place — its
//! state and live usage, the unit's properties, cgroup and processes, the
//! control socket, and the disks of its config with their resolved paths.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value as Json};
use zbus::zvariant::OwnedValue;

use crate::cli::args::NameJson;
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::cli::output::{human_bytes, print_json};
use crate::config::{ConfigDocument, StorageEntry, StorageKind, VmConfig};
use crate::paths;
use crate::systemd::{json::to_json, Systemd, SERVICE_IFACE, SOCKET_IFACE};
use crate::vmname::VmName;

use crate::cli::output::usage_fields;
use crate::vm::view::{qemu_pid, StatusReport};

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
struct Process {
    pid: u32,
    command: String,
    cgroup: String,
}

#[derive(Debug, Serialize)]
struct SocketFile {
    path: String,
    exists: bool,
    is_socket: bool,
    /// Octal permission bits, e.g. "0600".
    mode: Option<String>,
}

#[derive(Debug, Serialize)]
struct Listen {
    /// `Stream`, `Datagram`, …
    #[serde(rename = "type")]
    kind: String,
    address: String,
}

#[derive(Debug, Serialize)]
struct SocketInfo {
    unit: String,
    /// `null` when the socket unit is not loaded.
    active_state: Option<String>,
    /// The unit's `Listen=`.
    listen: Vec<Listen>,
    /// The unit's `SocketMode=`, octal.
    socket_mode: Option<String>,
    file: SocketFile,
}

#[derive(Debug, Serialize)]
struct Disk {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    interface: Option<String>,
    path: String,
    exists: bool,
    /// Apparent size of the image file.
    size_bytes: Option<u64>,
    backing_file: Option<String>,
    backing_exists: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Inspection {
    #[serde(flatten)]
    status: StatusReport,
    autostart: bool,
    restart_policy: String,
    restart_sec: Option<f64>,
    /// The service's properties as systemd reports them (`null` for
    /// unset/infinite 64-bit values); `{}` when the unit is not loaded.
    properties: Map<String, Json>,
    cgroup: Option<String>,
    processes: Vec<Process>,
    sockets: Vec<SocketInfo>,
    disks: Vec<Disk>,
    /// Why `disks` is empty although the config has storage: the stored
    /// config no longer validates.
    config_error: Option<String>,
}

pub async fn run(ctx: &Ctx, a: &NameJson) -> Result<(), CliError> {
    let (vm, rec) = ctx.vm(&a.name)?;
    let sd = ctx.systemd().await?;
    let unit = vm.service_unit();
    let st = ctx.vms().await?.unit_of(&vm).await?;
    let mut status = StatusReport::new(&vm, st.as_ref());
    status.fill_companions(&sd, &vm).await;
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
    let properties = pick(raw.as_ref(), SERVICE_PROPS);
    let cgroup = properties
        .get("ControlGroup")
        .and_then(Json::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    let report = Inspection {
        status,
        autostart: rec.autostart,
        restart_policy: cfg
            .as_ref()
            .map_or("no", |c| c.restart.as_systemd())
            .to_string(),
        restart_sec: cfg.as_ref().and_then(|c| c.restart_sec),
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
        sockets: vec![socket_info(&sd, &vm).await?],
        disks: cfg
            .as_ref()
            .map(|c| disks(c, &ctx.data_dir.disk_dir(&vm)))
            .unwrap_or_default(),
        config_error,
    };
    if a.json {
        print_json(&report);
    } else {
        print_human(&report);
    }
    Ok(())
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

async fn socket_info(sd: &Systemd, vm: &VmName) -> Result<SocketInfo, CliError> {
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
    let path = paths::socket_path(vm)?;
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

fn print_human(r: &Inspection) {
    let s = &r.status;
    println!("{}: {}", s.name, s.state);
    println!("  unit:      {}", s.unit);
    if let Some(c) = &r.cgroup {
        println!("  cgroup:    {c}");
    }
    if let Some(u) = s.uptime_sec {
        println!("  uptime:    {}", crate::cli::output::human_duration(u));
    }
    if let Some(f) = &s.failure {
        println!("  last run:  {f}");
    }
    let delay = r
        .restart_sec
        .map(|d| format!(", after {d}s"))
        .unwrap_or_default();
    println!(
        "  restart:   {}{delay} ({} restarts)",
        r.restart_policy, s.restarts
    );
    println!("  autostart: {}", if r.autostart { "yes" } else { "no" });
    for c in s.companion_lines() {
        println!("  helper:    {c}");
    }
    if s.runner_pid.is_some() {
        let (fields, note) = usage_fields(s);
        for (k, v) in fields {
            println!("  {:<11}{v}", format!("{k}:"));
        }
        if let Some(n) = note {
            println!("  {n}");
        }
    }
    let limits: Vec<String> = [
        "MemoryMax",
        "CPUQuotaPerSecUSec",
        "CPUWeight",
        "IOWeight",
        "TasksMax",
    ]
    .iter()
    .filter_map(|k| {
        let v = r.properties.get(*k)?;
        (!v.is_null()).then(|| format!("{k}={v}"))
    })
    .collect();
    if !limits.is_empty() {
        println!("  limits:    {}", limits.join(" "));
    }
    if !r.processes.is_empty() {
        println!("  processes:");
        for p in &r.processes {
            println!("    {:>7}  {}", p.pid, p.command);
        }
    }
    for sock in &r.sockets {
        let f = &sock.file;
        println!(
            "  socket:    {} ({}) {}{}",
            sock.unit,
            sock.active_state.as_deref().unwrap_or("not loaded"),
            f.path,
            match (&f.mode, f.is_socket) {
                (Some(m), true) => format!(" mode {m}"),
                (Some(m), false) => format!(" mode {m}, not a socket"),
                (None, _) => " (no file)".to_string(),
            }
        );
    }
    if let Some(q) = &r.status.qmp_socket {
        println!("  qmp:       {q} (standard QMP clients, e.g. qmp-shell)");
    }
    if !r.disks.is_empty() {
        println!("  disks:");
        for d in &r.disks {
            let size = d
                .size_bytes
                .map(|b| format!(", {}", human_bytes(b)))
                .unwrap_or_default();
            println!(
                "    {} ({}{}) {}{}{}",
                d.name,
                d.kind,
                d.interface
                    .as_deref()
                    .map(|i| format!(", {i}"))
                    .unwrap_or_default(),
                d.path,
                if d.exists {
                    ""
                } else {
                    " (missing: created at start)"
                },
                size
            );
        }
    }
    if let Some(e) = &r.config_error {
        println!("  config:    no longer validates: {e}");
    }
}
