//! `maqet autostart`: start every VM flagged for it (or saved by a stop
//! under `on_stop: save`) that is not running,
//! all at once (each start waits on its own VM's readiness). One VM that
//! fails — or does not finish within its deadline — is reported as
//! failed, and the others are started all the same.

use std::time::Duration;

use futures_util::future::join_all;

use maqet_base::paths::DataDir;
use maqet_base::vmname::VmName;
use maqet_host::state::{SaveReason, Store, VmRecord};

use super::owner::UnitOwner;
use super::{Notice, Notify, Runners, StopOutcome, UnitManager, VmError, Vms, Wait};
use maqet_base::units::AUTOSTART_UNIT;

/// Time a start gets beyond its readiness timeout in `autostart`.
pub const START_MARGIN: Duration = Duration::from_secs(60);

/// What autostart did with one VM.
#[derive(Debug)]
pub struct AutostartResult {
    pub name: String,
    pub outcome: Result<Autostarted, AutostartFailure>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Autostarted {
    Started,
    AlreadyRunning,
}

/// What `set_autostart` did besides the flag, when asked to act now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutostartNow {
    Started,
    /// Stopped as [`Vms::stop`] says (`None`: it was not running).
    Stopped(Option<StopOutcome>),
}

/// Why one VM did not start; the others are started all the same.
#[derive(Debug, thiserror::Error)]
pub enum AutostartFailure {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("did not start within {}s; the others were started all the same", deadline.as_secs())]
    Deadline { deadline: Duration },
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
            let one = async {
                let vm = VmName::new(&r.name)?;
                self.autostart_one(&vm, timeout, notify).await
            };
            let outcome = match tokio::time::timeout(deadline, one).await {
                Ok(Ok(true)) => Ok(Autostarted::Started),
                Ok(Ok(false)) => Ok(Autostarted::AlreadyRunning),
                Ok(Err(e)) => Err(AutostartFailure::Vm(e)),
                Err(_) => Err(AutostartFailure::Deadline { deadline }),
            };
            AutostartResult {
                name: r.name.clone(),
                outcome,
            }
        }))
        .await
    }

    /// Sets or clears `vm`'s autostart flag, saying so (and whether the
    /// login unit that acts on the flag is enabled); with `now`, also
    /// starts it (within that timeout) or stops it.
    pub async fn set_autostart(
        &self,
        vm: &VmName,
        on: bool,
        now: Option<Duration>,
        notify: Notify<'_>,
    ) -> Result<Option<AutostartNow>, VmError> {
        self.store()?.set_autostart(vm.as_str(), on)?;
        notify(Notice::Autostart { vm: vm.clone(), on });
        // The flag alone starts nothing at login without the unit.
        if on {
            if let Ok(state) = self.units.unit_file_state(AUTOSTART_UNIT).await {
                if state.as_deref() != Some("enabled") {
                    notify(Notice::AutostartUnitDisabled {
                        unit: AUTOSTART_UNIT.into(),
                    });
                }
            }
        }
        Ok(match now {
            None => None,
            Some(timeout) if on => {
                self.start(vm, timeout, notify).await?;
                Some(AutostartNow::Started)
            }
            Some(_) => Some(AutostartNow::Stopped(self.stop(vm, None, false).await?)),
        })
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
        let store = self.store_for(vm)?;
        let _lock = self.lock_with(&store, vm, timeout)?;
        self.start_locked(vm, store, timeout, Wait::Ready, false, notify)
            .await?;
        Ok(true)
    }
}
