//! Network backends (`netdev_add`, `-netdev`, `-nic`, `-net`): an
//! allow-list of types, and of options where a type can run programs.

use super::opts::{values, Pairs, Val};
use super::Finding;

/// Backend types that run no host program (QEMU 7.2 offers these plus
/// `vde` and `bridge`). `tap` and `user` have further rules below.
const TYPES: &[&str] = &[
    "user",
    "tap",
    "socket",
    "stream",
    "dgram",
    "hubport",
    "l2tpv3",
    "vhost-user",
    "vhost-vdpa",
];

/// What a tap may say. Everything else is refused: `helper` (a program QEMU
/// runs), the fd options (descriptors QEMU has are maqet's own), and any
/// spelling QEMU might read as one of those.
const TAP_KEYS: &[&str] = &[
    "type",
    "id",
    "ifname",
    "script",
    "downscript",
    "vhost",
    "vhostforce",
    "queues",
    "sndbuf",
    "vnet_hdr",
    "poll-us",
    // -nic and -net add the guest side.
    "model",
    "mac",
    "macaddr",
    "name",
];

/// Targets a `guestfwd` may forward to: sockets. `cmd:` runs a program for
/// every connection and `mon:` gives the guest a QEMU monitor.
const GUESTFWD_TARGETS: &[&str] = &["tcp:", "unix:", "udp:", "telnet:"];

/// Which option the pairs came from: `-nic` also takes `none`, `-net` also
/// `nic` and `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Form {
    Netdev,
    Nic,
    Net,
}

pub(super) fn check(p: &Pairs, form: Form) -> Option<Finding> {
    for t in values(p, "type") {
        let Some(t) = t.as_str() else {
            continue;
        };
        let extra: &[&str] = match form {
            Form::Netdev => &[],
            Form::Nic => &["none"],
            Form::Net => &["nic", "none"],
        };
        if !TYPES.contains(&t) && !extra.contains(&t) {
            return Some(Finding(match t {
                "vde" => "netdev type 'vde': libvdeplug picks a plugin by the socket's \
                          name, and its cmd:// plugin runs a host command"
                    .into(),
                "bridge" => "netdev type 'bridge': QEMU runs qemu-bridge-helper".into(),
                _ => format!(
                    "netdev type '{}': maqet allows {} without the opt-out",
                    super::shown(t),
                    TYPES.join(", ")
                ),
            }));
        }
        let found = match t {
            "tap" => tap(p),
            "user" => user(p),
            "socket" | "stream" | "dgram" | "vhost-vdpa" => super::own_descriptor(p),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

fn tap(p: &Pairs) -> Option<Finding> {
    if let Some((k, _)) = p.iter().find(|(k, _)| !TAP_KEYS.contains(&k.as_str())) {
        return Some(Finding(match k.as_str() {
            "helper" => "a tap with a helper: QEMU runs the helper program".into(),
            "fd" | "fds" | "vhostfd" | "vhostfds" => format!(
                "a tap with '{k}': QEMU would take one of its own descriptors (maqet passes none)"
            ),
            _ => format!(
                "tap option '{}': maqet allows only {} on a tap without the opt-out",
                super::shown(k),
                TAP_KEYS.join(", ")
            ),
        }));
    }
    // QEMU runs a script unless the value is exactly "no" (or empty); it
    // trims nothing, and an absent key means /etc/qemu-ifup and -ifdown.
    let off = |key| {
        let mut any = false;
        let all_off = values(p, key).all(|v| {
            any = true;
            matches!(v, Val::Str(s) if s == "no" || s.is_empty())
        });
        any && all_off
    };
    if !(off("script") && off("downscript")) {
        return Some(Finding(
            "a tap without script=no and downscript=no: QEMU runs the scripts (by default \
             /etc/qemu-ifup and /etc/qemu-ifdown); only the exact value \"no\" turns one off"
                .into(),
        ));
    }
    None
}

fn user(p: &Pairs) -> Option<Finding> {
    if values(p, "smb").next().is_some() {
        return Some(Finding("user networking with smb: QEMU runs smbd".into()));
    }
    for (k, v) in p {
        if k != "guestfwd" && !k.starts_with("guestfwd.") {
            continue;
        }
        let Some(rule) = v.as_str() else { continue };
        // `[tcp]:ADDR:PORT-TARGET`; the address is IPv4, so the first '-'
        // ends the port (a malformed rule only gets refused sooner).
        let target = rule.split_once('-').map_or("", |(_, t)| t);
        if !GUESTFWD_TARGETS.iter().any(|t| {
            target
                .get(..t.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(t))
        }) {
            return Some(Finding(format!(
                "a guestfwd to '{}': only {} targets are allowed (cmd: runs a host command, \
                 mon: hands the guest a QEMU monitor)",
                super::shown(target),
                GUESTFWD_TARGETS.join(" ")
            )));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::opts::{flatten, parse, Syntax};
    use super::*;
    use serde_json::json;

    const KV: Syntax = Syntax {
        implied: Some("type"),
        json: true,
    };

    fn opt(s: &str, form: Form) -> Option<Finding> {
        check(&parse(s, KV).unwrap(), form)
    }

    #[test]
    fn types_are_an_allow_list() {
        for bad in [
            "vde,id=v,sock=cmd://sh",
            "vde,id=v,sock=/run/vde.ctl",
            "bridge,id=b",
            "passt,id=p",
            "Tap,id=t",
            "none",
        ] {
            assert!(opt(bad, Form::Netdev).is_some(), "{bad}");
        }
        assert!(opt("none", Form::Nic).is_none());
        assert!(opt("nic,model=e1000", Form::Net).is_none());
        assert!(opt("nic", Form::Nic).is_some());
        for bad in [
            "socket,id=s,fd=4",
            "stream,id=s,addr.type=fd,addr.str=4",
            "dgram,id=d,local.type=fd,local.str=5",
            "vhost-vdpa,id=v,vhostfd=4",
        ] {
            assert!(opt(bad, Form::Netdev).is_some(), "{bad}");
        }
        for ok in [
            "user,id=n,hostfwd=tcp::2222-:22",
            "socket,id=s,listen=:1234",
            "stream,id=s,addr.type=unix,addr.path=/s",
            "hubport,id=h,hubid=0",
            "vhost-user,id=v,chardev=c",
        ] {
            assert!(opt(ok, Form::Netdev).is_none(), "{ok}");
        }
        let vde = json!({"type": "vde", "id": "v", "sock": "cmd://sh -c \"id > /tmp/x\""});
        assert!(check(&flatten(&vde), Form::Netdev)
            .unwrap()
            .0
            .contains("cmd://"));
    }

    #[test]
    fn tap_scripts_are_off_only_when_exactly_no() {
        for bad in [
            "tap,id=t",
            "tap,id=t,script=no",
            "tap,id=t,script= no,downscript=no",
            "tap,id=t,script=no ,downscript=no",
            "tap,id=t,script=NO,downscript=no",
            "tap,id=t,script=no,downscript=no,script=/bin/x",
            "tap,id=t,script,downscript=no",
            "tap,id=t,noscript,downscript=no",
            "tap,id=t,script=no,downscript=no,helper=/usr/lib/qemu/qemu-bridge-helper",
            "tap,id=t,script=no,downscript=no,fd=4",
            "tap,id=t,script=no,downscript=no,vhostfds=4:5",
        ] {
            assert!(opt(bad, Form::Netdev).is_some(), "{bad}");
        }
        assert!(opt("tap,id=t,ifname=tap0,script=no,downscript=no", Form::Netdev).is_none());
        assert!(opt("tap,id=t,script=,downscript=no,vhost=on", Form::Netdev).is_none());
        assert!(opt("tap,model=virtio,script=no,downscript=no", Form::Nic).is_none());
        let qmp = json!({"type": "tap", "id": "t", "script": true, "downscript": "no"});
        assert!(check(&flatten(&qmp), Form::Netdev).is_some());
    }

    #[test]
    fn user_networking_runs_nothing() {
        for bad in [
            "user,id=u,smb=/srv",
            "user,id=u,guestfwd=tcp:10.0.2.100:1-cmd:nc x 1",
            "user,id=u,guestfwd=tcp:10.0.2.100:1-mon:stdio",
            "user,id=u,guestfwd=tcp:10.0.2.100:1-tcp:1.2.3.4:5,guestfwd=:10.0.2.9:2-cmd:sh",
            "user,id=u,guestfwd=tcp:10.0.2.100:1",
            // QemuOpts' short form: smb=off, and QEMU runs smbd for "off".
            "user,id=u,nosmb",
        ] {
            assert!(opt(bad, Form::Netdev).is_some(), "{bad}");
        }
        assert!(opt(
            "user,id=u,guestfwd=tcp:10.0.2.100:1-tcp:127.0.0.1:80",
            Form::Netdev
        )
        .is_none());
        let qmp =
            json!({"type": "user", "id": "u", "guestfwd": [{"str": "tcp:10.0.2.100:1-cmd:true"}]});
        assert!(check(&flatten(&qmp), Form::Netdev).is_some());
    }
}
