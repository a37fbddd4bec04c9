//! `maqet autostart`: start every VM flagged for it that is not running,
//! all at once (each start waits on its own VM's readiness). One VM that
//! fails — or does not finish within its deadline — is reported as
//! failed, and the others are started all the same.

use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;

use crate::paths::DataDir;
use crate::state::{Store, VmRecord};
use crate::vmname::VmName;

use super::owner::UnitOwner;
use super::{Notify, Runners, UnitManager, VmError, Vms, Wait};

/// Time a start gets beyond its readiness timeout in `autostart`.
pub const START_MARGIN: Duration = Duration::from_secs(60);

/// What autostart did with one VM (`--json`: stable keys).
#[derive(Debug, Serialize)]
pub struct AutostartResult {
    pub name: String,
    /// `started`, `already_running` or `failed`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The VMs of `data_dir` flagged for autostart (none when nothing was
/// ever defined there).
pub fn flagged(data_dir: &DataDir) -> Result<Vec<VmRecord>, VmError> {
    Ok(match Store::open_read_only(&data_dir.db_path())? {
        Some(s) => s.list_vms()?.into_iter().filter(|r| r.autostart).collect(),
        None => Vec::new(),
    })
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// Starts each of `records` that is not running, concurrently; each
    /// start has `timeout` to become ready, and [`START_MARGIN`] more for
    /// what comes before (its lock, disks, seed).
    pub async fn autostart(
        &self,
        records: &[VmRecord],
        timeout: Duration,
        notify: Notify<'_>,
    ) -> Vec<AutostartResult> {
        let deadline = timeout + START_MARGIN;
        join_all(records.iter().map(|r| async move {
            let one = async {
                let vm = VmName::new(&r.name)?;
                self.autostart_one(&vm, timeout, notify).await
            };
            let started = tokio::time::timeout(deadline, one).await;
            let (result, error) = match started {
                Ok(Ok(true)) => ("started", None),
                Ok(Ok(false)) => ("already_running", None),
                Ok(Err(e)) => ("failed", Some(e.to_string())),
                Err(_) => (
                    "failed",
                    Some(format!(
                        "did not start within {}s; the others were started all the same",
                        deadline.as_secs()
                    )),
                ),
            };
            AutostartResult {
                name: r.name.clone(),
                result,
                error,
            }
        }))
        .await
    }

    /// `Ok(false)`: already running.
    async fn autostart_one(
        &self,
        vm: &VmName,
        timeout: Duration,
        notify: Notify<'_>,
    ) -> Result<bool, VmError> {
        // (A live unit of another data directory makes the start fail with
        // a message that says so.)
        if let UnitOwner::Ours(st) = UnitOwner::of(&self.units, vm, self.data_dir.path()).await? {
            if st.vm_state().is_live() {
                return Ok(false);
            }
        }
        // Under the VM's lock, with the definition as it is now (an `rm`
        // may have come since the listing).
        let _lock = self.lock(vm, timeout)?;
        let rec = self.record(vm)?;
        self.start_record(vm, &rec, timeout, Wait::Ready, notify)
            .await?;
        Ok(true)
    }
}
