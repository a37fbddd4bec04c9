//! maqet's leaf layer: names, paths and facts about the host that every
//! other layer shares and that need nothing of theirs — VM and network
//! names, the unit names, the data and runtime directories, the host
//! programs maqet runs and how they are found, QEMU's option strings and
//! the reading of them that decides whether QEMU would run host programs,
//! UEFI firmware descriptors and display servers.
//!
//! Layers (docs/architecture.md): `maqet-base` ← `maqet-config` ←
//! `maqet-host` ← `maqet-vm` ← `maqet-runner`, `maqet` (the CLI). Each
//! crate depends only on those to its left, so an upward import does not
//! build.

pub mod access;
pub mod account;
pub mod display;
pub mod files;
pub mod firmware;
pub mod host_exec;
pub mod netname;
pub mod paths;
pub mod programs;
pub mod qemu_opts;
pub mod suggest;
pub mod time;
pub mod units;
pub mod vmname;
