//! Guest provisioning keys (issue 11): `cloud_init`, `ports`, `ssh`;
//! `ports: auto` and loopback host addresses in `ports:` (issue 19).
//! Validation only; what they do at start lives in `maqet_host::cloudinit`,
//! `maqet_host::ports` and `maqet_host::ssh`.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::node::{Node, Value};
use super::validate::{found, Validator};
use maqet_base::suggest;

const CLOUD_INIT_KEYS: &[&str] = &[
    "user",
    "ssh_authorized_keys",
    "user_data",
    "user_data_file",
    "meta_data",
    "network_config",
    "hostname",
    "default_user",
];

/// The top-level keys this module validates.
pub(crate) const KEYS: &[&str] = &["cloud_init", "ports", "ssh", "guest_agent"];

/// Everything the guest-provisioning keys ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestSetup {
    pub cloud_init: Option<CloudInit>,
    /// `ports:` as written, in order.
    pub ports: Vec<PortSpec>,
    /// `ssh:` as written; None = true when `cloud_init` is set.
    pub ssh: Option<bool>,
    /// `guest_agent: true`: a virtio-serial channel `org.qemu.guest_agent.0`.
    pub guest_agent: bool,
    /// `ports: auto` (or an `auto` item): the runner forwards guest TCP
    /// ports as they start listening (needs the guest agent).
    pub auto_ports: bool,
    /// `network:`: the NIC's backend (user-mode or passt).
    pub network: super::nic::NetworkMode,
}

impl GuestSetup {
    /// Forward a free localhost port to the guest's 22 at start.
    pub fn ssh_enabled(&self) -> bool {
        self.ssh.unwrap_or(self.cloud_init.is_some())
    }

    /// The VM gets maqet's NIC (virtio-net; user-mode or passt).
    pub fn wants_network(&self) -> bool {
        self.network.is_set() || self.ssh_enabled() || !self.ports.is_empty() || self.auto_ports
    }
}

/// `cloud_init:`. Defaults are applied at start (`maqet_host::cloudinit`), where
/// the invoking user and their keys are known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudInit {
    pub user: Option<String>,
    /// Public keys (`ssh-ed25519 AAAA…`) or paths of `.pub` files; None =
    /// `~/.ssh/*.pub`.
    pub ssh_authorized_keys: Option<Vec<String>>,
    /// Inline user-data, used as written.
    pub user_data: Option<String>,
    /// user-data read from this file at start (absolute after loading).
    pub user_data_file: Option<PathBuf>,
    /// Extra meta-data lines (YAML), appended to maqet's.
    pub meta_data: Option<String>,
    /// network-config (YAML), written as is.
    pub network_config: Option<String>,
    pub hostname: Option<String>,
    /// Also create the image's own default user (`debian`, `ubuntu`, …)
    /// in maqet's user-data, with the keys and the distribution's
    /// passwordless sudo. Off by default: one account, yours.
    pub default_user: bool,
    /// Where maqet's user-data mounts virtiofs shares: (tag, guest path)
    /// of each `shares:` item with a `guest:` path (not a key of its own).
    pub share_mounts: Vec<(String, PathBuf)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// The host address a forward listens on unless one is given.
pub const DEFAULT_HOST_ADDR: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// One `ports:` item: `[ADDR:]HOST:GUEST[/tcp|/udp]`, ADDR a loopback
/// address (127.0.0.1 when left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSpec {
    pub host: u16,
    pub guest: u16,
    pub protocol: Protocol,
    pub addr: Ipv4Addr,
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.addr != DEFAULT_HOST_ADDR {
            write!(f, "{}:", self.addr)?;
        }
        write!(f, "{}:{}/{}", self.host, self.guest, self.protocol.as_str())
    }
}

/// A host address forwards may listen on: the loopback network only, so
/// a VM's services stay the user's, not the network's.
pub fn check_host_addr(text: &str) -> Result<Ipv4Addr, String> {
    let addr: Ipv4Addr = text
        .parse()
        .map_err(|_| format!("host address '{text}' is not an IPv4 address such as 127.0.0.1"))?;
    if !addr.is_loopback() {
        return Err(format!(
            "host address {addr} is not a loopback address: forwards listen on 127.0.0.0/8 only (reach a VM from elsewhere through ssh -L, or a proxy of your own)"
        ));
    }
    Ok(addr)
}

/// The host side of a forward, as `maqet ports rm` names one:
/// `[ADDR:]HOST[:GUEST][/tcp|/udp]` (`8080`, `127.0.0.2:8080`,
/// `8080:80/udp`); the guest port, when given, must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortKey {
    pub protocol: Protocol,
    pub addr: Ipv4Addr,
    pub host: u16,
    pub guest: Option<u16>,
}

pub fn parse_port_key(s: &str) -> Result<PortKey, String> {
    let (ports, protocol) = match s.rsplit_once('/') {
        Some((p, "tcp")) => (p, Protocol::Tcp),
        Some((p, "udp")) => (p, Protocol::Udp),
        Some((_, other)) => return Err(format!("unknown protocol '{other}' (use tcp or udp)")),
        None => (s, Protocol::Tcp),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (addr, host, guest) = match parts[..] {
        [host] => (DEFAULT_HOST_ADDR, host, None),
        // An address has dots; a guest port has none.
        [a, host] if a.contains('.') => (check_host_addr(a)?, host, None),
        [host, guest] => (DEFAULT_HOST_ADDR, host, Some(guest)),
        [a, host, guest] => (check_host_addr(a)?, host, Some(guest)),
        _ => {
            return Err(format!(
                "'{s}' is not [ADDR:]HOST[:GUEST] (e.g. 8080, 127.0.0.2:8080 or 5353:53/udp)"
            ))
        }
    };
    let num = |t: &str, what: &str| -> Result<u16, String> {
        match t.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{what} port '{t}' is not a number from 1 to 65535")),
        }
    };
    Ok(PortKey {
        protocol,
        addr,
        host: num(host, "host")?,
        guest: guest.map(|g| num(g, "guest")).transpose()?,
    })
}

/// Parses `8080:80`, `2222:22/tcp`, `5353:53/udp`, `127.0.0.2:8080:80`.
pub fn parse_port(s: &str) -> Result<PortSpec, String> {
    let (ports, protocol) = match s.rsplit_once('/') {
        Some((p, "tcp")) => (p, Protocol::Tcp),
        Some((p, "udp")) => (p, Protocol::Udp),
        Some((_, other)) => return Err(format!("unknown protocol '{other}' (use tcp or udp)")),
        None => (s, Protocol::Tcp),
    };
    let shape = || {
        format!("'{s}' is not [ADDR:]HOST:GUEST (e.g. 8080:80, 127.0.0.2:8080:80 or 5353:53/udp)")
    };
    let (addr, ports) = match ports.matches(':').count() {
        1 => (DEFAULT_HOST_ADDR, ports),
        2 => {
            let (a, rest) = ports.split_once(':').expect("two colons");
            (check_host_addr(a)?, rest)
        }
        _ => return Err(shape()),
    };
    let (host, guest) = ports.split_once(':').ok_or_else(shape)?;
    let num = |t: &str, what: &str| -> Result<u16, String> {
        match t.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{what} port '{t}' is not a number from 1 to 65535")),
        }
    };
    Ok(PortSpec {
        host: num(host, "host")?,
        guest: num(guest, "guest")?,
        protocol,
        addr,
    })
}

pub(crate) fn validate_key(v: &mut Validator, key: &str, node: &Node, out: &mut GuestSetup) {
    match key {
        "cloud_init" => out.cloud_init = validate_cloud_init(v, node),
        "ports" => out.ports = validate_ports(v, node, out),
        "ssh" => out.ssh = v.boolean(node, "ssh"),
        "guest_agent" => out.guest_agent = v.boolean(node, "guest_agent").unwrap_or(false),
        _ => unreachable!("only KEYS are passed"),
    }
}

/// Checks between keys, once all of them were read: automatic forwards
/// find guest listeners through the guest agent. `ports` is where
/// `ports:` was written.
pub(crate) fn finish(v: &mut Validator, g: &GuestSetup, ports: Option<&Node>) {
    if let (true, false, Some(n)) = (g.auto_ports, g.guest_agent, ports) {
        v.error(
            &n.loc,
            "ports: auto finds the guest's listening ports through the QEMU guest agent: set `guest_agent: true` (and run qemu-guest-agent in the guest)",
        );
    }
    if let (true, Some(_), Some(n)) = (g.auto_ports, g.network.passt(), ports) {
        v.error(
            &n.loc,
            "ports: auto adds forwards while the VM runs, and passt cannot change its forwards then: list the ports (ports: ['8080:80']) or use `network: user`",
        );
    }
}

/// The lowest port an unprivileged process may bind on this host
/// (`net.ipv4.ip_unprivileged_port_start`, 1024 unless changed).
pub fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// The word that asks for automatic forwards (`ports: auto`, or an item).
pub const AUTO: &str = "auto";

fn validate_ports(v: &mut Validator, node: &Node, out_setup: &mut GuestSetup) -> Vec<PortSpec> {
    if matches!(&node.value, Value::Str(s) if s == AUTO) {
        out_setup.auto_ports = true;
        return Vec::new();
    }
    let Some(items) = node.as_seq() else {
        v.error(
            &node.loc,
            format!(
                "ports: expected a list like ['8080:80'] or auto, {}",
                found(node)
            ),
        );
        return Vec::new();
    };
    let mut out: Vec<PortSpec> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = format!("ports[{i}]");
        // Unquoted 22:22 is a YAML 1.1 sexagesimal number; take its text.
        let Some(text) = v.text(item, &key) else {
            continue;
        };
        if text == AUTO {
            if out_setup.auto_ports {
                v.error(&item.loc, format!("{key}: auto is already listed"));
            }
            out_setup.auto_ports = true;
            continue;
        }
        match parse_port(&text) {
            Ok(p) if p.host < unprivileged_port_start() => v.error(
                &item.loc,
                format!(
                    "{key}: host port {} is below {} (net.ipv4.ip_unprivileged_port_start): binding it needs privileges a user's VM does not have; forward a port from {} up, e.g. '{}:{}'",
                    p.host,
                    unprivileged_port_start(),
                    unprivileged_port_start(),
                    u32::from(p.host) + 8000,
                    p.guest
                ),
            ),
            Ok(p) => {
                if let Some(o) = out
                    .iter()
                    .find(|o| o.host == p.host && o.protocol == p.protocol && o.addr == p.addr)
                {
                    v.error(
                        &item.loc,
                        format!("{key}: host port {} is already forwarded ({o})", p.host),
                    );
                } else {
                    out.push(p);
                }
            }
            Err(e) => v.error(&item.loc, format!("{key}: {e}")),
        }
    }
    out
}

fn validate_cloud_init(v: &mut Validator, node: &Node) -> Option<CloudInit> {
    // `cloud_init: true` asks for every default.
    if let Value::Bool(b) = node.value {
        return b.then(CloudInit::default);
    }
    let Some(entries) = node.as_map() else {
        v.error(
            &node.loc,
            format!("cloud_init: expected a mapping or true, {}", found(node)),
        );
        return None;
    };
    let mut ci = CloudInit::default();
    for e in entries {
        let key = format!("cloud_init.{}", e.key);
        let n = &e.value;
        if n.is_null() {
            continue;
        }
        match e.key.as_str() {
            "user" => ci.user = v.string(n, &key).filter(|s| check_user(v, n, &key, s)),
            "hostname" => ci.hostname = v.string(n, &key).filter(|s| check_hostname(v, n, &key, s)),
            "ssh_authorized_keys" => {
                let Some(items) = n.as_seq() else {
                    v.error(&n.loc, format!("{key}: expected a list, {}", found(n)));
                    continue;
                };
                let keys: Vec<String> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, k)| {
                        let name = format!("{key}[{i}]");
                        let s = v.string(k, &name)?;
                        // A key file is read at every start (autostart too).
                        if !is_public_key(&s) {
                            regular_file(v, k, &name, &s);
                        }
                        Some(s)
                    })
                    .collect();
                ci.ssh_authorized_keys = Some(keys);
            }
            "user_data" => ci.user_data = v.string(n, &key),
            "user_data_file" => {
                ci.user_data_file = v.string(n, &key).map(|s| {
                    regular_file(v, n, &key, &s);
                    PathBuf::from(s)
                })
            }
            "meta_data" => ci.meta_data = v.string(n, &key),
            "network_config" => ci.network_config = v.string(n, &key),
            "default_user" => {
                if let Some(b) = v.boolean(n, &key) {
                    ci.default_user = b;
                }
            }
            other => v.error(
                &e.key_loc,
                format!(
                    "unknown key '{key}'{}",
                    suggest::hint(other, CLOUD_INIT_KEYS)
                ),
            ),
        }
    }
    if ci.user_data.is_some() && ci.user_data_file.is_some() {
        v.error(
            &node.loc,
            "cloud_init: give user_data or user_data_file, not both",
        );
    }
    Some(ci)
}

/// A file read at start must be a regular file when it exists: a FIFO
/// would hang the start (holding the VM's lock) until something writes to
/// it, a device could do anything. A missing one is reported at start.
fn regular_file(v: &mut Validator, n: &Node, key: &str, path: &str) {
    if let Some(e) = maqet_base::files::not_regular(std::path::Path::new(path), false) {
        v.error(&n.loc, format!("{key}: {path}: {e}"));
    }
}

fn check_user(v: &mut Validator, n: &Node, key: &str, s: &str) -> bool {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && !s.starts_with('-');
    if !ok {
        v.error(
            &n.loc,
            format!("{key}: '{s}' is not a valid user name (letters, digits, _ - .)"),
        );
    }
    ok
}

fn check_hostname(v: &mut Validator, n: &Node, key: &str, s: &str) -> bool {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-');
    if !ok {
        v.error(
            &n.loc,
            format!("{key}: '{s}' is not a valid host name (letters, digits, -)"),
        );
    }
    ok
}

/// Key types as they start an OpenSSH public key line.
const KEY_PREFIXES: &[&str] = &["ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-"];

/// A public key written inline (as opposed to the path of a `.pub` file).
pub fn is_public_key(s: &str) -> bool {
    KEY_PREFIXES.iter().any(|p| s.starts_with(p)) && s.contains(' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse() {
        assert_eq!(
            parse_port("8080:80").unwrap(),
            PortSpec {
                host: 8080,
                guest: 80,
                protocol: Protocol::Tcp,
                addr: DEFAULT_HOST_ADDR,
            }
        );
        let a = parse_port("127.0.0.2:8080:80/udp").unwrap();
        assert_eq!(a.addr, Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(a.to_string(), "127.0.0.2:8080:80/udp");
        assert!(parse_port("0.0.0.0:8080:80")
            .unwrap_err()
            .contains("not a loopback address"));
        assert!(parse_port("host:8080:80")
            .unwrap_err()
            .contains("not an IPv4 address"));
        assert!(parse_port("1:2:3:4")
            .unwrap_err()
            .contains("not [ADDR:]HOST:GUEST"));
        assert_eq!(parse_port("5353:53/udp").unwrap().protocol, Protocol::Udp);
        assert_eq!(
            parse_port("2222:22/tcp").unwrap().to_string(),
            "2222:22/tcp"
        );
        assert!(parse_port("80").unwrap_err().contains("HOST:GUEST"));
        assert!(parse_port("0:80").unwrap_err().contains("host port"));
        assert!(parse_port("1:99999").unwrap_err().contains("guest port"));
        assert!(parse_port("1:2/sctp").unwrap_err().contains("sctp"));
    }

    #[test]
    fn port_keys_name_the_host_side() {
        let k = parse_port_key("8080").unwrap();
        assert_eq!(
            (k.addr, k.host, k.guest, k.protocol),
            (DEFAULT_HOST_ADDR, 8080, None, Protocol::Tcp)
        );
        let k = parse_port_key("127.0.0.2:8080/udp").unwrap();
        assert_eq!(
            (k.addr, k.host, k.guest, k.protocol),
            (Ipv4Addr::new(127, 0, 0, 2), 8080, None, Protocol::Udp)
        );
        let k = parse_port_key("8080:80").unwrap();
        assert_eq!((k.host, k.guest), (8080, Some(80)));
        let k = parse_port_key("127.0.0.3:8080:80").unwrap();
        assert_eq!((k.addr.octets()[3], k.host, k.guest), (3, 8080, Some(80)));
        for bad in [
            "",
            "x",
            "0",
            "10.0.0.1:8080",
            "1:2:3:4",
            "8080/sctp",
            "8080:0",
        ] {
            assert!(parse_port_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ssh_defaults_to_cloud_init() {
        let mut g = GuestSetup::default();
        assert!(!g.ssh_enabled() && !g.wants_network());
        g.cloud_init = Some(CloudInit::default());
        assert!(g.ssh_enabled() && g.wants_network());
        g.ssh = Some(false);
        assert!(!g.ssh_enabled());
    }
}
