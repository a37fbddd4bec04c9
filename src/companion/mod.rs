//! Companion units: helper processes a VM needs (swtpm for `tpm: true`),
//! each its own transient unit in `maqet.slice`, created in the same
//! transaction as the VM's unit pair and tied to it:
//!
//! - the helper `BindsTo=` the VM's service and is ordered `Before=` it, so
//!   it is up before QEMU starts and stops whenever the VM stops (however
//!   it stops: `maqet stop`, guest power-off, crash);
//! - the VM's service `Wants=` the helper (and its socket) and is ordered
//!   `After=` them, so every start and every automatic restart of the VM
//!   brings them up first. Not `BindsTo=`: the helper stopping with a
//!   dying VM came back to the VM as a stop job and cancelled its restart;
//! - a helper that fails tells the VM's runner from its `ExecStopPost=`,
//!   which stops the VM as failed, naming the cause (runner/companion.rs;
//!   docs/systemd.md: what happens when swtpm dies).
//!
//! `maqet logs` shows their output by unit. They also set
//! `LogExtraFields=MAQET_VM=NAME`, which journald (252) applies to system
//! units only; it costs nothing and works where journald honours it.

pub mod tpm;

use zbus::zvariant::Value;

use crate::systemd::properties::Props;
use crate::vmname::VmName;

/// One transient unit to create next to the VM's pair.
#[derive(Debug, Clone)]
pub struct CompanionUnit {
    pub name: String,
    pub props: Props,
}

/// The companions of one VM start: the units to create, and those the
/// VM's service pulls in and is ordered after.
#[derive(Debug, Clone, Default)]
pub struct Companions {
    pub units: Vec<CompanionUnit>,
    /// Units the VM's service pulls in and waits for (`Wants=` + `After=`):
    /// the helpers and their sockets.
    pub want: Vec<String>,
}

impl Companions {
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.units.iter().map(|u| u.name.clone()).collect()
    }
}

/// The companions `cfg` asks for.
pub fn for_vm(
    vm: &VmName,
    cfg: &crate::config::VmConfig,
    runner: &std::path::Path,
    vm_dir: &std::path::Path,
    runtime_dir: &std::path::Path,
    data_dir: &std::path::Path,
) -> Companions {
    match &cfg.desktop.tpm {
        Some(t) => tpm::units(vm, &t.swtpm, runner, vm_dir, runtime_dir, data_dir),
        None => Companions::default(),
    }
}

/// Creates the per-VM files the desktop keys need before a start: the
/// UEFI variable store (a copy of the firmware's template) and the TPM
/// state directory, each recorded as created by maqet; existing ones are
/// never touched.
pub fn provision_state(
    vm: &str,
    cfg: &crate::config::VmConfig,
    vm_dir: &std::path::Path,
    store: &crate::state::Store,
    done: &mut crate::storage::Provisioned,
) -> Result<(), crate::storage::StorageError> {
    let needs_dir = cfg.desktop.firmware.is_some() || cfg.desktop.tpm.is_some();
    if needs_dir {
        crate::storage::disks::ensure_private_dir(vm, vm_dir, vm_dir, store, done)?;
    }
    if let Some(fw) = &cfg.desktop.firmware {
        let qemu_img = crate::storage::QemuImg::find(Some(&cfg.binary))?;
        crate::firmware::nvram::provision(vm, fw, vm_dir, &qemu_img, store, done)?;
    }
    if cfg.desktop.tpm.is_some() {
        tpm::provision_state(vm, vm_dir, store, done)?;
    }
    Ok(())
}

/// Unit-name patterns of every companion of `vm` (for status listings).
pub fn patterns(vm: &VmName) -> Vec<String> {
    crate::units::companion_patterns(vm.as_str())
}

/// A loaded companion unit as systemd reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CompanionState {
    pub unit: String,
    pub active_state: String,
    pub sub_state: String,
}

/// The companion units a listing by [`patterns`] found, by name.
pub fn states(listed: Vec<crate::systemd::proxies::UnitListEntry>) -> Vec<CompanionState> {
    let mut out: Vec<CompanionState> = listed
        .into_iter()
        .map(|u| CompanionState {
            unit: u.0,
            active_state: u.3,
            sub_state: u.4,
        })
        .collect();
    out.sort_by(|a, b| a.unit.cmp(&b.unit));
    out
}

/// Properties every companion service shares.
pub(crate) fn common_service_props(vm: &VmName, description: String) -> Props {
    vec![
        ("Description", Value::from(description)),
        (
            "Slice",
            Value::from(crate::systemd::properties::SLICE.to_string()),
        ),
        ("BindsTo", Value::from(vec![vm.service_unit()])),
        ("Before", Value::from(vec![vm.service_unit()])),
        // Signature aay: each field a byte array.
        (
            "LogExtraFields",
            Value::from(vec![format!("MAQET_VM={}", vm.as_str()).into_bytes()]),
        ),
        // A failed helper (e.g. killed) is unloaded once nothing refers to
        // it, so the next start can create it again; the journal keeps why.
        ("CollectMode", Value::from("inactive-or-failed".to_string())),
    ]
}
