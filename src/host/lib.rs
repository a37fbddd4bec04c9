//! maqet's host services: what a VM manager does on this host below the
//! VM API — the definitions database ([`state`]), the user manager over
//! D-Bus and the journal ([`systemd`]), disks and snapshots ([`storage`]),
//! QMP ([`qmp`]) and the runner's protocol ([`ipc`]), the helper units
//! beside a VM ([`companion`]), guest provisioning pieces ([`cloudinit`],
//! [`ports`], [`ssh`], [`guest_agent`]), images ([`image`]) and logging.
//!
//! Depends on `maqet-base` and `maqet-config` only.

pub mod cloudinit;
pub mod companion;
pub mod guest_agent;
pub mod image;
pub mod ipc;
pub mod logging;
pub mod ports;
pub mod qmp;
pub mod ssh;
pub mod state;
pub mod storage;
pub mod systemd;
