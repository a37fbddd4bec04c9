//! Port forwards (issue 11): `ports:` and the automatic ssh port, chosen at
//! start, checked for collisions (naming the port), rendered as user-mode
//! `hostfwd`, and published in a runtime file that the runner (QEMU's argv,
//! `STATUS=`), `maqet ports` and `maqet status` read.
//!
//! Forwards listen on 127.0.0.1 only: a VM's services are the user's, not
//! the network's. The file is `$XDG_RUNTIME_DIR/maqet/vm/VM/ports.json`,
//! in the VM's runtime directory (0700; [`crate::paths::VmRuntime`]): it
//! is written by every start, read again by automatic restarts, and gone
//! with the directory when the VM ends.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{GuestSetup, Protocol};

/// The address every forward listens on.
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// The guest port `ssh: true` forwards to.
pub const SSH_GUEST_PORT: u16 = 22;

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("port {port}/{protocol} on 127.0.0.1 is already in use ({source}); pick another host port in `ports:` or stop whatever holds it (ss -ltnup 'sport = :{port}')")]
    Taken {
        port: u16,
        protocol: &'static str,
        source: std::io::Error,
    },
    #[error("port {port}/{protocol} on 127.0.0.1 is below {start} (net.ipv4.ip_unprivileged_port_start): binding it needs privileges a user's VM does not have; pick a host port from {start} up in `ports:`")]
    Privileged {
        port: u16,
        protocol: &'static str,
        start: u16,
    },
    #[error("cannot find a free port for ssh on 127.0.0.1: {0}")]
    NoFreePort(std::io::Error),
    #[error("cannot write the port plan {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the port plan {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the port plan {} is damaged: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// One forward as QEMU gets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    pub protocol: String,
    pub host_port: u16,
    pub guest_port: u16,
}

impl Forward {
    fn new(protocol: Protocol, host_port: u16, guest_port: u16) -> Self {
        Forward {
            protocol: protocol.as_str().to_string(),
            host_port,
            guest_port,
        }
    }
}

/// What a start chose: every forward, and which one is ssh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortPlan {
    pub forwards: Vec<Forward>,
    /// Host port of the guest's ssh (22/tcp), when forwarded.
    pub ssh_port: Option<u16>,
}

impl PortPlan {
    /// `hostfwd=` parts for `-netdev user`.
    pub fn hostfwd(&self) -> Vec<String> {
        self.forwards
            .iter()
            .map(|f| {
                let host = match f.host_port {
                    0 => CHOSEN_AT_START.to_string(),
                    p => p.to_string(),
                };
                format!(
                    "hostfwd={}:{HOST_ADDR}:{host}-:{}",
                    f.protocol, f.guest_port
                )
            })
            .collect()
    }

    /// For `STATUS=` and the CLI: `ssh 127.0.0.1:40123, 8080->80/tcp`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = self.ssh_port {
            parts.push(format!("ssh {HOST_ADDR}:{p}"));
        }
        for f in &self.forwards {
            if Some(f.host_port) == self.ssh_port && f.protocol == "tcp" {
                continue;
            }
            parts.push(format!("{}->{}/{}", f.host_port, f.guest_port, f.protocol));
        }
        parts.join(", ")
    }
}

/// What stands in a rendered command line for the ssh port a start chooses.
pub const CHOSEN_AT_START: &str = "<ssh-port>";

/// The plan as far as it is known before a start, binding nothing: the
/// configured forwards, and the automatic ssh port as 0 (rendered as
/// [`CHOSEN_AT_START`]).
pub fn planned(setup: &GuestSetup) -> PortPlan {
    let mut out = PortPlan::default();
    for p in &setup.ports {
        out.forwards.push(Forward::new(p.protocol, p.host, p.guest));
        if p.guest == SSH_GUEST_PORT && p.protocol == Protocol::Tcp && out.ssh_port.is_none() {
            out.ssh_port = Some(p.host);
        }
    }
    if setup.ssh_enabled() && out.ssh_port.is_none() {
        out.forwards
            .push(Forward::new(Protocol::Tcp, 0, SSH_GUEST_PORT));
    }
    out
}

/// Fails when `port` cannot be bound on 127.0.0.1 right now.
pub fn check_free(port: u16, protocol: Protocol) -> Result<(), PortError> {
    let addr = SocketAddrV4::new(HOST_ADDR, port);
    let r = match protocol {
        Protocol::Tcp => TcpListener::bind(addr).map(drop),
        Protocol::Udp => UdpSocket::bind(addr).map(drop),
    };
    r.map_err(|source| match source.kind() {
        // Not "in use": nobody holds it, binding it is not allowed.
        std::io::ErrorKind::PermissionDenied => PortError::Privileged {
            port,
            protocol: protocol.as_str(),
            start: crate::config::unprivileged_port_start(),
        },
        _ => PortError::Taken {
            port,
            protocol: protocol.as_str(),
            source,
        },
    })
}

/// A port the kernel calls free now (QEMU binds it a moment later; a
/// thief in between makes the start fail with QEMU's message).
fn free_tcp_port() -> Result<u16, PortError> {
    let l = TcpListener::bind(SocketAddrV4::new(HOST_ADDR, 0)).map_err(PortError::NoFreePort)?;
    Ok(l.local_addr().map_err(PortError::NoFreePort)?.port())
}

/// Chooses the forwards for a start: the configured ones (each checked
/// free) and, with ssh on and no configured forward to guest 22/tcp, a
/// free port for ssh.
pub fn plan(setup: &GuestSetup) -> Result<PortPlan, PortError> {
    let mut out = PortPlan::default();
    for p in &setup.ports {
        check_free(p.host, p.protocol)?;
        out.forwards.push(Forward::new(p.protocol, p.host, p.guest));
        if p.guest == SSH_GUEST_PORT && p.protocol == Protocol::Tcp && out.ssh_port.is_none() {
            out.ssh_port = Some(p.host);
        }
    }
    if setup.ssh_enabled() && out.ssh_port.is_none() {
        let port = free_tcp_port()?;
        out.forwards
            .push(Forward::new(Protocol::Tcp, port, SSH_GUEST_PORT));
        out.ssh_port = Some(port);
    }
    Ok(out)
}

pub fn write_plan(path: &Path, plan: &PortPlan) -> Result<(), PortError> {
    let err = |source| PortError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let text = serde_json::to_vec(plan).expect("a plan serialises");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &text))
        .map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The published plan; None when there is none.
pub fn read_plan(path: &Path) -> Result<Option<PortPlan>, PortError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| PortError::Parse {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PortError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A locally administered MAC stable per VM name, so a clone (a new name)
/// gets a new one and a restart keeps it.
pub fn mac_for(vm: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(vm.as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
}

/// QEMU options for maqet's user-mode NIC with the plan's forwards.
pub fn netdev_argv(vm: &str, plan: &PortPlan) -> Vec<String> {
    let mut netdev = String::from("user,id=maqet-net");
    for h in plan.hostfwd() {
        netdev.push(',');
        netdev.push_str(&h);
    }
    vec![
        "-netdev".into(),
        netdev,
        "-device".into(),
        format!("virtio-net-pci,netdev=maqet-net,mac={}", mac_for(vm)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CloudInit, PortSpec};

    fn setup(ports: &[&str], ssh: Option<bool>, ci: bool) -> GuestSetup {
        GuestSetup {
            cloud_init: ci.then(CloudInit::default),
            ports: ports
                .iter()
                .map(|p| crate::config::parse_port(p).unwrap())
                .collect::<Vec<PortSpec>>(),
            ssh,
            ..Default::default()
        }
    }

    #[test]
    fn ssh_gets_a_free_port_and_is_rendered() {
        let p = plan(&setup(&[], None, true)).unwrap();
        let port = p.ssh_port.unwrap();
        assert_eq!(
            p.hostfwd(),
            vec![format!("hostfwd=tcp:127.0.0.1:{port}-:22")]
        );
        assert_eq!(p.summary(), format!("ssh 127.0.0.1:{port}"));
        let argv = netdev_argv("vm", &p);
        assert_eq!(argv[0], "-netdev");
        assert!(argv[1].starts_with("user,id=maqet-net,hostfwd=tcp:"));
        assert!(argv[3].ends_with(&mac_for("vm")));
    }

    #[test]
    fn a_configured_22_is_the_ssh_port() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let free = l.local_addr().unwrap().port();
        drop(l);
        let p = plan(&setup(&[&format!("{free}:22")], Some(true), false)).unwrap();
        assert_eq!(p.ssh_port, Some(free));
        assert_eq!(p.forwards.len(), 1);
    }

    #[test]
    fn a_taken_port_is_named() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = l.local_addr().unwrap().port();
        let e = plan(&setup(&[&format!("{taken}:80")], Some(false), false)).unwrap_err();
        assert!(e.to_string().contains(&format!("port {taken}/tcp")), "{e}");
    }

    #[test]
    fn plan_round_trips_through_its_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("x/vm.ports.json");
        assert_eq!(read_plan(&path).unwrap(), None);
        let p = PortPlan {
            forwards: vec![Forward::new(Protocol::Udp, 5353, 53)],
            ssh_port: None,
        };
        write_plan(&path, &p).unwrap();
        assert_eq!(read_plan(&path).unwrap(), Some(p.clone()));
        assert_eq!(p.summary(), "5353->53/udp");
    }

    #[test]
    fn macs_differ_per_vm_and_are_local() {
        assert_ne!(mac_for("a"), mac_for("b"));
        assert!(mac_for("a").starts_with("52:54:00:"));
    }
}
