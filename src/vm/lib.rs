//! The VM API every front end calls: define, start, stop, restart,
//! remove, clone, storage for a start and its undo, disk and whole-VM
//! snapshots, whose data directory a unit belongs to, autostart, reaching a
//! running VM (its ports, the ssh command line, its guest agent, its QEMU:
//! reboot, keys, screendumps, hot-plug, events, the console) and the
//! views (`status`, `ls`, `inspect`). It sits on config, state, storage, systemd (via
//! [`UnitManager`]) and the runner's IPC, and knows nothing of the command
//! line: results and notices come back as data, errors as [`VmError`].

pub mod access;
pub mod agent;
pub mod attach;
pub mod autostart;
pub mod class;
pub mod clone;
pub mod control;
pub mod define;
pub mod error;
pub mod image_cache;
pub mod images;
pub mod info;
pub mod inspect;
pub mod inventory;
pub mod launch;
pub mod lifecycle;
pub mod logs;
pub mod networks;
pub mod notice;
pub mod nvram;
pub mod owner;
pub mod ports;
pub mod provision;
pub mod refs;
pub mod remove;
pub mod runners;
pub mod saved;
pub mod segments;
pub mod snapshot;
pub mod units;
pub mod verify;
pub mod view;
pub mod wait;

#[cfg(test)]
mod cloud_tests;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod saved_tests;
#[cfg(test)]
mod send_tests;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use maqet_base::paths::DataDir;
use maqet_base::vmname::VmName;
use maqet_config::{ConfigDocument, VmConfig};
use maqet_host::state::{StateError, Store, VmLock, VmRecord};

pub use attach::{AttachError, AttachRequest, AttachSource, Attached};
pub use control::{ControlError, DeviceRequest, EventStream, Rebooted};
pub use error::{RemoveFailure, VmError};
pub use lifecycle::{runner_path, StopOutcome, Wait};
pub use notice::{Notice, Notify};
pub use owner::{owned_by, Owner, OwnerError, UnitOwner};
pub use runners::{IpcRunners, Runners};
pub use saved::{Discarded, SavedError, SavedView, Suspended};
pub use segments::SegmentError;
pub use snapshot::{SnapshotError, SnapshotOp, SnapshotRequest, SnapshotRow, Snapshotted};
pub use units::UnitManager;

/// One data directory's VMs, driven through one systemd connection.
pub struct Vms<U, R = IpcRunners> {
    pub data_dir: DataDir,
    pub units: U,
    pub runners: R,
    /// The runner's log filter (`None`: its default, info).
    pub log_filter: Option<String>,
    /// The runner binary; `None`: found as [`runner_path`] says.
    pub runner: Option<PathBuf>,
    /// The runtime root new units get their files under; `None`:
    /// `$XDG_RUNTIME_DIR/maqet/vm` ([`maqet_base::paths::runtime_root`]).
    pub runtime_root: Option<PathBuf>,
}

impl<U: UnitManager> Vms<U> {
    pub fn new(data_dir: DataDir, units: U) -> Self {
        Vms {
            data_dir,
            units,
            runners: IpcRunners,
            log_filter: None,
            runner: None,
            runtime_root: None,
        }
    }
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// Opens (creating if needed) the definitions database.
    pub fn store(&self) -> Result<Store, VmError> {
        Ok(Store::open(&self.data_dir.db_path())?)
    }

    /// The stored definition of `vm`.
    pub fn record(&self, vm: &VmName) -> Result<VmRecord, VmError> {
        record(&self.data_dir, vm)
    }

    /// Takes `vm`'s start/rm lock, waiting up to `wait`.
    pub fn lock(&self, vm: &VmName, wait: Duration) -> Result<VmLock, VmError> {
        lock(&self.data_dir, vm, wait)
    }

    /// One writable handle on the database for a start of `vm`, which is
    /// checked to be defined ([`store_for`]).
    pub fn store_for(&self, vm: &VmName) -> Result<Store, VmError> {
        store_for(&self.data_dir, vm)
    }

    /// [`Vms::lock`] for a caller holding a writable `store`: opening it
    /// already showed the data directory writable, so no second open.
    pub fn lock_with(&self, store: &Store, vm: &VmName, wait: Duration) -> Result<VmLock, VmError> {
        debug_assert_eq!(store.path(), self.data_dir.db_path());
        Ok(VmLock::acquire(&self.data_dir, vm, wait)?)
    }

    pub fn disk_dir(&self, vm: &VmName) -> PathBuf {
        self.data_dir.disk_dir(vm)
    }

    /// Where a start of `vm` puts its runtime files (the current layout).
    pub fn runtime(&self, vm: &VmName) -> Result<maqet_base::paths::VmRuntime, VmError> {
        Ok(match &self.runtime_root {
            Some(root) => maqet_base::paths::VmRuntime::at(root, vm),
            None => maqet_base::paths::VmRuntime::new(vm)?,
        })
    }
}

/// How long a change to one VM's definition waits for that VM's lock (a
/// start or another change holding it).
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(30);

/// The stored definition of `vm` in `data_dir` (no systemd needed).
pub fn record(data_dir: &DataDir, vm: &VmName) -> Result<VmRecord, VmError> {
    let store =
        Store::open_read_only(&data_dir.db_path())?.ok_or_else(|| no_such_vm(data_dir, vm))?;
    record_in(&store, data_dir, vm)
}

/// The stored definition of `vm`, read through an open `store` of `data_dir`.
pub fn record_in(store: &Store, data_dir: &DataDir, vm: &VmName) -> Result<VmRecord, VmError> {
    match store.get_vm(vm.as_str()) {
        Ok(r) => Ok(r),
        Err(StateError::NotFound(_)) => Err(no_such_vm(data_dir, vm)),
        Err(e) => Err(e.into()),
    }
}

fn no_such_vm(data_dir: &DataDir, vm: &VmName) -> VmError {
    VmError::NoSuchVm {
        name: vm.to_string(),
        data_dir: data_dir.path().to_path_buf(),
    }
}

/// One writable handle on `data_dir`'s database for a start of `vm`, which
/// is checked to be defined: the name check, the writability check of
/// [`lock`] and every read and write of the start go through it (each open
/// of the database cost ≈ 0.5 ms, and a start opened it five times). An
/// unknown VM is "no such VM" and creates nothing (no database, no lock
/// file), also where the data directory cannot be written; a known one
/// there gets the store's own message, as [`lock`] gives it.
pub fn store_for(data_dir: &DataDir, vm: &VmName) -> Result<Store, VmError> {
    let store = match Store::open_existing(&data_dir.db_path()) {
        Ok(Some(store)) => store,
        Ok(None) => return Err(no_such_vm(data_dir, vm)),
        Err(e) => {
            record(data_dir, vm)?;
            return Err(e.into());
        }
    };
    record_in(&store, data_dir, vm)?;
    Ok(store)
}

/// Every VM defined in `data_dir`, by name, oldest first (none when
/// nothing was ever defined: the database is not created for this).
pub fn names(data_dir: &DataDir) -> Result<Vec<VmName>, VmError> {
    let Some(store) = Store::open_read_only(&data_dir.db_path())? else {
        return Ok(Vec::new());
    };
    store
        .list_vms()?
        .iter()
        .map(|r| Ok(VmName::new(&r.name)?))
        .collect()
}

/// Takes `vm`'s start/rm lock (state/vmlock.rs), waiting up to `wait`
/// for another maqet process starting or removing it.
pub fn lock(data_dir: &DataDir, vm: &VmName, wait: Duration) -> Result<VmLock, VmError> {
    // Only writers lock: an unwritable data directory gets the store's
    // own message ("cannot be written"), not a bare EACCES on the lock file.
    drop(Store::open(&data_dir.db_path())?);
    Ok(VmLock::acquire(data_dir, vm, wait)?)
}

/// A stored config, validated (a config that validated at `add` may not
/// any more: a binary or file may have gone).
pub fn stored_config(rec: &VmRecord) -> Result<VmConfig, VmError> {
    ConfigDocument::from_stored(&rec.config)?
        .validate()
        .map_err(|source| VmError::StoredConfig {
            vm: rec.name.clone(),
            source: Box::new(source),
        })
}
