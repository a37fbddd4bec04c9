//! Snapshot jobs in flight. While QEMU saves or loads the VM state it runs
//! the job in its main loop, so QMP (and the watchdog's `query-status`
//! probe) stalls for as long as writing the RAM takes, which for a large
//! guest is longer than the watchdog interval. A stall during a job that
//! maqet started is expected, so it does not stop the watchdog pings, up
//! to a bound after which a stall counts as a hang again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest a snapshot job may keep QEMU silent before the watchdog acts.
pub const MAX_JOB_STALL: Duration = Duration::from_secs(3600);

const BLOCKING_JOBS: &[&str] = &["snapshot-save", "snapshot-load", "snapshot-delete"];

#[derive(Debug, Clone, Default)]
pub struct BusyJobs(Arc<Mutex<HashMap<String, Instant>>>);

impl BusyJobs {
    /// Notes a forwarded command that starts a blocking job; returns the
    /// job's id. Noted before QEMU answers, as the job may stall QMP at once.
    pub fn forwarded(&self, command: &str, arguments: Option<&Value>) -> Option<String> {
        if !BLOCKING_JOBS.contains(&command) {
            return None;
        }
        let id = arguments
            .and_then(|a| a.get("job-id"))
            .and_then(Value::as_str)?
            .to_string();
        self.0.lock().unwrap().insert(id.clone(), Instant::now());
        Some(id)
    }

    /// QEMU refused the command that would have started job `id`.
    pub fn refused(&self, id: &str) {
        self.0.lock().unwrap().remove(id);
    }

    /// Follows `JOB_STATUS_CHANGE`: a concluded job no longer blocks.
    pub fn event(&self, event: &str, data: &Value) {
        if event != "JOB_STATUS_CHANGE" {
            return;
        }
        let done = matches!(
            data.get("status").and_then(Value::as_str),
            Some("concluded" | "null" | "aborting")
        );
        if let (true, Some(id)) = (done, data.get("id").and_then(Value::as_str)) {
            self.0.lock().unwrap().remove(id);
        }
    }

    /// Whether a silent QEMU is explained by a job that started recently.
    pub fn excuse_silence(&self) -> bool {
        self.excuse_at(Instant::now())
    }

    fn excuse_at(&self, now: Instant) -> bool {
        self.0
            .lock()
            .unwrap()
            .values()
            .any(|t| now.duration_since(*t) < MAX_JOB_STALL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tracks_snapshot_jobs_until_they_conclude() {
        let b = BusyJobs::default();
        assert!(!b.excuse_silence());
        b.forwarded("query-status", None);
        b.forwarded("snapshot-save", Some(&json!({"tag": "s"})));
        assert!(!b.excuse_silence(), "no job-id, no job");
        b.forwarded("snapshot-save", Some(&json!({"job-id": "j1", "tag": "s"})));
        assert!(b.excuse_silence());
        b.event(
            "JOB_STATUS_CHANGE",
            &json!({"id": "j1", "status": "running"}),
        );
        assert!(b.excuse_silence());
        b.event(
            "JOB_STATUS_CHANGE",
            &json!({"id": "j1", "status": "concluded"}),
        );
        assert!(!b.excuse_silence());
        // A job QEMU refused excuses nothing.
        let id = b.forwarded("snapshot-load", Some(&json!({"job-id": "bogus"})));
        assert!(b.excuse_silence());
        b.refused(&id.unwrap());
        assert!(!b.excuse_silence());
    }

    #[test]
    fn a_stall_beyond_the_bound_is_a_hang() {
        let b = BusyJobs::default();
        b.forwarded("snapshot-load", Some(&json!({"job-id": "j"})));
        assert!(!b.excuse_at(Instant::now() + MAX_JOB_STALL));
    }
}
