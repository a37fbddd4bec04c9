//! `network: passt`: `maqet-net@NAME.service` runs passt, which gives the
//! guest the host's addresses, routes and DNS (its own DHCP, NDP and
//! DHCPv6) and carries the guest's traffic over the host's ordinary
//! sockets, as the user; QEMU connects to it with `-netdev stream` on
//! `net.sock` in the VM's runtime directory.
//!
//! passt binds that socket itself (Debian 12's passt takes no listening
//! socket from systemd: `-F` is a connected one), so there is no socket
//! unit: the relay runs passt in the foreground (`-f`, its lines to the
//! journal with the VM's fields) and tells systemd it is ready
//! (`Type=notify`) once the socket listens, so QEMU — ordered after the
//! unit — never connects too early. `UMask=0177` makes the socket 0600.
//!
//! The port forwards are passt's (`-t`/`-u`, bound to the loopback address of each forward),
//! from the start's port plan; passt cannot change them while it runs.

use std::path::Path;

use zbus::zvariant::Value;

use super::{common_service_props, CompanionUnit, Companions};
use crate::ports::PortPlan;
use maqet_base::vmname::VmName;

pub fn service_unit(vm: &VmName) -> String {
    maqet_base::units::net_service(vm.as_str())
}

/// passt's arguments: foreground, lines to stderr (the relay's pipe), the
/// socket QEMU connects to, and exactly the plan's forwards. `none` where
/// there are none: passt forwards UDP ports matching TCP ones unless told.
pub fn passt_args(socket: &Path, plan: &PortPlan) -> Vec<String> {
    let mut args = vec![
        "--foreground".to_string(),
        "--stderr".into(),
        "--socket".into(),
        socket.to_string_lossy().into_owned(),
    ];
    for (flag, proto) in [("--tcp-ports", "tcp"), ("--udp-ports", "udp")] {
        let mut any = false;
        for f in plan.forwards.iter().filter(|f| f.protocol == proto) {
            args.push(flag.into());
            args.push(format!("{}/{}:{}", f.host_addr, f.host_port, f.guest_port));
            any = true;
        }
        if !any {
            args.extend([flag.to_string(), "none".to_string()]);
        }
    }
    args
}

/// The QEMU options of the NIC on passt's socket.
pub fn netdev_argv(vm: &str, socket: &Path) -> Vec<String> {
    vec![
        "-netdev".into(),
        format!(
            "stream,id=maqet-net,server=off,addr.type=unix,addr.path={}",
            socket.to_string_lossy().replace(',', ",,")
        ),
        "-device".into(),
        format!(
            "virtio-net-pci,netdev=maqet-net,mac={}",
            crate::ports::mac_for(vm)
        ),
    ]
}

/// The passt unit of `vm` with the forwards of `plan`.
pub fn units(
    vm: &VmName,
    passt: &Path,
    plan: &PortPlan,
    runner: &Path,
    runtime_dir: &Path,
    data_dir: &Path,
) -> Companions {
    let service = service_unit(vm);
    let socket = maqet_base::paths::passt_socket(runtime_dir);
    let mut sp = common_service_props(vm, format!("maqet VM {} network (passt)", vm.as_str()));
    let relay_opts = vec![
        "--ready-socket".to_string(),
        socket.to_string_lossy().into_owned(),
    ];
    sp.extend([
        // Ready when passt's socket listens (the relay says so).
        ("Type", Value::from("notify".to_string())),
        ("NotifyAccess", Value::from("main".to_string())),
        (
            "ExecStart",
            super::relayed(runner, vm, &relay_opts, passt, passt_args(&socket, plan)),
        ),
        // passt creates its socket with the umask's mode: 0600.
        ("UMask", Value::from(0o177u32)),
    ]);
    sp.extend(super::helper_props(vm, &service, "passt", runner, data_dir));
    Companions {
        units: vec![CompanionUnit {
            name: service.clone(),
            props: sp,
        }],
        want: vec![service],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Forward;

    use crate::systemd::properties::prop as get;

    fn fwd(protocol: &str, host_port: u16, guest_port: u16) -> Forward {
        let protocol = match protocol {
            "udp" => maqet_config::Protocol::Udp,
            _ => maqet_config::Protocol::Tcp,
        };
        Forward::new(protocol, host_port, guest_port)
    }

    #[test]
    fn forwards_are_passts_on_loopback_only() {
        let s = Path::new("/r/net.sock");
        let plan = PortPlan {
            forwards: vec![
                fwd("tcp", 2222, 22),
                fwd("udp", 5353, 53),
                fwd("tcp", 8080, 80),
            ],
            ssh_port: Some(2222),
        };
        assert_eq!(
            passt_args(s, &plan),
            [
                "--foreground",
                "--stderr",
                "--socket",
                "/r/net.sock",
                "--tcp-ports",
                "127.0.0.1/2222:22",
                "--tcp-ports",
                "127.0.0.1/8080:80",
                "--udp-ports",
                "127.0.0.1/5353:53",
            ]
        );
        // Nothing forwarded: nothing listens (passt would add UDP twins).
        let none = passt_args(s, &PortPlan::default());
        assert_eq!(&none[4..], ["--tcp-ports", "none", "--udp-ports", "none"]);
    }

    #[test]
    fn the_unit_is_ready_when_the_socket_listens() {
        let vm = VmName::new("n").unwrap();
        let c = units(
            &vm,
            Path::new("/usr/bin/passt"),
            &PortPlan::default(),
            Path::new("/usr/bin/maqet-runner"),
            Path::new("/run/u/maqet/vm/n"),
            Path::new("/d"),
        );
        assert_eq!(c.names(), vec!["maqet-net@n.service"]);
        assert_eq!(c.want, vec!["maqet-net@n.service"]);
        let p = &c.units[0].props;
        assert_eq!(get(p, "Type"), &Value::from("notify".to_string()));
        assert_eq!(get(p, "UMask"), &Value::from(0o177u32));
        assert_eq!(
            get(p, "BindsTo"),
            &Value::from(vec!["maqet-vm@n.service".to_string()])
        );
        let exec = format!("{:?}", get(p, "ExecStart"));
        assert!(
            exec.contains(r#"Str("--relay"), Str("n"), Str("--ready-socket"), Str("/run/u/maqet/vm/n/net.sock"), Str("--"), Str("/usr/bin/passt")"#),
            "{exec}"
        );
        let net = netdev_argv("n", Path::new("/r,x/net.sock"));
        assert_eq!(
            net[1],
            "stream,id=maqet-net,server=off,addr.type=unix,addr.path=/r,,x/net.sock"
        );
        assert!(net[3].starts_with("virtio-net-pci,netdev=maqet-net,mac=52:54:00:"));
    }
}
