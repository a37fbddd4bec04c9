//! Test doubles for the vm layer: a user manager and runners that record
//! every call and answer from a script. They model only what the lifecycle
//! relies on (a unit's state changes when it is started or stopped).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use maqet_base::paths::DataDir;
use maqet_base::vmname::VmName;
use maqet_host::ipc::StopOutcome;
use maqet_host::state::NewVm;
use maqet_host::systemd::properties::description;
use maqet_host::systemd::proxies::UnitListEntry;
use maqet_host::systemd::{SystemdError, UnitStatus, VmUnitSpec};

use super::{Runners, UnitManager, VmError, Vms};

/// The vm layer over the fakes, for a data directory at `dir` (runner
/// `/bin/true`, sockets under `dir/run`).
pub fn fake_vms(dir: &Path) -> Vms<FakeUnits, FakeRunners> {
    Vms {
        data_dir: DataDir::resolve(Some(dir)).unwrap(),
        units: FakeUnits::default(),
        runners: FakeRunners::default(),
        log_filter: None,
        runner: Some(std::path::PathBuf::from("/bin/true")),
        runtime_root: Some(dir.join("run")),
    }
}

/// Stores VM `name` defined by `yaml` (as if from `NAME.yaml` in `dir`).
pub fn define_yaml(
    vms: &Vms<FakeUnits, FakeRunners>,
    dir: &Path,
    name: &str,
    yaml: &str,
    autostart: bool,
) {
    let doc =
        maqet_config::ConfigDocument::from_yaml_str(yaml, &format!("{name}.yaml"), dir).unwrap();
    vms.store()
        .unwrap()
        .insert_vm(&NewVm {
            name: name.into(),
            config: doc.to_json(),
            sources: vec![],
            autostart,
        })
        .unwrap();
}

/// Runs `f` on a current-thread runtime with timers, as the CLI does.
/// A VM name the tests know to be valid.
pub fn n(name: &str) -> VmName {
    VmName::new(name).unwrap()
}

pub fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(f)
}

/// A unit of `vm` in `active_state`/`sub_state`, owned by `data_dir`.
pub fn unit(vm: &VmName, data_dir: &Path, active: &str, sub: &str) -> UnitStatus {
    UnitStatus {
        unit: vm.service_unit(),
        load_state: "loaded".into(),
        active_state: active.into(),
        sub_state: sub.into(),
        description: description(vm, data_dir),
        result: "success".into(),
        main_pid: 4242,
        exec_main_pid: 4242,
        ..Default::default()
    }
}

#[derive(Default)]
pub struct FakeUnits {
    /// Every call, as `Method unit`.
    pub calls: RefCell<Vec<String>>,
    /// The service unit's state (`None`: not loaded).
    pub status: RefCell<Option<UnitStatus>>,
    /// What `start_vm` returns (default: ready).
    pub start: RefCell<Option<SystemdError>>,
    /// What the next `wait_until_down` calls return (default: the unit
    /// went down cleanly).
    pub down: RefCell<VecDeque<Result<(), SystemdError>>>,
    /// Every unit file's enablement (default: not installed).
    pub unit_file: RefCell<Option<String>>,
}

impl FakeUnits {
    fn call(&self, what: String) {
        self.calls.borrow_mut().push(what);
    }
    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
    pub fn called(&self, method: &str) -> bool {
        self.calls.borrow().iter().any(|c| c.starts_with(method))
    }
    fn set_active(&self, active: &str, sub: &str) {
        if let Some(s) = self.status.borrow_mut().as_mut() {
            s.active_state = active.into();
            s.sub_state = sub.into();
        }
    }
}

impl UnitManager for FakeUnits {
    async fn unit_status(&self, unit: &str) -> Result<Option<UnitStatus>, SystemdError> {
        self.call(format!("GetUnit {unit}"));
        Ok(self.status.borrow().clone().filter(|s| s.unit == unit))
    }
    async fn start_vm(&self, spec: &VmUnitSpec, timeout: Duration) -> Result<(), SystemdError> {
        self.call(format!(
            "StartTransientUnit {} {timeout:?}",
            spec.vm.service_unit()
        ));
        match self.start.borrow_mut().take() {
            Some(e) => Err(e),
            None => {
                *self.status.borrow_mut() =
                    Some(unit(&spec.vm, &spec.data_dir, "active", "running"));
                Ok(())
            }
        }
    }
    async fn queue_vm(&self, spec: &VmUnitSpec) -> Result<(), SystemdError> {
        self.call(format!(
            "StartTransientUnit {} queued",
            spec.vm.service_unit()
        ));
        match self.start.borrow_mut().take() {
            Some(e) => Err(e),
            None => {
                *self.status.borrow_mut() =
                    Some(unit(&spec.vm, &spec.data_dir, "activating", "start"));
                Ok(())
            }
        }
    }
    async fn stop_unit(&self, unit: &str) -> Result<(), SystemdError> {
        self.call(format!("StopUnit {unit}"));
        Ok(())
    }
    async fn kill(&self, unit: &str, signal: i32) -> Result<(), SystemdError> {
        self.call(format!("KillUnit {unit} {signal}"));
        self.set_active("failed", "failed");
        Ok(())
    }
    async fn reset_failed(&self, unit: &str) {
        self.call(format!("ResetFailedUnit {unit}"));
    }
    async fn wait_until_down(
        &self,
        unit: &str,
        timeout: Duration,
    ) -> Result<Option<UnitStatus>, SystemdError> {
        self.call(format!("wait down {unit} {timeout:?}"));
        self.down.borrow_mut().pop_front().unwrap_or(Ok(()))?;
        if self
            .status
            .borrow()
            .as_ref()
            .is_some_and(|s| s.active_state != "failed")
        {
            self.set_active("inactive", "dead");
        }
        Ok(self.status.borrow().clone())
    }
    async fn wait_until_settled(
        &self,
        unit: &str,
        timeout: Duration,
    ) -> Result<Option<UnitStatus>, SystemdError> {
        self.call(format!("wait settled {unit} {timeout:?}"));
        Ok(self.status.borrow().clone())
    }
    async fn wait_until_stopping(
        &self,
        unit: &str,
        timeout: Duration,
    ) -> Result<Option<UnitStatus>, SystemdError> {
        self.call(format!("wait stopping {unit} {timeout:?}"));
        self.set_active("deactivating", "stop-sigterm");
        Ok(self.status.borrow().clone())
    }
    async fn list_units(&self, patterns: &[&str]) -> Result<Vec<UnitListEntry>, SystemdError> {
        self.call(format!("ListUnitsByPatterns {}", patterns.join(" ")));
        // Only live units' processes are asked for; this fake runs no QEMU.
        Ok(Vec::new())
    }
    async fn unit_processes(&self, unit: &str) -> Result<Vec<(String, u32, String)>, SystemdError> {
        self.call(format!("GetUnitProcesses {unit}"));
        Ok(Vec::new())
    }
    fn runner_problems(&self, _vm: &VmName, pid: u32, _max: usize) -> Vec<String> {
        vec![format!("qemu (runner {pid}): could not open disk")]
    }
    async fn unit_file_state(&self, unit: &str) -> Result<Option<String>, SystemdError> {
        self.call(format!("GetUnitFileState {unit}"));
        Ok(self.unit_file.borrow().clone())
    }
}

/// Runners that answer `stop` from a script.
#[derive(Default)]
pub struct FakeRunners {
    pub calls: RefCell<Vec<String>>,
    /// `None`: unreachable (the caller falls back to systemd).
    pub answer: RefCell<Option<StopOutcome>>,
}

impl Runners for FakeRunners {
    async fn stop(
        &self,
        vm: &VmName,
        _data_dir: &Path,
        timeout: Option<Duration>,
        force: bool,
        agent: bool,
        _wait: Duration,
    ) -> Result<Option<StopOutcome>, VmError> {
        let how = if agent { " agent" } else { "" };
        self.calls
            .borrow_mut()
            .push(format!("stop {vm} timeout={timeout:?} force={force}{how}"));
        Ok(*self.answer.borrow())
    }
}
