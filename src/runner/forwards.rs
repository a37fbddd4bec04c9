//! Port forwards changed while the VM runs (issue 19): `maqet ports
//! add|rm` (the `forward` request, protocol 6) and `ports: auto`
//! ([`super::autoports`]). QEMU 7.2 changes the forwards of its user
//! network only through the HMP commands `hostfwd_add`/`hostfwd_remove`;
//! clients never get `human-monitor-command` (the QMP policy refuses it),
//! so the runner issues them itself, for requests it has checked:
//! loopback host addresses, no privileged host port, no host side that is
//! forwarded or taken. After every change it rewrites the port plan
//! (`ports.json`, which `maqet ports`, `status` and `inspect` read) and
//! the `STATUS=` line, so they say what QEMU forwards.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::notify;
use maqet_config::Protocol;
use maqet_host::ipc::protocol::{ErrorBody, ErrorKind, ForwardOp, ForwardParams, ForwardReply};
use maqet_host::ports::{self, Forward, Origin, PortError, PortPlan, HOST_ADDR};
use maqet_host::qmp::QmpClient;

/// Bound on one HMP command.
const HMP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many host ports above the wanted one an automatic forward tries.
const AUTO_TRIES: u16 = 100;

/// The VM's forwards and the means to change them.
pub struct Forwards {
    vm: String,
    qmp: QmpClient,
    plan_path: PathBuf,
    /// The netdev of maqet's user network; `None` when the VM has none
    /// (then there is nothing to forward from without a restart).
    netdev: Option<&'static str>,
    /// The NIC is on passt: forwards are fixed while the VM runs.
    passt: bool,
    state: tokio::sync::Mutex<State>,
}

struct State {
    plan: PortPlan,
    /// Guest ports whose automatic forward the user removed: not forwarded
    /// again until the guest stops listening on them.
    suppressed: BTreeSet<u16>,
    /// Guest ports no free host port was found for (said once).
    unforwardable: BTreeSet<u16>,
}

fn err(kind: ErrorKind, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(kind, message)
}

fn protocol_of(name: &str) -> Protocol {
    match name {
        "udp" => Protocol::Udp,
        _ => Protocol::Tcp,
    }
}

/// The lowest host port a forward may use here.
fn lowest_port() -> u16 {
    maqet_config::unprivileged_port_start()
}

/// The first host port an automatic forward of guest port `guest` tries:
/// the same port, or for a privileged one the port 8000 above it (80 →
/// 8080, as `ports:` suggests), never below 1024.
pub fn auto_host_start(guest: u16) -> u16 {
    let floor = lowest_port().max(1024);
    let want = if guest < 1024 {
        guest.saturating_add(8000)
    } else {
        guest
    };
    want.max(floor)
}

impl Forwards {
    /// `plan` is what QEMU was started with (automatic forwards of an
    /// earlier run already dropped); it is written back, so the file says
    /// the same from the start.
    ///
    /// `passt`: the VM's NIC is on passt, whose forwards (its unit's
    /// arguments) cannot change while it runs; the plan is written all the
    /// same, and requests to change it are refused.
    pub fn new(
        vm: &str,
        qmp: QmpClient,
        plan_path: PathBuf,
        plan: Option<PortPlan>,
        passt: bool,
    ) -> Forwards {
        let netdev = plan.as_ref().filter(|_| !passt).map(|_| ports::NETDEV_ID);
        let has_plan = plan.is_some();
        let plan = plan.unwrap_or_default();
        if has_plan {
            if let Err(e) = ports::write_plan(&plan_path, &plan) {
                tracing::warn!("{e}");
            }
        }
        notify::set_status_suffix(plan.summary());
        Forwards {
            vm: vm.to_string(),
            qmp,
            plan_path,
            netdev,
            passt,
            state: tokio::sync::Mutex::new(State {
                plan,
                suppressed: BTreeSet::new(),
                unforwardable: BTreeSet::new(),
            }),
        }
    }

    /// Answers a `forward` request.
    pub async fn request(&self, p: ForwardParams) -> Result<ForwardReply, ErrorBody> {
        if self.passt {
            return Err(err(
                ErrorKind::Conflict,
                format!(
                    "VM '{}' runs on passt (`network: passt`), which cannot change its forwards while it runs; `maqet ports add|rm --save` changes the definition, and a restart (`maqet restart`) applies it",
                    self.vm
                ),
            ));
        }
        let Some(netdev) = self.netdev else {
            return Err(err(
                ErrorKind::Conflict,
                format!(
                    "VM '{}' has no user-mode network to forward from (it was started without `ports:`, `ssh` or `cloud_init`); add `ports:` to its config (`maqet ports add --save` does) and restart it",
                    self.vm
                ),
            ));
        };
        let mut st = self.state.lock().await;
        let f = match p.op {
            ForwardOp::Add => {
                let guest = p.guest_port.expect("from_params requires it to add");
                let mut f = Forward::new(protocol_of(&p.protocol), p.host_port, guest);
                f.host_addr = p.host_addr;
                f.origin = Origin::Added;
                self.add(netdev, &mut st, f).await?
            }
            ForwardOp::Remove => self.remove(netdev, &mut st, &p).await?,
        };
        self.publish(&st.plan)?;
        Ok(ForwardReply {
            protocol: f.protocol.clone(),
            host_addr: f.host_addr,
            host_port: f.host_port,
            guest_port: f.guest_port,
            summary: st.plan.summary(),
        })
    }

    async fn add(&self, netdev: &str, st: &mut State, f: Forward) -> Result<Forward, ErrorBody> {
        let start = lowest_port();
        if f.host_port < start {
            return Err(err(
                ErrorKind::BadRequest,
                format!(
                    "host port {} is below {start} (net.ipv4.ip_unprivileged_port_start): binding it needs privileges a user's VM does not have; pick a host port from {start} up",
                    f.host_port
                ),
            ));
        }
        if let Some(o) = st
            .plan
            .forwards
            .iter()
            .find(|o| o.same_host_side(&f.protocol, f.host_addr, f.host_port))
        {
            return Err(err(
                ErrorKind::Conflict,
                format!(
                    "{}:{}/{} is already forwarded to the guest's port {} ({}); `maqet ports rm {} {}:{}` first",
                    o.host_addr,
                    o.host_port,
                    o.protocol,
                    o.guest_port,
                    o.origin.as_str(),
                    self.vm,
                    o.host_addr,
                    o.host_port
                ),
            ));
        }
        ports::check_free(f.host_addr, f.host_port, protocol_of(&f.protocol)).map_err(|e| {
            let kind = match e {
                PortError::Privileged { .. } => ErrorKind::BadRequest,
                _ => ErrorKind::Conflict,
            };
            err(kind, e.to_string())
        })?;
        self.hmp(&format!("hostfwd_add {netdev} {}", f.rule()))
            .await?;
        st.plan.forwards.push(f.clone());
        st.plan.choose_ssh_port();
        tracing::info!(
            host_port = f.host_port,
            guest_port = f.guest_port,
            "forwarding {}:{}/{} to the guest's port {} ({})",
            f.host_addr,
            f.host_port,
            f.protocol,
            f.guest_port,
            f.origin.as_str()
        );
        Ok(f)
    }

    async fn remove(
        &self,
        netdev: &str,
        st: &mut State,
        p: &ForwardParams,
    ) -> Result<Forward, ErrorBody> {
        let Some(i) = st
            .plan
            .forwards
            .iter()
            .position(|o| o.same_host_side(&p.protocol, p.host_addr, p.host_port))
        else {
            return Err(err(
                ErrorKind::NotFound,
                format!(
                    "VM '{}' forwards nothing from {}:{}/{} (`maqet ports {}` lists its forwards)",
                    self.vm, p.host_addr, p.host_port, p.protocol, self.vm
                ),
            ));
        };
        let f = st.plan.forwards[i].clone();
        if let Some(g) = p.guest_port.filter(|g| *g != f.guest_port) {
            return Err(err(
                ErrorKind::NotFound,
                format!(
                    "{}:{}/{} forwards to the guest's port {}, not {g}",
                    f.host_addr, f.host_port, f.protocol, f.guest_port
                ),
            ));
        }
        self.unforward(netdev, &f).await?;
        st.plan.forwards.remove(i);
        st.plan.choose_ssh_port();
        if f.origin == Origin::Auto {
            st.suppressed.insert(f.guest_port);
        }
        Ok(f)
    }

    /// `hostfwd_remove`; a rule QEMU does not have is gone all the same.
    async fn unforward(&self, netdev: &str, f: &Forward) -> Result<(), ErrorBody> {
        let rule = format!("{}:{}:{}", f.protocol, f.host_addr, f.host_port);
        let out = self
            .hmp_output(&format!("hostfwd_remove {netdev} {rule}"))
            .await?;
        if out.contains("removed") {
            tracing::info!(
                host_port = f.host_port,
                guest_port = f.guest_port,
                "no longer forwarding {rule} to the guest's port {} ({})",
                f.guest_port,
                f.origin.as_str()
            );
            Ok(())
        } else if out.contains("not found") {
            tracing::warn!("QEMU had no forward {rule}; it is dropped from the plan");
            Ok(())
        } else {
            Err(err(
                ErrorKind::Qmp,
                format!("QEMU did not remove the forward {rule}: {}", out.trim()),
            ))
        }
    }

    /// Runs an HMP command whose success is an empty answer.
    async fn hmp(&self, command: &str) -> Result<(), ErrorBody> {
        let out = self.hmp_output(command).await?;
        match out.trim() {
            "" => Ok(()),
            said => Err(err(
                ErrorKind::Qmp,
                format!("QEMU refused `{command}`: {said}"),
            )),
        }
    }

    async fn hmp_output(&self, command: &str) -> Result<String, ErrorBody> {
        let v = self
            .qmp
            .execute_timeout(
                "human-monitor-command",
                Some(json!({ "command-line": command })),
                HMP_TIMEOUT,
            )
            .await
            .map_err(super::dispatch::qmp_error_body)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Writes the plan and the `STATUS=` suffix.
    fn publish(&self, plan: &PortPlan) -> Result<(), ErrorBody> {
        notify::set_status_suffix(plan.summary());
        ports::write_plan(&self.plan_path, plan).map_err(|e| {
            err(
                ErrorKind::Internal,
                format!("the forward is in place, but {e}; `maqet ports` may not show it"),
            )
        })
    }

    /// Makes the automatic forwards those of `listening` (guest TCP ports
    /// reachable through the user network): new listeners get a forward,
    /// closed ones lose theirs. Ports forwarded otherwise are left alone.
    pub async fn sync_auto(&self, listening: &BTreeSet<u16>) {
        let Some(netdev) = self.netdev else {
            return;
        };
        let mut st = self.state.lock().await;
        st.suppressed.retain(|p| listening.contains(p));
        st.unforwardable.retain(|p| listening.contains(p));
        let explicit: BTreeSet<u16> = st
            .plan
            .forwards
            .iter()
            .filter(|f| f.origin != Origin::Auto && f.protocol == "tcp")
            .map(|f| f.guest_port)
            .collect();
        let wanted: BTreeSet<u16> = listening
            .iter()
            .filter(|p| !explicit.contains(p) && !st.suppressed.contains(p))
            .copied()
            .collect();
        let mut changed = false;
        let gone: Vec<Forward> = st
            .plan
            .forwards
            .iter()
            .filter(|f| f.origin == Origin::Auto && !wanted.contains(&f.guest_port))
            .cloned()
            .collect();
        for f in gone {
            match self.unforward(netdev, &f).await {
                Ok(()) => {
                    st.plan.forwards.retain(|o| o != &f);
                    st.plan.choose_ssh_port();
                    changed = true;
                }
                Err(e) => tracing::warn!("{}", e.message),
            }
        }
        let have: BTreeSet<u16> = st
            .plan
            .forwards
            .iter()
            .filter(|f| f.origin == Origin::Auto)
            .map(|f| f.guest_port)
            .collect();
        for guest in wanted.difference(&have).copied().collect::<Vec<_>>() {
            if st.unforwardable.contains(&guest) {
                continue;
            }
            match self.add_auto(netdev, &mut st, guest).await {
                Some(()) => changed = true,
                None => {
                    st.unforwardable.insert(guest);
                }
            }
        }
        if changed {
            if let Err(e) = self.publish(&st.plan) {
                tracing::warn!("{}", e.message);
            }
        }
    }

    /// One automatic forward of guest port `guest`, from the first free
    /// host port from [`auto_host_start`] on.
    async fn add_auto(&self, netdev: &str, st: &mut State, guest: u16) -> Option<()> {
        let start = auto_host_start(guest);
        let end = start.saturating_add(AUTO_TRIES);
        for host in start..=end {
            let taken = st
                .plan
                .forwards
                .iter()
                .any(|o| o.same_host_side("tcp", HOST_ADDR, host));
            if taken || ports::check_free(HOST_ADDR, host, Protocol::Tcp).is_err() {
                continue;
            }
            let mut f = Forward::new(Protocol::Tcp, host, guest);
            f.origin = Origin::Auto;
            if host != start {
                tracing::info!(
                    "the guest listens on port {guest}; host port {start} is taken, so 127.0.0.1:{host} forwards to it"
                );
            } else if host != guest {
                tracing::info!(
                    "the guest listens on port {guest}, below 1024; 127.0.0.1:{host} forwards to it"
                );
            }
            match self.add(netdev, st, f).await {
                Ok(_) => return Some(()),
                // Taken between the check and QEMU's bind: the next one.
                Err(e) if e.kind == ErrorKind::Qmp || e.kind == ErrorKind::Conflict => {
                    tracing::debug!("{}", e.message);
                    continue;
                }
                Err(e) => {
                    tracing::warn!("{}", e.message);
                    return None;
                }
            }
        }
        tracing::warn!(
            "the guest listens on port {guest}, but no host port from {start} to {end} is free; it is not forwarded"
        );
        None
    }
}
