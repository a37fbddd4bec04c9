//! One module per command group; each returns a `CliError` on failure.

pub mod add;
pub mod console;
pub mod events;
pub mod lifecycle;
pub mod logs;
pub mod power;
pub mod qmp;
pub mod qmp_tools;
pub mod rm;
pub mod show;
