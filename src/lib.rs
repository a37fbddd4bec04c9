//! maqet: QEMU VMs as transient systemd user units.
pub mod cli;
pub mod companion;
pub mod config;
pub mod display;
pub mod doctor;
pub mod firmware;
pub mod ipc;
pub mod logging;
pub mod paths;
pub mod qmp;
pub mod runner;
pub mod state;
pub mod storage;
pub mod systemd;
pub mod vm;
pub mod vmname;
