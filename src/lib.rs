//! maqet: QEMU VMs as transient systemd user units.
pub mod cli;
pub mod cloudinit;
pub mod config;
pub mod doctor;
pub mod guest_agent;
pub mod ipc;
pub mod logging;
pub mod paths;
pub mod ports;
pub mod provision;
pub mod qmp;
pub mod runner;
pub mod ssh;
pub mod state;
pub mod storage;
pub mod systemd;
pub mod vmname;
