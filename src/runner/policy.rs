//! maqet's QMP policy: which forwarded commands the runner refuses.
//!
//! Two classes. [`DENIED`] commands are always refused. Host-exec commands
//! make QEMU start a program on the host (as the user, outside the guest's
//! sandbox); they are refused unless the VM's config sets
//! `qmp_allow_host_exec: true`. Considered and allowed, because none of them
//! starts a host program: `chardev-add`/`chardev-change` (no backend execs),
//! `object-add`, `device_add`, `blockdev-add` (the `ssh` driver uses libssh
//! in-process), `migrate-set-parameters`, `dump-guest-memory`, `screendump`
//! (these write files the user could write anyway).

use serde_json::Value;

use crate::ipc::protocol::{excerpt, valid_qmp_command, ErrorBody, ErrorKind};

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

/// The config key that lets host-exec commands through.
pub const OPT_OUT_KEY: &str = "qmp_allow_host_exec";

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
pub fn host_exec(command: &str, arguments: Option<&Value>) -> Option<&'static str> {
    let args = arguments?;
    match command {
        "migrate" | "migrate-incoming" => migration_exec(args),
        "netdev_add" => netdev_exec(args),
        _ => None,
    }
}

fn str_arg<'a>(args: &'a Value, key: &str) -> Option<&'a str> {
    args.get(key).and_then(Value::as_str)
}

/// QEMU matches `exec:` exactly; refusing any case and leading blanks
/// costs nothing and does not depend on that.
fn is_exec_uri(uri: &str) -> bool {
    uri.trim_start()
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("exec:"))
}

/// `uri: "exec:CMD"` and the newer `channels: [{addr: {transport: "exec", args: […]}}]`.
fn migration_exec(args: &Value) -> Option<&'static str> {
    if str_arg(args, "uri").is_some_and(is_exec_uri) {
        return Some("an exec: URI");
    }
    let channels = args.get("channels").and_then(Value::as_array)?;
    channels
        .iter()
        .filter_map(|c| c.get("addr"))
        .any(|addr| {
            str_arg(addr, "transport").is_some_and(|t| t.trim().eq_ignore_ascii_case("exec"))
                || str_arg(addr, "uri").is_some_and(is_exec_uri)
        })
        .then_some("an exec migration channel")
}

/// tap runs `script`/`downscript` (by default /etc/qemu-ifup and
/// /etc/qemu-ifdown when absent) and `helper`; bridge always runs its
/// helper; user networking runs `smbd` for `smb` and a command for a
/// `guestfwd` rule of the form `…-cmd:COMMAND`.
fn netdev_exec(args: &Value) -> Option<&'static str> {
    let disabled = |key| matches!(str_arg(args, key).map(str::trim), Some("no" | ""));
    match str_arg(args, "type")? {
        "tap" if args.get("helper").is_some() => Some("a tap helper"),
        "tap" if !(disabled("script") && disabled("downscript")) => {
            Some("tap scripts (set script and downscript to \"no\")")
        }
        "bridge" => Some("a bridge (it runs qemu-bridge-helper)"),
        "user" if args.get("smb").is_some() => Some("smb (it runs smbd)"),
        "user" if guestfwd_cmd(args) => Some("a guestfwd command"),
        _ => None,
    }
}

fn guestfwd_cmd(args: &Value) -> bool {
    let has_cmd = |s: &str| s.contains("cmd:");
    match args.get("guestfwd") {
        Some(Value::Array(rules)) => rules.iter().any(|r| match r {
            Value::String(s) => has_cmd(s),
            other => str_arg(other, "str").is_some_and(has_cmd),
        }),
        Some(Value::String(s)) => has_cmd(s),
        _ => false,
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
}
