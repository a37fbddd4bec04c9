//! What every command needs: the data directory, the DB, systemd.

use crate::paths::DataDir;
use crate::state::{Store, VmLock, VmRecord};
use crate::systemd::Systemd;
use crate::vmname::VmName;

use super::exit::{code, CliError};

pub struct Ctx {
    pub data_dir: DataDir,
    pub verbosity: u8,
}

impl Ctx {
    /// Opens (creating if needed) the DB: for commands that write.
    pub fn store(&self) -> Result<Store, CliError> {
        Ok(Store::open(&self.data_dir.db_path())?)
    }

    /// The DB for read-only commands, which must not create state; `None`
    /// when nothing was ever defined here.
    pub fn store_if_exists(&self) -> Result<Option<Store>, CliError> {
        Ok(Store::open_read_only(&self.data_dir.db_path())?)
    }

    /// Takes VM `name`'s start/rm lock (state/vmlock.rs), waiting up to
    /// `wait` for another maqet process starting or removing it.
    pub fn lock_vm(&self, name: &str, wait: std::time::Duration) -> Result<VmLock, CliError> {
        let vm = VmName::new(name)?;
        // Only writers lock: an unwritable data directory gets the store's
        // own message ("cannot be written"), not a bare EACCES on the lock file.
        drop(self.store()?);
        Ok(VmLock::acquire(&self.data_dir, &vm, wait)?)
    }

    /// The stored VM `name`, or exit code 3 with a hint.
    pub fn vm(&self, name: &str) -> Result<(VmName, VmRecord), CliError> {
        let vm = VmName::new(name)?;
        let not_found = || {
            CliError::new(
                code::NO_SUCH_VM,
                format!(
                    "no VM named '{name}' in {} (see `maqet ls`, or define it with `maqet add`)",
                    self.data_dir.path().display()
                ),
            )
        };
        let store = self.store_if_exists()?.ok_or_else(not_found)?;
        match store.get_vm(vm.as_str()) {
            Ok(r) => Ok((vm, r)),
            Err(crate::state::StateError::NotFound(_)) => Err(not_found()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn systemd(&self) -> Result<Systemd, CliError> {
        Ok(Systemd::connect_user().await?)
    }
}
