//! QMP commands: which arguments of which command make QEMU run a host
//! program.

use serde_json::Value;

use super::block;
use super::netdev::{self, Form};
use super::opts::{flatten, values, Val};
use super::Finding;

/// Commands whose arguments carry block driver options or file names QEMU
/// opens (or writes into an image, to be opened later).
const BLOCK_COMMANDS: &[&str] = &[
    "blockdev-add",
    "blockdev-reopen",
    "blockdev-create",
    "x-blockdev-amend",
    "blockdev-change-medium",
    "drive-mirror",
    "drive-backup",
    "blockdev-snapshot-sync",
    "block-commit",
    "block-stream",
    "change-backing-file",
    "transaction",
];

/// What in `arguments` would make QEMU run a host program, if anything.
pub(super) fn check(command: &str, arguments: Option<&Value>) -> Option<Finding> {
    let args = arguments?;
    match command {
        "migrate" | "migrate-incoming" => migration(args),
        "netdev_add" => netdev::check(&flatten(args), Form::Netdev),
        c if BLOCK_COMMANDS.contains(&c) => block::check(&flatten(args)),
        "chardev-add" | "chardev-change" => super::own_descriptor(&flatten(args)),
        "object-add" => {
            let p = flatten(args);
            let vmstate = values(&p, "qom-type").any(|t| t.as_str() == Some("dbus-vmstate"));
            let bad = values(&p, "addr").any(
                |a| !matches!(a, Val::Str(s) if s.split(';').all(|one| one.starts_with("unix:"))),
            );
            (vmstate && bad).then(|| {
                Finding(
                    "dbus-vmstate at an address other than unix: (GLib's autolaunch: runs \
                     dbus-launch)"
                        .into(),
                )
            })
        }
        _ => None,
    }
}

/// `uri: "exec:CMD"` and the newer `channels: [{addr: {transport: "exec", args: […]}}]`.
fn migration(args: &Value) -> Option<Finding> {
    let str_arg = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    if str_arg(args, "uri").is_some_and(|u| super::is_exec_uri(&u)) {
        return Some(Finding("an exec: URI".into()));
    }
    let channels = args.get("channels").and_then(Value::as_array)?;
    channels
        .iter()
        .filter_map(|c| c.get("addr"))
        .any(|addr| {
            str_arg(addr, "transport").is_some_and(|t| t.trim().eq_ignore_ascii_case("exec"))
                || str_arg(addr, "uri").is_some_and(|u| super::is_exec_uri(&u))
        })
        .then(|| Finding("an exec migration channel".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_issue_example_and_its_relatives() {
        let vde = json!({"type": "vde", "id": "v", "sock": "cmd://sh -c \"id > /tmp/f\""});
        assert!(check("netdev_add", Some(&vde)).is_some());
        for (cmd, args) in [
            (
                "blockdev-add",
                json!({"driver": "ssh", "node-name": "s", "server": {"host": "h"}, "path": "/x"}),
            ),
            (
                "blockdev-change-medium",
                json!({"id": "cd", "filename": "rbd:p/i", "format": "raw"}),
            ),
            (
                "blockdev-change-medium",
                json!({"id": "cd", "filename": "/x.iso", "format": "rbd"}),
            ),
            (
                "drive-mirror",
                json!({"device": "d", "target": "ssh://h/x", "sync": "full"}),
            ),
            (
                "blockdev-snapshot-sync",
                json!({"device": "d", "snapshot-file": "json:{\"driver\":\"ssh\"}"}),
            ),
            (
                "block-stream",
                json!({"device": "d", "backing-file": "gluster://h/v/i"}),
            ),
            (
                "transaction",
                json!({"actions": [{"type": "drive-backup", "data": {"device": "d", "target": "ssh://h/x", "sync": "full"}}]}),
            ),
            (
                "blockdev-reopen",
                json!({"options": [{"driver": "raw", "node-name": "n", "file": {"driver": "rbd"}}]}),
            ),
            (
                "blockdev-create",
                json!({"job-id": "j", "options": {"driver": "ssh", "location": {}, "size": 1}}),
            ),
            (
                "object-add",
                json!({"qom-type": "dbus-vmstate", "id": "d", "addr": "autolaunch:"}),
            ),
            ("migrate", json!({"uri": " exec:true"})),
            (
                "chardev-add",
                json!({"id": "c", "backend": {"type": "socket", "data":
                {"addr": {"type": "fd", "data": {"str": "4"}}}}}),
            ),
        ] {
            assert!(check(cmd, Some(&args)).is_some(), "{cmd} {args}");
        }
        for (cmd, args) in [
            (
                "blockdev-add",
                json!({"driver": "qcow2", "node-name": "n", "file": {"driver": "file", "filename": "/x"}}),
            ),
            (
                "blockdev-change-medium",
                json!({"id": "cd", "filename": "/x.iso"}),
            ),
            (
                "device_add",
                json!({"driver": "virtio-blk-pci", "drive": "d"}),
            ),
            (
                "object-add",
                json!({"qom-type": "memory-backend-file", "id": "m", "mem-path": "/x", "size": 1}),
            ),
            (
                "screendump",
                json!({"filename": "/tmp/x.ppm", "format": "ppm"}),
            ),
            (
                "chardev-add",
                json!({"id": "c", "backend": {"type": "socket", "data":
                {"addr": {"type": "unix", "data": {"path": "/tmp/s"}}, "server": false}}}),
            ),
        ] {
            assert!(check(cmd, Some(&args)).is_none(), "{cmd} {args}");
        }
    }
}
