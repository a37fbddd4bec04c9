//! `maqet ports add|rm` (issue 19): a VM's port forwards changed while it
//! runs — the runner does it (`forward`, protocol 6), so `maqet ports`,
//! `status` and `inspect` show it at once — and, with `save`, in its
//! definition too (its `ports:` list, validated like any config), so the
//! next start has it. A stopped VM's forwards change only in the
//! definition, and only when asked to (`save`).

use serde::Serialize;
use serde_json::Value as Json;

use maqet_base::vmname::VmName;
use maqet_config::{ConfigDocument, PortSpec, Protocol, AUTO_PORTS};
use maqet_host::ipc::protocol::{ErrorKind, ForwardOp, ForwardParams, ForwardReply};
use maqet_host::ipc::IpcError;

use super::{Runners, UnitManager, VmError, Vms};

/// What to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortChange {
    Add(PortSpec),
    /// The forward from this host side (and to `guest`, when given).
    Remove {
        protocol: Protocol,
        addr: std::net::Ipv4Addr,
        host: u16,
        guest: Option<u16>,
    },
}

impl PortChange {
    fn host_side(&self) -> (Protocol, std::net::Ipv4Addr, u16) {
        match self {
            PortChange::Add(p) => (p.protocol, p.addr, p.host),
            PortChange::Remove {
                protocol,
                addr,
                host,
                ..
            } => (*protocol, *addr, *host),
        }
    }
}

/// What `ports add|rm` did.
#[derive(Debug, Clone, Serialize)]
pub struct PortsChanged {
    pub vm: String,
    /// The forward as the runner has it now (added) or had it (removed);
    /// `None` when the VM is not running, or a saved forward it did not
    /// have was removed from the definition only.
    pub live: Option<ForwardReply>,
    /// The definition's `ports:` was changed too.
    pub saved: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PortsError {
    #[error("VM '{vm}' is not running: `maqet ports {op}` changes the forwards of a running VM; add --save to change its definition (the next start forwards it)")]
    NotRunning { vm: VmName, op: &'static str },
    #[error("the runner of VM '{vm}' speaks protocol {runner} (started by {}); changing forwards while it runs needs protocol {}: restart the VM with `maqet restart {vm}` (add --save to change the definition now)", maqet_host::ipc::client::started_by(.maqet_version), maqet_host::ipc::protocol::Need::Forward.since())]
    Outdated {
        vm: VmName,
        runner: u32,
        maqet_version: Option<String>,
    },
    #[error("the definition of VM '{vm}' has no forward from {what} in `ports:`")]
    NotInDefinition { vm: VmName, what: String },
    #[error("the forward changed in VM '{vm}', but saving it in the definition failed: {error}")]
    NotSaved { vm: VmName, error: String },
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// Adds or removes a forward of VM `vm` (see the module doc).
    pub async fn change_ports(
        &self,
        vm: &VmName,
        change: PortChange,
        save: bool,
    ) -> Result<PortsChanged, VmError> {
        self.record(vm)?;
        // A start (or apply) cannot slip in between the check and the write.
        let _lock = self.lock(vm, super::LOCK_WAIT)?;
        let rec = self.record(vm)?;
        let vm = vm.clone();
        let op = match change {
            PortChange::Add(_) => "add",
            PortChange::Remove { .. } => "rm",
        };
        // The definition as it would be stored, checked before anything
        // changes; for a removal also whether it had the forward.
        let saved = match save {
            true => Some(saved_definition(&vm, &rec.config, &change)?),
            false => None,
        };
        let running = self.is_running(&vm).await?;
        if !running && saved.is_none() {
            return Err(PortsError::NotRunning { vm, op }.into());
        }
        let live = match running {
            true => self.forward_live(&vm, &change, saved.is_some()).await?,
            false => None,
        };
        if let Some(json) = saved {
            self.store()
                .and_then(|s| Ok(s.update_config(vm.as_str(), &json, &rec.sources, None)?))
                .map_err(|e| match running {
                    true => VmError::from(PortsError::NotSaved {
                        vm: vm.clone(),
                        error: e.to_string(),
                    }),
                    false => e,
                })?;
        }
        Ok(PortsChanged {
            vm: vm.to_string(),
            live,
            saved: save,
        })
    }

    /// The change through the runner. A removal the definition also holds
    /// (`saved`) is no error when the runner does not have it.
    async fn forward_live(
        &self,
        vm: &VmName,
        change: &PortChange,
        saved: bool,
    ) -> Result<Option<ForwardReply>, VmError> {
        let (protocol, addr, host) = change.host_side();
        let params = ForwardParams {
            op: match change {
                PortChange::Add(_) => ForwardOp::Add,
                PortChange::Remove { .. } => ForwardOp::Remove,
            },
            protocol: protocol.as_str().to_string(),
            host_addr: addr,
            host_port: host,
            guest_port: match change {
                PortChange::Add(p) => Some(p.guest),
                PortChange::Remove { guest, .. } => *guest,
            },
        };
        let mut client = self.runner(vm).await?;
        match client.forward(params).await {
            Ok(r) => Ok(Some(r)),
            Err(IpcError::Outdated {
                runner,
                maqet_version,
                ..
            }) => Err(PortsError::Outdated {
                vm: vm.clone(),
                runner,
                maqet_version,
            }
            .into()),
            Err(e)
                if saved
                    && matches!(change, PortChange::Remove { .. })
                    && e.remote_kind() == Some(ErrorKind::NotFound) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The stored config with `change` applied to its `ports:` list, validated
/// as `apply` would (a clash or a privileged port is refused with the
/// item's position); the JSON to store.
fn saved_definition(vm: &VmName, stored: &Json, change: &PortChange) -> Result<Json, VmError> {
    let mut doc = ConfigDocument::from_stored(stored)?;
    let mut list = match doc.get("ports") {
        Some(Json::Array(a)) => a,
        Some(Json::String(s)) if s == AUTO_PORTS => vec![Json::String(s)],
        _ => Vec::new(),
    };
    let label = match change {
        PortChange::Add(p) => {
            list.push(Json::String(p.to_string()));
            "maqet ports add --save"
        }
        PortChange::Remove {
            protocol,
            addr,
            host,
            guest,
        } => {
            let before = list.len();
            list.retain(|item| {
                let text = match item {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let Ok(p) = maqet_config::parse_port(&text) else {
                    return true;
                };
                let same = p.protocol == *protocol
                    && p.addr == *addr
                    && p.host == *host
                    && guest.is_none_or(|g| g == p.guest);
                !same
            });
            if list.len() == before {
                return Err(PortsError::NotInDefinition {
                    vm: vm.clone(),
                    what: format!("{addr}:{host}/{}", protocol.as_str()),
                }
                .into());
            }
            "maqet ports rm --save"
        }
    };
    doc.set("ports", Json::Array(list), label);
    doc.validate()?;
    Ok(doc.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm() -> VmName {
        VmName::new("web").unwrap()
    }

    fn stored(ports: Json) -> Json {
        json!({"binary": "/bin/sh", "ports": ports})
    }

    #[test]
    fn saving_appends_and_removes_items_of_ports() {
        let add = PortChange::Add(maqet_config::parse_port("127.0.0.2:8080:80/udp").unwrap());
        let j = saved_definition(&vm(), &stored(json!(["2222:22"])), &add).unwrap();
        assert_eq!(j["ports"], json!(["2222:22", "127.0.0.2:8080:80/udp"]));
        // `ports: auto` becomes a list that keeps auto.
        let add = PortChange::Add(maqet_config::parse_port("8080:80").unwrap());
        let mut auto = stored(json!("auto"));
        auto["guest_agent"] = json!(true);
        let j = saved_definition(&vm(), &auto, &add).unwrap();
        assert_eq!(j["ports"], json!(["auto", "8080:80/tcp"]));
        let rm = PortChange::Remove {
            protocol: Protocol::Tcp,
            addr: maqet_config::DEFAULT_HOST_ADDR,
            host: 2222,
            guest: None,
        };
        let j = saved_definition(&vm(), &stored(json!(["2222:22", "8080:80"])), &rm).unwrap();
        assert_eq!(j["ports"], json!(["8080:80"]));
        let e = saved_definition(&vm(), &stored(json!(["8080:80"])), &rm).unwrap_err();
        assert!(
            e.to_string().contains("no forward from 127.0.0.1:2222/tcp"),
            "{e}"
        );
    }

    #[test]
    fn a_saved_clash_is_refused_with_its_position() {
        let add = PortChange::Add(maqet_config::parse_port("8080:81").unwrap());
        let e = saved_definition(&vm(), &stored(json!(["8080:80"])), &add).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("maqet ports add --save") && text.contains("already forwarded"),
            "{text}"
        );
    }
}
