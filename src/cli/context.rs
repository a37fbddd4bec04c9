//! What every command needs: the data directory, the DB, systemd.

use crate::paths::DataDir;
use crate::state::{Store, VmRecord};
use crate::systemd::Systemd;
use crate::vm::Vms;
use crate::vmname::VmName;

use super::exit::{code, CliError};

pub struct Ctx {
    pub data_dir: DataDir,
    pub verbosity: u8,
}

impl Ctx {
    /// The DB for read-only commands, which must not create state; `None`
    /// when nothing was ever defined here.
    pub fn store_if_exists(&self) -> Result<Option<Store>, CliError> {
        Ok(Store::open_read_only(&self.data_dir.db_path())?)
    }

    /// The stored VM `name`, or exit code 3 with a hint.
    pub fn vm(&self, name: &str) -> Result<(VmName, VmRecord), CliError> {
        let vm = VmName::new(name)?;
        let rec = crate::vm::record(&self.data_dir, &vm)?;
        Ok((vm, rec))
    }

    pub async fn systemd(&self) -> Result<Systemd, CliError> {
        Ok(Systemd::connect_user().await?)
    }

    /// This data directory's VMs over a new connection to the user manager.
    pub async fn vms(&self) -> Result<Vms<Systemd>, CliError> {
        let mut vms = Vms::new(self.data_dir.clone(), self.systemd().await?);
        vms.log_filter = match self.verbosity {
            0 | 1 => None,
            2 => Some("debug".into()),
            _ => Some("trace".into()),
        };
        Ok(vms)
    }

    /// Like [`Ctx::vms`], but without a user session (where no VM can
    /// run) one whose systemd has no units.
    pub async fn vms_if_session(&self) -> Result<Vms<Option<Systemd>>, CliError> {
        let units = match self.systemd().await {
            Ok(sd) => Some(sd),
            Err(e) if e.code == code::NO_SESSION => None,
            Err(e) => return Err(e),
        };
        Ok(Vms::new(self.data_dir.clone(), units))
    }
}
