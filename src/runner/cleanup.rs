//! What a runner leaves in the VM's runtime directory when it exits.
//! systemd's `RuntimeDirectory=` would remove the directory when the unit
//! ends, but systemd 252's user manager does not (seen on this project's
//! machine: a transient user service's runtime directory outlived it, with
//! or without `RuntimeDirectoryPreserve=`), and QEMU cannot remove its
//! listening sockets when it is killed. So the runner clears up itself:
//! everything when no restart follows, and QEMU's sockets only when one
//! does — the restarted runner reads the port plan again. A runner that is
//! killed leaves what it had; the next start, `maqet stop`, `rm` and
//! `doctor --fix` clear that.

use maqet_base::paths::{Layout, VmRuntime};
use maqet_base::units::{START_FAILED_EXIT_STATUS, STOPPED_EXIT_STATUS};
use maqet_config::RestartPolicy;

/// Whether systemd starts the unit again after the runner exits with
/// `code` under `policy` (`RestartPreventExitStatus=` lists the two
/// statuses that end a VM for good; the start limit aside).
pub fn restarted_after(policy: RestartPolicy, code: i32) -> bool {
    if code == STOPPED_EXIT_STATUS || code == START_FAILED_EXIT_STATUS {
        return false;
    }
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::OnFailure => code != 0,
        RestartPolicy::Always => true,
    }
}

/// QEMU's listening sockets in the VM's directory (a new QEMU makes them
/// again).
const QEMU_SOCKETS: &[&str] = &["vnc.sock", "spice.sock", "qga.sock"];

/// Clears `runtime` after the runner's exit with `code`.
pub fn after_exit(runtime: &VmRuntime, policy: RestartPolicy, code: i32) {
    if !restarted_after(policy, code) {
        match runtime.clear() {
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot clear {}: {e}", runtime.dir().display()),
        }
        return;
    }
    let dir = runtime.dir();
    for name in QEMU_SOCKETS {
        // An older unit's agent socket lies beside the directory, where
        // its name may be another VM's: left alone.
        if *name == "qga.sock" && runtime.layout() == Layout::Beside {
            continue;
        }
        let p = dir.join(name);
        if let Err(e) = std::fs::remove_file(&p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove {}: {e}", p.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_exits_are_restarted() {
        use RestartPolicy::*;
        for code in [0, 1, 137, 70] {
            assert!(!restarted_after(No, code));
            assert!(restarted_after(Always, code));
        }
        assert!(!restarted_after(OnFailure, 0));
        assert!(restarted_after(OnFailure, 143));
        for code in [STOPPED_EXIT_STATUS, START_FAILED_EXIT_STATUS] {
            for p in [No, OnFailure, Always] {
                assert!(!restarted_after(p, code), "{p:?} {code}");
            }
        }
    }

    #[test]
    fn a_last_exit_clears_all_and_a_restart_keeps_the_plan() {
        let t = tempfile::tempdir().unwrap();
        let vm = maqet_base::vmname::VmName::new("v").unwrap();
        let rt = VmRuntime::at(t.path(), &vm);
        let fill = || {
            std::fs::create_dir_all(rt.dir()).unwrap();
            for f in ["vnc.sock", "qga.sock", "ports.json"] {
                std::fs::write(rt.dir().join(f), b"").unwrap();
            }
        };
        fill();
        after_exit(&rt, RestartPolicy::OnFailure, 137);
        assert!(rt.ports().exists() && !rt.agent().exists());
        assert!(!rt.dir().join("vnc.sock").exists());
        fill();
        after_exit(&rt, RestartPolicy::Always, STOPPED_EXIT_STATUS);
        assert!(!rt.dir().exists());
    }
}
