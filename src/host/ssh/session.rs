//! Running ssh for `maqet ssh`, and retrying it while the guest's sshd
//! turns connections away before the version exchange.
//!
//! A banner seen once does not mean the next connection is served: sshd
//! limits unauthenticated connections per address (dropbear 5, OpenSSH's
//! `MaxStartups`), and every connection that QEMU's user network forwards
//! comes from the same address, including probes that QEMU still delivers
//! to a guest that has just come up. ssh then fails with
//! `kex_exchange_identification: Connection closed by remote host`, exit
//! 255. Nothing reached the guest's shell at that point, so retrying is
//! safe; any other failure — and any exit of the remote command — is the
//! user's, at once.
//!
//! ssh writes its own messages to a log file (`-E`) rather than to stderr,
//! so the remote command's stderr stays the user's terminal's and the
//! reason for an exit 255 can be read. The log of the attempt that counts
//! is copied to stderr at the end; those of refused attempts are dropped.

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};

/// How long to wait between two refused attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What ssh logs when the server closed or reset the connection before
/// the version exchange completed (`ssh_exchange_identification` before
/// OpenSSH 8.1).
const REFUSED_BEFORE_IDENTIFICATION: [&str; 2] = [
    "kex_exchange_identification:",
    "ssh_exchange_identification:",
];

/// True when ssh's log says the server turned the connection away before
/// the version exchange: nothing ran in the guest.
pub fn refused_before_identification(status: ExitStatus, log: &str) -> bool {
    status.code() == Some(255)
        && log.lines().any(|l| {
            REFUSED_BEFORE_IDENTIFICATION
                .iter()
                .any(|p| l.starts_with(p))
        })
}

/// The shell's convention for the exit code of a process: its own code, or
/// 128 + the signal that ended it.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// Runs `program -E LOG ARGS…` with this process's stdin, stdout and
/// stderr, again after a short pause as long as the guest's sshd refuses
/// the connection before the version exchange and `retry_until` has not
/// passed. Returns the last attempt's exit status, with its log copied to
/// stderr. `LOG` (0600) is removed afterwards.
pub async fn run(
    program: &OsStr,
    args: &[OsString],
    log: &Path,
    retry_until: Instant,
) -> io::Result<ExitStatus> {
    let result = attempts(program, args, log, retry_until).await;
    let _ = std::fs::remove_file(log);
    let (status, said) = result?;
    io::stderr().write_all(said.as_bytes())?;
    Ok(status)
}

async fn attempts(
    program: &OsStr,
    args: &[OsString],
    log: &Path,
    retry_until: Instant,
) -> io::Result<(ExitStatus, String)> {
    loop {
        // Fresh and private for each attempt: ssh appends to it.
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(log)?;
        let child = tokio::process::Command::new(program)
            .arg("-E")
            .arg(log)
            .args(args)
            .spawn()?;
        let status = wait_passing_signals(child).await?;
        let said = std::fs::read_to_string(log).unwrap_or_default();
        if !refused_before_identification(status, &said) || Instant::now() >= retry_until {
            return Ok((status, said));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Waits for ssh. Ctrl-C and Ctrl-\ from the terminal reach ssh through
/// the foreground process group, so here they are only kept from ending
/// this process first; SIGTERM and SIGHUP sent to maqet are passed on.
async fn wait_passing_signals(mut child: tokio::process::Child) -> io::Result<ExitStatus> {
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let pid = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32));
    let pass = |sig: rustix::process::Signal| {
        if let Some(pid) = pid {
            // The child may be gone already; its status comes from wait.
            let _ = rustix::process::kill_process(pid, sig);
        }
    };
    loop {
        tokio::select! {
            status = child.wait() => return status,
            _ = int.recv() => {}
            _ = quit.recv() => {}
            _ = term.recv() => pass(rustix::process::Signal::TERM),
            _ = hup.recv() => pass(rustix::process::Signal::HUP),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn only_a_255_with_an_identification_failure_is_a_refusal() {
        let refused = "kex_exchange_identification: Connection closed by remote host\n";
        assert!(refused_before_identification(exited(255), refused));
        assert!(refused_before_identification(
            exited(255),
            "ssh_exchange_identification: read: Connection reset by peer\n"
        ));
        // The remote command's own 255, or a failure after the exchange.
        assert!(!refused_before_identification(exited(255), ""));
        assert!(!refused_before_identification(
            exited(255),
            "alice@127.0.0.1: Permission denied (publickey).\n"
        ));
        assert!(!refused_before_identification(exited(1), refused));
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(exited(0)), 0);
        assert_eq!(exit_code(exited(42)), 42);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 128 + 15);
    }

    /// A stand-in for ssh: refuses (like a busy sshd) while a counter file
    /// is below `refusals`, then prints its arguments after `-E LOG` and
    /// exits with `code`, logging `said`.
    fn fake_ssh(dir: &Path, refusals: u32, code: i32, said: &str) -> OsString {
        let p = dir.join("ssh");
        let count = dir.join("count");
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\n\
                 log=$2; shift 2\n\
                 n=$(cat {c} 2>/dev/null || echo 0); echo $((n + 1)) >{c}\n\
                 if [ \"$n\" -lt {refusals} ]; then\n\
                 \x20 echo 'kex_exchange_identification: Connection closed by remote host' >>\"$log\"; exit 255\n\
                 fi\n\
                 echo \"$@\" >{out}\n\
                 printf '%s' '{said}' >>\"$log\"\n\
                 exit {code}\n",
                c = count.display(),
                out = dir.join("args").display(),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.into_os_string()
    }

    fn attempts_made(dir: &Path) -> u32 {
        std::fs::read_to_string(dir.join("count"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn refusals_are_retried_until_the_session_runs() {
        let d = tempfile::tempdir().unwrap();
        let ssh = fake_ssh(d.path(), 2, 7, "");
        let log = d.path().join("vm.log");
        let args: Vec<OsString> = vec!["-p".into(), "40022".into(), "a@127.0.0.1".into()];
        let until = Instant::now() + Duration::from_secs(30);
        let (status, said) = rt().block_on(attempts(&ssh, &args, &log, until)).unwrap();
        // The remote side's status is ours, whatever it is.
        assert_eq!(status.code(), Some(7));
        assert_eq!(said, "", "the refused attempts' log is dropped");
        assert_eq!(attempts_made(d.path()), 3);
        let got = std::fs::read_to_string(d.path().join("args")).unwrap();
        assert_eq!(got.trim(), "-p 40022 a@127.0.0.1");
    }

    #[test]
    fn past_the_deadline_a_refusal_is_the_answer() {
        let d = tempfile::tempdir().unwrap();
        let ssh = fake_ssh(d.path(), 100, 0, "");
        let log = d.path().join("vm.log");
        let (status, said) = rt()
            .block_on(attempts(&ssh, &[], &log, Instant::now()))
            .unwrap();
        assert_eq!(status.code(), Some(255));
        assert!(said.starts_with("kex_exchange_identification:"), "{said}");
        assert_eq!(attempts_made(d.path()), 1);
    }

    #[test]
    fn other_failures_are_not_retried_and_the_log_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let ssh = fake_ssh(d.path(), 0, 255, "Permission denied (publickey).\n");
        let log = d.path().join("vm.log");
        let until = Instant::now() + Duration::from_secs(30);
        let status = rt().block_on(run(&ssh, &[], &log, until)).unwrap();
        assert_eq!(status.code(), Some(255));
        assert_eq!(attempts_made(d.path()), 1);
        assert!(!log.exists());
    }

    #[test]
    fn a_missing_program_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("vm.log");
        let e = rt()
            .block_on(run(
                OsStr::new("/nonexistent/ssh"),
                &[],
                &log,
                Instant::now(),
            ))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(!log.exists());
    }
}
