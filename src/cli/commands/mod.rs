//! One module per command group; each returns a `CliError` on failure.

pub mod add;
pub mod autostart;
pub mod doctor;
pub mod inspect;
pub mod lifecycle;
pub mod logs;
pub mod qmp;
pub mod rm;
pub mod show;
