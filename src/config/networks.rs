//! `networks:` (issue 19): VM-to-VM network segments. Each item attaches
//! one more NIC to a named L2 segment that every VM of this user naming it
//! shares — `networks: [lab]`, or `- {name: lab, mac: "52:54:00:…"}`. The
//! segment is a `vde_switch` run as `maqet-switch@NAME.service`
//! (`maqet_host::companion::switch`); its sockets are in the user's 0700
//! runtime directory, so no other user can join. Validation only; the NIC
//! is rendered by `maqet_vm::provision`, the switch started by the vm layer.

use std::path::PathBuf;

use super::node::{Node, Value};
use super::validate::{found, Validator};
use maqet_base::netname::NetName;
use maqet_base::suggest;

/// The top-level key this module validates.
pub(crate) const KEY: &str = "networks";

const ITEM_KEYS: &[&str] = &["name", "mac"];

/// At most this many segments per VM (each is a NIC).
pub const MAX_NETWORKS: usize = 8;

/// The segments a VM joins, in order (the NICs' order), and the switch
/// program that serves them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks {
    pub segments: Vec<Network>,
    /// `vde_switch`, resolved at validation when there are segments.
    pub vde_switch: Option<PathBuf>,
}

/// One `networks:` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub name: NetName,
    /// The NIC's MAC as written; None: derived from the VM and segment
    /// names at start (`maqet_host::ports::segment_mac`).
    pub mac: Option<String>,
}

pub(crate) fn validate(v: &mut Validator, node: &Node) -> Networks {
    let Some(items) = node.as_seq() else {
        v.error(
            &node.loc,
            format!(
                "networks: expected a list of network names like [lab], {}",
                found(node)
            ),
        );
        return Networks::default();
    };
    let mut out = Networks::default();
    for (i, item) in items.iter().enumerate() {
        let key = format!("networks[{i}]");
        let Some(n) = validate_item(v, item, &key) else {
            continue;
        };
        if let Some(o) = out.segments.iter().find(|o| o.name == n.name) {
            v.error(
                &item.loc,
                format!(
                    "{key}: network '{}' is already listed; a VM joins a network once",
                    o.name
                ),
            );
            continue;
        }
        if let Some(mac) = &n.mac {
            let same = |o: &Network| {
                o.mac
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(mac))
            };
            if let Some(o) = out.segments.iter().find(|o| same(o)) {
                v.error(
                    &item.loc,
                    format!(
                        "{key}: mac {mac} is already the mac of network '{}'",
                        o.name
                    ),
                );
                continue;
            }
        }
        out.segments.push(n);
    }
    if out.segments.len() > MAX_NETWORKS {
        v.error(
            &node.loc,
            format!(
                "networks: {} networks listed; a VM joins at most {MAX_NETWORKS}",
                out.segments.len()
            ),
        );
    }
    if !out.segments.is_empty() {
        match maqet_base::programs::find_vde_switch() {
            Ok(p) => out.vde_switch = Some(p),
            Err(e) => v.error(&node.loc, format!("networks: {e}")),
        }
    }
    out
}

fn validate_item(v: &mut Validator, item: &Node, key: &str) -> Option<Network> {
    let (name_node, mac_node) = match &item.value {
        Value::Map(entries) => {
            let (mut name, mut mac) = (None, None);
            for e in entries {
                match e.key.as_str() {
                    "name" => name = Some(&e.value),
                    "mac" => mac = Some(&e.value),
                    other => v.error(
                        &e.key_loc,
                        format!(
                            "unknown key '{key}.{other}'{}",
                            suggest::hint(other, ITEM_KEYS)
                        ),
                    ),
                }
            }
            let Some(name) = name else {
                v.error(
                    &item.loc,
                    format!("{key}: a network needs a name (name: lab)"),
                );
                return None;
            };
            (name, mac.filter(|m| !m.is_null()))
        }
        _ => (item, None),
    };
    let text = v.text(name_node, &format!("{key}.name"))?;
    let name = match NetName::new(&text) {
        Ok(n) => n,
        Err(e) => {
            v.error(&name_node.loc, format!("{key}: {e}"));
            return None;
        }
    };
    let mac = match mac_node {
        None => None,
        Some(m) => {
            let s = v.string(m, &format!("{key}.mac"))?;
            if let Err(why) = check_mac(&s) {
                v.error(
                    &m.loc,
                    format!("{key}.mac: '{}' {why}", suggest::excerpt(&s, 64)),
                );
                return None;
            }
            Some(s.to_ascii_lowercase())
        }
    };
    Some(Network { name, mac })
}

/// A unicast MAC written as six pairs of hex digits with ':'.
fn check_mac(s: &str) -> Result<(), &'static str> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err("is not a MAC address (six pairs of hex digits, e.g. 52:54:00:12:34:56)");
    }
    let first = u8::from_str_radix(parts[0], 16).expect("checked hex");
    if first & 1 == 1 {
        return Err("is a multicast address; a NIC needs a unicast one (an even first byte)");
    }
    if parts.iter().all(|p| *p == "00") {
        return Err("is all zeros");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_mac;

    #[test]
    fn macs_must_be_unicast_and_well_formed() {
        assert!(check_mac("52:54:00:12:34:56").is_ok());
        assert!(check_mac("02:AB:cd:00:00:01").is_ok());
        for bad in [
            "52:54:00:12:34",
            "52-54-00-12-34-56",
            "52:54:00:12:34:5g",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "525400123456",
        ] {
            assert!(check_mac(bad).is_err(), "{bad}");
        }
    }
}
