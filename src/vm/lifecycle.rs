//! A VM's life: start (storage → unit → ready, undone on failure), stop
//! (through the runner, else through systemd; `timeout` bounds every path),
//! restart. The caller holds no lock; `start` takes the VM's start/rm lock
//! itself.

use std::path::PathBuf;
use std::time::Duration;

use maqet_base::vmname::VmName;
use maqet_config::{ConfigDocument, VmConfig};
use maqet_host::state::Store;
use maqet_host::storage::Provisioned;
use maqet_host::systemd::{RestartPolicy, SystemdError, VmUnitSpec};

pub use maqet_host::ipc::StopOutcome;

use super::owner::{live_unit, OwnerError};
use super::runners::Runners;
use super::{Notify, UnitManager, VmError, Vms};

/// Margin on top of the guest's shutdown timeout for `quit` and SIGKILL.
pub const STOP_MARGIN: Duration = Duration::from_secs(15);
/// systemd kills a runner that has not pinged within this interval.
const WATCHDOG: Duration = Duration::from_secs(10);
/// How long a failed or timed-out start waits for its unit to go again.
const UNDO_WAIT: Duration = Duration::from_secs(60);

/// How far `start` follows the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Until the runner is ready (READY=1) or has failed; a failed start
    /// removes what it created.
    Ready,
    /// Until systemd has queued the start job (`start --no-wait`). The
    /// checks and the storage still come first; a failure after that shows
    /// in the unit's state, and what the start created stays.
    Queued,
}

/// The runner binary: `MAQET_RUNNER`, else beside this executable.
pub fn runner_path() -> Result<PathBuf, VmError> {
    if let Some(p) = std::env::var_os("MAQET_RUNNER") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    let p = exe.with_file_name("maqet-runner");
    if p.is_file() {
        Ok(p)
    } else {
        Err(VmError::NoRunner { exe })
    }
}

/// The unit's `TimeoutStopUSec`: the guest's shutdown timeout plus the
/// margin for `quit` and SIGKILL; for `on_stop: save`, at least the save
/// budget of the VM's memory (storage/saved.rs), which the runner extends
/// while the save makes progress.
pub fn stop_timeout(cfg: &VmConfig) -> Duration {
    let shutdown = Duration::from_secs_f64(cfg.shutdown_timeout) + STOP_MARGIN;
    match cfg.on_stop {
        maqet_config::OnStop::Shutdown => shutdown,
        maqet_config::OnStop::Save => {
            shutdown.max(maqet_host::storage::saved::save_budget(cfg.memory_bytes) + STOP_MARGIN)
        }
    }
}

/// How long the runner may take to answer a stop: the guest may take
/// `timeout` (or its shutdown_timeout, at most 300 s), then `quit`/SIGKILL.
pub fn runner_wait(timeout: Option<Duration>) -> Duration {
    timeout.unwrap_or(Duration::from_secs(300)) + STOP_MARGIN + Duration::from_secs(10)
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// The unit pair's properties for starting `vm` with `cfg`.
    pub fn unit_spec(
        &self,
        vm: &VmName,
        cfg: &VmConfig,
        start_timeout: Duration,
    ) -> Result<VmUnitSpec, VmError> {
        let runner = match &self.runner {
            Some(r) => r.clone(),
            None => runner_path()?,
        };
        let runtime = self.runtime(vm)?;
        Ok(VmUnitSpec {
            vm: vm.clone(),
            data_dir: self.data_dir.path().to_path_buf(),
            runner: runner.clone(),
            runtime: runtime.clone(),
            start_timeout,
            stop_timeout: stop_timeout(cfg),
            watchdog: WATCHDOG,
            restart: cfg
                .restart_policy()
                .map(|(restart, delay)| RestartPolicy { restart, delay }),
            resources: cfg.resource_limits().unwrap_or_default(),
            log_filter: self.log_filter.clone(),
            // Helper units (swtpm), created in the same call as the pair.
            companions: maqet_host::companion::for_vm(
                vm,
                cfg,
                &runner,
                &self.disk_dir(vm),
                &runtime.dir(),
                self.data_dir.path(),
            ),
        })
    }

    /// Whether this data directory's `vm` runs; another data directory's
    /// live VM of that name is an error.
    pub async fn is_running(&self, vm: &VmName) -> Result<bool, VmError> {
        Ok(super::owner::is_live(&self.units, vm, self.data_dir.path()).await?)
    }

    /// `maqet start NAME`: under the VM's lock, with the definition as it
    /// is then (an `rm` either finished before or waits for this start).
    pub async fn start(
        &self,
        vm: &VmName,
        timeout: Duration,
        notify: Notify<'_>,
    ) -> Result<(), VmError> {
        self.start_as(vm, timeout, Wait::Ready, notify).await
    }

    /// [`Vms::start`], following the VM only as far as `wait` says. The
    /// lock is held until then: with [`Wait::Queued`] an `rm` may run
    /// while the unit is still starting (and finds it live).
    pub async fn start_as(
        &self,
        vm: &VmName,
        timeout: Duration,
        wait: Wait,
        notify: Notify<'_>,
    ) -> Result<(), VmError> {
        self.start_with(vm, timeout, wait, false, notify).await
    }

    /// [`Vms::start_as`]; with `fresh`, a saved running state is discarded
    /// and the VM boots afresh (`start --fresh`), else it is resumed.
    pub async fn start_with(
        &self,
        vm: &VmName,
        timeout: Duration,
        wait: Wait,
        fresh: bool,
        notify: Notify<'_>,
    ) -> Result<(), VmError> {
        // An unknown VM is "no such VM" without touching the data directory.
        let store = self.store_for(vm)?;
        self.start_in(store, vm, timeout, wait, fresh, notify).await
    }

    /// [`Vms::start_with`] through `store`, the handle [`Vms::store_for`]
    /// gave for `vm` (the CLI opens it before it connects to systemd, so an
    /// unknown VM is told before anything else is asked): the lock, the
    /// record under it and the start all use it.
    pub async fn start_in(
        &self,
        store: Store,
        vm: &VmName,
        timeout: Duration,
        wait: Wait,
        fresh: bool,
        notify: Notify<'_>,
    ) -> Result<(), VmError> {
        let _lock = self.lock_with(&store, vm, timeout + STOP_MARGIN)?;
        self.start_locked(vm, store, timeout, wait, fresh, notify)
            .await
    }

    /// Starts a stored VM and waits until it is ready (or failed), or
    /// only until its start is queued. The caller holds the VM's lock; the
    /// definition is read under it through `store` (writable), which the
    /// start uses throughout. `timeout` is the unit's start timeout either
    /// way (at least what loading a saved state needs). `fresh`: discard a
    /// saved state instead of resuming it.
    pub async fn start_locked(
        &self,
        vm: &VmName,
        store: Store,
        timeout: Duration,
        wait: Wait,
        fresh: bool,
        notify: Notify<'_>,
    ) -> Result<(), VmError> {
        let record = &super::record_in(&store, &self.data_dir, vm)?;
        VmError::refuse_incomplete(vm, record)?;
        // Revalidate: the binary or a disk may have gone since `add`.
        let cfg = ConfigDocument::from_stored(&record.config)?.validate()?;
        if self.is_running(vm).await? {
            return Err(self.already_running(vm).await);
        }
        // Not running (and the lock held): a saved state is nobody's but
        // this start's to resume or discard.
        let timeout = self.settle_saved(vm, fresh, timeout, &store, notify)?;
        let mut spec = self.unit_spec(vm, &cfg, timeout)?;
        // No unit of the name is live (checked just above), so until this
        // start creates one, the runtime directory is nobody's: what an
        // earlier run left goes, and so does what this start wrote if it
        // fails before the unit exists. No second look at systemd.
        let runtime = spec.runtime.clone();
        let clear = || {
            if let Err(e) = runtime.clear() {
                tracing::warn!("cannot clear {}: {e}", runtime.dir().display());
            }
        };
        clear();
        // Base digests, the cloud-init seed and the ports of this run (a
        // taken port is a conflict), before anything is created.
        let prepared =
            match crate::provision::guest::prepare(&self.data_dir, vm, &cfg, &store, &spec.runtime)
            {
                Ok(p) => p,
                Err(e) => {
                    clear();
                    return Err(e.into());
                }
            };
        // passt's unit carries this start's forwards (it binds them).
        if let (Some(passt), Some(plan)) = (cfg.guest.network.passt(), &prepared.ports) {
            spec.companions.extend(maqet_host::companion::passt::units(
                vm,
                passt,
                plan,
                &spec.runner,
                &spec.runtime.dir(),
                self.data_dir.path(),
            ));
        }
        // Disks exist before the unit does; a failed start removes them again.
        let mut provisioned = Provisioned::default();
        if let Err(e) = self.provision(vm, &cfg, &store, &mut provisioned, notify) {
            clear();
            return Err(self.undone(vm, provisioned, store, e).await);
        }
        // The switches of its networks: joined, or made with its units
        // (decided under each network's lock, held until the units exist).
        let _segments = match self.join_segments(&cfg, &mut spec).await {
            Ok(locks) => locks,
            Err(e) => {
                clear();
                return Err(self.undone(vm, provisioned, store, e).await);
            }
        };
        // The runner this start creates takes the token: its failure before
        // QEMU runs ends the unit `failed`, never in a restart loop.
        if let Err(e) = spec.runtime.begin_start() {
            clear();
            return Err(self.undone(vm, provisioned, store, e.into()).await);
        }
        let started = match wait {
            Wait::Ready => self.units.start_vm(&spec, timeout).await,
            // Only an error of the call itself (or "already running") comes
            // back: those are undone below like any failed start.
            Wait::Queued => self.units.queue_vm(&spec).await,
        };
        // The unit is the winner's then: never stop it.
        let lost_race = matches!(started, Err(SystemdError::AlreadyRunning { .. }));
        let error = match started {
            Ok(()) => return Ok(()),
            Err(SystemdError::AlreadyRunning { unit }) => {
                // Lost a race with another start of this name (maybe from
                // another data directory). Once the winner is up, its QEMU
                // shows which files it uses; what this start made and the
                // winner does not use goes, and no record of it stays.
                let _ = self.units.wait_until_settled(&unit, timeout).await;
                self.already_running(vm).await
            }
            Err(SystemdError::Failed { unit, status }) => VmError::StartFailed {
                vm: vm.clone(),
                unit,
                reason: status.failure_reason(),
                log: self.units.runner_problems(vm, status.exec_main_pid, 12),
            },
            Err(source @ SystemdError::Timeout { .. }) => {
                // Leave nothing half-started behind.
                self.stop_and_wait(vm).await;
                VmError::StartTimeout {
                    vm: vm.clone(),
                    source,
                }
            }
            Err(e) => e.into(),
        };
        if !lost_race && self.is_running(vm).await.unwrap_or(false) {
            // Timed out, or a restart is pending after all (a runner older
            // than the start token): systemd must not restart a VM whose
            // disks are about to go. A unit that failed for good stays
            // `failed`, showing why.
            self.stop_and_wait(vm).await;
        }
        if !lost_race {
            self.clear_runtime(vm, &spec.runtime).await;
        }
        Err(self.undone(vm, provisioned, store, error).await)
    }

    /// After a stop: the runner clears the runtime directory when it ends,
    /// but not when it is killed, nor does a pending restart that a stop
    /// cancels. A start that holds the VM's lock is writing it afresh.
    pub(super) async fn clear_after_stop(&self, vm: &VmName) -> Result<(), VmError> {
        if let Ok(_start) = self.lock(vm, Duration::ZERO) {
            self.clear_runtime(vm, &self.runtime(vm)?).await;
        }
        Ok(())
    }

    /// After a failed start: what the start wrote into the runtime
    /// directory (the port plan) goes, unless a unit of the name still
    /// runs (then the directory is that unit's).
    async fn clear_runtime(&self, vm: &VmName, runtime: &maqet_base::paths::VmRuntime) {
        let live = live_unit(&self.units, vm, self.data_dir.path()).await;
        if matches!(live, Ok(None)) {
            if let Err(e) = runtime.clear() {
                tracing::warn!("cannot clear {}: {e}", runtime.dir().display());
            }
        }
    }

    /// Best effort: the unit stopped, for an undo.
    async fn stop_and_wait(&self, vm: &VmName) {
        let _ = self.units.stop_unit(&vm.service_unit()).await;
        let _ = self
            .units
            .wait_until_down(&vm.service_unit(), UNDO_WAIT)
            .await;
    }

    async fn already_running(&self, vm: &VmName) -> VmError {
        match live_unit(&self.units, vm, self.data_dir.path()).await {
            Err(e @ OwnerError::OtherDataDir { .. }) => e.into(),
            _ => VmError::AlreadyRunning { vm: vm.clone() },
        }
    }

    /// Stops this data directory's running VM; `Ok(None)` when it was not
    /// running; refuses another data directory's VM of the same name.
    ///
    /// `timeout` (the guest's time to power off) holds on every path: the
    /// runner is given it over IPC; without a reachable runner systemd's
    /// stop job is given that long before the unit is killed.
    pub async fn stop(
        &self,
        vm: &VmName,
        timeout: Option<Duration>,
        force: bool,
    ) -> Result<Option<StopOutcome>, VmError> {
        self.stop_as(vm, timeout, force, false).await
    }

    /// [`Vms::stop`]; with `agent`, the runner asks the guest agent to
    /// power the guest off first (a runner of protocol 4 or later).
    pub async fn stop_as(
        &self,
        vm: &VmName,
        timeout: Option<Duration>,
        force: bool,
        agent: bool,
    ) -> Result<Option<StopOutcome>, VmError> {
        let unit = vm.service_unit();
        let Some(st) = live_unit(&self.units, vm, self.data_dir.path()).await? else {
            return Ok(None);
        };
        if st.is_auto_restart() {
            // No runner and no guest: a stop job cancels the pending
            // restart at once, so there is nothing for `timeout` to bound.
            self.units.stop_unit(&unit).await?;
            self.units.wait_until_down(&unit, STOP_MARGIN).await?;
            self.reset_failed(vm).await;
            self.clear_after_stop(vm).await?;
            return Ok(Some(StopOutcome::AlreadyStopped));
        }
        let wait = runner_wait(timeout);
        let outcome = match tokio::time::timeout(
            wait,
            self.runners
                .stop(vm, self.data_dir.path(), timeout, force, agent, wait),
        )
        .await
        {
            Ok(r) => r?,
            // A runner that accepts but never answers must not hold `stop`
            // forever.
            Err(_) => {
                tracing::warn!("runner did not complete the stop within {wait:?}; asking systemd");
                None
            }
        };
        let mut killed = force;
        if outcome.is_none() {
            // Through a stop job in either case: a unit that merely dies
            // (e.g. to a KillUnit alone) would be restarted by its restart
            // policy.
            self.units.stop_unit(&unit).await?;
            if force {
                self.units.wait_until_stopping(&unit, STOP_MARGIN).await?;
                self.units.kill(&unit, libc::SIGKILL).await?;
            } else if let Some(t) = timeout {
                // The runner powers the guest down on SIGTERM but only
                // knows the VM's shutdown_timeout; `timeout` is enforced here.
                match self.units.wait_until_down(&unit, t).await {
                    Ok(_) => {}
                    Err(SystemdError::Timeout { .. }) => {
                        tracing::warn!("guest still up after {t:?}; killing the unit");
                        self.units.kill(&unit, libc::SIGKILL).await?;
                        killed = true;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let down_wait = match (outcome, timeout) {
            (Some(_), _) => Duration::from_secs(30),
            (None, Some(_)) => STOP_MARGIN,
            (None, None) => runner_wait(None),
        };
        let last = self.units.wait_until_down(&unit, down_wait).await?;
        if killed {
            // A SIGKILLed unit is "failed" only because we asked for it.
            self.reset_failed(vm).await;
        }
        self.clear_after_stop(vm).await?;
        Ok(Some(outcome.unwrap_or(match last {
            Some(s) if s.result == "success" && !killed => StopOutcome::Powerdown,
            _ => StopOutcome::Killed,
        })))
    }

    /// Connects to this data directory's running `vm`'s runner (checked
    /// to be ours).
    pub async fn runner(&self, vm: &VmName) -> Result<maqet_host::ipc::IpcClient, VmError> {
        Ok(super::owner::connect_runner(&self.units, vm, self.data_dir.path()).await?)
    }

    /// Forgets the VM's failed units.
    pub async fn reset_failed(&self, vm: &VmName) {
        self.units.reset_failed(&vm.service_unit()).await;
        self.units.reset_failed(&vm.socket_unit()).await;
    }

    /// `maqet restart`: stop (if running), then start.
    pub async fn restart(
        &self,
        vm: &VmName,
        timeout: Duration,
        notify: Notify<'_>,
    ) -> Result<(), VmError> {
        self.record(vm)?;
        self.stop(vm, None, false).await?;
        self.start(vm, timeout, notify).await
    }
}
