//! The runner's panic strategy: a panic anywhere — the main task or any
//! spawned one, debug or release build — SIGKILLs QEMU and aborts the
//! runner, so a VM is never left running without its supervisor. (In a
//! debug build tokio would otherwise just end the panicking task: a dead
//! IPC server or watchdog beside a live QEMU.) systemd then sees the runner
//! killed by SIGABRT and applies the VM's restart policy; QEMU's
//! `PR_SET_PDEATHSIG` would kill it on the abort anyway, this does not
//! depend on it.

use std::sync::atomic::{AtomicI32, Ordering};

/// QEMU's pid once spawned; 0 before.
static QEMU_PID: AtomicI32 = AtomicI32::new(0);

/// Installs the hook; the default hook still prints the message first.
pub fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        tracing::error!("runner panicked: {info}; killing QEMU and aborting");
        kill_qemu();
        std::process::abort();
    }));
}

pub fn qemu_spawned(pid: u32) {
    QEMU_PID.store(i32::try_from(pid).unwrap_or(0), Ordering::SeqCst);
}

/// SIGKILLs QEMU if it is still our child. A reaped QEMU's pid may belong
/// to someone else by now; the runner has no other children, so "our
/// child" identifies it.
fn kill_qemu() {
    let pid = QEMU_PID.load(Ordering::SeqCst);
    if pid > 0 && is_child(pid) {
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Whether `pid` is a child of this process (field 4 of /proc/PID/stat).
fn is_child(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let ppid = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.split(' ').nth(1))
        .and_then(|p| p.parse::<u32>().ok());
    ppid == Some(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_its_child_and_nobody_else() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert!(is_child(pid));
        assert!(!is_child(1), "init is nobody's child here");
        assert!(!is_child(std::process::id() as i32));
        qemu_spawned(child.id());
        kill_qemu();
        let st = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGKILL));
        // Reaped: no longer our child, so a reused pid would be spared.
        assert!(!is_child(pid));
        QEMU_PID.store(0, Ordering::SeqCst);
    }
}
