//! maqet: QEMU VMs as transient systemd user units.
//!
//! Layers, each importing only those above it in this list (see
//! docs/architecture.md, "Layers and what each module may import"):
//!
//! - leaf helpers: [`units`] (names, fds and exit statuses runner and CLI
//!   share), [`vmname`], [`paths`], [`time`], [`access`], [`account`]
//!   (a user's name and home through NSS), [`suggest`],
//!   [`files`] (regular files opened without blocking on FIFOs or devices),
//!   [`host_exec`] (what makes QEMU run host programs: the QMP policy's
//!   and the config checks' one reading of QEMU's options);
//! - [`config`] (YAML → validated config → QEMU argv), [`qmp`], [`ipc`];
//! - [`state`] (definitions database), [`systemd`] (the user manager over
//!   D-Bus, the journal), [`storage`] (disks and snapshots), [`image`]
//!   (the image catalog, verified downloads and their cache);
//! - [`vm`]: the VM API every front end uses ([`vm::Vms`]);
//! - front ends: [`runner`] (the `maqet-runner` binary's supervisor) and
//!   [`cli`] (the `maqet` binary), plus [`doctor`] and [`logging`].

// Leaf helpers.
pub mod access;
pub mod account;
pub mod files;
pub mod host_exec;
pub mod netname;
pub mod paths;
pub mod suggest;
pub mod time;
pub mod units;
pub mod vmname;

// Definitions, wire formats, host services.
pub mod config;
pub mod ipc;
pub mod qmp;

// Guest provisioning and desktop helpers (used by the vm layer and the CLI).
pub mod cloudinit;
pub mod companion;
pub mod display;
pub mod firmware;
pub mod guest_agent;
pub mod image;
pub mod ports;
pub mod provision;
pub mod ssh;
pub mod state;
pub mod storage;
pub mod systemd;

// The VM API.
pub mod vm;

// Front ends and their helpers.
pub mod cli;
pub mod doctor;
pub mod logging;
pub mod runner;

pub use vm::{UnitManager, VmError, Vms};
