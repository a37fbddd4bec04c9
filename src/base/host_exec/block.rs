//! Block drivers and image file names (`blockdev-add` and the other block
//! commands, `-drive`, `-blockdev`, `-cdrom`, …): allow-lists of drivers
//! and of the protocols QEMU reads from a file name's prefix.

use super::opts::{flatten, last_name, Pairs, Val};
use super::Finding;

/// Drivers that run no program and load no plugin of the host's choosing.
/// Left out: `ssh` (libssh reads ~/.ssh/config and /etc/ssh/ssh_config,
/// whose ProxyCommand and `Match exec` run commands, with the host name
/// substituted into them), `rbd` (librados loads plugins from directories
/// its options name) and `gluster` (the server's volume file names the
/// translator libraries the client loads).
const DRIVERS: &[&str] = &[
    "raw",
    "qcow2",
    "qcow",
    "qed",
    "vmdk",
    "vdi",
    "vhdx",
    "vpc",
    "parallels",
    "bochs",
    "cloop",
    "dmg",
    "luks",
    "file",
    "host_device",
    "host_cdrom",
    "http",
    "https",
    "ftp",
    "ftps",
    "nbd",
    "iscsi",
    "nfs",
    "nvme",
    "nvme-io_uring",
    "io_uring",
    "virtio-blk-vfio-pci",
    "virtio-blk-vhost-user",
    "virtio-blk-vhost-vdpa",
    "vvfat",
    "null-co",
    "null-aio",
    "throttle",
    "copy-on-read",
    "copy-before-write",
    "compress",
    "preallocate",
    "snapshot-access",
    "blkdebug",
    "blkverify",
    "blklogwrites",
    "blkreplay",
    "quorum",
    "replication",
];

/// `PROTOCOL:` prefixes of file names that select one of the drivers
/// above. `blkdebug:`/`blkverify:` are left out: they wrap a second file
/// name that would need the same reading again.
const PROTOCOLS: &[&str] = &[
    "file",
    "host_device",
    "host_cdrom",
    "http",
    "https",
    "ftp",
    "ftps",
    "nbd",
    "nbd+tcp",
    "nbd+unix",
    "iscsi",
    "iser",
    "nfs",
    "nvme",
    "fat",
    "null-co",
    "null-aio",
];

/// Keys whose value names a driver.
const DRIVER_KEYS: &[&str] = &["driver", "format"];

/// Keys whose string value QEMU may open as a file name (with its
/// protocol prefix) or write into an image as one (`backing-file`). Node
/// names cannot contain ':' or '/', so checking a node reference here
/// never refuses one.
const FILE_KEYS: &[&str] = &[
    "file",
    "filename",
    "target",
    "snapshot-file",
    "backing-file",
    "backing",
    "data-file",
    "image",
    "test",
    "raw",
    "children",
    "base",
    "top",
];

/// `json:` file names nest; deeper than this is refused.
const MAX_DEPTH: usize = 8;

/// Every driver and every file name among `p`.
pub(super) fn check(p: &Pairs) -> Option<Finding> {
    check_depth(p, 0)
}

fn check_depth(p: &Pairs, depth: usize) -> Option<Finding> {
    for (k, v) in p {
        let Val::Str(s) = v else { continue };
        let name = last_name(k);
        if DRIVER_KEYS.contains(&name) && !DRIVERS.contains(&s.as_str()) {
            return Some(driver(s));
        }
        if FILE_KEYS.contains(&name) {
            if let Some(f) = filename_depth(s, depth) {
                return Some(f);
            }
        }
    }
    None
}

fn driver(d: &str) -> Finding {
    Finding(match d {
        "ssh" => "block driver 'ssh': libssh reads the ssh configuration, whose \
                  ProxyCommand and Match exec run commands"
            .into(),
        "rbd" => "block driver 'rbd': librados loads plugins its options point to".into(),
        "gluster" => "block driver 'gluster': the server's volume file names libraries \
                      the client loads"
            .into(),
        _ => format!(
            "block driver '{}': not one maqet allows without the opt-out",
            super::shown(d)
        ),
    })
}

/// A file name as QEMU's block layer reads it: `json:{…}` is options,
/// `NAME:` before any '/' selects a protocol driver by name.
pub(super) fn filename(s: &str) -> Option<Finding> {
    filename_depth(s, 0)
}

fn filename_depth(s: &str, depth: usize) -> Option<Finding> {
    if let Some(json) = s.strip_prefix("json:") {
        if depth >= MAX_DEPTH {
            return Some(Finding("json: file names nested too deeply".into()));
        }
        return match serde_json::from_str::<serde_json::Value>(json) {
            Ok(v) => check_depth(&flatten(&v), depth + 1),
            Err(e) => Some(Finding(format!(
                "a json: file name maqet cannot read, so cannot check ({e})"
            ))),
        };
    }
    let protocol = match s.find([':', '/']) {
        Some(i) if s.as_bytes()[i] == b':' => &s[..i],
        _ => return None,
    };
    if PROTOCOLS.contains(&protocol) {
        return None;
    }
    Some(match protocol {
        "ssh" | "rbd" | "gluster" => driver(protocol),
        p if p.starts_with("gluster+") => driver("gluster"),
        _ => Finding(format!(
            "file name '{}': QEMU reads '{}:' as a protocol, and maqet allows only {} without the \
             opt-out (write a plain path as ./NAME or /PATH)",
            super::shown(s),
            super::shown(protocol),
            PROTOCOLS.join(" ")
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::super::opts::{parse, Syntax};
    use super::*;
    use serde_json::json;

    const DRIVE: Syntax = Syntax {
        implied: Some("file"),
        json: false,
    };

    fn drive(s: &str) -> Option<Finding> {
        check(&parse(s, DRIVE).unwrap())
    }

    #[test]
    fn drivers_and_protocols_are_allow_lists() {
        for bad in [
            "file=ssh://h/x",
            "file=rbd:pool/img",
            "file=gluster+tcp://h/v/i",
            "file=blkdebug:/cfg:ssh://h/x",
            "ssh://h/x",
            "file.driver=ssh,file.host=h,file.path=/x",
            "driver=ssh,host=h,path=/x",
            "format=rbd,file=x",
            r#"file=json:{"driver":"ssh",,"host":"h",,"path":"/x"}"#,
            // Unescaped commas end the value: QEMU cannot read the rest either.
            r#"file=json:{"driver":"raw","file":"/x"}"#,
            r#"file=json:{"file":{"filename":"ssh://h/x"}}"#,
            r#"file=json:{"file.driver":"rbd"}"#,
            "file=json:{broken",
            "file=weird:thing",
        ] {
            assert!(drive(bad).is_some(), "{bad}");
        }
        for ok in [
            "file=/var/lib/x.qcow2,if=virtio,format=qcow2",
            "file=./a:b.img,format=raw",
            "file=nbd:unix:/run/nbd.sock",
            "file=https://example.org/x.iso,media=cdrom",
            "file=fat:rw:/srv/dir",
            "file=file:/x:y,format=raw",
            r#"file=json:{"driver":"qcow2",,"file":{"driver":"file",,"filename":"/x"}}"#,
        ] {
            assert!(drive(ok).is_none(), "{ok}");
        }
    }

    #[test]
    fn qmp_trees_are_walked_at_every_depth() {
        let add = json!({"driver": "qcow2", "node-name": "n",
            "file": {"driver": "file", "filename": "/x"},
            "backing": {"driver": "raw", "file": {"driver": "ssh", "server": {"host": "h"}, "path": "/y"}}});
        assert!(check(&flatten(&add)).unwrap().0.contains("ssh"));
        let quorum = json!({"driver": "quorum", "vote-threshold": 1,
            "children": ["n1", {"driver": "rbd", "pool": "p", "image": "i"}]});
        assert!(check(&flatten(&quorum)).is_some());
        let mirror = json!({"device": "d", "target": "gluster://h/v/i", "sync": "full"});
        assert!(check(&flatten(&mirror)).is_some());
        let fine = json!({"driver": "qcow2", "node-name": "n", "file": "f1", "backing": null});
        assert!(check(&flatten(&fine)).is_none());
        let deep = (0..10).fold("{}".to_string(), |acc, _| {
            format!(
                "{{\"driver\":\"raw\",\"file\":\"json:{}\"}}",
                acc.replace('"', "\\\"")
            )
        });
        assert!(filename(&format!("json:{deep}")).is_some());
    }
}
