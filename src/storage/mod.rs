//! Disks and snapshots: qemu-img (create, info, offline snapshots), disk
//! provisioning with created-file records, and live snapshots through QMP
//! jobs (`snapshot-save`/`-load`/`-delete`).

pub mod disks;
mod error;
pub mod inventory;
pub mod live;
pub mod qemu_img;
pub mod snapshot;

pub use disks::{delete_created, provision, Created, Provisioned, Removal};
pub use error::StorageError;
pub use qemu_img::{ImageInfo, QemuImg, SnapshotInfo, SnapshotOp};
