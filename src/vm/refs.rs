//! Which files VMs use: the rendered QEMU command line of every VM defined
//! in this data directory (relative paths as QEMU will resolve them, against
//! its working directory, the data directory), the real command line of
//! every QEMU running in the user's maqet units (whatever their data
//! directory), every file any process of the user has open (hot-plugged
//! disks, a QEMU started by hand), and the backing chains of all those
//! images. Nothing is deleted that this finds in use (docs/storage.md).

use std::path::{Path, PathBuf};

use maqet_base::vmname::VmName;
use maqet_config::{RenderContext, VmConfig};
use maqet_host::state::Store;
use maqet_host::storage::{QemuImg, References};

use super::owner::data_dir_of_description;
use super::{stored_config, Runners, UnitManager, VmError, Vms};
use maqet_base::units::{service_vm_name, QMP_FD, SERVICE_PATTERN};

/// One process of a running maqet unit.
#[derive(Debug, Clone)]
pub struct RunningProcess {
    pub pid: u32,
    pub argv: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// The VM name of its unit, and the data directory its description names.
    pub vm: String,
    pub data_dir: String,
    /// `running VM 'x' (data directory D, pid N) uses it`.
    pub user: String,
}

/// The processes of every live `maqet-vm@*.service` of this user. Any
/// failure is an error, since a deletion must not go ahead without knowing.
pub async fn running_processes(units: &impl UnitManager) -> Result<Vec<RunningProcess>, VmError> {
    let mut out = Vec::new();
    for unit in units
        .list_units(&[SERVICE_PATTERN])
        .await
        .map_err(VmError::UsageUnknown)?
    {
        let (name, description) = (&unit.0, &unit.1);
        let vm = service_vm_name(name).unwrap_or(name);
        let dir = data_dir_of_description(description).unwrap_or("unknown");
        // Asked twice when the first fails: a VM restarted meanwhile is gone
        // at the first question and live again at the status check.
        let procs = match units.unit_processes(name).await {
            Ok(p) => Ok(p),
            Err(_) => units.unit_processes(name).await,
        };
        let procs = match procs {
            Ok(p) => p,
            // Gone between the listing and now: it uses nothing any more.
            Err(_)
                if !units
                    .unit_status(name)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.vm_state().is_live()) =>
            {
                continue
            }
            Err(e) => return Err(VmError::UsageUnknown(e)),
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
                pid,
                argv,
                cwd: std::fs::read_link(format!("/proc/{pid}/cwd")).ok(),
                vm: vm.to_string(),
                data_dir: dir.to_string(),
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

/// Adds a defined VM's rendered command line (relative paths against
/// `cwd`, QEMU's working directory) and its configs' backing files.
pub fn add_config(
    refs: &mut References,
    vm: &VmName,
    cfg: &VmConfig,
    disk_dir: PathBuf,
    cwd: &Path,
) {
    let user = format!("VM '{vm}' uses it");
    let argv = cfg.render_argv(&RenderContext {
        vm_name: vm.to_string(),
        qmp_fd: QMP_FD,
        console_fd: None,
        disk_dir: disk_dir.clone(),
        runtime_dir: maqet_base::paths::vm_runtime_dir_or_default(vm.as_str()),
    });
    refs.add_argv(&argv, Some(cwd), &user);
    for e in cfg.storage() {
        if let Some(b) = e.backing_path(&disk_dir) {
            refs.add_base(
                &b,
                &format!("VM '{vm}' uses it as the base of its disk '{}'", e.name),
            );
        }
    }
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// The processes of every live VM unit of this user.
    pub async fn running_processes(&self) -> Result<Vec<RunningProcess>, VmError> {
        running_processes(&self.units).await
    }

    /// Everything in use, except by the VM `except` of this data directory
    /// (the one whose files are being deleted).
    ///
    /// The definitions are read from `store` before the future is returned,
    /// so the future does not hold the store (which is not `Sync`) and is
    /// `Send` wherever the unit manager's futures are.
    pub fn references<'a>(
        &'a self,
        store: &Store,
        except: Option<&VmName>,
    ) -> impl std::future::Future<Output = Result<References, VmError>> + 'a {
        let mut refs = References::default();
        let defined = self.add_defined(&mut refs, store, except);
        async move {
            let binary = defined?;
            let running = running_processes(&self.units).await?;
            for p in &running {
                refs.add_argv(&p.argv, p.cwd.as_deref(), &p.user);
            }
            refs.add_open_files(
                &|pid| {
                    running
                        .iter()
                        .find(|p| p.pid == pid)
                        .map(|p| p.user.clone())
                },
                &[],
            );
            if let Ok(img) = QemuImg::find(binary.as_deref()) {
                refs.add_backing_chains(&img);
            }
            Ok(refs)
        }
    }

    /// Adds what the definitions of this data directory name, except
    /// `except`'s: each rendered command line and `base:` file (backing
    /// chains are the caller's, once every file is in). Returns a QEMU
    /// binary of theirs, to find `qemu-img` beside.
    pub fn add_defined(
        &self,
        refs: &mut References,
        store: &Store,
        except: Option<&VmName>,
    ) -> Result<Option<PathBuf>, VmError> {
        let mut binary = None;
        for rec in store.list_vms()? {
            if except.is_some_and(|e| e.as_str() == rec.name) {
                continue;
            }
            let Ok(vm) = VmName::new(&rec.name) else {
                continue;
            };
            match stored_config(&rec) {
                Ok(cfg) => {
                    let cwd = self.data_dir.qemu_cwd();
                    add_config(refs, &vm, &cfg, self.disk_dir(&vm), cwd);
                    binary.get_or_insert(cfg.binary);
                }
                // Cannot be rendered: every path-like string in it still counts.
                Err(_) => {
                    let mut strings = vec![String::new()];
                    collect_strings(&rec.config, &mut strings);
                    let user = format!("VM '{}' uses it", rec.name);
                    refs.add_argv(&strings, Some(self.data_dir.qemu_cwd()), &user);
                }
            }
        }
        Ok(binary)
    }
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(m) => m.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}
