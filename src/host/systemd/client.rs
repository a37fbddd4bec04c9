//! The session-bus client: one connection per CLI invocation.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;
use zbus::fdo::PropertiesProxy;
use zbus::names::InterfaceName;
use zbus::zvariant::OwnedValue;
use zbus::Connection;

use super::properties::{service_properties, socket_properties, VmUnitSpec};
use super::proxies::{unit_object_path, ManagerProxy, UnitListEntry};
use super::query::SOCKET_IFACE;
use super::signals::Pumped;
use super::unit_state::UnitStatus;

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("cannot reach the systemd user manager over the session bus ({address}): {reason}\nmaqet runs VMs as systemd --user units and needs a user session: log in normally (or `loginctl enable-linger $USER` for VMs that outlive logins), and check that `systemctl --user status` works; DBUS_SESSION_BUS_ADDRESS or XDG_RUNTIME_DIR must point at it")]
    NoSession { address: String, reason: String },
    #[error("systemd refused {method} for {unit}: {message}")]
    Call {
        method: &'static str,
        unit: String,
        message: String,
    },
    #[error("{unit} is already running")]
    AlreadyRunning { unit: String },
    #[error("{unit} failed: {}", .status.failure_reason())]
    Failed {
        unit: String,
        status: Box<UnitStatus>,
    },
    #[error("{unit} did not {what} within {waited:?}")]
    Timeout {
        unit: String,
        what: &'static str,
        waited: Duration,
    },
}

pub(super) fn call_err(method: &'static str, unit: &str, e: zbus::Error) -> SystemdError {
    // Nobody owns org.freedesktop.systemd1 on this bus: a session bus
    // without a user manager. (This used to show at the `Subscribe` every
    // connection began with; it is now the first call's answer.)
    if error_name(&e).is_some_and(no_manager) {
        return SystemdError::NoSession {
            address: session_address(),
            reason: dbus_message(&e),
        };
    }
    SystemdError::Call {
        method,
        unit: unit.to_string(),
        message: dbus_message(&e),
    }
}

/// Whether a D-Bus error name is the bus saying that nobody serves
/// org.freedesktop.systemd1: no owner, or its activation failed (a bus
/// with a `.service` file for it but no systemd to start).
fn no_manager(name: &str) -> bool {
    matches!(
        name,
        "org.freedesktop.DBus.Error.ServiceUnknown" | "org.freedesktop.DBus.Error.NameHasNoOwner"
    ) || name.starts_with("org.freedesktop.DBus.Error.Spawn.")
}

fn dbus_message(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, desc, _) => match desc {
            Some(d) => format!("{d} ({})", name.as_str()),
            None => name.as_str().to_string(),
        },
        other => other.to_string(),
    }
}

pub(super) fn error_name(e: &zbus::Error) -> Option<&str> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str()),
        _ => None,
    }
}

/// Which properties of a listed unit that is up `ls` still needs from
/// systemd (the rest are always asked: `StatusText`, `ActiveEnterTimestamp`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ListedAsk {
    /// `MainPID`, unless the unit's cgroup already showed it.
    pub main_pid: bool,
    /// `NRestarts`, unless the VM has no restart policy (then systemd never
    /// restarted it and the count is 0).
    pub restarts: bool,
}

/// What a start waits for.
enum StartEvent {
    Job(JobEnd),
    /// The service's `SubState` changed to `auto-restart` (or to a value
    /// the signal did not give).
    StateChanged,
}

/// A `JobRemoved` signal's arguments.
struct JobEnd {
    job: String,
    unit: String,
    result: String,
}

/// Bound on every D-Bus call, so no call can wait forever (libdbus's
/// default reply timeout).
const METHOD_TIMEOUT: Duration = Duration::from_secs(25);

/// Where a start stands, judged from the service's properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartProgress {
    Pending,
    Ready,
    /// Failed, or ended before it ever became ready.
    Ended,
}

impl StartProgress {
    pub fn of(st: &UnitStatus) -> StartProgress {
        match st.active_state.as_str() {
            "active" | "reloading" => StartProgress::Ready,
            "failed" => StartProgress::Ended,
            "inactive" if st.inactive_exit_monotonic > 0 => StartProgress::Ended,
            _ => StartProgress::Pending,
        }
    }
}

const UNIT_IFACE: &str = "org.freedesktop.systemd1.Unit";
const SERVICE_IFACE: &str = "org.freedesktop.systemd1.Service";

pub struct Systemd {
    pub(super) conn: Connection,
    pub(super) mgr: ManagerProxy<'static>,
    /// Set once `Subscribe` was answered ([`Systemd::subscribe`]).
    subscribed: tokio::sync::OnceCell<()>,
}

/// The session bus address as the connection reads it (for messages).
fn session_address() -> String {
    std::env::var("DBUS_SESSION_BUS_ADDRESS").unwrap_or_else(|_| {
        match std::env::var("XDG_RUNTIME_DIR") {
            Ok(d) => format!("unix:path={d}/bus"),
            Err(_) => "no DBUS_SESSION_BUS_ADDRESS and no XDG_RUNTIME_DIR".to_string(),
        }
    })
}

impl Systemd {
    /// Connects to the user manager over the session bus.
    pub async fn connect_user() -> Result<Self, SystemdError> {
        let address = session_address();
        let no_session = |e: zbus::Error| SystemdError::NoSession {
            address: address.clone(),
            reason: dbus_message(&e),
        };
        let builder = match plain_unix_path(&address) {
            // zbus connects a Unix socket on a blocking-pool thread; a
            // connect to a local socket does not block, and a thread that
            // must first be scheduled cost 0.3 ms on a quiet machine and
            // several on a busy one (measured on `maqet qmp run`).
            Some(path) => {
                let stream = std::os::unix::net::UnixStream::connect(path)
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                    .and_then(tokio::net::UnixStream::from_std)
                    .map_err(|e| SystemdError::NoSession {
                        address: address.clone(),
                        reason: e.to_string(),
                    })?;
                zbus::connection::Builder::unix_stream(stream)
            }
            // Any other form of address (several, abstract, escaped, tcp):
            // zbus's own parser and connect.
            None => zbus::connection::Builder::session().map_err(no_session)?,
        };
        let conn = builder
            .method_timeout(METHOD_TIMEOUT)
            .build()
            .await
            .map_err(no_session)?;
        let mgr = ManagerProxy::new(&conn).await.map_err(no_session)?;
        Ok(Systemd {
            conn,
            mgr,
            subscribed: tokio::sync::OnceCell::new(),
        })
    }

    /// Asks systemd for its unit and job signals, once per connection,
    /// before the first wait on them: on the session bus systemd sends
    /// them only while some client is subscribed. Commands that wait on
    /// nothing (`qmp`, `status`, `ls`, …) skip the round trip (≈ 0.2–0.4 ms
    /// of a 5 ms `maqet qmp run`).
    async fn subscribe(&self) -> Result<(), SystemdError> {
        self.subscribed
            .get_or_try_init(|| async {
                self.mgr
                    .subscribe()
                    .await
                    .map_err(|e| call_err("Subscribe", "", e))
            })
            .await
            .map(drop)
    }

    /// The object path of a loaded unit, `None` when systemd has no such
    /// unit loaded. (`GetUnit`, unlike the object path itself, never loads
    /// a unit as a side effect.)
    pub(super) async fn loaded_unit_path(
        &self,
        unit: &str,
    ) -> Result<Option<zbus::zvariant::OwnedObjectPath>, SystemdError> {
        match self.mgr.get_unit(unit).await {
            Ok(p) => Ok(Some(p)),
            Err(e) if error_name(&e) == Some("org.freedesktop.systemd1.NoSuchUnit") => Ok(None),
            Err(e) => Err(call_err("GetUnit", unit, e)),
        }
    }

    /// State of a unit, `None` when systemd has no such unit loaded.
    pub async fn unit_status(&self, unit: &str) -> Result<Option<UnitStatus>, SystemdError> {
        let Some(path) = self.loaded_unit_path(unit).await? else {
            return Ok(None);
        };
        let props = self.properties_proxy(path.as_str()).await?;
        // Both asked for at once: one round trip, not two.
        let (unit_props, service_props) =
            futures_util::future::try_join(get_all(&props, UNIT_IFACE, unit), async {
                if unit.ends_with(".service") {
                    get_all(&props, SERVICE_IFACE, unit).await
                } else {
                    Ok(HashMap::new())
                }
            })
            .await?;
        let st = UnitStatus::from_properties(unit, unit_props, service_props);
        Ok(Some(self.with_start_limit(st).await?))
    }

    /// A loaded unit's name, description, load, active and sub state from
    /// one `ListUnitsByPatterns` (the unit's name is its own pattern: unit
    /// names maqet makes hold no glob character); the other fields are
    /// their defaults. `None` when it is not loaded, as for
    /// [`unit_status`](Self::unit_status). Whether the VM is live follows
    /// from these alone ([`UnitStatus::vm_state`]`.is_live()`); `GetUnit`
    /// and the two `GetAll`s of a full read cost systemd ≈ 1 ms more.
    pub async fn unit_brief(&self, unit: &str) -> Result<Option<UnitStatus>, SystemdError> {
        Ok(self
            .list_units(&[unit])
            .await?
            .into_iter()
            .find(|e| e.0 == unit)
            .map(|e| UnitStatus {
                unit: e.0,
                description: e.1,
                load_state: e.2,
                active_state: e.3,
                sub_state: e.4,
                ..UnitStatus::default()
            }))
    }

    /// The state of a service unit `ListUnitsByPatterns` returned, for
    /// `maqet ls`. The listing already has the object path, states and
    /// description. For a unit that is up, two to four single-property
    /// `Get`s, sent at once, settle the rest (`ask` says which the caller
    /// could not learn elsewhere): a `GetAll` of the Service interface
    /// serialises some 250 properties and costs systemd ≈ 0.7 ms per unit
    /// (measured: 50 units, 36 ms by `GetAll`, 9 ms by four `Get`s).
    /// Usage comes from the unit's cgroup or /proc, not from systemd.
    /// A unit in any other state (failed, waiting to restart, stopping)
    /// is rare and needs its result, exit status and start limit: the
    /// full read. `None` when the unit went away since the listing.
    pub async fn listed_unit_status(
        &self,
        entry: &UnitListEntry,
        ask: ListedAsk,
    ) -> Result<Option<UnitStatus>, SystemdError> {
        let unit = entry.0.as_str();
        if !(unit.ends_with(".service") && matches!(entry.3.as_str(), "active" | "reloading")) {
            return self.unit_status(unit).await;
        }
        let props = self.properties_proxy(entry.6.as_str()).await?;
        let mut names = vec!["StatusText", "ActiveEnterTimestamp"];
        if ask.main_pid {
            names.push("MainPID");
        }
        if ask.restarts {
            names.push("NRestarts");
        }
        let got = futures_util::future::try_join_all(names.iter().map(|&name| {
            let iface = if name == "ActiveEnterTimestamp" {
                UNIT_IFACE
            } else {
                SERVICE_IFACE
            };
            props.get(InterfaceName::from_static_str_unchecked(iface), name)
        }))
        .await;
        let values = match got {
            Ok(v) => v,
            Err(zbus::fdo::Error::UnknownObject(_)) => return Ok(None),
            Err(e) => return Err(call_err("Get", unit, e.into())),
        };
        let mut service_props: HashMap<String, OwnedValue> =
            names.iter().map(|n| n.to_string()).zip(values).collect();
        let since = service_props
            .remove("ActiveEnterTimestamp")
            .expect("asked for");
        // systemd resets a service's Result to "success" when it starts
        // it, so a unit that is up has no other.
        service_props.insert(
            "Result".to_string(),
            OwnedValue::from(zbus::zvariant::Str::from_static("success")),
        );
        let unit_props = HashMap::from([("ActiveEnterTimestamp".to_string(), since)]);
        let mut st = UnitStatus::from_properties(unit, unit_props, service_props);
        st.description = entry.1.clone();
        st.load_state = entry.2.clone();
        st.active_state = entry.3.clone();
        st.sub_state = entry.4.clone();
        Ok(Some(st))
    }

    /// Sets `start_limit_hit` of a service unit's status (asks its socket
    /// only when the service is down).
    async fn with_start_limit(&self, mut st: UnitStatus) -> Result<UnitStatus, SystemdError> {
        if let Some(socket) = st.unit.clone().strip_suffix(".service") {
            st.start_limit_hit = st.result == "start-limit-hit"
                || (matches!(st.active_state.as_str(), "failed" | "inactive")
                    && self
                        .unit_result(&format!("{socket}.socket"), SOCKET_IFACE)
                        .await?
                        == "start-limit-hit");
        }
        Ok(st)
    }

    /// A unit's `Result` ("" when it is not loaded).
    async fn unit_result(&self, unit: &str, iface: &'static str) -> Result<String, SystemdError> {
        let Some(path) = self.loaded_unit_path(unit).await? else {
            return Ok(String::new());
        };
        let props = self.properties_proxy(path.as_str()).await?;
        let v = props
            .get(InterfaceName::from_static_str_unchecked(iface), "Result")
            .await
            .map_err(|e| call_err("Get", unit, e.into()))?;
        Ok(String::try_from(v).unwrap_or_default())
    }

    pub(super) async fn properties_proxy(
        &self,
        path: &str,
    ) -> Result<PropertiesProxy<'static>, SystemdError> {
        PropertiesProxy::builder(&self.conn)
            .destination("org.freedesktop.systemd1")
            .and_then(|b| b.path(path.to_string()))
            .map_err(|e| call_err("Properties", path, e))?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|e| call_err("Properties", path, e))
    }

    /// All loaded units matching `patterns`, in one call.
    pub async fn list_units(&self, patterns: &[&str]) -> Result<Vec<UnitListEntry>, SystemdError> {
        self.mgr
            .list_units_by_patterns(&[], patterns)
            .await
            .map_err(|e| call_err("ListUnitsByPatterns", &patterns.join(" "), e))
    }

    /// PIDs and command lines of a unit's processes.
    pub async fn unit_processes(
        &self,
        unit: &str,
    ) -> Result<Vec<(String, u32, String)>, SystemdError> {
        self.mgr
            .get_unit_processes(unit)
            .await
            .map_err(|e| call_err("GetUnitProcesses", unit, e))
    }

    /// Forgets a failed unit (ignored when it is not failed or not loaded).
    pub async fn reset_failed(&self, unit: &str) {
        if let Err(e) = self.mgr.reset_failed_unit(unit).await {
            tracing::debug!(unit, error = %dbus_message(&e), "ResetFailedUnit");
        }
    }

    pub async fn kill(&self, unit: &str, signal: i32) -> Result<(), SystemdError> {
        self.mgr
            .kill_unit(unit, "all", signal)
            .await
            .map_err(|e| call_err("KillUnit", unit, e))
    }

    /// Creates and starts the socket + service pair in one job and waits
    /// until the runner sent READY=1, or the service failed, or `timeout`.
    pub async fn start_vm(&self, spec: &VmUnitSpec, timeout: Duration) -> Result<(), SystemdError> {
        let service = spec.vm.service_unit();
        let socket = spec.vm.socket_unit();
        // Independent round trips, sent at once: the resets and the
        // subscriptions (both done before the start, so no job can finish
        // unseen and no failed unit of the names is in the way).
        let ((), events) =
            futures_util::future::join(self.reset_pair(spec), self.start_events(&service, &socket))
                .await;
        let events = events?;
        let deadline = Instant::now() + timeout;
        let job = self.create_pair(spec).await?;
        self.wait_ready(&service, &socket, job.as_str(), events, deadline, timeout)
            .await
    }

    /// Creates and starts the VM's pair like [`Systemd::start_vm`], but
    /// returns once systemd has queued the start job: whether the runner
    /// becomes ready is left to the unit (its `TimeoutStartUSec` still
    /// bounds the start) and shows in its state.
    pub async fn queue_vm(&self, spec: &VmUnitSpec) -> Result<(), SystemdError> {
        self.reset_pair(spec).await;
        self.create_pair(spec).await.map(drop)
    }

    /// A failed pair stays loaded so `systemctl --user status` can say why;
    /// it must be reset before the names can be used again.
    async fn reset_pair(&self, spec: &VmUnitSpec) {
        let names = [spec.vm.service_unit(), spec.vm.socket_unit()];
        let companions = spec.companions.units.iter().map(|c| c.name.as_str());
        // Each reset stands alone: sent at once, one round trip in all.
        futures_util::future::join_all(
            names
                .iter()
                .map(String::as_str)
                .chain(companions)
                .map(|unit| self.reset_failed(unit)),
        )
        .await;
    }

    /// StartTransientUnit of the socket, with the service and companions
    /// created in the same transaction; returns the socket's start job.
    async fn create_pair(
        &self,
        spec: &VmUnitSpec,
    ) -> Result<zbus::zvariant::OwnedObjectPath, SystemdError> {
        let service = spec.vm.service_unit();
        let socket = spec.vm.socket_unit();
        let sock_p = socket_properties(spec);
        let serv_p = service_properties(spec);
        let mut aux = vec![(service.as_str(), serv_p)];
        aux.extend(
            spec.companions
                .units
                .iter()
                .map(|c| (c.name.as_str(), c.props.clone())),
        );
        let mut attempts = 0;
        tracing::debug!(unit = %socket, "StartTransientUnit");
        loop {
            match self
                .mgr
                .start_transient_unit(&socket, "fail", &sock_p, &aux)
                .await
            {
                Ok(job) => return Ok(job),
                Err(e) if error_name(&e) == Some("org.freedesktop.systemd1.UnitExists") => {
                    // Live → the atomic "already running" answer. Not live →
                    // a just-reset unit the manager has not unloaded yet.
                    let live = self.unit_status(&service).await?.is_some_and(|s| {
                        matches!(
                            s.active_state.as_str(),
                            "active" | "activating" | "deactivating" | "reloading"
                        )
                    });
                    attempts += 1;
                    if live || attempts > 40 {
                        return Err(SystemdError::AlreadyRunning { unit: service });
                    }
                    self.reset_failed(&service).await;
                    self.reset_failed(&socket).await;
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(e) => return Err(call_err("StartTransientUnit", &socket, e)),
            }
        }
    }

    /// What a start of the pair waits on. The service's start job ends
    /// exactly when it is ready (READY=1) or has failed: that is the moment
    /// to look, no polling needed. Only this pair's jobs (matched by the
    /// bus on the unit argument), drained by pumps (signals.rs: an
    /// unpolled stream can stall the connection).
    async fn start_events(
        &self,
        service: &str,
        socket: &str,
    ) -> Result<Pumped<StartEvent>, SystemdError> {
        let mut events = Pumped::new();
        // The three match rules (each an AddMatch and a GetNameOwner) and
        // the subscription are asked for at once.
        let job_removed = |unit| async move {
            self.mgr
                .receive_job_removed_with_args(&[(2, unit)])
                .await
                .map_err(|e| call_err("Subscribe", unit, e))
        };
        let changes = async {
            self.properties_proxy(&unit_object_path(service))
                .await?
                .receive_properties_changed()
                .await
                .map_err(|e| call_err("Subscribe", service, e))
        };
        let (service_jobs, socket_jobs, changes, ()) = futures_util::future::try_join4(
            job_removed(service),
            job_removed(socket),
            changes,
            self.subscribe(),
        )
        .await?;
        for stream in [service_jobs, socket_jobs] {
            events.add(stream, |sig| {
                sig.args().ok().map(|a| {
                    StartEvent::Job(JobEnd {
                        job: a.job.to_string(),
                        unit: a.unit.clone(),
                        result: a.result.clone(),
                    })
                })
            });
        }
        // And the service's state: where a failed attempt does not end the
        // start job (it may stay queued across automatic restarts), the
        // unit entering `auto-restart` is the sign. The signal carries the
        // new SubState, so only that change (or one whose value is not
        // given) is worth a read of the unit; a read of every change cost
        // three to five full reads per start, the last ones after READY=1.
        events.add(changes, |sig| {
            let args = sig.args().ok()?;
            let sub_state = match args.changed_properties().get("SubState") {
                Some(v) => Some(v),
                None if args.invalidated_properties().contains(&"SubState") => None,
                None => return None,
            };
            may_be_auto_restart(sub_state).then_some(StartEvent::StateChanged)
        });
        Ok(events)
    }

    /// Waits for the end of a start: the service's start job done (ready),
    /// or any sign that this attempt failed.
    async fn wait_ready(
        &self,
        service: &str,
        socket: &str,
        job: &str,
        mut events: Pumped<StartEvent>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), SystemdError> {
        let failed = |st: UnitStatus| SystemdError::Failed {
            unit: service.to_string(),
            status: Box::new(st),
        };
        loop {
            let end = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    // One last look: the signal may be all that was missed.
                    let st = self.unit_status(service).await?.unwrap_or_default();
                    return match StartProgress::of(&st) {
                        StartProgress::Ready => Ok(()),
                        StartProgress::Pending if !st.is_auto_restart() => Err(SystemdError::Timeout {
                            unit: service.to_string(),
                            what: "become ready",
                            waited: timeout,
                        }),
                        _ => Err(failed(st)),
                    };
                }
                end = events.next() => end,
            };
            let end = match end {
                Some(StartEvent::Job(end)) => end,
                Some(StartEvent::StateChanged) => {
                    let st = self.unit_status(service).await?.unwrap_or_default();
                    if st.is_auto_restart() {
                        return Err(failed(st));
                    }
                    continue;
                }
                None => {
                    return Err(SystemdError::Call {
                        method: "JobRemoved",
                        unit: service.to_string(),
                        message: "the bus connection closed".into(),
                    })
                }
            };
            let socket_failed = end.job == job && end.result != "done";
            if end.unit != service && !socket_failed {
                continue;
            }
            // A Type=notify start job is "done" exactly when READY=1
            // arrived: nothing more to ask.
            if end.unit == service && end.result == "done" {
                return Ok(());
            }
            let st = self.unit_status(service).await?.unwrap_or_default();
            // The service's start job ended without READY=1: this attempt
            // failed, even when a restart policy already put the unit into
            // auto-restart (`activating`). The caller reports it now and
            // cancels that restart.
            let attempt_failed = end.unit == service;
            match StartProgress::of(&st) {
                StartProgress::Ready => return Ok(()),
                StartProgress::Ended => return Err(failed(st)),
                StartProgress::Pending if attempt_failed => return Err(failed(st)),
                StartProgress::Pending if socket_failed => {
                    // E.g. the socket path cannot be bound: the service
                    // will never come.
                    let sock = self.unit_status(socket).await?.unwrap_or_default();
                    return Err(SystemdError::Call {
                        method: "StartTransientUnit",
                        unit: socket.to_string(),
                        message: format!(
                            "socket job {} (socket result '{}')",
                            end.result, sock.result
                        ),
                    });
                }
                StartProgress::Pending => {}
            }
        }
    }

    /// Asks systemd to stop a unit (SIGTERM to the runner, which powers
    /// the guest down), without waiting.
    pub async fn stop_unit(&self, unit: &str) -> Result<(), SystemdError> {
        match self.mgr.stop_unit(unit, "replace").await {
            Ok(_) => Ok(()),
            Err(e) if error_name(&e) == Some("org.freedesktop.systemd1.NoSuchUnit") => Ok(()),
            Err(e) => Err(call_err("StopUnit", unit, e)),
        }
    }

    /// Waits until `unit` is no longer live (inactive, failed or unloaded)
    /// and returns its last state (`None` once unloaded).
    pub async fn wait_until_down(
        &self,
        unit: &str,
        timeout: Duration,
    ) -> Result<Option<UnitStatus>, SystemdError> {
        self.wait_until(unit, timeout, "stop", |s| {
            matches!(s.active_state.as_str(), "inactive" | "failed")
        })
        .await
    }

    /// Waits until `unit` has finished starting: no longer `activating`
    /// (ready, failed, or gone).
    pub async fn wait_until_settled(
        &self,
        unit: &str,
        timeout: Duration,
    ) -> Result<Option<UnitStatus>, SystemdError> {
        self.wait_until(unit, timeout, "finish starting", |s| {
            s.active_state != "activating"
        })
        .await
    }

    /// Waits until a stop of `unit` is under way (or done).
    pub async fn wait_until_stopping(
        &self,
        unit: &str,
        timeout: Duration,
    ) -> Result<Option<UnitStatus>, SystemdError> {
        self.wait_until(unit, timeout, "begin to stop", |s| {
            matches!(
                s.active_state.as_str(),
                "deactivating" | "inactive" | "failed"
            )
        })
        .await
    }

    /// Waits until `done` holds for the unit's state or the unit is
    /// unloaded (`None`).
    async fn wait_until(
        &self,
        unit: &str,
        timeout: Duration,
        what: &'static str,
        done: impl Fn(&UnitStatus) -> bool,
    ) -> Result<Option<UnitStatus>, SystemdError> {
        self.subscribe().await?;
        let props = self.properties_proxy(&unit_object_path(unit)).await?;
        // Subscribed before the first read, drained by pumps (signals.rs);
        // a wake-up only says "look again", the state is always re-read.
        let mut wake = Pumped::new();
        let changes = props
            .receive_properties_changed()
            .await
            .map_err(|e| call_err("Subscribe", unit, e))?;
        wake.add(changes, |sig| {
            // Service-interface chatter (StatusText, …) needs no look.
            sig.args()
                .is_ok_and(|a| {
                    a.interface_name().as_str() == UNIT_IFACE
                        && a.changed_properties().contains_key("ActiveState")
                })
                .then_some(())
        });
        // Only this unit's removal (see signals.rs for why no stream is left unread).
        let removed = self
            .mgr
            .receive_unit_removed_with_args(&[(0, unit)])
            .await
            .map_err(|e| call_err("Subscribe", unit, e))?;
        wake.add(removed, |_| Some(()));
        let deadline = Instant::now() + timeout;
        let mut streams_open = true;
        loop {
            let st = self.unit_status(unit).await?;
            match &st {
                None => return Ok(None),
                Some(s) if done(s) => return Ok(st),
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(SystemdError::Timeout {
                    unit: unit.to_string(),
                    what,
                    waited: timeout,
                });
            }
            tokio::select! {
                // Re-read once more at the deadline (above) before giving up.
                _ = tokio::time::sleep_until(deadline) => {}
                w = wake.next(), if streams_open => streams_open = w.is_some(),
            }
        }
    }
}

/// The socket path of a session bus address of the plain form
/// `unix:path=PATH` (what systemd and dbus set up), as zbus would read it;
/// `None` for any other form, which zbus then parses itself.
fn plain_unix_path(address: &str) -> Option<&str> {
    let path = address.strip_prefix("unix:path=")?;
    // Several addresses, more keys or %-escapes: not the plain form.
    let plain = !path.is_empty() && !path.contains([';', ',', '%']);
    plain.then_some(path)
}

/// Whether a `SubState` change (its new value, `None` when the signal only
/// invalidated it) may have put the unit into `auto-restart`.
fn may_be_auto_restart(sub_state: Option<&zbus::zvariant::Value<'_>>) -> bool {
    match sub_state {
        Some(zbus::zvariant::Value::Str(s)) => s.as_str() == "auto-restart",
        // Not a string: not what systemd sends; look rather than guess.
        _ => true,
    }
}

pub(super) async fn get_all(
    props: &PropertiesProxy<'_>,
    iface: &'static str,
    unit: &str,
) -> Result<HashMap<String, OwnedValue>, SystemdError> {
    let name = InterfaceName::from_static_str_unchecked(iface);
    props.get_all(name).await.map_err(|e| SystemdError::Call {
        method: "GetAll",
        unit: unit.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bus_without_systemd_is_no_session() {
        for name in [
            "org.freedesktop.DBus.Error.ServiceUnknown",
            "org.freedesktop.DBus.Error.NameHasNoOwner",
            "org.freedesktop.DBus.Error.Spawn.ChildExited",
            "org.freedesktop.DBus.Error.Spawn.ServiceNotFound",
        ] {
            assert!(no_manager(name), "{name}");
        }
        for name in [
            "org.freedesktop.systemd1.NoSuchUnit",
            "org.freedesktop.DBus.Error.AccessDenied",
            "org.freedesktop.DBus.Error.NoReply",
        ] {
            assert!(!no_manager(name), "{name}");
        }
    }

    #[test]
    fn only_a_plain_unix_address_is_connected_directly() {
        assert_eq!(
            plain_unix_path("unix:path=/run/user/1000/bus"),
            Some("/run/user/1000/bus")
        );
        for other in [
            "unix:path=",
            "unix:abstract=/tmp/dbus-x",
            "unix:path=/run/user/1000/bus,guid=0123",
            "unix:path=/a/bus;unix:path=/b/bus",
            "unix:path=/with%20space/bus",
            "tcp:host=localhost,port=1234",
            "no DBUS_SESSION_BUS_ADDRESS and no XDG_RUNTIME_DIR",
        ] {
            assert_eq!(plain_unix_path(other), None, "{other}");
        }
    }

    #[test]
    fn only_a_change_to_auto_restart_is_worth_a_read() {
        use zbus::zvariant::Value;
        assert!(may_be_auto_restart(Some(&Value::from("auto-restart"))));
        assert!(!may_be_auto_restart(Some(&Value::from("running"))));
        assert!(!may_be_auto_restart(Some(&Value::from("start"))));
        // Invalidated without a value, or of an unexpected type: read.
        assert!(may_be_auto_restart(None));
        assert!(may_be_auto_restart(Some(&Value::from(3u32))));
    }

    #[test]
    fn start_progress() {
        let mut st = UnitStatus {
            active_state: "inactive".into(),
            ..Default::default()
        };
        assert_eq!(StartProgress::of(&st), StartProgress::Pending);
        st.inactive_exit_monotonic = 5;
        assert_eq!(StartProgress::of(&st), StartProgress::Ended);
        st.active_state = "activating".into();
        assert_eq!(StartProgress::of(&st), StartProgress::Pending);
        st.active_state = "active".into();
        assert_eq!(StartProgress::of(&st), StartProgress::Ready);
        st.active_state = "failed".into();
        assert_eq!(StartProgress::of(&st), StartProgress::Ended);
    }
}
