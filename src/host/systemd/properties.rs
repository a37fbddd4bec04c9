//! Builds the property lists of the transient socket + service pair. Pure:
//! the names and D-Bus signatures are systemd's (org.freedesktop.systemd1(5)).

use std::path::PathBuf;
use std::time::Duration;

use zbus::zvariant::Value;

use maqet_base::vmname::VmName;

pub const SLICE: &str = "maqet.slice";

/// Restart policy of the service (`Restart=`, `RestartUSec=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// `no`, `on-failure` or `always`.
    pub restart: String,
    pub delay: Option<Duration>,
}

pub use maqet_config::ResourceLimits;

/// Everything that goes into one VM's unit pair.
#[derive(Debug, Clone)]
pub struct VmUnitSpec {
    pub vm: VmName,
    pub data_dir: PathBuf,
    pub runner: PathBuf,
    /// Where the VM's sockets and runtime files go.
    pub runtime: maqet_base::paths::VmRuntime,
    /// systemd fails the start itself if READY=1 has not come by then.
    pub start_timeout: Duration,
    /// Guest shutdown timeout plus a margin for `quit` and the runner's exit.
    pub stop_timeout: Duration,
    pub watchdog: Duration,
    pub restart: Option<RestartPolicy>,
    pub resources: ResourceLimits,
    /// Passed to the runner as `MAQET_LOG`.
    pub log_filter: Option<String>,
    /// Helper units created with the pair (swtpm), bound to the service.
    pub companions: Companions,
}

pub type Props = Vec<(&'static str, Value<'static>)>;

/// One transient unit to create next to the VM's pair (a helper such as
/// swtpm or its socket; `crate::companion` builds them, this layer only
/// creates and orders them).
#[derive(Debug, Clone)]
pub struct CompanionUnit {
    pub name: String,
    pub props: Props,
}

/// The companions of one VM start: the units to create, and those the
/// VM's service pulls in and is ordered after.
#[derive(Debug, Clone, Default)]
pub struct Companions {
    pub units: Vec<CompanionUnit>,
    /// Units the VM's service pulls in and waits for (`Wants=` + `After=`):
    /// the helpers and their sockets.
    pub want: Vec<String>,
}

impl Companions {
    /// A helper systemd starts on its socket: the socket unit and the
    /// service, both wanted by the VM (the socket listed first).
    pub fn socket_activated(
        socket: String,
        socket_props: Props,
        service: String,
        service_props: Props,
    ) -> Companions {
        Companions {
            units: vec![
                CompanionUnit {
                    name: socket.clone(),
                    props: socket_props,
                },
                CompanionUnit {
                    name: service.clone(),
                    props: service_props,
                },
            ],
            want: vec![socket, service],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.units.iter().map(|u| u.name.clone()).collect()
    }

    /// Adds `other`'s units after these.
    pub fn extend(&mut self, other: Companions) {
        self.units.extend(other.units);
        self.want.extend(other.want);
    }
}

pub use maqet_base::units::{START_FAILED_EXIT_STATUS, STOPPED_EXIT_STATUS};

/// An exit-status set `(aiai)`: exit codes, signals.
fn exit_status_set(codes: &[i32]) -> Value<'static> {
    Value::from((codes.to_vec(), Vec::<i32>::new()))
}

/// `Description=` carries the data directory so every command can tell a
/// unit of this data directory from a same-named VM of another one
/// (parsed by `maqet_vm::owner::data_dir_of_description`, a layer above).
pub fn description(vm: &VmName, data_dir: &std::path::Path) -> String {
    format!("maqet VM {} (data {})", vm, data_dir.display())
}

fn usec(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

pub fn socket_properties(spec: &VmUnitSpec) -> Props {
    // Two listeners on one socket unit, so both are created, passed
    // (LISTEN_FDS=2, in this order: fds 3 and 4) and removed together:
    // maqet's protocol, then QMP for standard clients.
    let listen = [spec.runtime.control(), spec.runtime.qmp()]
        .iter()
        .map(|p| ("Stream".to_string(), p.to_string_lossy().into_owned()))
        .collect::<Vec<_>>();
    vec![
        (
            "Description",
            Value::from(format!("maqet VM {} control socket", spec.vm)),
        ),
        ("Listen", Value::from(listen)),
        ("SocketMode", Value::from(0o600u32)),
        ("DirectoryMode", Value::from(0o700u32)),
        ("RemoveOnStop", Value::from(true)),
        // BindsTo pulls the service in at once and stops the socket (removing
        // its file) whenever the service ends, so a stray connection can
        // never start a stopped VM again.
        ("BindsTo", Value::from(vec![spec.vm.service_unit()])),
        ("Slice", Value::from(SLICE.to_string())),
    ]
}

pub fn service_properties(spec: &VmUnitSpec) -> Props {
    let runner = spec.runner.to_string_lossy().into_owned();
    let argv = vec![
        "maqet-runner".to_string(),
        spec.vm.to_string(),
        "--data-dir".to_string(),
        spec.data_dir.to_string_lossy().into_owned(),
    ];
    let mut env = vec![];
    if let Some(f) = &spec.log_filter {
        env.push(format!("MAQET_LOG={f}"));
    }
    let mut p: Props = vec![
        (
            "Description",
            Value::from(description(&spec.vm, &spec.data_dir)),
        ),
        ("Type", Value::from("notify".to_string())),
        ("NotifyAccess", Value::from("main".to_string())),
        ("ExecStart", Value::from(vec![(runner, argv, false)])),
        // SIGTERM to the runner only (it powers the guest down), SIGKILL to
        // the whole cgroup if it has not finished by TimeoutStopUSec.
        ("KillMode", Value::from("mixed".to_string())),
        ("TimeoutStartUSec", Value::from(usec(spec.start_timeout))),
        ("TimeoutStopUSec", Value::from(usec(spec.stop_timeout))),
        ("WatchdogUSec", Value::from(usec(spec.watchdog))),
        ("Slice", Value::from(SLICE.to_string())),
        ("SyslogIdentifier", Value::from("maqet-runner".to_string())),
        // QEMU resolves the relative paths of `args` and unresolved
        // `arguments` against its working directory. The data directory is
        // one maqet always knows, so it can tell which file such a path
        // names while the VM is stopped (systemd's default, the home
        // directory, is the manager's to decide; docs/storage.md).
        (
            "WorkingDirectory",
            Value::from(spec.data_dir.to_string_lossy().into_owned()),
        ),
        // The socket stops with the service (BindsTo); a restart of the
        // service must bring it back first, or the new runner gets no fd.
        // `Wants=`, not `Requires=`: a runner that is killed or hangs takes
        // the unit through `deactivating`, which stops the bound socket at
        // once, and `Requires=` would carry that stop back into the service
        // as a stop job, cancelling its restart (docs/architecture.md).
        (
            "Wants",
            Value::from([vec![spec.vm.socket_unit()], spec.companions.want.clone()].concat()),
        ),
        (
            "After",
            Value::from([vec![spec.vm.socket_unit()], spec.companions.want.clone()].concat()),
        ),
        // A stop someone asked for ends with STOPPED_EXIT_STATUS: a clean
        // end that Restart=always must not undo (docs/architecture.md). A
        // start whose first attempt failed ends with START_FAILED_EXIT_STATUS:
        // a failure, but not one to retry.
        ("SuccessExitStatus", exit_status_set(&[STOPPED_EXIT_STATUS])),
        (
            "RestartPreventExitStatus",
            exit_status_set(&[STOPPED_EXIT_STATUS, START_FAILED_EXIT_STATUS]),
        ),
        // So MemoryCurrent/CPUUsageNSec/TasksCurrent are reported wherever
        // the controllers are available to the user manager.
        ("CPUAccounting", Value::from(true)),
        ("MemoryAccounting", Value::from(true)),
        ("TasksAccounting", Value::from(true)),
    ];
    if !env.is_empty() {
        p.push(("Environment", Value::from(env)));
    }
    // $XDG_RUNTIME_DIR/maqet/vm/NAME holds every runtime file of the VM
    // (maqet_base::paths::VmRuntime): systemd removes it with everything in it
    // when the VM ends — sockets QEMU could not remove because it was
    // killed, the port plan — and keeps it across automatic restarts,
    // which read the plan again.
    p.push((
        "RuntimeDirectory",
        Value::from(vec![maqet_base::paths::runtime_directory_name(&spec.vm)]),
    ));
    p.push(("RuntimeDirectoryMode", Value::from(0o700u32)));
    p.push((
        "RuntimeDirectoryPreserve",
        Value::from("restart".to_string()),
    ));
    if let Some(r) = &spec.restart {
        p.push(("Restart", Value::from(r.restart.clone())));
        if let Some(d) = r.delay {
            p.push(("RestartUSec", Value::from(usec(d))));
        }
    }
    let r = &spec.resources;
    for (name, v) in [
        ("MemoryMax", r.memory_max),
        ("CPUQuotaPerSecUSec", r.cpu_quota_per_sec_usec),
        ("CPUWeight", r.cpu_weight),
        ("IOWeight", r.io_weight),
        ("TasksMax", r.tasks_max),
    ] {
        if let Some(v) = v {
            p.push((name, Value::from(v)));
        }
    }
    p
}

/// The value of property `k` in `p`; panics when it is missing (tests of
/// every module that builds unit properties).
#[cfg(test)]
pub(crate) fn prop<'a>(p: &'a Props, k: &str) -> &'a Value<'static> {
    &p.iter()
        .find(|(n, _)| *n == k)
        .unwrap_or_else(|| panic!("{k} missing"))
        .1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmUnitSpec {
        VmUnitSpec {
            vm: VmName::new("web").unwrap(),
            data_dir: "/home/u/.local/share/maqet".into(),
            runner: "/usr/bin/maqet-runner".into(),
            runtime: maqet_base::paths::VmRuntime::at(
                std::path::Path::new("/run/user/1000/maqet/vm"),
                &VmName::new("web").unwrap(),
            ),
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(40),
            watchdog: Duration::from_secs(10),
            restart: None,
            resources: ResourceLimits::default(),
            log_filter: None,
            companions: Default::default(),
        }
    }

    use super::prop as get;

    #[test]
    fn socket_binds_to_its_service() {
        let p = socket_properties(&spec());
        assert_eq!(get(&p, "SocketMode"), &Value::from(0o600u32));
        assert_eq!(
            get(&p, "BindsTo"),
            &Value::from(vec!["maqet-vm@web.service".to_string()])
        );
        assert_eq!(get(&p, "Listen").value_signature().to_string(), "a(ss)");
        let listen: Vec<(String, String)> =
            get(&p, "Listen").try_clone().unwrap().try_into().unwrap();
        let paths: Vec<&str> = listen.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/run/user/1000/maqet/vm/web/control.sock",
                "/run/user/1000/maqet/vm/web/qmp.sock"
            ]
        );
    }

    #[test]
    fn service_runs_the_runner_with_the_data_dir() {
        let p = service_properties(&spec());
        let exec = get(&p, "ExecStart");
        assert_eq!(exec.value_signature().to_string(), "a(sasb)");
        let text = format!("{exec:?}");
        assert!(text.contains("/usr/bin/maqet-runner") && text.contains("--data-dir"));
        assert_eq!(get(&p, "WatchdogUSec"), &Value::from(10_000_000u64));
        assert_eq!(
            get(&p, "WorkingDirectory"),
            &Value::from(spec().data_dir.to_string_lossy().into_owned())
        );
        assert!(!p.iter().any(|(n, _)| *n == "Restart" || *n == "MemoryMax"));
    }

    #[test]
    fn restarts_bring_the_socket_back_and_requested_stops_stay_stopped() {
        let p = service_properties(&spec());
        let socket = Value::from(vec!["maqet-vm@web.socket".to_string()]);
        assert_eq!(get(&p, "Wants"), &socket);
        assert!(!p.iter().any(|(n, _)| *n == "Requires"));
        assert_eq!(get(&p, "After"), &socket);
        for k in ["SuccessExitStatus", "RestartPreventExitStatus"] {
            assert_eq!(get(&p, k).value_signature().to_string(), "(aiai)");
        }
        assert_eq!(
            get(&p, "SuccessExitStatus"),
            &exit_status_set(&[STOPPED_EXIT_STATUS])
        );
        assert_eq!(
            get(&p, "RestartPreventExitStatus"),
            &exit_status_set(&[STOPPED_EXIT_STATUS, START_FAILED_EXIT_STATUS])
        );
        assert_eq!(get(&p, "MemoryAccounting"), &Value::from(true));
        assert!(!p.iter().any(|(n, _)| *n == "BindsTo"));
        // Every VM has its runtime directory, removed when it ends.
        assert_eq!(
            get(&p, "RuntimeDirectory"),
            &Value::from(vec!["maqet/vm/web".to_string()])
        );
    }

    #[test]
    fn companions_are_bound_and_ordered_first() {
        let mut s = spec();
        s.companions = Companions::socket_activated(
            "maqet-tpm@web.socket".into(),
            Vec::new(),
            "maqet-tpm@web.service".into(),
            Vec::new(),
        );
        let p = service_properties(&s);
        // Wanted, not bound: a helper stopping with a dying VM must not
        // come back to the VM as a stop job that cancels its restart.
        assert!(!p.iter().any(|(n, _)| *n == "BindsTo"));
        let after = format!("{:?}", get(&p, "After"));
        assert!(after.contains("maqet-tpm@web.socket") && after.contains("maqet-tpm@web.service"));
        let wants = format!("{:?}", get(&p, "Wants"));
        assert!(wants.contains("maqet-tpm@web.socket") && wants.contains("maqet-tpm@web.service"));
        assert_eq!(
            get(&p, "RuntimeDirectory"),
            &Value::from(vec!["maqet/vm/web".to_string()])
        );
    }

    #[test]
    fn optional_policy_and_limits() {
        let mut s = spec();
        s.restart = Some(RestartPolicy {
            restart: "on-failure".into(),
            delay: Some(Duration::from_secs(2)),
        });
        s.resources.memory_max = Some(1 << 30);
        s.resources.cpu_quota_per_sec_usec = Some(500_000);
        let p = service_properties(&s);
        assert_eq!(get(&p, "Restart"), &Value::from("on-failure".to_string()));
        assert_eq!(get(&p, "RestartUSec"), &Value::from(2_000_000u64));
        assert_eq!(get(&p, "MemoryMax"), &Value::from(1u64 << 30));
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), &Value::from(500_000u64));
    }
}
