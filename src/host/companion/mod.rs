//! Companion units: helper processes a VM needs (swtpm for `tpm: true`,
//! one virtiofsd per `shares:` item, passt for `network: passt`; the
//! switch of a VM-to-VM network, shared by the VMs on it: see [`switch`]),
//! each its own transient unit in `maqet.slice`, created in the same
//! transaction as the VM's unit pair. A VM's own helper is tied to it:
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

pub mod passt;
pub mod switch;
pub mod tpm;
pub mod virtiofs;

use zbus::zvariant::Value;

use crate::systemd::properties::Props;
pub use crate::systemd::properties::{CompanionUnit, Companions};
use maqet_base::vmname::VmName;

/// The companions `cfg` asks for that need nothing decided at start: the
/// TPM and one virtiofsd per share. passt's unit carries the port plan, so
/// the start adds it once the plan is made ([`passt::units`]).
pub fn for_vm(
    vm: &VmName,
    cfg: &maqet_config::VmConfig,
    runner: &std::path::Path,
    vm_dir: &std::path::Path,
    runtime_dir: &std::path::Path,
    data_dir: &std::path::Path,
) -> Companions {
    let mut out = Companions::default();
    if let Some(t) = &cfg.desktop.tpm {
        out.extend(tpm::units(
            vm,
            &t.swtpm,
            runner,
            vm_dir,
            runtime_dir,
            data_dir,
        ));
    }
    if let Some(virtiofsd) = &cfg.shares.virtiofsd {
        let sandbox = virtiofs::Sandbox::for_this_host();
        for (i, share) in cfg.shares.list.iter().enumerate() {
            out.extend(virtiofs::units(
                vm,
                &virtiofs::Serve {
                    virtiofsd,
                    share,
                    index: i,
                    sandbox,
                },
                runner,
                runtime_dir,
                data_dir,
            ));
        }
    }
    out
}

/// How a helper runs under the runner's relay, which logs its lines with
/// the VM's journal fields (runner/relay.rs): `maqet-runner --relay VM
/// [relay options] -- PROGRAM ARGS…`.
pub(crate) fn relayed(
    runner: &std::path::Path,
    vm: &VmName,
    relay_opts: &[String],
    program: &std::path::Path,
    args: Vec<String>,
) -> Value<'static> {
    let mut argv = vec![
        "maqet-runner".to_string(),
        "--relay".into(),
        vm.as_str().to_string(),
    ];
    argv.extend(relay_opts.iter().cloned());
    argv.push("--".into());
    argv.push(program.to_string_lossy().into_owned());
    argv.extend(args);
    Value::from(vec![(runner.to_string_lossy().into_owned(), argv, false)])
}

/// A helper service's properties beyond [`common_service_props`]: it logs
/// under `ident` through the relay, tagged with the data directory, and
/// when it fails its `ExecStopPost=` tells the VM's runner, which fails the
/// VM naming it (runner/companion.rs).
pub(crate) fn helper_props(
    vm: &VmName,
    unit: &str,
    ident: &str,
    runner: &std::path::Path,
    data_dir: &std::path::Path,
) -> Props {
    vec![
        ("SyslogIdentifier", Value::from(ident.to_string())),
        (
            "Environment",
            Value::from(vec![format!("MAQET_DATA_DIR={}", data_dir.display())]),
        ),
        (
            "ExecStopPost",
            Value::from(vec![(
                runner.to_string_lossy().into_owned(),
                vec![
                    "maqet-runner".to_string(),
                    "--companion-stopped".into(),
                    vm.as_str().to_string(),
                    unit.to_string(),
                ],
                false,
            )]),
        ),
    ]
}

/// A socket unit systemd binds for a helper before either side runs (0600
/// in the VM's 0700 runtime directory), gone with the helper.
pub(crate) fn socket_props(description: String, path: &std::path::Path, service: &str) -> Props {
    let listen = vec![("Stream".to_string(), path.to_string_lossy().into_owned())];
    vec![
        ("Description", Value::from(description)),
        ("Listen", Value::from(listen)),
        ("SocketMode", Value::from(0o600u32)),
        ("DirectoryMode", Value::from(0o700u32)),
        ("RemoveOnStop", Value::from(true)),
        // Gone with the helper: a later connection must not start a fresh
        // helper behind the VM's back.
        ("BindsTo", Value::from(vec![service.to_string()])),
        (
            "Slice",
            Value::from(crate::systemd::properties::SLICE.to_string()),
        ),
        ("CollectMode", Value::from("inactive-or-failed".to_string())),
    ]
}

/// Unit-name patterns of every companion of `vm` (for status listings).
pub fn patterns(vm: &VmName) -> Vec<String> {
    maqet_base::units::companion_patterns(vm.as_str())
}

/// A loaded companion unit as systemd reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompanionState {
    pub unit: String,
    pub active_state: String,
    pub sub_state: String,
}

/// The companion units a listing by [`patterns`] found, by name.
/// VM `vm`'s only (a pattern of VM `a` matches VM `a-b`'s units too).
pub fn states(
    vm: &VmName,
    listed: Vec<crate::systemd::proxies::UnitListEntry>,
) -> Vec<CompanionState> {
    let mut out: Vec<CompanionState> = listed
        .into_iter()
        .filter(|u| maqet_base::units::is_companion_of(&u.0, vm.as_str()))
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
