//! maqet: QEMU VMs as transient systemd user units.
pub mod cli;
pub mod config;
pub mod doctor;
pub mod ipc;
pub mod logging;
pub mod paths;
pub mod qmp;
pub mod runner;
pub mod state;
pub mod storage;
pub mod suggest;
pub mod systemd;
pub mod time;
pub mod units;
pub mod vm;
pub mod vmname;
