//! `maqet autostart`: start every VM flagged for it (or saved by a stop
//! under `on_stop: save`) that is not running,
//! all at once (each start waits on its own VM's readiness). One VM that
//! fails — or does not finish within its deadline — is reported as
//! failed, and the others are started all the same.

use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;

use crate::paths::DataDir;
use crate::state::{SaveReason, Store, VmRecord};
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

/// The VMs of `data_dir` that `maqet autostart` starts: those flagged for
/// autostart, and those whose state was saved when systemd stopped them
/// (`on_stop: save`: logout, shutdown), which come back where they were;
/// a state saved by `maqet suspend` waits for `maqet start`. None when
/// nothing was ever defined there.
pub fn flagged(data_dir: &DataDir) -> Result<Vec<VmRecord>, VmError> {
    let Some(s) = Store::open_read_only(&data_dir.db_path())? else {
        return Ok(Vec::new());
    };
    let saved_on_stop: Vec<String> = s
        .saved_states()?
        .into_iter()
        .filter(|(_, st)| st.reason == SaveReason::Stop)
        .map(|(name, _)| name)
        .collect();
    Ok(s.list_vms()?
        .into_iter()
        .filter(|r| r.autostart || saved_on_stop.contains(&r.name))
        .collect())
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
            let started =
                tokio::time::timeout(deadline, self.autostart_one(&r.name, timeout, notify)).await;
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
        name: &str,
        timeout: Duration,
        notify: Notify<'_>,
    ) -> Result<bool, VmError> {
        let vm = VmName::new(name)?;
        // (A live unit of another data directory makes the start fail with
        // a message that says so.)
        if let UnitOwner::Ours(st) = UnitOwner::of(&self.units, &vm, self.data_dir.path()).await? {
            if st.vm_state().is_live() {
                return Ok(false);
            }
        }
        // Under the VM's lock, with the definition as it is now (an `rm`
        // may have come since the listing).
        let _lock = self.lock(name, timeout)?;
        let (_, rec) = self.record(name)?;
        self.start_record(&vm, &rec, timeout, Wait::Ready, false, notify)
            .await?;
        Ok(true)
    }
}
