//! Disks and snapshots: qemu-img (create, info, offline snapshots), disk
//! provisioning with created-file records, and live snapshots through QMP
//! jobs (`snapshot-save`/`-load`/`-delete`).

pub mod base;
pub mod disks;
mod error;
pub mod hotplug;
pub mod identity;
pub mod inventory;
pub mod live;
pub mod locks;
pub mod nvram;
pub mod qemu_img;
pub mod refs;
pub mod remove;
pub mod saved;
pub mod snapshot;
pub mod through_runner;
pub mod tmp;
pub mod verify;

pub use disks::{delete_created, provision, Created, Provisioned, Undone};
pub use error::StorageError;
pub use qemu_img::{ImageInfo, QemuImg, SnapshotInfo, SnapshotOp};
pub use refs::References;
pub use remove::Removal;
