//! A unit's runtime state as systemd reports it, and the VM state derived
//! from it. maqet stores no runtime state of its own.

use std::collections::HashMap;

use serde::Serialize;
use zbus::zvariant::OwnedValue;

/// Properties of a `maqet-vm@NAME.service` (Unit + Service interfaces).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnitStatus {
    pub unit: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    pub description: String,
    /// `success`, `exit-code`, `signal`, `watchdog`, `timeout`, …
    pub result: String,
    pub main_pid: u32,
    /// PID of the last runner, kept after it exited (journal lookups).
    pub exec_main_pid: u32,
    /// `ExecMainCode`: 1 = exited, 2 = killed, 3 = dumped (siginfo codes).
    pub exec_main_code: i32,
    pub exec_main_status: i32,
    pub status_text: String,
    pub n_restarts: u32,
    /// Wall clock µs since the epoch; 0 when never active.
    pub active_enter_timestamp: u64,
    /// Non-zero once the unit has left `inactive` at least once.
    pub inactive_exit_monotonic: u64,
    pub invocation_id: String,
    pub memory_current: Option<u64>,
    pub cpu_usage_nsec: Option<u64>,
    pub tasks_current: Option<u64>,
    /// systemd gave up restarting it: the start limit was hit. On systemd
    /// 252 the service keeps the `Result` of its last run and only the
    /// socket (started before it on every restart) says `start-limit-hit`.
    pub start_limit_hit: bool,
}

fn take<T: TryFrom<OwnedValue>>(m: &mut HashMap<String, OwnedValue>, k: &str) -> Option<T> {
    m.remove(k).and_then(|v| T::try_from(v).ok())
}

/// systemd reports "unknown" counters as u64::MAX.
fn counter(v: Option<u64>) -> Option<u64> {
    v.filter(|&x| x != u64::MAX)
}

impl UnitStatus {
    pub fn from_properties(
        unit: &str,
        mut unit_props: HashMap<String, OwnedValue>,
        mut service_props: HashMap<String, OwnedValue>,
    ) -> Self {
        let invocation: Vec<u8> = take(&mut unit_props, "InvocationID").unwrap_or_default();
        let u = &mut unit_props;
        let s = &mut service_props;
        UnitStatus {
            unit: unit.to_string(),
            load_state: take(u, "LoadState").unwrap_or_default(),
            active_state: take(u, "ActiveState").unwrap_or_default(),
            sub_state: take(u, "SubState").unwrap_or_default(),
            description: take(u, "Description").unwrap_or_default(),
            active_enter_timestamp: take(u, "ActiveEnterTimestamp").unwrap_or_default(),
            inactive_exit_monotonic: take(u, "InactiveExitTimestampMonotonic").unwrap_or_default(),
            invocation_id: invocation.iter().map(|b| format!("{b:02x}")).collect(),
            result: take(s, "Result").unwrap_or_default(),
            main_pid: take(s, "MainPID").unwrap_or_default(),
            exec_main_pid: take(s, "ExecMainPID").unwrap_or_default(),
            exec_main_code: take(s, "ExecMainCode").unwrap_or_default(),
            exec_main_status: take(s, "ExecMainStatus").unwrap_or_default(),
            status_text: take(s, "StatusText").unwrap_or_default(),
            n_restarts: take(s, "NRestarts").unwrap_or_default(),
            memory_current: counter(take(s, "MemoryCurrent")),
            cpu_usage_nsec: counter(take(s, "CPUUsageNSec")),
            tasks_current: counter(take(s, "TasksCurrent")),
            start_limit_hit: false,
        }
    }

    pub fn vm_state(&self) -> VmState {
        if self.is_auto_restart() {
            return VmState::Restarting;
        }
        if self.start_limit_hit && !matches!(self.active_state.as_str(), "active" | "reloading") {
            return VmState::Failed;
        }
        VmState::derive(&self.active_state, &self.status_text)
    }

    /// The service ended and systemd will start it again after
    /// `RestartUSec` (its restart policy said so).
    pub fn is_auto_restart(&self) -> bool {
        self.active_state == "activating" && self.sub_state == "auto-restart"
    }

    /// systemd's `Result`, or `start-limit-hit` when that is why the unit
    /// stays down (the service's own `Result` is then its last run's).
    pub fn effective_result(&self) -> &str {
        if self.start_limit_hit {
            "start-limit-hit"
        } else {
            &self.result
        }
    }

    /// A short human reason for a failed unit, e.g. "watchdog timeout" or
    /// "runner exited with status 1".
    pub fn failure_reason(&self) -> String {
        let last = self.last_run_reason();
        if !self.start_limit_hit {
            return last;
        }
        format!(
            "start-limit-hit: systemd gave up restarting it after {} restarts; last run: {last}",
            self.n_restarts
        )
    }

    fn last_run_reason(&self) -> String {
        let how = match self.exec_main_code {
            // The runner exits 128+N when QEMU died of signal N.
            1 if (129..=128 + 64).contains(&self.exec_main_status) => format!(
                "QEMU was killed by signal {} (runner exited with status {})",
                signal_name(self.exec_main_status - 128),
                self.exec_main_status
            ),
            // The runner exits 0 only when QEMU ended by itself with 0.
            1 if self.exec_main_status == 0 => {
                "QEMU ended by itself (guest poweroff or quit; runner exited with status 0)"
                    .to_string()
            }
            1 => format!("runner exited with status {}", self.exec_main_status),
            2 | 3 => format!(
                "runner killed by signal {}",
                signal_name(self.exec_main_status)
            ),
            _ => String::new(),
        };
        let what = match self.result.as_str() {
            "watchdog" => "watchdog timeout (runner or QEMU stopped answering)".to_string(),
            "timeout" => "timed out".to_string(),
            "exit-code" | "signal" | "core-dump" | "" | "success" | "start-limit-hit" => {
                String::new()
            }
            other => other.to_string(),
        };
        match (what.is_empty(), how.is_empty()) {
            (true, true) => format!("result '{}'", self.result),
            (true, false) => how,
            (false, true) => what,
            (false, false) => format!("{what}; {how}"),
        }
    }
}

pub use maqet_base::units::signal_name;

/// The states a VM is shown in. Derived from systemd every time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Never started, or cleanly stopped (no unit loaded or unit inactive).
    Defined,
    Starting,
    Running,
    Paused,
    /// Started with `-S`: QEMU waits for `cont` before the guest runs.
    Prelaunch,
    /// QEMU stopped the guest with `internal-error` (the accelerator could
    /// not run it); it stays so, for inspection, unless a restart policy
    /// ends it.
    #[serde(rename = "internal-error")]
    InternalError,
    Stopping,
    Failed,
    /// Ended, and systemd starts it again after the restart delay.
    Restarting,
    /// The runner is writing the VM's running state to its state file
    /// (`maqet suspend`, or a stop under `on_stop: save`).
    Saving,
    /// Not running, with a saved running state that the next start
    /// resumes. Never systemd's: the views set it from the state database.
    Saved,
}

impl VmState {
    pub fn derive(active_state: &str, status_text: &str) -> VmState {
        match active_state {
            "activating" => VmState::Starting,
            "active" | "reloading" => Self::of_run_state(status_text),
            "deactivating" => VmState::Stopping,
            "failed" => VmState::Failed,
            _ => VmState::Defined,
        }
    }

    /// A live unit's state from the runner's `STATUS=`, whose first word
    /// is QEMU's run state (`running (qemu pid N)`, `prelaunch (…)`): the
    /// two that say what is wrong or pending have their own state, every
    /// other stopped state (`paused`, `io-error`, `suspended`,
    /// `guest-panicked`, a migration's) is `paused`.
    fn of_run_state(status_text: &str) -> VmState {
        let word = status_text
            .split(|c: char| c.is_whitespace() || c == ';')
            .next()
            .unwrap_or("");
        match word {
            // Unknown (an empty text) is taken as running, as before.
            "" | "running" => VmState::Running,
            "prelaunch" => VmState::Prelaunch,
            "internal-error" => VmState::InternalError,
            "shutting" | "stopping" => VmState::Stopping,
            "saving" => VmState::Saving,
            // The runner's own words while it ends a failed VM.
            "failed:" => VmState::Stopping,
            _ => VmState::Paused,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Defined => "defined",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Prelaunch => "prelaunch",
            VmState::InternalError => "internal-error",
            VmState::Stopping => "stopping",
            VmState::Failed => "failed",
            VmState::Restarting => "restarting",
            VmState::Saving => "saving",
            VmState::Saved => "saved",
        }
    }

    /// Holds a live runner, or will again shortly (anything but defined,
    /// failed and saved).
    pub fn is_live(self) -> bool {
        !matches!(self, VmState::Defined | VmState::Failed | VmState::Saved)
    }

    pub const ALL: [VmState; 11] = [
        VmState::Defined,
        VmState::Starting,
        VmState::Running,
        VmState::Paused,
        VmState::Prelaunch,
        VmState::InternalError,
        VmState::Stopping,
        VmState::Failed,
        VmState::Restarting,
        VmState::Saving,
        VmState::Saved,
    ];

    pub fn parse(s: &str) -> Option<VmState> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_systemd() {
        assert_eq!(
            VmState::derive("active", "running (qemu pid 5)"),
            VmState::Running
        );
        assert_eq!(
            VmState::derive("active", "paused (qemu pid 5)"),
            VmState::Paused
        );
        // QEMU's own run state decides, ports suffix or not.
        for (text, state) in [
            ("prelaunch (qemu pid 5)", VmState::Prelaunch),
            (
                "prelaunch (qemu pid 5); ssh 127.0.0.1:4022",
                VmState::Prelaunch,
            ),
            ("internal-error (qemu pid 5)", VmState::InternalError),
            ("io-error (qemu pid 5)", VmState::Paused),
            ("saving (qemu pid 5)", VmState::Saving),
            ("running (qemu pid 5); ssh 127.0.0.1:4022", VmState::Running),
            ("", VmState::Running),
        ] {
            assert_eq!(VmState::derive("active", text), state, "{text}");
        }
        assert_eq!(VmState::derive("activating", ""), VmState::Starting);
        assert_eq!(VmState::derive("deactivating", ""), VmState::Stopping);
        assert_eq!(VmState::derive("failed", ""), VmState::Failed);
        assert_eq!(VmState::derive("inactive", ""), VmState::Defined);
        assert_eq!(VmState::derive("", ""), VmState::Defined);
        for s in VmState::ALL {
            assert_eq!(VmState::parse(s.as_str()), Some(s));
            // JSON says the same word as the table.
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn pending_restart_is_its_own_state() {
        let mut u = UnitStatus {
            active_state: "activating".into(),
            sub_state: "auto-restart".into(),
            ..Default::default()
        };
        assert_eq!(u.vm_state(), VmState::Restarting);
        assert!(u.vm_state().is_live());
        u.sub_state = "start".into();
        assert_eq!(u.vm_state(), VmState::Starting);
    }

    #[test]
    fn failure_reasons() {
        let mut u = UnitStatus {
            result: "watchdog".into(),
            exec_main_code: 2,
            exec_main_status: 6,
            ..Default::default()
        };
        assert_eq!(
            u.failure_reason(),
            "watchdog timeout (runner or QEMU stopped answering); runner killed by signal SIGABRT"
        );
        u.result = "signal".into();
        u.exec_main_status = 9;
        assert_eq!(u.failure_reason(), "runner killed by signal SIGKILL");
        u.result = "exit-code".into();
        u.exec_main_code = 1;
        u.exec_main_status = 1;
        assert_eq!(u.failure_reason(), "runner exited with status 1");
        u.exec_main_status = 0;
        assert!(u.failure_reason().starts_with("QEMU ended by itself"));
        u.exec_main_status = 137;
        assert_eq!(
            u.failure_reason(),
            "QEMU was killed by signal SIGKILL (runner exited with status 137)"
        );
    }

    #[test]
    fn a_hit_start_limit_is_a_failure_with_its_reason() {
        let mut u = UnitStatus {
            active_state: "failed".into(),
            result: "exit-code".into(),
            exec_main_code: 1,
            exec_main_status: 1,
            n_restarts: 5,
            start_limit_hit: true,
            ..Default::default()
        };
        assert_eq!(u.vm_state(), VmState::Failed);
        assert_eq!(u.effective_result(), "start-limit-hit");
        assert_eq!(
            u.failure_reason(),
            "start-limit-hit: systemd gave up restarting it after 5 restarts; last run: runner exited with status 1"
        );
        // The service may be left inactive when only its socket failed.
        u.active_state = "inactive".into();
        assert_eq!(u.vm_state(), VmState::Failed);
        u.start_limit_hit = false;
        assert_eq!(u.vm_state(), VmState::Defined);
        assert_eq!(u.effective_result(), "exit-code");
    }
}
