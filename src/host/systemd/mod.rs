//! systemd over D-Bus: creating a VM's transient unit pair, waiting on it,
//! reading its state. Runtime state is systemd's; maqet only asks.

mod client;
pub mod journal;
pub mod json;
pub mod properties;
pub mod proxies;
mod query;
mod signals;
pub mod unit_state;
pub mod usage;

pub use client::{ListedAsk, StartProgress, Systemd, SystemdError};
pub use properties::{ResourceLimits, RestartPolicy, VmUnitSpec};
pub use query::{SERVICE_IFACE, SOCKET_IFACE, UNIT_IFACE};
pub use unit_state::{UnitStatus, VmState};
pub use usage::{Group, Usage, UsageSource};

pub use maqet_base::units::SERVICE_PATTERN;
