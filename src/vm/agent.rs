//! A VM's guest agent as the vm layer uses it. `maqet stop` of a VM with
//! `guest_agent: true` asks the agent to power the guest off first (a
//! clean shutdown that needs no ACPI support in the guest); the runner's
//! ACPI power-down follows when the agent does not answer or the guest
//! does not go down in time. `maqet guest` gets a [`Guest`]: the agent of
//! one running VM, with a method per command it offers.

use std::time::Duration;

use maqet_base::vmname::VmName;
use maqet_host::guest_agent::{Agent, ExecResult};
use maqet_host::ipc::StopOutcome;

use super::{stored_config, Runners, UnitManager, VmError, Vms};

/// How long a guest that accepted the agent's shutdown gets before the
/// runner's ACPI power-down.
pub const AGENT_GRACE: Duration = maqet_host::guest_agent::SHUTDOWN_GRACE;

/// How a stop ended, and whether the guest agent did it.
#[derive(Debug, Clone, Copy)]
pub struct AgentStop {
    pub outcome: Option<StopOutcome>,
    pub via_agent: bool,
}

impl AgentStop {
    /// The line `maqet stop` prints.
    pub fn message(&self) -> Option<&'static str> {
        self.outcome.map(|o| match o {
            StopOutcome::Powerdown if self.via_agent => "guest powered off (guest agent shutdown)",
            o => o.describe(),
        })
    }
}

/// Asks the guest agent of `vm` to power off. True when the agent took
/// the request; a silent or absent agent costs the 2 s this waits for it.
fn agent_shutdown(vm: &VmName) -> bool {
    let Ok(path) = maqet_host::guest_agent::socket_path(vm) else {
        return false;
    };
    match Agent::connect(&path, Duration::from_secs(2))
        .and_then(|mut a| a.shutdown(Duration::from_secs(1)))
    {
        Ok(()) => true,
        Err(e) => {
            tracing::info!("guest agent shutdown of '{vm}' not used: {e}");
            false
        }
    }
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// [`Vms::stop`], asking the guest agent first where the VM has one
    /// (never with `force`).
    pub async fn stop_via_agent(
        &self,
        vm: &VmName,
        timeout: Option<Duration>,
        force: bool,
    ) -> Result<AgentStop, VmError> {
        let has_agent = self
            .record(vm)
            .ok()
            .and_then(|rec| stored_config(&rec).ok())
            .is_some_and(|cfg| cfg.guest.guest_agent);
        let running = has_agent && !force && self.is_running(vm).await.unwrap_or(false);
        // A runner of protocol 4 asks the agent itself, so its journal says
        // what ended the guest (the agent, ACPI after it, or neither).
        if running && self.runner_stops_via_agent(vm).await {
            let outcome = self.stop_as(vm, timeout, false, true).await?;
            let via_agent = outcome == Some(StopOutcome::Agent);
            return Ok(AgentStop { outcome, via_agent });
        }
        // An older runner: asked from here, as maqet did before.
        let via_agent = running && agent_shutdown(vm);
        // A guest that took the agent's request gets up to AGENT_GRACE to go
        // down by itself; then (or at once without an agent) the runner
        // stops it: ACPI power-down, then quit.
        let agent_done = via_agent
            && self
                .units
                .wait_until_down(
                    &vm.service_unit(),
                    AGENT_GRACE.min(timeout.unwrap_or(AGENT_GRACE)),
                )
                .await
                .is_ok();
        let outcome = if agent_done {
            Some(StopOutcome::Powerdown)
        } else {
            match self.stop(vm, timeout, force).await? {
                // The agent's power-off finished before the runner was asked.
                None if via_agent => Some(StopOutcome::Powerdown),
                o => o,
            }
        };
        Ok(AgentStop { outcome, via_agent })
    }
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// Whether `vm`'s runner takes `stop` with `agent` (protocol 4).
    async fn runner_stops_via_agent(&self, vm: &VmName) -> bool {
        match self.runner(vm).await {
            Ok(mut c) => c
                .require(maqet_host::ipc::protocol::Need::AgentStop)
                .await
                .is_ok(),
            Err(_) => false,
        }
    }
}

/// Why `maqet guest` cannot reach a VM's guest agent.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("VM '{vm}' has no guest agent channel; set `guest_agent: true` (and run qemu-guest-agent in the guest)")]
    NoChannel { vm: VmName },
    #[error("VM '{vm}' is not running (start it with `maqet start {vm}`; its guest agent answers once the guest has booted)")]
    NotRunning { vm: VmName },
}

/// A connected guest agent of one running VM (`maqet guest`).
pub struct Guest {
    pub vm: VmName,
    agent: Agent,
}

/// `guest-info`: the agent's version and the commands it has enabled.
#[derive(Debug, PartialEq, Eq)]
pub struct GuestInfo {
    pub version: String,
    pub commands: Vec<String>,
}

impl GuestInfo {
    fn from_reply(v: &serde_json::Value) -> Self {
        GuestInfo {
            version: v["version"].as_str().unwrap_or("?").to_string(),
            commands: v["supported_commands"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["enabled"].as_bool() == Some(true))
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect(),
        }
    }
}

impl Guest {
    pub fn ping(&mut self) -> Result<(), VmError> {
        self.agent.call("guest-ping", None)?;
        Ok(())
    }
    pub fn info(&mut self) -> Result<GuestInfo, VmError> {
        Ok(GuestInfo::from_reply(&self.agent.call("guest-info", None)?))
    }
    /// `guest-network-get-interfaces`, as the agent answers it.
    pub fn interfaces(&mut self) -> Result<serde_json::Value, VmError> {
        Ok(self.agent.call("guest-network-get-interfaces", None)?)
    }
    pub fn exec(&mut self, argv: &[String]) -> Result<ExecResult, VmError> {
        Ok(self.agent.exec(argv)?)
    }
    /// How many file systems were frozen.
    pub fn fsfreeze(&mut self) -> Result<u64, VmError> {
        Ok(self.agent.fsfreeze()?)
    }
    /// How many file systems were thawed.
    pub fn fsthaw(&mut self) -> Result<u64, VmError> {
        Ok(self.agent.fsthaw()?)
    }
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// Connects to running `vm`'s guest agent; each call waits up to
    /// `timeout` for its answer.
    pub async fn guest(&self, vm: &VmName, timeout: Duration) -> Result<Guest, VmError> {
        let record = self.record(vm)?;
        if !stored_config(&record)?.guest.guest_agent {
            return Err(GuestError::NoChannel { vm: vm.clone() }.into());
        }
        if !self.is_running(vm).await? {
            return Err(GuestError::NotRunning { vm: vm.clone() }.into());
        }
        let agent = Agent::connect(&maqet_host::guest_agent::socket_path(vm)?, timeout)?;
        Ok(Guest {
            vm: vm.clone(),
            agent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::GuestInfo;

    #[test]
    fn guest_info_lists_only_enabled_commands() {
        let v = serde_json::json!({
            "version": "8.2.0",
            "supported_commands": [
                {"name": "guest-ping", "enabled": true},
                {"name": "guest-exec", "enabled": false},
                {"name": "guest-info", "enabled": true},
            ]
        });
        let i = GuestInfo::from_reply(&v);
        assert_eq!(i.version, "8.2.0");
        assert_eq!(i.commands, ["guest-ping", "guest-info"]);
        assert_eq!(GuestInfo::from_reply(&serde_json::json!({})).version, "?");
    }
}
