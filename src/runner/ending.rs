//! How QEMU ended when nobody asked it to, in words for the journal and
//! as the runner's exit code: from QEMU's exit status and the reason of its
//! last QMP SHUTDOWN event. The guest powering off (or rebooting with
//! `on_reboot: stop`), a QMP `quit` and closing QEMU's window are ends
//! someone inside chose (exit 0); QEMU ended by a signal someone sent it
//! (`host-signal`), a guest panic or a host error are failures, so a
//! `restart: on-failure` policy restarts the VM.

use std::process::ExitStatus;

use maqet_base::units::{signal_name, VM_FAILED_EXIT_STATUS};

/// The runner's account of QEMU's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    pub code: i32,
    pub text: String,
    /// A failure (logged at error level, with `MAQET_FAILURE`).
    pub failure: bool,
}

/// The signal number in QEMU's "terminating on signal N from pid …".
pub fn signal_from_stderr(lines: &[String]) -> Option<i32> {
    lines.iter().rev().find_map(|l| {
        let rest = l.split("terminating on signal ").nth(1)?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

pub fn of_exit(status: ExitStatus, reason: Option<&str>, stderr: &[String]) -> End {
    let code = super::qemu::exit_code_for(status);
    if status.code() != Some(0) {
        // QEMU's own failure (or its death by a signal it could not catch).
        return End {
            code,
            text: super::qemu::describe_exit(status),
            failure: true,
        };
    }
    let clean = |text: &str| End {
        code: 0,
        text: text.to_string(),
        failure: false,
    };
    match reason {
        Some("guest-shutdown") => clean("the guest powered off (QMP SHUTDOWN reason guest-shutdown)"),
        Some("guest-reset") => clean(
            "the guest rebooted and the VM stops on reboot (QMP SHUTDOWN reason guest-reset)",
        ),
        Some("host-qmp-quit") => clean("QEMU quit on a QMP quit command (reason host-qmp-quit)"),
        Some("host-ui") => clean("QEMU's window was closed (QMP SHUTDOWN reason host-ui)"),
        Some("host-signal") => {
            let sig = signal_from_stderr(stderr);
            let which = sig.map_or("a signal".to_string(), |s| {
                format!("signal {}", signal_name(s))
            });
            End {
                code: sig.map_or(VM_FAILED_EXIT_STATUS, |s| 128 + s),
                text: format!(
                    "QEMU was terminated by {which} sent to it (QMP SHUTDOWN reason host-signal): neither the guest nor maqet asked it to stop"
                ),
                failure: true,
            }
        }
        Some("guest-panic") => End {
            code: VM_FAILED_EXIT_STATUS,
            text: "the guest panicked (QMP SHUTDOWN reason guest-panic)".into(),
            failure: true,
        },
        Some(other) => End {
            code: VM_FAILED_EXIT_STATUS,
            text: format!("QEMU stopped for a reason neither the guest nor maqet gave (QMP SHUTDOWN reason {other})"),
            failure: true,
        },
        None => clean("QEMU exited cleanly (no SHUTDOWN event)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn raw(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code)
    }

    #[test]
    fn the_end_says_what_happened_and_signals_are_failures() {
        let ok = raw(0);
        let said = vec![
            "qemu-system-x86_64: terminating on signal 15 from pid 4242 (systemctl)".to_string(),
        ];
        let e = of_exit(ok, Some("host-signal"), &said);
        assert_eq!(e.code, 143);
        assert!(e.failure && e.text.contains("SIGTERM") && e.text.contains("host-signal"));
        let e = of_exit(ok, Some("host-signal"), &[]);
        assert_eq!(e.code, VM_FAILED_EXIT_STATUS);
        let e = of_exit(ok, Some("guest-shutdown"), &[]);
        assert_eq!((e.code, e.failure), (0, false));
        assert!(e.text.contains("guest powered off"));
        assert_eq!(of_exit(ok, Some("host-qmp-quit"), &[]).code, 0);
        assert_eq!(
            of_exit(ok, Some("guest-panic"), &[]).code,
            VM_FAILED_EXIT_STATUS
        );
        let e = of_exit(raw(1 << 8), Some("guest-shutdown"), &[]);
        assert_eq!((e.code, e.failure), (1, true));
        assert_eq!(of_exit(raw(9), None, &[]).code, 137);
        assert_eq!(of_exit(ok, None, &[]).code, 0);
    }

    #[test]
    fn signal_numbers_are_read_from_qemus_words() {
        let l = |s: &str| vec![s.to_string()];
        assert_eq!(
            signal_from_stderr(&l("q: terminating on signal 2")),
            Some(2)
        );
        assert_eq!(signal_from_stderr(&l("q: something else")), None);
    }
}
