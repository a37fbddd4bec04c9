//! `maqet network ls` (issue 19): the VM-to-VM networks this user has —
//! those this data directory's definitions name and those whose switch
//! runs — each with its switch's state (systemd's) and its VMs: the
//! running ones (the VM services systemd has wanting the switch, of any
//! data directory) and this data directory's stopped ones that name it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value as Json;

use maqet_base::vmname::VmName;
use maqet_host::state::Store;
use maqet_host::systemd::Systemd;

use super::owner::{owned_by, Owner};
use super::{Runners, VmError, Vms};

/// One network and its VMs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkView {
    pub name: String,
    /// `maqet-switch@NAME.service`
    pub unit: String,
    /// The switch unit's `ActiveState`; `inactive` when it is not loaded.
    pub state: String,
    pub vms: Vec<NetworkMember>,
}

/// A VM on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkMember {
    pub vm: String,
    pub running: bool,
    /// Another data directory's VM (running; the unit names its directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
}

/// The network names a stored config lists (`networks:` items are names
/// or `{name: …}`); read from the JSON as stored, without validating the
/// whole config (its binary or disks may be gone since).
pub fn stored_networks(config: &Json) -> Vec<String> {
    let Some(Json::Array(items)) = config.get("networks") else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| match i {
            Json::String(s) => Some(s.clone()),
            Json::Object(m) => m.get("name").and_then(Json::as_str).map(str::to_string),
            _ => None,
        })
        .collect()
}

fn entry<'a>(views: &'a mut BTreeMap<String, NetworkView>, name: &str) -> &'a mut NetworkView {
    views
        .entry(name.to_string())
        .or_insert_with(|| NetworkView {
            name: name.to_string(),
            unit: maqet_base::units::switch_service(name),
            state: "inactive".into(),
            vms: Vec::new(),
        })
}

impl<R: Runners> Vms<Systemd, R> {
    /// Every network of this user that this data directory names or whose
    /// switch is loaded, by name.
    pub async fn networks(&self) -> Result<Vec<NetworkView>, VmError> {
        let mut views: BTreeMap<String, NetworkView> = BTreeMap::new();
        let vm_units = self
            .units
            .list_units(&[maqet_base::units::SERVICE_PATTERN])
            .await?;
        for sw in self
            .units
            .list_units(&[maqet_base::units::SWITCH_PATTERN])
            .await?
        {
            let Some(name) = maqet_base::units::switch_segment(&sw.0) else {
                continue;
            };
            let wanters = self.units.wanted_by(&sw.0).await?;
            let v = entry(&mut views, name);
            v.state = sw.3.clone();
            for wanter in wanters {
                let Some(vm) = VmName::from_unit(&wanter) else {
                    continue;
                };
                let Some(u) = vm_units.iter().find(|u| u.0 == wanter) else {
                    continue;
                };
                if !matches!(
                    u.3.as_str(),
                    "active" | "activating" | "deactivating" | "reloading"
                ) {
                    continue;
                }
                let data_dir = match owned_by(&u.1, self.data_dir.path()) {
                    Owner::Ours => None,
                    Owner::Other(d) => Some(d),
                    Owner::Unmarked => Some("?".into()),
                };
                v.vms.push(NetworkMember {
                    vm: vm.to_string(),
                    running: true,
                    data_dir,
                });
            }
        }
        // This data directory's VMs that name a network and are not up.
        if let Some(store) = Store::open_read_only(&self.data_dir.db_path())? {
            for rec in store.list_vms()? {
                for name in stored_networks(&rec.config) {
                    let v = entry(&mut views, &name);
                    if !v
                        .vms
                        .iter()
                        .any(|m| m.vm == rec.name && m.data_dir.is_none())
                    {
                        v.vms.push(NetworkMember {
                            vm: rec.name.clone(),
                            running: false,
                            data_dir: None,
                        });
                    }
                }
            }
        }
        let mut out: Vec<NetworkView> = views.into_values().collect();
        for v in &mut out {
            v.vms
                .sort_by(|a, b| (!a.running, &a.vm).cmp(&(!b.running, &b.vm)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_read_from_both_item_forms() {
        let c = json!({"networks": ["lab", {"name": "dmz", "mac": "52:54:00:00:00:01"}, 7]});
        assert_eq!(stored_networks(&c), vec!["lab", "dmz"]);
        assert!(stored_networks(&json!({"memory": "1G"})).is_empty());
    }
}
