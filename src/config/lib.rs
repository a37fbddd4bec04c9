//! VM configs: YAML loading with positions, multi-file merge, path
//! resolution, validation and QEMU argv rendering.
//!
//! The format is the original maqet's (accepted unchanged, same meaning);
//! maqet fixes its defects and adds a few keys. Flow:
//!
//! ```text
//! files ──load (per file: parse, resolve paths)──▶ ConfigDocument ──merge──▶ …
//!       ──validate──▶ VmConfig ──render_argv(ctx)──▶ QEMU argv
//! ConfigDocument::to_json() ⇄ ConfigDocument::from_stored()   (database)
//! ```
//!
//! # Dialect
//! YAML 1.1 like the original (PyYAML): unquoted `on/off/yes/no/true/false`
//! (lower, Title or UPPER case) are booleans, quoted ones strings; `y`/`n`
//! stay strings as they did for the original.
//! Booleans reach QEMU as `on`/`off`. Leading-zero numbers (`0644`) and
//! colon-separated numbers (MAC addresses) stay strings. Mapping keys are
//! always text. Duplicate keys are errors. Files are at most 1 MiB and hold
//! one mapping.
//!
//! # Top-level keys
//! The original's (argv group at the key's position in the merged mapping):
//! - `name` — VM name (never reaches QEMU; removed by `to_json`).
//! - `binary` — QEMU executable; default `/usr/bin/qemu-system-x86_64`; a
//!   bare name is looked up in `PATH`; must exist and be executable.
//! - `memory` — `-m`; QEMU syntax (`512` = MiB, `256M`, `1.5G`).
//! - `cpu` — `-smp N`, N in 1..=255.
//! - `display`, `vga` — `-display`, `-vga` (strings).
//! - `args` — argv elements as written.
//! - `arguments` — structured options (2.3 of the reference).
//! - `storage` — disks and 9p shares (2.4).
//! - `network` — accepted and ignored with a warning, as the original did.
//!
//! maqet's additions:
//! - `enable_kvm: bool` — `-accel kvm` (placed before any `accel` item of
//!   `arguments`, which then remain fallbacks).
//! - `console: bool` (default false) — serial port on maqet's console socket.
//! - `shutdown_timeout: seconds` (positive, default 30) — power-down grace.
//! - `on_reboot: restart|stop` (default restart) — `stop` renders `-no-reboot`.
//! - `on_stop: shutdown|save` (default shutdown) — what a stop by systemd
//!   (logout, shutdown) does: power off, or save the running state.
//! - `restart: no|on-failure|always` (default no) — systemd `Restart=`.
//! - `restart_sec: seconds` — systemd `RestartSec=`.
//! - `autostart: bool` — start at login.
//! - `qmp_allow_host_exec: bool` (default false) — forward QMP commands that
//!   make QEMU run host programs (`migrate` to `exec:`, tap scripts, …).
//! - `resources:` `memory_max` (size, bare number = bytes), `cpu_quota`
//!   (`"150%"`), `cpu_weight`/`io_weight` (1..=10000), `tasks_max`.
//! - `firmware: bios|uefi` (default bios), `secure_boot: bool` (uefi, q35),
//!   `tpm: bool` (swtpm companion unit); `display: vnc|spice` serve the
//!   display on a Unix socket (docs/config.md).
//! - `networks: [NAME, …]` — a NIC on each named VM-to-VM segment (a
//!   `vde_switch` unit per segment, shared by the user's VMs naming it).
//!
//! Any other key is an error with a suggestion. A top-level `memory`/`cpu`/
//! `display`/`vga` and an `arguments` item for the same option yield one
//! option (the `arguments` one) and a warning.
//!
//! # Sizes
//! `memory` and `arguments` `m` use QEMU's `-m` syntax ([`parse_memory`]:
//! bare number = MiB). Disk `size` and `resources.memory_max` use
//! `^\d+[KMGT]?$` ([`parse_size`]: bare number = bytes).

mod argv;
mod desktop;
mod diff;
mod disk_spec;
mod document;
mod emit;
mod error;
mod exec;
mod guest;
pub(crate) mod load;
mod machine;
mod merge;
mod networks;
mod nic;
pub(crate) mod node;
mod paths;
mod schema;
mod shares;
mod size;
mod storage;
mod strings;
pub mod tpm;

mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fuzz;
#[cfg(test)]
mod tests_guest;
#[cfg(test)]
mod tests_input;
#[cfg(test)]
mod tests_quoting;

pub use argv::RenderContext;
pub use desktop::{Desktop, Tpm};
pub use diff::{diff, Change};
pub use disk_spec::{parse_disk_spec, SpecError, SPEC_KEYS};
pub use document::{ConfigDocument, STORED_LABEL};
pub use error::{ConfigError, Location};
pub use guest::{
    check_host_addr, is_public_key, parse_port, parse_port_key, unprivileged_port_start, CloudInit,
    GuestSetup, PortKey, PortSpec, Protocol, AUTO as AUTO_PORTS, DEFAULT_HOST_ADDR,
};
pub use networks::{Network, Networks};
pub use nic::NetworkMode;
pub use paths::{canonical, normalize, system_dir_of};
pub use schema::{
    Argument, ImageFormat, Interface, OnReboot, OnStop, ResourceLimits, Resources, RestartPolicy,
    SecurityModel, StorageEntry, StorageKind, Virtfs, VmConfig, DEFAULT_BINARY, DEFAULT_DISK_SIZE,
    DEFAULT_SHUTDOWN_TIMEOUT,
};
pub use shares::{tag_problem, Share, Shares};
pub use size::{parse_memory, parse_size, SizeError};
/// A disk's `base: image:REF` names an image of the catalog (or a URL)
/// that `add`, `apply` and `launch` resolve to a file in the image cache.
pub const IMAGE_PREFIX: &str = "image:";

// The YAML reader with positions, for the image catalog's files.
pub use load::{load_file as load_yaml_file, parse_str as parse_yaml_str};
pub use node::{Entry, Node, Value};
