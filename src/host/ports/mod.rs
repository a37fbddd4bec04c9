//! Port forwards (issue 11): `ports:` and the automatic ssh port, chosen at
//! start, checked for collisions (naming the port), rendered as user-mode
//! `hostfwd`, and published in a runtime file that the runner (QEMU's argv,
//! `STATUS=`), `maqet ports` and `maqet status` read.
//!
//! Forwards listen on loopback only (127.0.0.1 unless `ports:` names
//! another 127.x address): a VM's services are the user's, not the
//! network's. The file is `$XDG_RUNTIME_DIR/maqet/vm/VM/ports.json`, in
//! the VM's runtime directory (0700; [`maqet_base::paths::VmRuntime`]): it is
//! written by every start, read again by automatic restarts, and gone with
//! the directory when the VM ends. While the VM runs the runner rewrites
//! it whenever it adds or removes a forward (`maqet ports add|rm`, and
//! `ports: auto`, issue 19), so it is always what QEMU forwards.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use maqet_config::{GuestSetup, PortSpec, Protocol};

/// The address forwards listen on unless `ports:` names another.
pub const HOST_ADDR: Ipv4Addr = maqet_config::DEFAULT_HOST_ADDR;
/// The guest port `ssh: true` forwards to.
pub const SSH_GUEST_PORT: u16 = 22;

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("port {port}/{protocol} on {addr} is already in use ({source}); pick another host port in `ports:` or stop whatever holds it (ss -ltnup 'sport = :{port}')")]
    Taken {
        addr: Ipv4Addr,
        port: u16,
        protocol: &'static str,
        source: std::io::Error,
    },
    #[error("port {port}/{protocol} on {addr} is below {start} (net.ipv4.ip_unprivileged_port_start): binding it needs privileges a user's VM does not have; pick a host port from {start} up in `ports:`")]
    Privileged {
        addr: Ipv4Addr,
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

/// Where a forward came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `ports:` or the automatic ssh port, chosen at start.
    #[default]
    Config,
    /// `maqet ports add` while the VM runs.
    Added,
    /// `ports: auto`: a guest listener the runner found (never rendered on
    /// a command line: a restarted runner finds them again).
    Auto,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Added => "added",
            Origin::Auto => "auto",
        }
    }
}

fn default_addr() -> Ipv4Addr {
    HOST_ADDR
}

/// One forward as QEMU gets it. `host_addr` and `origin` are absent from
/// plans written before issue 19 (then 127.0.0.1 and `config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    pub protocol: String,
    pub host_port: u16,
    pub guest_port: u16,
    #[serde(default = "default_addr")]
    pub host_addr: Ipv4Addr,
    #[serde(default)]
    pub origin: Origin,
}

impl Forward {
    pub fn new(protocol: Protocol, host_port: u16, guest_port: u16) -> Self {
        Forward {
            protocol: protocol.as_str().to_string(),
            host_port,
            guest_port,
            host_addr: HOST_ADDR,
            origin: Origin::Config,
        }
    }

    /// The forward a `ports:` item asks for.
    pub fn of_spec(p: &PortSpec, origin: Origin) -> Self {
        Forward {
            host_addr: p.addr,
            origin,
            ..Forward::new(p.protocol, p.host, p.guest)
        }
    }

    /// The same listening socket on the host: protocol, address and port.
    pub fn same_host_side(&self, protocol: &str, addr: Ipv4Addr, port: u16) -> bool {
        self.protocol == protocol && self.host_addr == addr && self.host_port == port
    }

    /// `hostfwd=`'s and `hostfwd_add`'s rule: `tcp:127.0.0.1:8080-:80`.
    pub fn rule(&self) -> String {
        let host = match self.host_port {
            0 => CHOSEN_AT_START.to_string(),
            p => p.to_string(),
        };
        format!(
            "{}:{}:{host}-:{}",
            self.protocol, self.host_addr, self.guest_port
        )
    }

    /// `8080->80/tcp`, `127.0.0.2:8080->80/tcp (auto)`.
    pub fn describe(&self) -> String {
        let addr = match self.host_addr {
            HOST_ADDR => String::new(),
            a => format!("{a}:"),
        };
        let origin = match self.origin {
            Origin::Config => "",
            Origin::Added => " (added)",
            Origin::Auto => " (auto)",
        };
        format!(
            "{addr}{}->{}/{}{origin}",
            self.host_port, self.guest_port, self.protocol
        )
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
    /// `hostfwd=` parts for `-netdev user`. Automatic forwards are never
    /// on a command line: they follow the guest's listeners at run time.
    pub fn hostfwd(&self) -> Vec<String> {
        self.forwards
            .iter()
            .filter(|f| f.origin != Origin::Auto)
            .map(|f| format!("hostfwd={}", f.rule()))
            .collect()
    }

    /// Whether `f` is the forward of the ssh port.
    pub fn is_ssh(&self, f: &Forward) -> bool {
        Some(f.host_port) == self.ssh_port
            && f.protocol == "tcp"
            && f.guest_port == SSH_GUEST_PORT
            && f.host_addr == HOST_ADDR
    }

    /// For `STATUS=` and the CLI: `ssh 127.0.0.1:40123, 8080->80/tcp`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = self.ssh_port {
            parts.push(format!("ssh {HOST_ADDR}:{p}"));
        }
        for f in &self.forwards {
            if self.is_ssh(f) {
                continue;
            }
            parts.push(f.describe());
        }
        parts.join(", ")
    }

    /// After forwards changed while the VM runs: the ssh port is the one
    /// that still forwards from 127.0.0.1 to guest 22/tcp — the one it was
    /// if it still does, else a configured, an added, then an automatic
    /// one (so `maqet ssh` also reaches a guest whose sshd `ports: auto`
    /// found); none when none does.
    pub fn choose_ssh_port(&mut self) {
        let to_ssh = |f: &&Forward| {
            f.protocol == "tcp" && f.guest_port == SSH_GUEST_PORT && f.host_addr == HOST_ADDR
        };
        if self
            .forwards
            .iter()
            .filter(to_ssh)
            .any(|f| Some(f.host_port) == self.ssh_port)
        {
            return;
        }
        self.ssh_port = [Origin::Config, Origin::Added, Origin::Auto]
            .iter()
            .find_map(|o| {
                self.forwards
                    .iter()
                    .filter(to_ssh)
                    .find(|f| f.origin == *o)
                    .map(|f| f.host_port)
            });
    }

    /// The plan a runner starts QEMU with: the automatic forwards of an
    /// earlier run dropped (the guest's listeners are found again).
    pub fn without_auto(mut self) -> PortPlan {
        self.forwards.retain(|f| f.origin != Origin::Auto);
        self
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
        out.forwards.push(Forward::of_spec(p, Origin::Config));
        if is_ssh_spec(p) && out.ssh_port.is_none() {
            out.ssh_port = Some(p.host);
        }
    }
    if setup.ssh_enabled() && out.ssh_port.is_none() {
        out.forwards
            .push(Forward::new(Protocol::Tcp, 0, SSH_GUEST_PORT));
    }
    out
}

/// A configured forward that `maqet ssh` uses: to guest 22/tcp from
/// 127.0.0.1 (ssh connects there).
fn is_ssh_spec(p: &PortSpec) -> bool {
    p.guest == SSH_GUEST_PORT && p.protocol == Protocol::Tcp && p.addr == HOST_ADDR
}

/// Fails when `port` cannot be bound on `addr` right now.
pub fn check_free(addr: Ipv4Addr, port: u16, protocol: Protocol) -> Result<(), PortError> {
    let sa = SocketAddrV4::new(addr, port);
    let r = match protocol {
        Protocol::Tcp => TcpListener::bind(sa).map(drop),
        Protocol::Udp => UdpSocket::bind(sa).map(drop),
    };
    r.map_err(|source| match source.kind() {
        // Not "in use": nobody holds it, binding it is not allowed.
        std::io::ErrorKind::PermissionDenied => PortError::Privileged {
            addr,
            port,
            protocol: protocol.as_str(),
            start: maqet_config::unprivileged_port_start(),
        },
        _ => PortError::Taken {
            addr,
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
        check_free(p.addr, p.host, p.protocol)?;
        out.forwards.push(Forward::of_spec(p, Origin::Config));
        if is_ssh_spec(p) && out.ssh_port.is_none() {
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

/// The MAC of `vm`'s NIC on network `segment` when `networks:` gives
/// none: locally administered like [`mac_for`], stable per VM and
/// network, and different from the VM's user-mode NIC (whose hash input
/// is the name alone; a VM name holds no NUL).
pub fn segment_mac(vm: &str, segment: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{vm}\0{segment}").as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
}

/// The id of maqet's user-mode netdev (`hostfwd_add` names it).
pub const NETDEV_ID: &str = "maqet-net";

/// QEMU options for maqet's user-mode NIC with the plan's forwards.
pub fn netdev_argv(vm: &str, plan: &PortPlan) -> Vec<String> {
    let mut netdev = format!("user,id={NETDEV_ID}");
    for h in plan.hostfwd() {
        netdev.push(',');
        netdev.push_str(&h);
    }
    vec![
        "-netdev".into(),
        netdev,
        "-device".into(),
        format!("virtio-net-pci,netdev={NETDEV_ID},mac={}", mac_for(vm)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use maqet_config::{CloudInit, PortSpec};

    fn setup(ports: &[&str], ssh: Option<bool>, ci: bool) -> GuestSetup {
        GuestSetup {
            cloud_init: ci.then(CloudInit::default),
            ports: ports
                .iter()
                .map(|p| maqet_config::parse_port(p).unwrap())
                .collect::<Vec<PortSpec>>(),
            ssh,
            auto_ports: false,
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
    fn forwards_of_earlier_plans_read_as_configured_on_127_0_0_1() {
        let old =
            r#"{"forwards":[{"protocol":"tcp","host_port":2222,"guest_port":22}],"ssh_port":2222}"#;
        let p: PortPlan = serde_json::from_str(old).unwrap();
        assert_eq!(p.forwards[0].host_addr, HOST_ADDR);
        assert_eq!(p.forwards[0].origin, Origin::Config);
        assert!(p.is_ssh(&p.forwards[0]));
        assert_eq!(p.summary(), "ssh 127.0.0.1:2222");
    }

    #[test]
    fn automatic_forwards_are_shown_but_never_rendered() {
        let mut p = PortPlan::default();
        p.forwards.push(Forward::new(Protocol::Tcp, 8080, 80));
        let mut auto = Forward::new(Protocol::Tcp, 9000, 9000);
        auto.origin = Origin::Auto;
        p.forwards.push(auto);
        let mut added = Forward::new(Protocol::Udp, 5353, 53);
        added.host_addr = Ipv4Addr::new(127, 0, 0, 2);
        added.origin = Origin::Added;
        p.forwards.push(added);
        assert_eq!(
            p.hostfwd(),
            vec![
                "hostfwd=tcp:127.0.0.1:8080-:80",
                "hostfwd=udp:127.0.0.2:5353-:53"
            ]
        );
        assert_eq!(
            p.summary(),
            "8080->80/tcp, 9000->9000/tcp (auto), 127.0.0.2:5353->53/udp (added)"
        );
        assert_eq!(p.clone().without_auto().forwards.len(), 2);
    }

    #[test]
    fn the_ssh_port_follows_the_forwards() {
        let mut p = PortPlan::default();
        let mut auto = Forward::new(Protocol::Tcp, 8022, 22);
        auto.origin = Origin::Auto;
        p.forwards.push(auto.clone());
        p.choose_ssh_port();
        assert_eq!(p.ssh_port, Some(8022));
        let mut added = Forward::new(Protocol::Tcp, 2222, 22);
        added.origin = Origin::Added;
        p.forwards.push(added);
        p.choose_ssh_port();
        assert_eq!(p.ssh_port, Some(8022), "kept while it forwards");
        p.forwards.retain(|f| f != &auto);
        p.choose_ssh_port();
        assert_eq!(p.ssh_port, Some(2222));
        p.forwards.clear();
        p.choose_ssh_port();
        assert_eq!(p.ssh_port, None);
    }

    #[test]
    fn macs_differ_per_vm_and_are_local() {
        assert_ne!(mac_for("a"), mac_for("b"));
        assert_ne!(segment_mac("a", "lab"), segment_mac("b", "lab"));
        assert_ne!(segment_mac("a", "lab"), segment_mac("a", "lab2"));
        assert_ne!(segment_mac("a", "lab"), mac_for("a"));
        assert!(segment_mac("a", "lab").starts_with("52:54:00:"));
        assert!(mac_for("a").starts_with("52:54:00:"));
    }
}
