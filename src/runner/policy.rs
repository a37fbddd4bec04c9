//! maqet's QMP policy: which forwarded commands the runner refuses.
//!
//! Three classes. [`DENIED`] commands are always refused. Host-exec
//! commands make QEMU start a program on the host (as the user, outside
//! the guest's sandbox) or load a plugin; what counts is decided by
//! [`maqet_base::host_exec`], the same reading of QEMU the config checks use,
//! and they are refused unless the VM's config sets
//! `qmp_allow_host_exec: true`. Commands that make QEMU open a host file
//! by name to write it (`screendump`, `dump-guest-memory`, …) are refused
//! when that name is an existing FIFO, socket, device or directory: QEMU
//! opens it in its main loop, and a FIFO nobody reads blocks `open()` for
//! ever (the watchdog then kills the VM).

use std::path::Path;

use serde_json::Value;

use maqet_host::ipc::protocol::{excerpt, valid_qmp_command, ErrorBody, ErrorKind};

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

/// Commands that make QEMU open a file by name for writing: the command,
/// the argument holding the name, and a prefix QEMU strips from it.
const WRITES_FILE: &[(&str, &str, &str)] = &[
    ("screendump", "filename", ""),
    ("memsave", "filename", ""),
    ("pmemsave", "filename", ""),
    ("dump-guest-memory", "protocol", "file:"),
    ("xen-save-devices-state", "filename", ""),
    ("dump-skeys", "filename", ""),
];

/// The config key that lets host-exec commands through.
pub const OPT_OUT_KEY: &str = maqet_base::host_exec::OPT_OUT_KEY;

/// Checks a command before it is forwarded to QEMU.
pub fn check(
    command: &str,
    arguments: Option<&Value>,
    allow_host_exec: bool,
) -> Result<(), ErrorBody> {
    if !valid_qmp_command(command) {
        return Err(ErrorBody::new(
            ErrorKind::BadRequest,
            format!(
                "'{}' is not a QMP command name (lower-case letters, digits, '-' and '_')",
                excerpt(command, 64)
            ),
        ));
    }
    if let Some((_, why)) = DENIED.iter().find(|(c, _)| *c == command) {
        return Err(ErrorBody::new(
            ErrorKind::Policy,
            format!("maqet does not forward '{command}': {why}"),
        ));
    }
    special_file(command, arguments)?;
    if allow_host_exec {
        return Ok(());
    }
    match host_exec(command, arguments) {
        Some(what) => Err(ErrorBody::new(
            ErrorKind::Policy,
            format!(
                "maqet does not forward '{command}' with {what}: it makes QEMU run a program on the host; set `{OPT_OUT_KEY}: true` in the VM's config to allow it"
            ),
        )),
        None => Ok(()),
    }
}

/// What in `arguments` would make QEMU execute a host program, if anything.
pub fn host_exec(
    command: &str,
    arguments: Option<&Value>,
) -> Option<maqet_base::host_exec::Finding> {
    maqet_base::host_exec::qmp_command(command, arguments)
}

/// Refuses a file QEMU would open for writing when it exists and is not a
/// regular file. The name is looked up as QEMU will (from the runner's
/// working directory, which QEMU shares, through symlinks); a file made in
/// between by the same user only hurts that user's own VM.
fn special_file(command: &str, arguments: Option<&Value>) -> Result<(), ErrorBody> {
    let Some((_, key, prefix)) = WRITES_FILE.iter().find(|(c, ..)| *c == command) else {
        return Ok(());
    };
    let Some(name) = arguments
        .and_then(|a| a.get(*key))
        .and_then(Value::as_str)
        .and_then(|n| n.strip_prefix(prefix))
    else {
        return Ok(());
    };
    match std::fs::metadata(Path::new(name)) {
        Ok(m) if !m.is_file() => Err(ErrorBody::new(
            ErrorKind::Policy,
            format!(
                "maqet does not forward '{command}' to '{}': it is {}, not a regular file (QEMU would block opening it, or write into it)",
                excerpt(name, 200),
                maqet_base::files::kind(&m)
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(command: &str, args: Value) -> ErrorBody {
        check(command, Some(&args), false).unwrap_err()
    }

    #[test]
    fn names_and_denied_commands() {
        assert!(check("query-status", None, false).is_ok());
        assert!(check("system_powerdown", None, false).is_ok());
        let e = check("human-monitor-command", None, true).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Policy, "the opt-out does not cover HMP");
        let e = check("Query Status", None, false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        let long = "X".repeat(100_000);
        let e = check(&long, None, false).unwrap_err();
        assert!(e.message.len() < 300, "{}", e.message.len());
    }

    #[test]
    fn migration_to_a_command_is_refused_in_every_spelling() {
        for (cmd, args) in [
            ("migrate", json!({"uri": "exec:touch /tmp/x"})),
            ("migrate", json!({"uri": "  EXEC:true"})),
            ("migrate-incoming", json!({"uri": "exec:cat /tmp/x"})),
            (
                "migrate",
                json!({"channels": [{"channel-type": "main",
                    "addr": {"transport": "exec", "args": ["sh", "-c", "true"]}}]}),
            ),
            (
                "migrate-incoming",
                json!({"channels": [{"channel-type": "main",
                    "addr": {"transport": "exec", "args": ["true"]}}]}),
            ),
        ] {
            let e = refused(cmd, args.clone());
            assert_eq!(e.kind, ErrorKind::Policy, "{cmd} {args}");
            assert!(e.message.contains(OPT_OUT_KEY), "{}", e.message);
            assert!(
                check(cmd, Some(&args), true).is_ok(),
                "opt-out: {cmd} {args}"
            );
        }
        for ok in [
            json!({"uri": "tcp:127.0.0.1:4444"}),
            json!({"uri": "file:/tmp/vm.state"}),
            json!({"channels": [{"channel-type": "main",
                "addr": {"transport": "socket", "type": "unix", "path": "/tmp/s"}}]}),
            json!({"uri": 5}),
            json!({"channels": "nonsense"}),
        ] {
            assert!(check("migrate", Some(&ok), false).is_ok(), "{ok}");
        }
    }

    #[test]
    fn netdevs_that_run_host_programs_are_refused() {
        for args in [
            json!({"type": "tap", "id": "n"}),
            json!({"type": "tap", "id": "n", "script": "/bin/evil", "downscript": "no"}),
            json!({"type": "tap", "id": "n", "script": "no"}),
            json!({"type": "tap", "id": "n", "script": "no", "downscript": "no", "helper": "/x"}),
            json!({"type": "bridge", "id": "n", "br": "br0"}),
            json!({"type": "user", "id": "n", "smb": "/srv"}),
            json!({"type": "user", "id": "n", "guestfwd": [{"str": "tcp:10.0.2.100:1-cmd:nc x 1"}]}),
            // The issue's example: libvdeplug's cmd:// plugin runs the command.
            json!({"type": "vde", "id": "v", "sock": "cmd://sh -c \"id > /tmp/f\""}),
            // QEMU does not trim: " no" is a script named " no".
            json!({"type": "tap", "id": "n", "script": " no", "downscript": "no"}),
        ] {
            assert_eq!(
                refused("netdev_add", args.clone()).kind,
                ErrorKind::Policy,
                "{args}"
            );
        }
        for args in [
            json!({"type": "tap", "id": "n", "ifname": "tap0", "script": "no", "downscript": "no"}),
            json!({"type": "user", "id": "n", "hostfwd": [{"str": "tcp::2222-:22"}]}),
            json!({"type": "user", "id": "n", "guestfwd": [{"str": "tcp:10.0.2.100:1-tcp:1.2.3.4:5"}]}),
            json!({"type": "stream", "id": "n"}),
        ] {
            assert!(check("netdev_add", Some(&args), false).is_ok(), "{args}");
        }
    }

    #[test]
    fn writes_to_special_files_are_refused_whatever_the_opt_out() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        maqet_base::files::mkfifo(&fifo).unwrap();
        let f = fifo.to_str().unwrap();
        for (cmd, args) in [
            ("screendump", json!({"filename": f})),
            (
                "screendump",
                json!({"filename": "/dev/null", "format": "png"}),
            ),
            ("screendump", json!({"filename": d.path()})),
            ("pmemsave", json!({"val": 0, "size": 1, "filename": f})),
            (
                "dump-guest-memory",
                json!({"paging": false, "protocol": format!("file:{f}")}),
            ),
        ] {
            let e = check(cmd, Some(&args), true).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Policy, "{cmd} {args}");
            assert!(e.message.contains("not a regular file"), "{}", e.message);
        }
        let new = d.path().join("new.ppm");
        assert!(check("screendump", Some(&json!({"filename": new})), false).is_ok());
        std::fs::write(&new, "x").unwrap();
        assert!(check("screendump", Some(&json!({"filename": new})), false).is_ok());
        assert!(check(
            "dump-guest-memory",
            Some(&json!({"paging": false, "protocol": "fd:x"})),
            false
        )
        .is_ok());
    }
}
