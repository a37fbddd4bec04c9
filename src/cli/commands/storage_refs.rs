//! Which files VMs use, seen from the CLI: the rendered QEMU command line of
//! every VM defined in this data directory, the real command line of every
//! QEMU running in the user's maqet units (whatever their data directory),
//! and the backing chains of all those images. Nothing is deleted that this
//! finds in use (docs/storage.md).

use std::path::PathBuf;

use crate::cli::context::Ctx;
use crate::cli::exit::{code, CliError};
use crate::config::{RenderContext, VmConfig};
use crate::state::Store;
use crate::storage::{QemuImg, References};
use crate::systemd::Systemd;
use crate::vm::owner::data_dir_of_description;
use crate::vmname::VmName;

/// One process of a running maqet unit.
#[derive(Debug, Clone)]
pub struct RunningProcess {
    pub argv: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// `running VM 'x' (data directory D, pid N) uses it`.
    pub user: String,
}

/// The processes of every live `maqet-vm@*.service` of this user. Without
/// a user session no VM runs; any other failure is an error, since a
/// deletion must not go ahead without knowing.
pub async fn running_processes(ctx: &Ctx) -> Result<Vec<RunningProcess>, CliError> {
    let sd = match ctx.systemd().await {
        Ok(sd) => sd,
        Err(e) if e.code == code::NO_SESSION => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    processes_of_units(&sd).await
}

async fn processes_of_units(sd: &Systemd) -> Result<Vec<RunningProcess>, CliError> {
    let scan_failed = |e: crate::systemd::SystemdError| {
        CliError::failure(format!(
            "cannot tell which files running VMs use ({e}); nothing was deleted"
        ))
    };
    let mut out = Vec::new();
    for unit in sd
        .list_units(&["maqet-vm@*.service"])
        .await
        .map_err(scan_failed)?
    {
        let (name, description) = (&unit.0, &unit.1);
        let vm = name
            .strip_prefix("maqet-vm@")
            .and_then(|n| n.strip_suffix(".service"))
            .unwrap_or(name);
        let dir = data_dir_of_description(description).unwrap_or("unknown");
        let procs = match sd.unit_processes(name).await {
            Ok(p) => p,
            // Gone between the listing and now: it uses nothing any more.
            Err(_)
                if !sd
                    .unit_status(name)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.vm_state().is_live()) =>
            {
                continue
            }
            Err(e) => return Err(scan_failed(e)),
        };
        for (_, pid, cmdline) in procs {
            let argv = proc_argv(pid)
                .unwrap_or_else(|| cmdline.split_whitespace().map(str::to_string).collect());
            // The runner's own arguments name no disk.
            if argv
                .first()
                .and_then(|a| a.rsplit('/').next())
                .is_some_and(|b| b.starts_with("maqet"))
            {
                continue;
            }
            out.push(RunningProcess {
                argv,
                cwd: std::fs::read_link(format!("/proc/{pid}/cwd")).ok(),
                user: format!("running VM '{vm}' (data directory {dir}, pid {pid}) uses it"),
            });
        }
    }
    Ok(out)
}

/// A process's argv from /proc (exact, unlike the space-joined string
/// systemd reports).
fn proc_argv(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!argv.is_empty()).then_some(argv)
}

/// Adds a defined VM's rendered command line and its configs' backing
/// files.
pub fn add_config(refs: &mut References, name: &str, cfg: &VmConfig, disk_dir: PathBuf) {
    let user = format!("VM '{name}' uses it");
    let argv = cfg.render_argv(&RenderContext {
        vm_name: name.to_string(),
        qmp_fd: 3,
        console_fd: None,
        disk_dir: disk_dir.clone(),
        runtime_dir: crate::paths::vm_runtime_dir_or_default(name),
    });
    refs.add_argv(&argv, None, &user);
    for e in cfg.storage() {
        if let Some(b) = e.backing_path(&disk_dir) {
            refs.add_path(&b, &user);
        }
    }
}

/// Everything in use, except by the VM `except` of this data directory
/// (the one whose files are being deleted).
pub async fn references(
    ctx: &Ctx,
    store: &Store,
    except: Option<&VmName>,
) -> Result<References, CliError> {
    let mut refs = References::default();
    let mut binary = None;
    for rec in store.list_vms()? {
        if except.is_some_and(|e| e.as_str() == rec.name) {
            continue;
        }
        let Ok(vm) = VmName::new(&rec.name) else {
            continue;
        };
        match super::storage::stored_config(&rec) {
            Ok(cfg) => {
                add_config(&mut refs, &rec.name, &cfg, ctx.data_dir.disk_dir(&vm));
                binary.get_or_insert(cfg.binary);
            }
            // Cannot be rendered: every path-like string in it still counts.
            Err(_) => {
                let mut strings = vec![String::new()];
                collect_strings(&rec.config, &mut strings);
                refs.add_argv(&strings, None, &format!("VM '{}' uses it", rec.name));
            }
        }
    }
    for p in running_processes(ctx).await? {
        refs.add_argv(&p.argv, p.cwd.as_deref(), &p.user);
    }
    if let Ok(img) = QemuImg::find(binary.as_deref()) {
        refs.add_backing_chains(&img);
    }
    Ok(refs)
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(m) => m.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}
