//! Stopping QEMU: the guest agent's shutdown when asked for, ACPI
//! power-down, `quit` after the timeout, SIGKILL as the last resort. Stop
//! requests that arrive meanwhile join the one under way (a `--force` one
//! escalates it). How QEMU ended is told from what the runner asked and
//! the reason of QEMU's last SHUTDOWN event, so the journal says whether
//! the guest, the agent, ACPI or a signal someone sent QEMU ended it.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

use super::dispatch::{StopReply, StopRequest, SuspendRequest};
use super::notify;
use super::qemu::Qemu;
use maqet_host::ipc::protocol::StopOutcome;
use maqet_host::qmp::{EventKind, QmpClient, QmpEvent};

/// Bound on `system_powerdown` and `quit` commands themselves.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long QEMU gets to exit after `quit` before it is killed.
const QUIT_GRACE: Duration = Duration::from_secs(5);
/// How long the runner waits for stop replies to reach their clients.
pub const REPLY_GRACE: Duration = Duration::from_secs(1);
/// How long the guest agent gets to answer a shutdown request.
const AGENT_CONNECT: Duration = Duration::from_secs(2);

/// `now + d`, or a year from now when that overflows: timeouts are range
/// checked where they come in, this only keeps a slip from panicking.
fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400))
}

pub enum Event {
    Exited(std::io::Result<ExitStatus>),
    Stop(StopRequest),
    /// Save the VM's state and end it (`maqet suspend`).
    Suspend(SuspendRequest),
    Signal(&'static str),
    /// The VM cannot go on (a helper died, QEMU stopped it with
    /// `internal-error` under a restart policy).
    Failed(VmFailure),
}

/// Why the VM must end although nobody asked; the runner exits with
/// [`maqet_base::units::VM_FAILED_EXIT_STATUS`].
#[derive(Debug, Clone)]
pub struct VmFailure {
    pub cause: String,
    /// Give the guest its shutdown timeout (its disks are fine); otherwise
    /// `quit` at once (the guest cannot run any more).
    pub graceful: bool,
}

enum Waited {
    Exited,
    Deadline,
    Forced,
}

pub struct Shutdown<'a> {
    qemu: &'a mut Qemu,
    qmp: &'a QmpClient,
    stop_rx: &'a mut mpsc::Receiver<StopRequest>,
    suspend_rx: &'a mut mpsc::Receiver<SuspendRequest>,
    failure_rx: &'a mut mpsc::Receiver<VmFailure>,
    waiters: Vec<oneshot::Sender<StopReply>>,
    /// Every QMP event since the runner started watching, for the reason
    /// of the last SHUTDOWN.
    events: broadcast::Receiver<QmpEvent>,
    agent_socket: Option<PathBuf>,
    /// Held while the runner talks to the agent (`ports: auto` polls too).
    agent_gate: super::autoports::AgentGate,
}

impl<'a> Shutdown<'a> {
    pub fn new(
        qemu: &'a mut Qemu,
        qmp: &'a QmpClient,
        stop_rx: &'a mut mpsc::Receiver<StopRequest>,
        suspend_rx: &'a mut mpsc::Receiver<SuspendRequest>,
        failure_rx: &'a mut mpsc::Receiver<VmFailure>,
        agent_socket: Option<PathBuf>,
        agent_gate: super::autoports::AgentGate,
    ) -> Self {
        Shutdown {
            events: qmp.subscribe(),
            qemu,
            qmp,
            stop_rx,
            suspend_rx,
            failure_rx,
            waiters: Vec::new(),
            agent_socket,
            agent_gate,
        }
    }

    /// QEMU exiting by itself, the first stop request, or a failure.
    pub async fn next_event(&mut self) -> Event {
        tokio::select! {
            st = self.qemu.child.wait() => Event::Exited(st),
            Some(req) = self.stop_rx.recv() => Event::Stop(req),
            Some(req) = self.suspend_rx.recv() => Event::Suspend(req),
            Some(f) = self.failure_rx.recv() => Event::Failed(f),
        }
    }

    /// After a completed save: QEMU has handed the VM over and is told to
    /// quit (killed if it does not, which loses nothing now); stop
    /// requests that came meanwhile are answered.
    pub async fn end_saved(&mut self) {
        notify::stopping(&format!("saved (qemu pid {})", self.qemu.pid));
        if let Err(e) = self
            .qmp
            .execute_timeout("quit", None, COMMAND_TIMEOUT)
            .await
        {
            tracing::warn!(error = %e, "quit after the save failed");
        }
        if !matches!(
            self.wait_exit(deadline_after(QUIT_GRACE)).await,
            Waited::Exited
        ) {
            self.kill().await;
        }
        while let Ok(req) = self.stop_rx.try_recv() {
            self.waiters.push(req.reply);
        }
        tracing::info!(
            maqet_stop = "saved",
            "the VM's state is saved; QEMU has quit"
        );
        self.answer_waiters(StopOutcome::AlreadyStopped).await;
    }

    /// The reason of QEMU's last SHUTDOWN event, once QEMU has exited:
    /// waits (briefly) for the QMP connection to end, so every event QEMU
    /// sent before it has been read.
    pub async fn shutdown_reason(&mut self) -> Option<String> {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.qmp.closed()).await;
        let mut reason = None;
        loop {
            match self.events.try_recv() {
                Ok(ev) => {
                    if let EventKind::Shutdown { reason: r, .. } = ev.kind() {
                        reason = r.map(|r| r.as_str().to_string());
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => return reason,
            }
        }
    }

    /// QEMU's last stderr lines once it has exited.
    pub async fn qemu_said(&mut self) -> Vec<String> {
        self.qemu.wait_stderr(Duration::from_secs(1)).await
    }

    /// Waits for QEMU to exit until `deadline`, gathering further stop
    /// requests; a forced one cuts the wait short.
    async fn wait_exit(&mut self, deadline: Instant) -> Waited {
        loop {
            tokio::select! {
                _ = self.qemu.child.wait() => return Waited::Exited,
                _ = tokio::time::sleep_until(deadline) => return Waited::Deadline,
                Some(req) = self.stop_rx.recv() => {
                    self.waiters.push(req.reply);
                    if req.force {
                        return Waited::Forced;
                    }
                }
            }
        }
    }

    /// Stops QEMU and answers every stop request; returns how it went.
    /// With `agent`, the guest agent is asked to power the guest off first.
    pub async fn run(
        &mut self,
        timeout: Duration,
        force: bool,
        agent: bool,
        first: Option<oneshot::Sender<StopReply>>,
    ) -> StopOutcome {
        self.waiters.extend(first);
        let pid = self.qemu.pid;
        // STOPPING=1 arms systemd's stop timer; make room for our timeout.
        let mut budget =
            timeout.saturating_add(COMMAND_TIMEOUT + QUIT_GRACE + Duration::from_secs(5));
        if agent {
            budget += maqet_host::guest_agent::SHUTDOWN_GRACE + AGENT_CONNECT;
        }
        notify::stopping(&format!("stopping (qemu pid {pid})"));
        notify::extend_timeout(budget);
        let mut outcome = self.stop_qemu(timeout, force, agent).await;
        // Whatever was asked: QEMU that ended on a signal someone else sent
        // it was not powered off by the guest.
        if matches!(outcome, StopOutcome::Powerdown | StopOutcome::Agent)
            && self.shutdown_reason().await.as_deref() == Some("host-signal")
        {
            outcome = StopOutcome::Signalled;
        }
        tracing::info!(maqet_stop = ?outcome, "{}", outcome.describe());
        self.answer_waiters(outcome).await;
        outcome
    }

    /// Asks the guest agent to power the guest off; true when it took the
    /// request (a silent or absent agent costs [`AGENT_CONNECT`]).
    async fn agent_shutdown(&self) -> bool {
        let Some(socket) = self.agent_socket.clone() else {
            tracing::info!("the VM has no guest agent channel; ACPI power-down");
            return false;
        };
        let _held = self.agent_gate.lock().await;
        let asked = tokio::task::spawn_blocking(move || {
            maqet_host::guest_agent::Agent::connect(&socket, AGENT_CONNECT)
                .and_then(|mut a| a.shutdown(Duration::from_secs(1)))
        })
        .await;
        match asked {
            Ok(Ok(())) => {
                tracing::info!("the guest agent took the shutdown request");
                true
            }
            Ok(Err(e)) => {
                tracing::info!(
                    "the guest agent did not take the shutdown request ({e}); ACPI power-down"
                );
                false
            }
            Err(e) => {
                tracing::warn!("asking the guest agent failed: {e}; ACPI power-down");
                false
            }
        }
    }

    async fn stop_qemu(&mut self, timeout: Duration, force: bool, agent: bool) -> StopOutcome {
        if matches!(self.qemu.child.try_wait(), Ok(Some(_))) {
            return StopOutcome::AlreadyStopped;
        }
        if agent && !force && self.agent_shutdown().await {
            let grace = maqet_host::guest_agent::SHUTDOWN_GRACE.min(timeout);
            match self.wait_exit(deadline_after(grace)).await {
                Waited::Exited => return StopOutcome::Agent,
                Waited::Forced => return self.kill().await,
                Waited::Deadline => tracing::info!(
                    "the guest is still up {grace:?} after the guest agent's shutdown request; ACPI power-down"
                ),
            }
        }
        if !force {
            if let Err(e) = self
                .qmp
                .execute_timeout("system_powerdown", None, COMMAND_TIMEOUT)
                .await
            {
                tracing::warn!(error = %e, "system_powerdown failed");
            }
            match self.wait_exit(deadline_after(timeout)).await {
                Waited::Exited => return StopOutcome::Powerdown,
                Waited::Forced => return self.kill().await,
                Waited::Deadline => {}
            }
            tracing::warn!("guest did not power off within {timeout:?}; sending quit");
            if let Err(e) = self
                .qmp
                .execute_timeout("quit", None, COMMAND_TIMEOUT)
                .await
            {
                tracing::warn!(error = %e, "quit failed");
            }
            match self.wait_exit(deadline_after(QUIT_GRACE)).await {
                Waited::Exited => return StopOutcome::Quit,
                Waited::Forced | Waited::Deadline => {}
            }
        }
        self.kill().await
    }

    async fn kill(&mut self) -> StopOutcome {
        self.qemu.signal(rustix::process::Signal::KILL);
        let _ = self.qemu.child.wait().await;
        StopOutcome::Killed
    }

    /// Replies to every stop request and waits (briefly) until the replies
    /// are written, because the process exits right after.
    pub async fn answer_waiters(&mut self, outcome: StopOutcome) {
        let mut written = Vec::new();
        for w in self.waiters.drain(..) {
            let (tx, rx) = oneshot::channel();
            if w.send(StopReply {
                outcome,
                written: tx,
            })
            .is_ok()
            {
                written.push(rx);
            }
        }
        let all = async {
            for rx in written {
                let _ = rx.await;
            }
        };
        let _ = tokio::time::timeout(REPLY_GRACE, all).await;
    }
}
