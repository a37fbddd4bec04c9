//! Answers IPC requests for the runner: status, QMP pass-through (behind
//! maqet's policy) and stop requests handed to the lifecycle loop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::console::ConsoleHub;
use crate::ipc::protocol::{
    valid_qmp_command, ConsoleParams, ErrorBody, ErrorKind, QmpParams, StatusInfo, StopOutcome,
    StopParams,
};
use crate::ipc::server::{Answer, BoxFuture, ConsoleStream, Dispatch};
use crate::qmp::{QmpClient, QmpError};

/// Commands the runner never forwards, with the reason given to the caller.
const DENIED: &[(&str, &str)] = &[
    (
        "qmp_capabilities",
        "the runner negotiated capabilities already",
    ),
    (
        "human-monitor-command",
        "HMP text bypasses QMP's structured errors and this policy; use the QMP command instead",
    ),
    ("inject-nmi", "it can crash the guest kernel"),
    ("getfd", "file descriptors cannot be passed through maqet"),
    ("add-fd", "file descriptors cannot be passed through maqet"),
];

/// Default bound on one forwarded QMP command.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct StopRequest {
    pub params: StopParams,
    pub reply: oneshot::Sender<StopReply>,
}

/// The outcome of a stop, and a channel the IPC server signals once the
/// reply is written (the runner exits right after).
pub struct StopReply {
    pub outcome: StopOutcome,
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
    pub events: broadcast::Sender<Value>,
    /// `None` when the config does not ask for a console.
    pub console: Option<Arc<ConsoleHub>>,
    pub busy_jobs: super::jobs::BusyJobs,
}

pub fn policy_check(command: &str) -> Result<(), ErrorBody> {
    if !valid_qmp_command(command) {
        return Err(ErrorBody::new(
            ErrorKind::BadRequest,
            format!(
                "'{command}' is not a QMP command name (lower-case letters, digits, '-' and '_')"
            ),
        ));
    }
    if let Some((_, why)) = DENIED.iter().find(|(c, _)| *c == command) {
        return Err(ErrorBody::new(
            ErrorKind::Policy,
            format!("maqet does not forward '{command}': {why}"),
        ));
    }
    Ok(())
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
        };
        Ok(serde_json::to_value(info)
            .expect("status serializes")
            .into())
    }

    async fn qmp(self: Arc<Self>, params: Value) -> Result<Answer, ErrorBody> {
        let p: QmpParams = serde_json::from_value(params).map_err(|e| {
            ErrorBody::new(
                ErrorKind::BadRequest,
                format!("qmp params: {e} (expected {{\"execute\": NAME, \"arguments\": {{…}}}})"),
            )
        })?;
        policy_check(&p.execute)?;
        if let Some(a) = &p.arguments {
            if !a.is_object() {
                return Err(ErrorBody::new(
                    ErrorKind::BadRequest,
                    "QMP arguments must be a JSON object",
                ));
            }
        }
        tracing::info!(qmp_command = %p.execute, "forwarding QMP command");
        self.busy_jobs.forwarded(&p.execute, p.arguments.as_ref());
        self.qmp
            .execute_timeout(&p.execute, p.arguments, QMP_TIMEOUT)
            .await
            .map(Answer::from)
            .map_err(qmp_error_body)
    }

    async fn stop(self: Arc<Self>, params: Value) -> Result<Answer, ErrorBody> {
        let params: StopParams = serde_json::from_value(params)
            .map_err(|e| ErrorBody::new(ErrorKind::BadRequest, format!("stop params: {e}")))?;
        if let Some(t) = params.timeout {
            if !(t.is_finite() && t >= 0.0) {
                return Err(ErrorBody::new(
                    ErrorKind::BadRequest,
                    "stop timeout must be a non-negative number of seconds",
                ));
            }
        }
        let (reply, rx) = oneshot::channel();
        self.stop_tx
            .send(StopRequest { params, reply })
            .await
            .map_err(|_| ErrorBody::new(ErrorKind::Unavailable, "the runner is already exiting"))?;
        let reply = rx.await.map_err(|_| {
            ErrorBody::new(
                ErrorKind::Internal,
                "the runner ended without reporting the stop",
            )
        })?;
        Ok(Answer {
            value: json!({"outcome": reply.outcome, "message": reply.outcome.describe()}),
            written: Some(reply.written),
        })
    }
}

/// `Dispatch` is implemented on the Arc so each request owns a handle.
pub struct Shared(pub Arc<RunnerDispatch>);

impl Dispatch for Shared {
    fn call(&self, method: String, params: Value) -> BoxFuture<Result<Answer, ErrorBody>> {
        let me = self.0.clone();
        match method.as_str() {
            "status" => Box::pin(me.status()),
            "qmp" => Box::pin(me.qmp(params)),
            "stop" => Box::pin(me.stop(params)),
            other => {
                let m = format!("method '{other}' is not handled by this runner");
                Box::pin(async move { Err(ErrorBody::new(ErrorKind::BadRequest, m)) })
            }
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.0.events.subscribe()
    }

    fn console(&self, params: Value) -> Result<ConsoleStream, ErrorBody> {
        let p: ConsoleParams = if params.is_null() {
            serde_json::from_value(json!({}))
        } else {
            serde_json::from_value(params)
        }
        .map_err(|e| ErrorBody::new(ErrorKind::BadRequest, format!("console params: {e}")))?;
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
    fn policy() {
        assert!(policy_check("query-status").is_ok());
        assert!(policy_check("system_powerdown").is_ok());
        let e = policy_check("human-monitor-command").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Policy);
        let e = policy_check("Query Status").unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
    }

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
