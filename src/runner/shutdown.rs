//! Stopping QEMU: ACPI power-down, `quit` after the timeout, SIGKILL as the
//! last resort. Stop requests that arrive meanwhile join the one under way
//! (a `--force` one escalates it).

use std::process::ExitStatus;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::dispatch::{StopReply, StopRequest};
use super::notify;
use super::qemu::Qemu;
use crate::ipc::protocol::StopOutcome;
use crate::qmp::QmpClient;

/// Bound on `system_powerdown` and `quit` commands themselves.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long QEMU gets to exit after `quit` before it is killed.
const QUIT_GRACE: Duration = Duration::from_secs(5);
/// How long the runner waits for stop replies to reach their clients.
const REPLY_GRACE: Duration = Duration::from_secs(1);

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
    Signal(&'static str),
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
    waiters: Vec<oneshot::Sender<StopReply>>,
}

impl<'a> Shutdown<'a> {
    pub fn new(
        qemu: &'a mut Qemu,
        qmp: &'a QmpClient,
        stop_rx: &'a mut mpsc::Receiver<StopRequest>,
    ) -> Self {
        Shutdown {
            qemu,
            qmp,
            stop_rx,
            waiters: Vec::new(),
        }
    }

    /// QEMU exiting by itself, or the first stop request.
    pub async fn next_event(&mut self) -> Event {
        tokio::select! {
            st = self.qemu.child.wait() => Event::Exited(st),
            Some(req) = self.stop_rx.recv() => Event::Stop(req),
        }
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
    pub async fn run(
        &mut self,
        timeout: Duration,
        force: bool,
        first: Option<oneshot::Sender<StopReply>>,
    ) -> StopOutcome {
        self.waiters.extend(first);
        let pid = self.qemu.pid;
        // STOPPING=1 arms systemd's stop timer; make room for our timeout.
        let budget = timeout.saturating_add(COMMAND_TIMEOUT + QUIT_GRACE + Duration::from_secs(5));
        notify::stopping(&format!("stopping (qemu pid {pid})"));
        notify::extend_timeout(budget);
        let outcome = self.stop_qemu(timeout, force).await;
        tracing::info!(maqet_stop = ?outcome, "{}", outcome.describe());
        self.answer_waiters(outcome).await;
        outcome
    }

    async fn stop_qemu(&mut self, timeout: Duration, force: bool) -> StopOutcome {
        if matches!(self.qemu.child.try_wait(), Ok(Some(_))) {
            return StopOutcome::AlreadyStopped;
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
        self.qemu.signal(libc::SIGKILL);
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
