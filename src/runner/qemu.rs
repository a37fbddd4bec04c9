//! Spawning QEMU: the QMP (and console) socketpair ends at fixed fds, nothing of the
//! runner's systemd plumbing inherited, stderr captured line by line.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use super::console::CONSOLE_FD;

pub use maqet_base::units::QMP_FD;

/// Lines of QEMU's stderr kept for error reports.
const TAIL_LINES: usize = 20;

/// Environment the runner got from systemd that must not leak into QEMU.
const PRIVATE_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "MAQET_LOG",
];

pub struct Qemu {
    pub child: Child,
    pub pid: u32,
    pub stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// The task copying QEMU's stderr to the journal; ends at EOF.
    stderr_task: Option<tokio::task::JoinHandle<()>>,
}

/// A socketpair whose far end is moved to a high fd (≥ 10, close-on-exec),
/// so placing several of them at fixed low fds in the child cannot clobber
/// one with another.
fn pair() -> std::io::Result<(std::os::unix::net::UnixStream, OwnedFd)> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let high = rustix::io::fcntl_dupfd_cloexec(&theirs, 10)?;
    Ok((ours, high))
}

impl Qemu {
    /// Starts QEMU; returns it, the runner's end of the QMP socketpair and,
    /// when `console` is set, of the serial console's socketpair
    /// (QEMU's ends at [`QMP_FD`] and [`CONSOLE_FD`]).
    pub fn spawn(
        argv: &[String],
        console: bool,
    ) -> std::io::Result<(Qemu, UnixStream, Option<UnixStream>)> {
        let (qmp_ours, qmp_theirs) = pair()?;
        let console_pair = if console { Some(pair()?) } else { None };
        let mut fds = vec![(qmp_theirs.as_raw_fd(), QMP_FD)];
        if let Some((_, theirs)) = &console_pair {
            fds.push((theirs.as_raw_fd(), CONSOLE_FD));
        }
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for k in PRIVATE_ENV {
            cmd.env_remove(k);
        }
        // SAFETY: only async-signal-safe calls between fork and exec (rustix
        // makes the raw system calls, allocating nothing).
        unsafe {
            cmd.pre_exec(move || {
                // Sources are ≥ 10 and targets < 10; dup2 clears CLOEXEC.
                for (from, to) in &fds {
                    // SAFETY: `from` stays open in the child until exec (the
                    // parent holds it across spawn). The target number is
                    // replaced, not owned: ManuallyDrop never closes it.
                    let from = BorrowedFd::borrow_raw(*from);
                    let mut to = std::mem::ManuallyDrop::new(OwnedFd::from_raw_fd(*to));
                    rustix::io::dup2(from, &mut to)?;
                }
                // Belt and braces next to systemd's cgroup kill: QEMU never
                // outlives its runner, even when run by hand. The runner is
                // single-threaded, so "parent thread" is the runner itself.
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))?;
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        drop(qmp_theirs);
        let pid = child.id().unwrap_or(0);
        let stderr_tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let stderr_task = child.stderr.take().map(|err| {
            let tail = stderr_tail.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::warn!(maqet_source = "qemu", "{line}");
                    let mut t = tail.lock().unwrap();
                    if t.len() == TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            })
        });
        let qemu = Qemu {
            child,
            pid,
            stderr_tail,
            stderr_task,
        };
        let console = match console_pair {
            Some((ours, theirs)) => {
                drop(theirs);
                ours.set_nonblocking(true)?;
                Some(UnixStream::from_std(ours)?)
            }
            None => None,
        };
        qmp_ours.set_nonblocking(true)?;
        Ok((qemu, UnixStream::from_std(qmp_ours)?, console))
    }

    /// QEMU's last stderr lines once it has exited: waits (bounded) for
    /// the copy task to reach EOF so nothing QEMU said is missed.
    pub async fn wait_stderr(&mut self, bound: std::time::Duration) -> Vec<String> {
        if let Some(task) = self.stderr_task.take() {
            let _ = tokio::time::timeout(bound, task).await;
        }
        self.stderr_tail()
    }

    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr_tail.lock().unwrap().iter().cloned().collect()
    }

    /// Sends `sig` to QEMU. The child is not reaped until wait() returns,
    /// so the pid cannot have been reused.
    pub fn signal(&self, sig: rustix::process::Signal) {
        if let Some(pid) = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }
}

/// The runner's exit code for a QEMU exit status, so systemd's `Result` and
/// `ExecMainStatus` tell the truth: 0 for a clean guest shutdown, QEMU's own
/// code otherwise, 128+N for a signal.
pub fn exit_code_for(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 1,
    }
}

/// One line describing how QEMU ended.
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => "QEMU exited cleanly".to_string(),
        (Some(c), _) => format!("QEMU exited with status {c}"),
        (None, Some(s)) => format!(
            "QEMU was killed by signal {}",
            maqet_host::systemd::unit_state::signal_name(s)
        ),
        _ => "QEMU ended".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code_for(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code_for(ExitStatus::from_raw(1 << 8)), 1);
        assert_eq!(exit_code_for(ExitStatus::from_raw(9)), 137);
        assert_eq!(
            describe_exit(ExitStatus::from_raw(9)),
            "QEMU was killed by signal SIGKILL"
        );
    }
}
