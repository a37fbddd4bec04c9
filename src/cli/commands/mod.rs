//! One module per command group; each returns a `CliError` on failure.

pub mod add;
pub mod apply;
pub mod autostart;
pub mod cloud;
pub mod console;
pub mod display;
pub mod doctor;
pub mod events;
pub mod host;
pub mod image;
pub mod inspect;
pub mod launch;
pub mod lifecycle;
pub mod logs;
pub mod network;
pub mod power;
pub mod qmp;
pub mod rm;
pub mod show;
pub mod snapshot;
pub mod storage;
pub mod suspend;
pub mod vmconfig;
