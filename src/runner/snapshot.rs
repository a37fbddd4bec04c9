//! `snapshot` requests: the runner runs a live snapshot job itself, so the
//! guest's file systems frozen for a save are thawed by the process that
//! lives as long as QEMU, whatever happens to the client that asked
//! (killed mid-save, lost connection). Order: guest-fsfreeze-freeze →
//! snapshot-save → guest-fsfreeze-thaw, the thaw attempted whenever a freeze
//! was sent, also after a failed save. A load of a state that was saved
//! frozen resumes a frozen guest, so after a load the agent is asked and a
//! frozen guest thawed.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::dispatch::QMP_TIMEOUT;
use super::jobs::BusyJobs;
use maqet_host::guest_agent::{Agent, AgentError};
use maqet_host::ipc::protocol::{FreezeReport, SnapshotJob, SnapshotParams, SnapshotResult};
use maqet_host::qmp::{QmpClient, QmpError};
use maqet_host::storage::live::{run_job, QmpExec};
use maqet_host::storage::StorageError;

/// How long the agent gets to answer the handshake and `guest-ping`: a
/// guest without a running agent must not delay the snapshot for long.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a freeze or thaw may take (a freeze first syncs every file
/// system, which takes as long as the guest's dirty data needs).
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(60);

/// The runner's QMP connection as storage's job runner sees it; jobs it
/// starts excuse a silent QEMU to the watchdog, as forwarded ones do.
struct RunnerQmp<'a> {
    qmp: &'a QmpClient,
    busy: &'a BusyJobs,
}

impl QmpExec for RunnerQmp<'_> {
    fn execute(
        &mut self,
        command: &str,
        arguments: Value,
    ) -> impl std::future::Future<Output = Result<Value, StorageError>> {
        let command = command.to_string();
        async move {
            let job = self.busy.forwarded(&command, Some(&arguments));
            let r = self
                .qmp
                .execute_timeout(&command, Some(arguments), QMP_TIMEOUT)
                .await;
            if let (Some(id), Err(QmpError::Command { .. })) = (job, &r) {
                self.busy.refused(&id);
            }
            r.map_err(|e| match e {
                QmpError::Timeout(_) => StorageError::QmpTimeout { command },
                QmpError::Command { desc, .. } => StorageError::Qmp {
                    command,
                    message: desc,
                },
                other => StorageError::Runner(other.to_string()),
            })
        }
    }
}

/// Runs blocking agent I/O off the runner's single thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(t) => t,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn answering(socket: PathBuf) -> Result<Agent, AgentError> {
    let mut a = Agent::connect(&socket, PING_TIMEOUT)?;
    a.call("guest-ping", None)?;
    a.set_timeout(FREEZE_TIMEOUT)?;
    Ok(a)
}

/// How the freeze before a save went.
enum Freeze {
    /// Frozen: this many file systems.
    Done(u64),
    /// Nothing was frozen (no agent, or it refused); the reason, if any.
    Not(Option<String>),
    /// The freeze was sent but its answer was lost: the guest may be
    /// frozen, so a thaw follows the save all the same.
    Unknown(String),
}

async fn freeze(socket: PathBuf) -> Freeze {
    blocking(move || {
        let mut agent = match answering(socket) {
            Ok(a) => a,
            Err(e) => return Freeze::Not(Some(format!("the guest agent did not answer ({e})"))),
        };
        match agent.fsfreeze() {
            Ok(n) => Freeze::Done(n),
            Err(e @ AgentError::Refused { .. }) => Freeze::Not(Some(e.to_string())),
            Err(e) => Freeze::Unknown(e.to_string()),
        }
    })
    .await
}

/// Thaws over a fresh connection: its handshake skips a late reply to a
/// freeze whose answer was lost.
async fn thaw(socket: PathBuf) -> Result<u64, String> {
    blocking(move || {
        let mut a = Agent::connect(&socket, FREEZE_TIMEOUT).map_err(|e| e.to_string())?;
        a.fsthaw().map_err(|e| e.to_string())
    })
    .await
}

/// Why the check after a load did not complete.
enum AfterLoad {
    /// The agent did not answer: whether the guest is frozen is unknown
    /// (it is only when the state was saved frozen).
    Silent(String),
    /// The agent answered, but the status or the thaw failed.
    Failed(String),
}

/// After a load: thaws the guest when the loaded state had it frozen.
/// `Ok(None)`: it was not frozen.
async fn thaw_if_frozen(socket: PathBuf) -> Result<Option<u64>, AfterLoad> {
    blocking(move || {
        let mut a = answering(socket).map_err(|e| AfterLoad::Silent(e.to_string()))?;
        let failed = |e: AgentError| AfterLoad::Failed(e.to_string());
        if !a.is_frozen().map_err(failed)? {
            return Ok(None);
        }
        a.fsthaw().map(Some).map_err(failed)
    })
    .await
}

/// Runs one `snapshot` request. `agent`: the guest agent's socket when the
/// VM was started with `guest_agent: true`.
pub async fn run(
    qmp: &QmpClient,
    busy: &BusyJobs,
    agent: Option<PathBuf>,
    p: SnapshotParams,
) -> SnapshotResult {
    let mut report = FreezeReport {
        agent: agent.is_some(),
        ..FreezeReport::default()
    };
    let mut q = RunnerQmp { qmp, busy };
    let tag = &p.tag;
    let args = json!({"tag": tag, "vmstate": p.vmstate, "devices": p.devices});
    let error = match p.job {
        SnapshotJob::Save => {
            let (must_thaw, frozen) = match (&agent, p.freeze) {
                (Some(socket), true) => match freeze(socket.clone()).await {
                    Freeze::Done(n) => (true, Some(n)),
                    Freeze::Not(reason) => {
                        report.reason = reason;
                        (false, None)
                    }
                    Freeze::Unknown(e) => {
                        report.reason = Some(format!("the freeze did not complete ({e})"));
                        (true, None)
                    }
                },
                (Some(_), false) => {
                    report.reason = Some("not asked to (--no-freeze)".into());
                    (false, None)
                }
                (None, _) => (false, None),
            };
            if let Some(n) = frozen {
                tracing::info!(snapshot = %tag, "froze {n} guest file system(s) for the live snapshot");
                report.frozen = true;
                report.filesystems = Some(n);
            } else if let (Some(r), true) = (&report.reason, p.freeze) {
                tracing::warn!(snapshot = %tag, "saving the live snapshot unfrozen: {r}");
            }
            let what = format!("saving snapshot '{tag}'");
            let saved = run_job(&mut q, "snapshot-save", args, &what, &mut |_| {}).await;
            if must_thaw {
                match thaw(agent.clone().expect("thaw only with an agent")).await {
                    Ok(n) => tracing::info!(snapshot = %tag, "thawed {n} guest file system(s)"),
                    Err(e) => {
                        tracing::error!(snapshot = %tag, "thawing the guest's file systems failed: {e}");
                        report.thaw_error = Some(e);
                    }
                }
            }
            saved.err()
        }
        SnapshotJob::Load => {
            let what = format!("loading snapshot '{tag}'");
            let loaded = run_job(&mut q, "snapshot-load", args, &what, &mut |_| {}).await;
            if let (Some(socket), true) = (&agent, loaded.is_ok()) {
                match thaw_if_frozen(socket.clone()).await {
                    Ok(Some(n)) => {
                        tracing::info!(snapshot = %tag, "the loaded state was frozen; thawed {n} guest file system(s)");
                        report.thawed_after_load = Some(n);
                    }
                    Ok(None) => {}
                    Err(AfterLoad::Silent(e)) => {
                        let r = format!("the guest agent did not answer after the load ({e})");
                        tracing::warn!(snapshot = %tag, "cannot tell whether the loaded guest is frozen: {r}");
                        report.reason = Some(r);
                    }
                    Err(AfterLoad::Failed(e)) => {
                        tracing::error!(snapshot = %tag, "thawing the loaded guest failed: {e}");
                        report.thaw_error = Some(e);
                    }
                }
            }
            loaded.err()
        }
    };
    SnapshotResult {
        // QEMU's own words: the client says which job failed.
        error: error.map(|e| match e {
            StorageError::Job { message, .. } => message,
            other => other.to_string(),
        }),
        freeze: report,
    }
}
