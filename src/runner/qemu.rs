//! Spawning QEMU: the QMP socketpair end at a fixed fd, nothing of the
//! runner's systemd plumbing inherited, stderr captured line by line.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

/// The fd QEMU finds its QMP socket at (`-chardev socket,id=maqet-qmp,fd=4`).
/// Not 3: that is the runner's listening socket from systemd.
pub const QMP_FD: i32 = 4;

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

impl Qemu {
    /// Starts QEMU; returns it and the runner's end of the QMP socketpair.
    pub fn spawn(argv: &[String]) -> std::io::Result<(Qemu, UnixStream)> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let their_fd = theirs.as_raw_fd();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for k in PRIVATE_ENV {
            cmd.env_remove(k);
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if their_fd == QMP_FD {
                    let flags = libc::fcntl(QMP_FD, libc::F_GETFD);
                    if flags < 0
                        || libc::fcntl(QMP_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(their_fd, QMP_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Belt and braces next to systemd's cgroup kill: QEMU never
                // outlives its runner, even when run by hand. The runner is
                // single-threaded, so "parent thread" is the runner itself.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        drop(theirs);
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
        ours.set_nonblocking(true)?;
        let qemu = Qemu {
            child,
            pid,
            stderr_tail,
            stderr_task,
        };
        Ok((qemu, UnixStream::from_std(ours)?))
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

    pub fn signal(&self, sig: i32) {
        if self.pid != 0 {
            // SAFETY: plain syscall; the child is not reaped until wait()
            // returns, so the pid cannot have been reused.
            unsafe { libc::kill(self.pid as i32, sig) };
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
            crate::systemd::unit_state::signal_name(s)
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
