//! maqet's units and socket files: installed unit files, failed and
//! leftover `maqet-vm@` units, stale sockets.

use std::collections::HashSet;
use std::path::Path;

use super::store::DefinedVm;
use super::{Finding, Severity};
use crate::paths::{self, DataDir};
use crate::systemd::{Systemd, VmState};
use crate::vm::{owned_by, Owner};
use crate::vmname::VmName;

pub const SLICE_UNIT: &str = "maqet.slice";
use crate::units;
pub use crate::units::AUTOSTART_UNIT;

/// Installed unit files: the forbidden `maqet-vm@.service`, the slice, the
/// autostart service.
pub async fn unit_files(sd: &Systemd, vms: &[DefinedVm], f: &mut Vec<Finding>) {
    // Transient units have files too (in the runtime transient directory);
    // only a file installed by someone blocks their creation.
    match sd.unit_files(&[crate::units::UNIT_PATTERN]).await {
        Ok(files) => {
            for (path, state) in files.iter().filter(|(_, s)| s != "transient") {
                f.push(
                    Finding::new(
                        "units",
                        Severity::Error,
                        format!("a unit file {path} ({state}) is installed: maqet creates maqet-vm@NAME units itself and cannot while a unit file of that name exists"),
                    )
                    .hint(format!("remove it and reload: rm {path} && systemctl --user daemon-reload")),
                );
            }
        }
        Err(e) => f.push(Finding::new("units", Severity::Warning, e.to_string())),
    }
    match sd.unit_file_state(SLICE_UNIT).await {
        Ok(Some(state)) => f.push(Finding::ok("units", format!("{SLICE_UNIT} is installed ({state})"))),
        Ok(None) => f.push(
            Finding::new(
                "units",
                Severity::Info,
                format!("{SLICE_UNIT} is not installed: VMs share a slice with systemd's defaults (no accounting or limits for all VMs together)"),
            )
            .hint(format!("copy units/{SLICE_UNIT} to ~/.config/systemd/user/ and run `systemctl --user daemon-reload`")),
        ),
        Err(e) => f.push(Finding::new("units", Severity::Warning, e.to_string())),
    }
    let marked: Vec<&str> = vms
        .iter()
        .filter(|v| v.autostart)
        .map(|v| v.name.as_str())
        .collect();
    match sd.unit_file_state(AUTOSTART_UNIT).await {
        Ok(Some(s)) if s == "enabled" => f.push(Finding::ok(
            "units",
            format!("{AUTOSTART_UNIT} is enabled ({} VMs marked for autostart)", marked.len()),
        )),
        Ok(state) if !marked.is_empty() => f.push(
            Finding::new(
                "units",
                Severity::Warning,
                format!(
                    "VMs are marked for autostart ({}) but {AUTOSTART_UNIT} is {}: nothing starts them at login",
                    marked.join(", "),
                    state.map_or("not installed".to_string(), |s| format!("not enabled ({s})"))
                ),
            )
            .hint(format!("install units/{AUTOSTART_UNIT} into ~/.config/systemd/user/, then `systemctl --user enable {AUTOSTART_UNIT}`")),
        ),
        Ok(_) => {}
        Err(e) => f.push(Finding::new("units", Severity::Warning, e.to_string())),
    }
}

/// Whose VM a unit runs, judged from its description's data directory.
#[derive(Debug, PartialEq, Eq)]
enum Whose {
    /// This data directory, and the VM is defined in it.
    Defined,
    /// Another data directory that still has a database: not ours to judge.
    Elsewhere,
    /// Nobody's: not defined here, or its data directory is gone.
    Leftover(String),
}

fn owner(desc: &str, vm: &str, data_dir: &DataDir, defined: &HashSet<&str>) -> Whose {
    match owned_by(desc, data_dir.path()) {
        Owner::Other(d) => {
            if Path::new(&d).join("maqet.db").exists() {
                Whose::Elsewhere
            } else {
                Whose::Leftover(format!("its data directory {d} has no maqet.db any more"))
            }
        }
        Owner::Unmarked => {
            Whose::Leftover(format!("its description '{desc}' names no data directory"))
        }
        Owner::Ours if defined.contains(vm) => Whose::Defined,
        Owner::Ours => Whose::Leftover(format!(
            "VM '{vm}' is not defined in {}",
            data_dir.path().display()
        )),
    }
}

/// A running VM of this data directory whose socket file is gone: maqet
/// cannot reach its runner (`qmp`, `console`, … fail) until it restarts.
fn missing_socket(vm: &str, unit: &str) -> Option<Finding> {
    let socket = paths::VmRuntime::locate(&VmName::new(vm).ok()?)
        .ok()?
        .control();
    if socket.exists() {
        return None;
    }
    Some(
        Finding::new(
            "sockets",
            Severity::Warning,
            format!(
                "VM '{vm}' is running ({unit}) but its control socket {} is missing: `qmp`, `console`, `events` and live snapshots cannot reach it",
                socket.display()
            ),
        )
        .hint(format!(
            "`maqet restart {vm}` brings the socket back (`maqet stop {vm}` works without it, through systemd); was the file removed by hand or by a tmpfiles cleanup of $XDG_RUNTIME_DIR?"
        )),
    )
}

/// Failed units of defined VMs and leftover units; returns the VM names
/// whose socket unit is live (their socket files are not stale).
pub async fn vm_units(
    sd: &Systemd,
    data_dir: &DataDir,
    vms: &[DefinedVm],
    fix: bool,
    f: &mut Vec<Finding>,
) -> HashSet<String> {
    let mut live_sockets = HashSet::new();
    let units = match sd
        .list_units(&[crate::units::SERVICE_PATTERN, crate::units::SOCKET_PATTERN])
        .await
    {
        Ok(u) => u,
        Err(e) => {
            f.push(Finding::new("units", Severity::Warning, e.to_string()));
            return live_sockets;
        }
    };
    let defined: HashSet<&str> = vms.iter().map(|v| v.name.as_str()).collect();
    let before = f.len();
    let mut running = 0;
    for u in &units {
        let (name, desc, active) = (&u.0, &u.1, u.3.as_str());
        if let Some(vm) = units::socket_vm_name(name).map(str::to_string) {
            if matches!(
                active,
                "active" | "activating" | "deactivating" | "reloading"
            ) {
                live_sockets.insert(vm);
            }
            continue;
        }
        let Some(vm) = units::service_vm_name(name).map(str::to_string) else {
            continue;
        };
        let socket_unit = units::vm_socket(&vm);
        let live = !matches!(active, "inactive" | "failed");
        let who = owner(desc, &vm, data_dir, &defined);
        match (&who, active) {
            (Whose::Elsewhere, _) => continue,
            (Whose::Defined, "failed") => {
                let reason = match sd.unit_status(name).await {
                    Ok(Some(st)) => {
                        let last = crate::vmname::VmName::new(&vm).ok().and_then(|v| {
                            crate::systemd::journal::last_error_of_runner(&v, st.exec_main_pid)
                        });
                        match last {
                            Some(e) => format!("{}; QEMU said: {e}", st.failure_reason()),
                            None => st.failure_reason(),
                        }
                    }
                    _ => "failed".to_string(),
                };
                let mut finding = Finding::new(
                    "units",
                    Severity::Warning,
                    format!("VM '{vm}' failed: {reason} ({name} stays loaded until reset)"),
                )
                .hint(format!(
                    "read why: maqet logs {vm}; then `maqet start {vm}`, or `maqet doctor --fix` to reset the unit"
                ))
                .fixable();
                if fix {
                    finding.fixed = reset(sd, name, &socket_unit).await;
                }
                f.push(finding);
            }
            (Whose::Defined, "active") => {
                running += 1;
                f.extend(missing_socket(&vm, name));
            }
            (Whose::Defined, _) => running += usize::from(live),
            (Whose::Leftover(why), _) if live => f.push(
                Finding::new(
                    "units",
                    Severity::Warning,
                    format!("{name} is running but {why}: a VM maqet no longer manages"),
                )
                .hint(format!(
                    "stop it if it is not needed: systemctl --user stop {name}"
                )),
            ),
            (Whose::Leftover(why), _) => {
                let mut finding = Finding::new(
                    "units",
                    Severity::Warning,
                    format!("{name} is a leftover {active} unit: {why}"),
                )
                .hint(format!(
                    "systemctl --user reset-failed {name} (or `maqet doctor --fix`)"
                ))
                .fixable();
                if fix {
                    finding.fixed = reset(sd, name, &socket_unit).await;
                }
                f.push(finding);
            }
        }
    }
    if f.len() == before {
        f.push(Finding::ok(
            "units",
            format!("no failed or leftover maqet-vm units ({running} of this data directory's VMs running)"),
        ));
    }
    live_sockets
}

/// Resets a failed pair; describes what happened if it is gone now.
async fn reset(sd: &Systemd, service: &str, socket: &str) -> Option<String> {
    sd.reset_failed(service).await;
    sd.reset_failed(socket).await;
    match sd.unit_status(service).await {
        Ok(Some(st)) if st.vm_state() == VmState::Failed => None,
        Ok(_) => Some(format!("reset {service} (its log stays in the journal)")),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership() {
        let dd = DataDir::resolve(Some(Path::new("/nonexistent/maqet-doctor-a"))).unwrap();
        let defined: HashSet<&str> = ["web"].into_iter().collect();
        let desc = |d: &str| format!("maqet VM web (data {d})");
        assert_eq!(
            owner(&desc("/nonexistent/maqet-doctor-a"), "web", &dd, &defined),
            Whose::Defined
        );
        assert!(matches!(
            owner(&desc("/nonexistent/maqet-doctor-a"), "db", &dd, &defined),
            Whose::Leftover(_)
        ));
        assert!(matches!(
            owner(&desc("/nonexistent/maqet-doctor-b"), "web", &dd, &defined),
            Whose::Leftover(_)
        ));
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("maqet.db"), b"").unwrap();
        assert_eq!(
            owner(&desc(&other.path().to_string_lossy()), "web", &dd, &defined),
            Whose::Elsewhere
        );
        assert_eq!(units::service_vm_name("maqet-vm@a.b.service"), Some("a.b"));
        assert_eq!(units::service_vm_name("other.service"), None);
        assert_eq!(units::socket_vm_name("maqet-vm@a.b.socket"), Some("a.b"));
    }
}
