//! VM-to-VM network segments (`networks: [lab]`, issue 19): one
//! `vde_switch` per segment of the user, as `maqet-switch@SEGMENT.service`,
//! shared by every VM of the user that names the segment (in any data
//! directory). QEMU joins it with `-netdev vde,sock=DIR`.
//!
//! - Isolation: the switch's directory is `$XDG_RUNTIME_DIR/maqet/net/
//!   SEGMENT/` (vde_switch makes it 0700, its sockets 0600) inside the
//!   user's 0700 runtime directory, so no other user can reach a socket of
//!   it; nothing is multicast or on the network.
//! - Lifetime: the first VM's start creates the unit in its own
//!   `StartTransientUnit` call (as a companion), later VMs only `Wants=`
//!   and `After=` it; `StopWhenUnneeded=` stops it once no live VM wants
//!   it. Which of the two a start does is decided under a lock of the
//!   segment (`vm::segments`), so two first starts cannot both create it.
//! - Readiness: `vde_switch -d` binds and listens on its control socket
//!   before the parent exits (seen with strace), so `Type=forking` is
//!   active exactly when QEMU can connect. In the foreground it would
//!   exit at the EOF of its stdin.
//! - Its end: not restarted (a new switch would not know the ports of the
//!   QEMUs already connected; they stay cut off until they restart); the
//!   VMs keep running and `maqet network ls` shows the switch failed.

use std::path::Path;

use zbus::zvariant::Value;

use super::CompanionUnit;
use maqet_base::netname::NetName;
use maqet_base::paths::SegmentRuntime;

/// How many VMs one segment takes (vde_switch's ports).
pub const PORTS: u32 = 64;

/// The switch unit of `segment`, to create in a VM's start.
pub fn unit(segment: &NetName, vde_switch: &Path, rt: &SegmentRuntime) -> CompanionUnit {
    let argv = vec![
        "vde_switch".to_string(),
        // Forks once its control socket listens (Type=forking; its one
        // process is the main one, no pid file needed: vde_switch writes
        // one only after the parent exited, and systemd complains).
        "--daemon".into(),
        "--sock".into(),
        rt.dir().to_string_lossy().into_owned(),
        "--mode".into(),
        "600".into(),
        "--dirmode".into(),
        "700".into(),
        "--numports".into(),
        PORTS.to_string(),
        // No management console: nothing but maqet's VMs talks to it.
        "--rcfile".into(),
        "/dev/null".into(),
    ];
    let exe = vde_switch.to_string_lossy().into_owned();
    let props = vec![
        (
            "Description",
            Value::from(format!("maqet network {segment} (vde_switch)")),
        ),
        (
            "Slice",
            Value::from(crate::systemd::properties::SLICE.to_string()),
        ),
        ("Type", Value::from("forking".to_string())),
        ("ExecStart", Value::from(vec![(exe, argv, false)])),
        ("SyslogIdentifier", Value::from("vde_switch".to_string())),
        // Up while a live VM wants it, gone after the last one.
        ("StopWhenUnneeded", Value::from(true)),
        ("CollectMode", Value::from("inactive-or-failed".to_string())),
        (
            "LogExtraFields",
            Value::from(vec![format!("MAQET_NETWORK={segment}").into_bytes()]),
        ),
    ];
    CompanionUnit {
        name: segment.switch_unit(),
        props,
    }
}

/// QEMU's side: a NIC on the segment's switch. `index` numbers the VM's
/// segments (netdev ids), `mac` is the NIC's address.
pub fn qemu_args(index: usize, rt: &SegmentRuntime, mac: &str) -> Vec<String> {
    // A plain directory path: libvdeplug reads `NAME://` as a plugin to
    // load (its cmd:// runs programs); segment names and the runtime
    // directory hold no "://" (NetName allows no ':' or '/').
    let sock = rt.dir().to_string_lossy().replace(',', ",,");
    vec![
        "-netdev".into(),
        format!("vde,id=maqet-lan{index},sock={sock}"),
        "-device".into(),
        format!("virtio-net-pci,netdev=maqet-lan{index},mac={mac}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::systemd::properties::prop as get;

    #[test]
    fn the_switch_is_private_forking_and_stops_when_unneeded() {
        let lab = NetName::new("lab").unwrap();
        let rt = SegmentRuntime::at(Path::new("/run/u/maqet/net"), &lab);
        let u = unit(&lab, Path::new("/usr/bin/vde_switch"), &rt);
        assert_eq!(u.name, "maqet-switch@lab.service");
        assert_eq!(get(&u.props, "Type"), &Value::from("forking".to_string()));
        assert_eq!(get(&u.props, "StopWhenUnneeded"), &Value::from(true));
        let exec = format!("{:?}", get(&u.props, "ExecStart"));
        for want in [
            r#"Str("--sock"), Str("/run/u/maqet/net/lab")"#,
            r#"Str("--mode"), Str("600"), Str("--dirmode"), Str("700")"#,
            r#"Str("--daemon")"#,
        ] {
            assert!(exec.contains(want), "{want} in {exec}");
        }
        // Nothing binds it to one VM: it serves all of them.
        assert!(!u
            .props
            .iter()
            .any(|(k, _)| *k == "BindsTo" || *k == "PartOf"));
        let a = qemu_args(1, &rt, "52:54:00:01:02:03");
        assert_eq!(a[1], "vde,id=maqet-lan1,sock=/run/u/maqet/net/lab");
        assert_eq!(
            a[3],
            "virtio-net-pci,netdev=maqet-lan1,mac=52:54:00:01:02:03"
        );
    }
}
