//! `maqet stop` of a VM with `guest_agent: true`: the guest agent is asked
//! to power the guest off first (a clean shutdown that needs no ACPI
//! support in the guest); the runner's ACPI power-down follows when the
//! agent does not answer or the guest does not go down in time.

use std::time::Duration;

use crate::guest_agent::Agent;
use crate::ipc::StopOutcome;
use crate::vmname::VmName;

use super::{stored_config, Runners, UnitManager, VmError, Vms};

/// How long a guest that accepted the agent's shutdown gets before the
/// runner's ACPI power-down.
pub const AGENT_GRACE: Duration = Duration::from_secs(10);

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
    let Ok(path) = crate::guest_agent::socket_path(vm) else {
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
            .record(vm.as_str())
            .ok()
            .and_then(|(_, rec)| stored_config(&rec).ok())
            .is_some_and(|cfg| cfg.guest.guest_agent);
        let via_agent =
            !force && has_agent && self.is_running(vm).await.unwrap_or(false) && agent_shutdown(vm);
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
