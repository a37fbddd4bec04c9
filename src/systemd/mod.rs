//! systemd over D-Bus: creating a VM's transient unit pair, waiting on it,
//! reading its state. Runtime state is systemd's; maqet only asks.

mod client;
pub mod properties;
pub mod proxies;
pub mod unit_state;

pub use client::{StartProgress, Systemd, SystemdError};
pub use properties::{ResourceLimits, RestartPolicy, VmUnitSpec};
pub use unit_state::{UnitStatus, VmState};

/// Pattern of every VM service unit, for `ListUnitsByPatterns`.
pub const SERVICE_PATTERN: &str = "maqet-vm@*.service";
