//! The few systemd calls the vm layer makes, as a trait: the real user
//! manager (`Systemd`) implements it, and the vm layer's unit tests drive
//! the lifecycle through a fake that records calls and returns scripted
//! states. Only what the lifecycle uses is here; views and `doctor` talk to
//! `Systemd` directly.

use std::time::Duration;

use maqet_base::vmname::VmName;
use maqet_host::systemd::proxies::UnitListEntry;
use maqet_host::systemd::{journal, ListedAsk, Systemd, SystemdError, UnitStatus, VmUnitSpec};

// `async fn` in a public trait warns that callers cannot demand `Send`
// futures; the vm layer awaits these on the caller's task (never spawns
// them), so no bound is needed.
#[allow(async_fn_in_trait)]
pub trait UnitManager {
    /// The unit's state; `None` when systemd has no such unit loaded.
    async fn unit_status(&self, unit: &str) -> Result<Option<UnitStatus>, SystemdError>;
    /// The unit's name, description, load, active and sub state only (no
    /// result, pids or usage): enough to tell whose it is and whether it is
    /// live. The real manager asks with one `ListUnitsByPatterns` instead
    /// of [`unit_status`](Self::unit_status)'s property reads.
    async fn unit_brief(&self, unit: &str) -> Result<Option<UnitStatus>, SystemdError> {
        self.unit_status(unit).await
    }
    /// The state of a unit `list_units` returned (the real manager reuses
    /// what the listing already says); `None` when it went away since.
    async fn listed_unit_status(
        &self,
        entry: &UnitListEntry,
        _ask: ListedAsk,
    ) -> Result<Option<UnitStatus>, SystemdError> {
        self.unit_status(&entry.0).await
    }
    /// The directory of maqet's slice in the cgroup v2 hierarchy, where
    /// each VM unit's group is (`None`: not known, read nothing there).
    async fn vm_slice_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// Creates and starts the VM's socket + service pair and waits until
    /// the runner is ready (or failed, or `timeout`).
    async fn start_vm(&self, spec: &VmUnitSpec, timeout: Duration) -> Result<(), SystemdError>;
    /// Creates and starts the pair, returning once the start job is
    /// queued (`start --no-wait`).
    async fn queue_vm(&self, spec: &VmUnitSpec) -> Result<(), SystemdError>;
    /// Queues a stop job (no wait); a unit that is not loaded is fine.
    async fn stop_unit(&self, unit: &str) -> Result<(), SystemdError>;
    async fn kill(&self, unit: &str, signal: i32) -> Result<(), SystemdError>;
    /// Forgets a failed unit; ignored when not failed or not loaded.
    async fn reset_failed(&self, unit: &str);
    async fn wait_until_down(
        &self,
        unit: &str,
        timeout: Duration,
    ) -> Result<Option<UnitStatus>, SystemdError>;
    async fn wait_until_settled(
        &self,
        unit: &str,
        timeout: Duration,
    ) -> Result<Option<UnitStatus>, SystemdError>;
    async fn wait_until_stopping(
        &self,
        unit: &str,
        timeout: Duration,
    ) -> Result<Option<UnitStatus>, SystemdError>;
    async fn list_units(&self, patterns: &[&str]) -> Result<Vec<UnitListEntry>, SystemdError>;
    /// The units that `Wants=` `unit` (empty when it is not loaded).
    async fn wanted_by(&self, _unit: &str) -> Result<Vec<String>, SystemdError> {
        Ok(Vec::new())
    }
    /// `(cgroup, pid, command line)` of each of the unit's processes.
    async fn unit_processes(&self, unit: &str) -> Result<Vec<(String, u32, String)>, SystemdError>;
    /// The warning-and-worse lines runner `pid` of `vm` logged (the
    /// journal belongs to systemd; a failed start quotes them).
    fn runner_problems(&self, vm: &VmName, pid: u32, max: usize) -> Vec<String>;
    /// A unit file's enablement (`enabled`, `disabled`, …); `Ok(None)` when
    /// it is not installed or systemd cannot say, an error only when there
    /// is no systemd to ask.
    async fn unit_file_state(&self, _unit: &str) -> Result<Option<String>, SystemdError> {
        Ok(None)
    }
}

impl UnitManager for Systemd {
    async fn unit_status(&self, unit: &str) -> Result<Option<UnitStatus>, SystemdError> {
        Systemd::unit_status(self, unit).await
    }
    async fn unit_brief(&self, unit: &str) -> Result<Option<UnitStatus>, SystemdError> {
        Systemd::unit_brief(self, unit).await
    }
    async fn listed_unit_status(
        &self,
        entry: &UnitListEntry,
        ask: ListedAsk,
    ) -> Result<Option<UnitStatus>, SystemdError> {
        Systemd::listed_unit_status(self, entry, ask).await
    }
    async fn vm_slice_dir(&self) -> Option<std::path::PathBuf> {
        let cgroup = Systemd::manager_cgroup(self).await.ok()?;
        maqet_host::systemd::usage::slice_dir(&cgroup, maqet_host::systemd::properties::SLICE)
    }
    async fn start_vm(&self, spec: &VmUnitSpec, timeout: Duration) -> Result<(), SystemdError> {
        Systemd::start_vm(self, spec, timeout).await
    }
    async fn queue_vm(&self, spec: &VmUnitSpec) -> Result<(), SystemdError> {
        Systemd::queue_vm(self, spec).await
    }
    async fn stop_unit(&self, unit: &str) -> Result<(), SystemdError> {
        Systemd::stop_unit(self, unit).await
    }
    async fn kill(&self, unit: &str, signal: i32) -> Result<(), SystemdError> {
        Systemd::kill(self, unit, signal).await
    }
    async fn reset_failed(&self, unit: &str) {
        Systemd::reset_failed(self, unit).await
    }
    async fn wait_until_down(
        &self,
        unit: &str,
        timeout: Duration,
    ) -> Result<Option<UnitStatus>, SystemdError> {
        Systemd::wait_until_down(self, unit, timeout).await
    }
    async fn wait_until_settled(
        &self,
        unit: &str,
        timeout: Duration,
    ) -> Result<Option<UnitStatus>, SystemdError> {
        Systemd::wait_until_settled(self, unit, timeout).await
    }
    async fn wait_until_stopping(
        &self,
        unit: &str,
        timeout: Duration,
    ) -> Result<Option<UnitStatus>, SystemdError> {
        Systemd::wait_until_stopping(self, unit, timeout).await
    }
    async fn list_units(&self, patterns: &[&str]) -> Result<Vec<UnitListEntry>, SystemdError> {
        Systemd::list_units(self, patterns).await
    }
    async fn unit_processes(&self, unit: &str) -> Result<Vec<(String, u32, String)>, SystemdError> {
        Systemd::unit_processes(self, unit).await
    }
    async fn wanted_by(&self, unit: &str) -> Result<Vec<String>, SystemdError> {
        Systemd::wanted_by(self, unit).await
    }
    fn runner_problems(&self, vm: &VmName, pid: u32, max: usize) -> Vec<String> {
        journal::problems_of_runner(vm, pid, max)
    }
    async fn unit_file_state(&self, unit: &str) -> Result<Option<String>, SystemdError> {
        Ok(Systemd::unit_file_state(self, unit).await.ok().flatten())
    }
}

/// `None` is "no user session": no unit is loaded and none can be made, so
/// reads say "absent" and anything that would change a unit fails. Lets
/// commands that work without a session (`storage create`, `apply`,
/// `snapshot` of a stopped VM) share the vm layer.
impl<U: UnitManager> UnitManager for Option<U> {
    async fn unit_status(&self, unit: &str) -> Result<Option<UnitStatus>, SystemdError> {
        match self {
            Some(u) => u.unit_status(unit).await,
            None => Ok(None),
        }
    }
    async fn unit_brief(&self, unit: &str) -> Result<Option<UnitStatus>, SystemdError> {
        match self {
            Some(u) => u.unit_brief(unit).await,
            None => Ok(None),
        }
    }
    async fn start_vm(&self, spec: &VmUnitSpec, timeout: Duration) -> Result<(), SystemdError> {
        match self {
            Some(u) => u.start_vm(spec, timeout).await,
            None => Err(no_session("StartTransientUnit", &spec.vm.service_unit())),
        }
    }
    async fn queue_vm(&self, spec: &VmUnitSpec) -> Result<(), SystemdError> {
        match self {
            Some(u) => u.queue_vm(spec).await,
            None => Err(no_session("StartTransientUnit", &spec.vm.service_unit())),
        }
    }
    async fn stop_unit(&self, unit: &str) -> Result<(), SystemdError> {
        match self {
            Some(u) => u.stop_unit(unit).await,
            None => Ok(()),
        }
    }
    async fn kill(&self, unit: &str, signal: i32) -> Result<(), SystemdError> {
        match self {
            Some(u) => u.kill(unit, signal).await,
            None => Err(no_session("KillUnit", unit)),
        }
    }
    async fn reset_failed(&self, unit: &str) {
        if let Some(u) = self {
            u.reset_failed(unit).await
        }
    }
    async fn wait_until_down(
        &self,
        unit: &str,
        timeout: Duration,
    ) -> Result<Option<UnitStatus>, SystemdError> {
        match self {
            Some(u) => u.wait_until_down(unit, timeout).await,
            None => Ok(None),
        }
    }
    async fn wait_until_settled(
        &self,
        unit: &str,
        timeout: Duration,
    ) -> Result<Option<UnitStatus>, SystemdError> {
        match self {
            Some(u) => u.wait_until_settled(unit, timeout).await,
            None => Ok(None),
        }
    }
    async fn wait_until_stopping(
        &self,
        unit: &str,
        timeout: Duration,
    ) -> Result<Option<UnitStatus>, SystemdError> {
        match self {
            Some(u) => u.wait_until_stopping(unit, timeout).await,
            None => Ok(None),
        }
    }
    async fn list_units(&self, patterns: &[&str]) -> Result<Vec<UnitListEntry>, SystemdError> {
        match self {
            Some(u) => u.list_units(patterns).await,
            None => Ok(Vec::new()),
        }
    }
    async fn unit_processes(&self, unit: &str) -> Result<Vec<(String, u32, String)>, SystemdError> {
        match self {
            Some(u) => u.unit_processes(unit).await,
            None => Ok(Vec::new()),
        }
    }
    async fn wanted_by(&self, unit: &str) -> Result<Vec<String>, SystemdError> {
        match self {
            Some(u) => u.wanted_by(unit).await,
            None => Ok(Vec::new()),
        }
    }
    fn runner_problems(&self, vm: &VmName, pid: u32, max: usize) -> Vec<String> {
        match self {
            Some(u) => u.runner_problems(vm, pid, max),
            None => Vec::new(),
        }
    }
    async fn unit_file_state(&self, unit: &str) -> Result<Option<String>, SystemdError> {
        match self {
            Some(u) => u.unit_file_state(unit).await,
            None => Err(no_session("GetUnitFileState", unit)),
        }
    }
}

fn no_session(method: &'static str, unit: &str) -> SystemdError {
    SystemdError::Call {
        method,
        unit: unit.to_string(),
        message: "there is no user session".into(),
    }
}
