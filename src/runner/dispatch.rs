//! Answers IPC requests for the runner: status, QMP pass-through (behind
//! maqet's policy) and stop requests handed to the lifecycle loop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::console::ConsoleHub;
use super::policy;
use maqet_host::ipc::protocol::{
    Call, CompanionFailure, ConsoleParams, ErrorBody, ErrorKind, ForwardParams, QmpParams,
    SnapshotParams, StatusInfo, StopOutcome, StopParams, StopResult, SuspendResult, PROTOCOL,
};
use maqet_host::ipc::server::{Answer, BoxFuture, ConsoleStream, Dispatch};
use maqet_host::qmp::{QmpClient, QmpError};

/// Default bound on one forwarded QMP command.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(30);

/// A validated stop request: `timeout` is within range (`None`: the VM's
/// `shutdown_timeout`).
pub struct StopRequest {
    pub timeout: Option<Duration>,
    pub force: bool,
    /// Ask the guest agent first.
    pub agent: bool,
    pub reply: oneshot::Sender<StopReply>,
}

/// The outcome of a stop, and a channel the IPC server signals once the
/// reply is written (the runner exits right after).
pub struct StopReply {
    pub outcome: StopOutcome,
    pub written: oneshot::Sender<()>,
}

/// A `suspend` request for the lifecycle loop.
pub struct SuspendRequest {
    pub reply: oneshot::Sender<SuspendReply>,
}

/// How a suspend went, and a channel the IPC server signals once the
/// reply is written (after a save the runner exits right after).
pub struct SuspendReply {
    pub result: SuspendResult,
    pub written: oneshot::Sender<()>,
}

pub struct RunnerDispatch {
    pub vm: String,
    pub runner_pid: u32,
    pub qemu_pid: u32,
    pub qemu_version: String,
    pub ready_at: u64,
    /// Canonical data directory, reported in `status` (ownership checks).
    pub data_dir: String,
    pub qmp: QmpClient,
    pub run_state: Arc<Mutex<String>>,
    pub stop_tx: mpsc::Sender<StopRequest>,
    pub suspend_tx: mpsc::Sender<SuspendRequest>,
    pub events: broadcast::Sender<Value>,
    /// `None` when the config does not ask for a console.
    pub console: Option<Arc<ConsoleHub>>,
    pub busy_jobs: super::jobs::BusyJobs,
    /// The config's `qmp_allow_host_exec`: forward commands that make QEMU
    /// run host programs (see [`policy`]).
    pub allow_host_exec: bool,
    /// The QMP socket served for standard clients, when systemd passed one.
    pub qmp_socket: Option<std::path::PathBuf>,
    /// The guest agent's socket, when the VM was started with
    /// `guest_agent: true` (live snapshots freeze through it).
    pub agent_socket: Option<std::path::PathBuf>,
    /// Failures that end the VM (a helper unit died).
    pub failure_tx: mpsc::Sender<super::shutdown::VmFailure>,
    /// When QEMU was started (µs since the epoch): a helper failure from
    /// before belongs to an earlier run.
    pub started_usec: u64,
    /// The VM's port forwards (`forward` requests change them).
    pub forwards: std::sync::Arc<super::forwards::Forwards>,
    /// Held while the runner talks to the guest agent.
    pub agent_gate: super::autoports::AgentGate,
}

pub fn qmp_error_body(e: QmpError) -> ErrorBody {
    match e {
        QmpError::Command { class, desc } => ErrorBody {
            kind: ErrorKind::Qmp,
            class: Some(class),
            message: desc,
        },
        QmpError::Timeout(t) => ErrorBody::new(
            ErrorKind::Timeout,
            format!("QEMU did not answer within {}s", t.as_secs_f64()),
        ),
        QmpError::Disconnected => ErrorBody::new(ErrorKind::Unavailable, "QEMU has exited"),
        other => ErrorBody::new(ErrorKind::Unavailable, other.to_string()),
    }
}

/// A `qmp` request that passes maqet's policy (its shape was checked by
/// [`Call::from_wire`]).
pub(crate) fn check_qmp(p: &QmpParams, allow_host_exec: bool) -> Result<(), ErrorBody> {
    policy::check(&p.execute, p.arguments.as_ref(), allow_host_exec)
}

impl RunnerDispatch {
    async fn status(self: Arc<Self>) -> Result<Answer, ErrorBody> {
        // A short bound: status must answer even when QEMU is busy.
        let state = match self
            .qmp
            .execute_timeout("query-status", None, Duration::from_secs(2))
            .await
        {
            Ok(v) => v
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string(),
            Err(_) => self.run_state.lock().unwrap().clone(),
        };
        let info = StatusInfo {
            vm: self.vm.clone(),
            runner_pid: self.runner_pid,
            qemu_pid: Some(self.qemu_pid),
            qemu_version: self.qemu_version.clone(),
            run_state: state,
            ready_at: self.ready_at,
            data_dir: Some(self.data_dir.clone()),
            protocol: PROTOCOL,
            maqet_version: Some(env!("CARGO_PKG_VERSION").to_string()),
            qmp_socket: self.qmp_socket.clone(),
        };
        Ok(serde_json::to_value(info)
            .expect("status serializes")
            .into())
    }

    async fn qmp(self: Arc<Self>, p: QmpParams) -> Result<Answer, ErrorBody> {
        check_qmp(&p, self.allow_host_exec)?;
        match policy::host_exec(&p.execute, p.arguments.as_ref()) {
            Some(what) => tracing::warn!(
                qmp_command = %p.execute,
                "forwarding QMP command with {what}, allowed by {}", policy::OPT_OUT_KEY
            ),
            None => tracing::info!(qmp_command = %p.execute, "forwarding QMP command"),
        }
        let job = self.busy_jobs.forwarded(&p.execute, p.arguments.as_ref());
        let r = self
            .qmp
            .execute_timeout(&p.execute, p.arguments, QMP_TIMEOUT)
            .await;
        // A job QEMU refused never runs: it must not excuse a silent QEMU
        // (a client could otherwise switch the watchdog off for an hour).
        if let (Some(id), Err(QmpError::Command { .. })) = (job, &r) {
            self.busy_jobs.refused(&id);
        }
        r.map(Answer::from).map_err(qmp_error_body)
    }

    async fn snapshot(self: Arc<Self>, p: SnapshotParams) -> Result<Answer, ErrorBody> {
        tracing::info!(snapshot = %p.tag, job = ?p.job, "live snapshot requested");
        // A task of its own: a client that goes away mid-save must not cancel
        // the thaw that follows the save.
        let me = self.clone();
        let task = tokio::spawn(async move {
            // No `ports: auto` poll between the freeze and the thaw.
            let _held = me.agent_gate.lock().await;
            super::snapshot::run(&me.qmp, &me.busy_jobs, me.agent_socket.clone(), p).await
        });
        let result = task.await.map_err(|e| {
            ErrorBody::new(
                ErrorKind::Internal,
                format!("the snapshot task failed: {e}"),
            )
        })?;
        Ok(serde_json::to_value(result)
            .expect("a snapshot result serializes")
            .into())
    }

    async fn stop(self: Arc<Self>, p: StopParams) -> Result<Answer, ErrorBody> {
        let timeout = p
            .timeout_duration()
            .map_err(|m| ErrorBody::new(ErrorKind::BadRequest, m))?;
        let (force, agent) = (p.force, p.agent);
        let (reply, rx) = oneshot::channel();
        self.stop_tx
            .send(StopRequest {
                timeout,
                force,
                agent,
                reply,
            })
            .await
            .map_err(|_| ErrorBody::new(ErrorKind::Unavailable, "the runner is already exiting"))?;
        let reply = rx.await.map_err(|_| {
            ErrorBody::new(
                ErrorKind::Internal,
                "the runner ended without reporting the stop",
            )
        })?;
        let result = StopResult {
            outcome: reply.outcome,
            message: reply.outcome.describe().to_string(),
        };
        Ok(Answer {
            value: serde_json::to_value(result).expect("a stop result serializes"),
            written: Some(reply.written),
        })
    }
}

impl RunnerDispatch {
    async fn forward(self: Arc<Self>, p: ForwardParams) -> Result<Answer, ErrorBody> {
        let reply = self.forwards.request(p).await?;
        Ok(serde_json::to_value(reply)
            .expect("a forward reply serializes")
            .into())
    }

    async fn suspend(self: Arc<Self>) -> Result<Answer, ErrorBody> {
        tracing::info!("suspend requested");
        let (reply, rx) = oneshot::channel();
        self.suspend_tx
            .send(SuspendRequest { reply })
            .await
            .map_err(|_| ErrorBody::new(ErrorKind::Unavailable, "the runner is already exiting"))?;
        let reply = rx.await.map_err(|_| {
            ErrorBody::new(
                ErrorKind::Unavailable,
                "the VM ended before its state could be saved (it was stopped meanwhile)",
            )
        })?;
        Ok(Answer {
            value: serde_json::to_value(reply.result).expect("a suspend result serializes"),
            written: Some(reply.written),
        })
    }

    async fn companion_failed(self: Arc<Self>, p: CompanionFailure) -> Result<Answer, ErrorBody> {
        if p.at_usec < self.started_usec {
            tracing::info!("ignoring a report from before this run: {}", p.describe());
            return Ok(Value::Null.into());
        }
        let cause = format!(
            "{}: the VM cannot run without it ({})",
            p.describe(),
            maqet_base::units::why_companion_is_needed(&p.unit)
        );
        self.failure_tx
            .send(super::shutdown::VmFailure {
                cause,
                graceful: true,
            })
            .await
            .map_err(|_| ErrorBody::new(ErrorKind::Unavailable, "the runner is already exiting"))?;
        Ok(Value::Null.into())
    }
}

/// `Dispatch` is implemented on the Arc so each request owns a handle.
pub struct Shared(pub Arc<RunnerDispatch>);

impl Dispatch for Shared {
    fn call(&self, call: Call) -> BoxFuture<Result<Answer, ErrorBody>> {
        let me = self.0.clone();
        match call {
            Call::Status => Box::pin(me.status()),
            Call::Qmp(p) => Box::pin(me.qmp(p)),
            Call::Stop(p) => Box::pin(me.stop(p)),
            Call::Snapshot(p) => Box::pin(me.snapshot(p)),
            Call::CompanionFailed(p) => Box::pin(me.companion_failed(p)),
            Call::Suspend => Box::pin(me.suspend()),
            Call::Forward(p) => Box::pin(me.forward(p)),
            // The server streams these itself (`subscribe`, `console`).
            Call::Events | Call::Console(_) => {
                let m = format!("the server routed '{}' as a call", call.method());
                Box::pin(async move { Err(ErrorBody::new(ErrorKind::Internal, m)) })
            }
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.0.events.subscribe()
    }

    fn console(&self, p: ConsoleParams) -> Result<ConsoleStream, ErrorBody> {
        let hub = self.0.console.as_ref().ok_or_else(|| {
            ErrorBody::new(
                ErrorKind::Unavailable,
                format!(
                    "VM '{}' has no serial console: its configuration does not set `console: true` (add it, then restart the VM)",
                    self.0.vm
                ),
            )
        })?;
        Ok(hub.attach(p.replay, p.follow))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmp_errors_keep_class() {
        let b = qmp_error_body(QmpError::Command {
            class: "GenericError".into(),
            desc: "bad".into(),
        });
        assert_eq!(b.class.as_deref(), Some("GenericError"));
        assert_eq!(b.kind, ErrorKind::Qmp);
        assert_eq!(
            qmp_error_body(QmpError::Disconnected).kind,
            ErrorKind::Unavailable
        );
    }
}
