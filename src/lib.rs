//! maqet: QEMU VMs as transient systemd user units.
//!
//! The library is a workspace of crates, one per layer, each depending only
//! on those before it (docs/architecture.md, "Layers"):
//!
//! - `maqet-base`: names, paths, unit names, host programs, QEMU option
//!   strings and the host-command policy, firmware and display facts;
//! - `maqet-config`: YAML → validated config → QEMU argv ([`config`]);
//! - `maqet-host`: the state database, the user manager over D-Bus and the
//!   journal, storage, QMP and the runner protocol, companion units,
//!   guest provisioning pieces, images, logging;
//! - `maqet-vm`: the VM API every front end uses ([`vm::Vms`]);
//! - `maqet-runner`: the `maqet-runner` binary's supervisor ([`runner`]).
//!
//! This package is the `maqet` command line ([`cli`], [`doctor`], and
//! [`remote`]: other machines over ssh), the only
//! one that knows clap. It re-exports the layers' modules under the names
//! they had before the split, for the binaries and the integration tests.

pub use maqet_base::{
    access, account, display, files, firmware, host_exec, netname, paths, programs, qemu_opts,
    suggest, time, units, vmname,
};
pub use maqet_config as config;
pub use maqet_host::{
    cloudinit, companion, guest_agent, image, ipc, logging, ports, qmp, ssh, state, storage,
    systemd,
};
pub use maqet_runner as runner;
pub use maqet_vm as vm;

// Front ends and their helpers.
pub mod cli;
pub mod doctor;
// Other machines over ssh: hosts.yaml, the transport, the protocol.
pub mod remote;

pub use vm::{UnitManager, VmError, Vms};
