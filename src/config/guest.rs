//! Guest provisioning keys (issue 11): `cloud_init`, `ports`, `ssh`.
//! Validation only; what they do at start lives in `crate::cloudinit`,
//! `crate::ports` and `crate::ssh`.

use std::path::PathBuf;

use super::node::{Node, Value};
use super::validate::{found, Validator};
use crate::suggest;

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
        self.network.is_set() || self.ssh_enabled() || !self.ports.is_empty()
    }
}

/// `cloud_init:`. Defaults are applied at start (`crate::cloudinit`), where
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

/// One `ports:` item: `HOST:GUEST[/tcp|/udp]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSpec {
    pub host: u16,
    pub guest: u16,
    pub protocol: Protocol,
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.host, self.guest, self.protocol.as_str())
    }
}

/// Parses `8080:80`, `2222:22/tcp`, `5353:53/udp`.
pub fn parse_port(s: &str) -> Result<PortSpec, String> {
    let (ports, protocol) = match s.rsplit_once('/') {
        Some((p, "tcp")) => (p, Protocol::Tcp),
        Some((p, "udp")) => (p, Protocol::Udp),
        Some((_, other)) => return Err(format!("unknown protocol '{other}' (use tcp or udp)")),
        None => (s, Protocol::Tcp),
    };
    let Some((host, guest)) = ports.split_once(':') else {
        return Err(format!(
            "'{s}' is not HOST:GUEST (e.g. 8080:80 or 5353:53/udp)"
        ));
    };
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
    })
}

pub(crate) fn validate_key(v: &mut Validator, key: &str, node: &Node, out: &mut GuestSetup) {
    match key {
        "cloud_init" => out.cloud_init = validate_cloud_init(v, node),
        "ports" => out.ports = validate_ports(v, node),
        "ssh" => out.ssh = v.boolean(node, "ssh"),
        "guest_agent" => out.guest_agent = v.boolean(node, "guest_agent").unwrap_or(false),
        _ => unreachable!("only KEYS are passed"),
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

fn validate_ports(v: &mut Validator, node: &Node) -> Vec<PortSpec> {
    let Some(items) = node.as_seq() else {
        v.error(
            &node.loc,
            format!("ports: expected a list like ['8080:80'], {}", found(node)),
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
                    .find(|o| o.host == p.host && o.protocol == p.protocol)
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
                        if !crate::cloudinit::is_public_key(&s) {
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
    if let Some(e) = crate::files::not_regular(std::path::Path::new(path), false) {
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
                protocol: Protocol::Tcp
            }
        );
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
    fn ssh_defaults_to_cloud_init() {
        let mut g = GuestSetup::default();
        assert!(!g.ssh_enabled() && !g.wants_network());
        g.cloud_init = Some(CloudInit::default());
        assert!(g.ssh_enabled() && g.wants_network());
        g.ssh = Some(false);
        assert!(!g.ssh_enabled());
    }
}
