//! maqet on other machines, over the system's ssh, with no daemon: named
//! connections (`hosts.yaml`), `[USER@]HOST[:PORT]` destinations, the ssh
//! transport, and the protocol a local `maqet -H HOST` speaks with the
//! remote `maqet serve --stdio` (docs/remote.md). The server and the
//! command-line side are front ends and live in `cli/`.

pub mod client;
pub mod destination;
pub mod hosts;
pub mod protocol;
pub mod ssh;

pub use client::{Connection, RemoteError};
pub use destination::{Destination, DestinationError};
pub use hosts::{Host, Hosts, HostsError};
pub use ssh::Transport;
