//! The runner: the main process of `maqet-vm@NAME.service`. It serves one VM
//! and lives exactly as long as its QEMU.
//!
//! Life: read the VM from the DB → spawn QEMU with QMP on a socketpair →
//! QMP handshake → `READY=1` → serve IPC on the socket systemd passed (fd 3),
//! ping the watchdog after each good QMP round trip, mirror QMP events into
//! `STATUS=` and the journal → on SIGTERM or an IPC stop: ACPI power-down,
//! `quit` after the timeout, SIGKILL as the last resort (or, for `maqet
//! suspend` and a SIGTERM under `on_stop: save`, the running state saved to
//! a file: save.rs; a later start resumes it: resume.rs) → exit with a code
//! that tells systemd how QEMU ended (`STOPPED_EXIT_STATUS` when the stop
//! was asked for, so no restart policy brings the VM back).

mod autoports;
mod cleanup;
pub mod companion;
mod console;
mod dispatch;
mod ending;
mod forwards;
mod jobs;
mod notify;
mod panic;
mod policy;
mod qemu;
pub mod relay;
mod resume;
mod save;
mod shutdown;
mod snapshot;

use std::os::fd::FromRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{broadcast, mpsc};

use maqet_base::paths::DataDir;
use maqet_base::units::{START_FAILED_EXIT_STATUS, STOPPED_EXIT_STATUS};
use maqet_base::vmname::VmName;
use maqet_config::{ConfigDocument, ConfigError};
use maqet_host::qmp::{EventKind, QmpClient, QmpError};
use maqet_host::state::{SavedState, StateError, Store};

pub use console::{CONSOLE_FD, RING_BYTES};
pub use dispatch::QMP_TIMEOUT;
pub use policy::OPT_OUT_KEY as QMP_HOST_EXEC_KEY;
pub use qemu::QMP_FD;

/// How long QEMU gets to answer the QMP greeting after exec.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("the stored configuration is no longer valid: {0}")]
    Config(#[from] ConfigError),
    #[error("no listening socket was passed in (LISTEN_FDS); the runner is started by `maqet start`, not by hand")]
    NoSocket,
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("QMP handshake with QEMU failed: {0}")]
    Handshake(QmpError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Provision(#[from] maqet_vm::provision::ProvisionError),
    #[error("network '{segment}': its switch {unit} is not running (no {}); `maqet start` starts it with the VM, so start the VM again", ctl.display())]
    NoSwitch {
        segment: String,
        unit: String,
        ctl: std::path::PathBuf,
    },
}

impl RunnerError {
    /// Exit codes from sysexits(3), so `systemctl status` shows a hint.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunnerError::State(_) | RunnerError::Config(_) => 78, // EX_CONFIG
            RunnerError::NoSocket => 64,                          // EX_USAGE
            RunnerError::Spawn { .. } => 69,                      // EX_UNAVAILABLE
            RunnerError::Handshake(_) => 76,                      // EX_PROTOCOL
            RunnerError::Io(_) => 74,                             // EX_IOERR
            RunnerError::Provision(_) => 78,                      // EX_CONFIG
            RunnerError::NoSwitch { .. } => 69,                   // EX_UNAVAILABLE
        }
    }
}

/// Runs the VM to its end; returns the process exit code.
pub fn main(vm: VmName, data_dir: DataDir) -> i32 {
    panic::install();
    // Opened while descriptors are plentiful, so a connection flood that
    // exhausts them cannot silence the watchdog pings.
    notify::init();
    // Single-threaded on purpose: QEMU's parent-death signal follows the
    // thread that spawned it, and one VM needs no more.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the runtime");
            return 71;
        }
    };
    match rt.block_on(run(&vm, &data_dir)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            notify::status(&format!("failed: {e}"));
            e.exit_code()
        }
    }
}

/// The sockets systemd passed, in the socket unit's `Listen` order: maqet's
/// own (fd 3) and, for units made by protocol-2 maqet, the QMP socket for
/// standard clients (fd 4). QEMU's QMP and console ends are placed at fds 4
/// and 5 only in QEMU's process, over these close-on-exec copies, so the
/// runner's fds do not clash with them.
fn take_listeners(
) -> Result<(tokio::net::UnixListener, Option<tokio::net::UnixListener>), RunnerError> {
    let mut fds = sd_notify::listen_fds()?;
    let ours = fds.next().ok_or(RunnerError::NoSocket)?;
    let qmp = fds.next();
    let listener = |fd| -> Result<tokio::net::UnixListener, RunnerError> {
        // SAFETY: systemd passed us this fd (LISTEN_PID matched) and nothing else owns it.
        let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
        std_listener.set_nonblocking(true)?;
        Ok(tokio::net::UnixListener::from_std(std_listener)?)
    };
    Ok((listener(ours)?, qmp.map(listener).transpose()?))
}

use maqet_base::time::now_unix;

async fn run(vm: &VmName, data_dir: &DataDir) -> Result<i32, RunnerError> {
    tracing::debug!("runner started");
    // Take the sockets first: it also marks them close-on-exec for QEMU.
    let (listener, qmp_listener) = take_listeners()?;
    let qmp_socket = qmp_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    // Where this unit keeps the VM's runtime files: told by where systemd
    // bound the control socket, so a unit made by an older maqet (files
    // beside the directory) keeps its paths when the restart policy runs
    // this runner in it.
    let control = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let runtime = match control {
        Some(control) => maqet_base::paths::VmRuntime::of_control_socket(&control, vm),
        None => maqet_base::paths::VmRuntime::new(vm)
            .map_err(|e| std::io::Error::other(e.to_string()))?,
    };
    // Taken by the first runner of a `maqet start` only; see below.
    let first_attempt = std::fs::remove_file(runtime.start_token()).is_ok();
    let (result, policy) = match read_config(vm, data_dir) {
        Ok((config, saved)) => {
            let listeners = (listener, qmp_listener, qmp_socket);
            let on = Vm {
                name: vm,
                data_dir,
                runtime: &runtime,
                config: &config,
            };
            let r = run_vm(on, saved, listeners).await;
            (r, config.restart)
        }
        // The policy is unknown: nothing is kept for a restart.
        Err(e) => (Err(e), maqet_config::RestartPolicy::No),
    };
    let mut code = match result {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            notify::status(&format!("failed: {e}"));
            e.exit_code()
        }
    };
    // A start that never got QEMU running is the user's to fix: the unit
    // fails for good (and shows why) instead of being restarted by its
    // policy; an automatic restart that fails is retried as the policy says.
    if first_attempt && !notify::was_ready() && code != 0 {
        tracing::info!(
            runner_exit = code,
            "the start failed before QEMU ran; no automatic restart"
        );
        code = START_FAILED_EXIT_STATUS;
    }
    cleanup::after_exit(&runtime, policy, code);
    Ok(code)
}

/// The VM's stored configuration, validated again, and its saved-state
/// record if it has one (not yet checked: [`resume::trusted`]), from one
/// open of the database.
fn read_config(
    vm: &VmName,
    data_dir: &DataDir,
) -> Result<(maqet_config::VmConfig, Option<SavedState>), RunnerError> {
    // Read-only: the runner never writes definitions.
    let store = Store::open_read_only(&data_dir.db_path())?
        .ok_or_else(|| StateError::NotFound(vm.to_string()))?;
    let record = store.get_vm(vm.as_str())?;
    let saved = resume::read(&store, vm);
    drop(store);
    tracing::debug!("definition read");
    let config = ConfigDocument::from_stored(&record.config)?.validate()?;
    tracing::debug!("configuration validated");
    Ok((config, saved))
}

/// The sockets systemd passed: maqet's, the QMP one (if any) and its path.
type Listeners = (
    tokio::net::UnixListener,
    Option<tokio::net::UnixListener>,
    Option<std::path::PathBuf>,
);

/// The VM a runner serves: what every step of [`run_vm`] reads.
#[derive(Clone, Copy)]
struct Vm<'a> {
    name: &'a VmName,
    data_dir: &'a DataDir,
    runtime: &'a maqet_base::paths::VmRuntime,
    config: &'a maqet_config::VmConfig,
}

/// How a step before the VM runs went: on with its result, or over with
/// the runner's exit code (the failure already reported).
enum Step<T> {
    Go(T),
    Exit(i32),
}

/// Runs QEMU for `config` until it ends; returns the runner's exit code.
async fn run_vm(
    vm: Vm<'_>,
    saved: Option<SavedState>,
    listeners: Listeners,
) -> Result<i32, RunnerError> {
    let (config, runtime) = (vm.config, vm.runtime);
    let launch = plan_launch(vm, saved)?;
    let started_usec = maqet_base::time::now_unix_usec();
    let (mut qemu, qmp_stream, console) = start_qemu(&launch.argv, config.console)?;
    let (qmp, version) = match handshake(&mut qemu, qmp_stream).await? {
        Step::Go(answered) => answered,
        Step::Exit(code) => return Ok(code),
    };
    let agent_socket = config.guest.guest_agent.then(|| runtime.agent());
    make_qemu_sockets_private(vm, agent_socket.as_deref());
    if let Some(rec) = &launch.resume {
        if let Step::Exit(code) = resume_saved(vm, &mut qemu, &qmp, rec, &agent_socket).await {
            return Ok(code);
        }
    }
    let up = ready(&qmp, &qemu, &version, started_usec, agent_socket).await;
    let serving = serve(vm, &up, &version, console, listeners, launch.ports);
    supervise(vm, &mut qemu, &up, serving).await
}

/// What QEMU is started with.
struct Launch {
    argv: Vec<String>,
    /// The forwards of `ports:` chosen for this start.
    ports: Option<maqet_host::ports::PortPlan>,
    /// A recorded, intact saved state to resume instead of booting.
    resume: Option<maqet_host::state::SavedState>,
}

/// QEMU's command line for this start, once the switches of the VM's
/// networks are known to run.
fn plan_launch(vm: Vm<'_>, saved: Option<SavedState>) -> Result<Launch, RunnerError> {
    // The one rendering `maqet info` shows too: the config's options, the
    // seed drive, the agent channel, the user-mode NIC with the start's ports.
    let command = maqet_vm::provision::guest::qemu_command(
        vm.data_dir,
        vm.name,
        vm.config,
        vm.runtime,
        maqet_vm::provision::guest::Ports::Published,
    )?;
    let mut argv = command.argv;
    // QEMU's own words for a missing switch name only a socket path.
    for n in &vm.config.networks.segments {
        let rt = maqet_vm::provision::guest::segment_runtime(vm.runtime, &n.name)?;
        if !rt.ctl().exists() {
            return Err(RunnerError::NoSwitch {
                segment: n.name.to_string(),
                unit: n.name.switch_unit(),
                ctl: rt.ctl(),
            });
        }
    }
    let resume = resume::trusted(saved, vm.name, vm.data_dir);
    if let Some(rec) = &resume {
        tracing::info!(state_file = %rec.path.display(), "resuming the saved state");
        argv.extend(resume::QEMU_ARGS.map(String::from));
    }
    tracing::info!(qemu_argv = %argv.join(" "), "starting QEMU");
    Ok(Launch {
        argv,
        ports: command.ports,
        resume,
    })
}

/// Spawns QEMU; returns it, the runner's end of QMP and the console hub,
/// which drains the console from the start so the boot is in its ring
/// buffer.
fn start_qemu(
    argv: &[String],
    console: bool,
) -> Result<
    (
        qemu::Qemu,
        tokio::net::UnixStream,
        Option<Arc<console::ConsoleHub>>,
    ),
    RunnerError,
> {
    let (qemu, qmp_stream, console_stream) =
        qemu::Qemu::spawn(argv, console).map_err(|source| RunnerError::Spawn {
            binary: argv[0].clone(),
            source,
        })?;
    panic::qemu_spawned(qemu.pid);
    notify::status(&format!("starting (qemu pid {})", qemu.pid));
    Ok((
        qemu,
        qmp_stream,
        console_stream.map(console::ConsoleHub::start),
    ))
}

/// The QMP handshake. QEMU failing before QMP is answered (a bad option)
/// is reported now, with its own words, not after a timeout. Its closing
/// the QMP socket and its exit race; either way the exit status and
/// stderr are what the user needs to see.
async fn handshake(
    qemu: &mut qemu::Qemu,
    qmp_stream: tokio::net::UnixStream,
) -> Result<Step<(QmpClient, maqet_host::qmp::QemuVersion)>, RunnerError> {
    let handshake = QmpClient::connect(qmp_stream, HANDSHAKE_TIMEOUT);
    let early_exit = tokio::select! {
        r = handshake => match r {
            Ok(pair) => Ok(pair),
            Err(e) => match tokio::time::timeout(Duration::from_secs(2), qemu.child.wait()).await {
                Ok(st) => Err(st?),
                Err(_) => return Err(RunnerError::Handshake(e)),
            },
        },
        st = qemu.child.wait() => Err(st?),
    };
    match early_exit {
        Ok(pair) => Ok(Step::Go(pair)),
        Err(st) => {
            let said = qemu.wait_stderr(Duration::from_secs(1)).await.join(" | ");
            let what = qemu::describe_exit(st);
            tracing::error!(qemu_stderr = %said, "{what} before answering QMP: {said}");
            notify::status(&format!("failed: {what}: {said}"));
            Ok(Step::Exit(match qemu::exit_code_for(st) {
                0 => 1,
                c => c,
            }))
        }
    }
}

/// QEMU made its listening sockets (display, guest agent) with its umask;
/// only this user may connect (the directory is 0700 as well).
fn make_qemu_sockets_private(vm: Vm<'_>, agent_socket: Option<&Path>) {
    let qemu_sockets = vm
        .config
        .desktop
        .display
        .map(|server| server.socket(&vm.runtime.dir()))
        .into_iter()
        .chain(agent_socket.map(Path::to_path_buf));
    for socket in qemu_sockets {
        if let Err(e) = std::fs::set_permissions(
            &socket,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
        ) {
            tracing::warn!("cannot make {} private: {e}", socket.display());
        }
    }
}

/// Loads the saved state into the paused QEMU; a state that cannot be
/// loaded ends the start and stays saved.
async fn resume_saved(
    vm: Vm<'_>,
    qemu: &mut qemu::Qemu,
    qmp: &QmpClient,
    rec: &maqet_host::state::SavedState,
    agent_socket: &Option<std::path::PathBuf>,
) -> Step<()> {
    let agent = agent_socket.as_deref();
    let Err(e) = resume::load(qmp, vm.name, vm.data_dir, rec, agent).await else {
        return Step::Go(());
    };
    // QEMU exits by itself when it cannot load a state; make sure.
    qemu.signal(rustix::process::Signal::KILL);
    let _ = tokio::time::timeout(Duration::from_secs(5), qemu.child.wait()).await;
    let said = qemu.wait_stderr(Duration::from_secs(1)).await.join(" | ");
    let said = match said.is_empty() {
        true => String::new(),
        false => format!(" (QEMU said: {said})"),
    };
    let name = vm.name;
    let msg = format!(
        "cannot resume the saved state: {e}{said}; it stays saved: `maqet start --fresh {name}` boots afresh and discards it"
    );
    tracing::error!(maqet_failure = true, "{msg}");
    notify::status(&format!("failed: {msg}"));
    Step::Exit(1)
}

/// The running QEMU, as the serving and supervising steps know it.
struct Up {
    qmp: QmpClient,
    qemu_pid: u32,
    /// QEMU's version, `major.minor.micro`.
    version: String,
    started_usec: u64,
    /// The run state `STATUS=` and `maqet status` show.
    run_state: Arc<Mutex<String>>,
    agent_socket: Option<std::path::PathBuf>,
}

/// Tells systemd the VM is up (`READY=1` with the run state QEMU reports).
async fn ready(
    qmp: &QmpClient,
    qemu: &qemu::Qemu,
    version: &maqet_host::qmp::QemuVersion,
    started_usec: u64,
    agent_socket: Option<std::path::PathBuf>,
) -> Up {
    let run_state = qmp
        .execute_timeout("query-status", None, Duration::from_secs(10))
        .await
        .ok()
        .and_then(|v| v.get("status").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| "running".into());
    let version_text = format!("{}.{}.{}", version.major, version.minor, version.micro);
    notify::ready(&format!("{run_state} (qemu pid {})", qemu.pid));
    tracing::info!(qemu_pid = qemu.pid, qemu_version = %version_text, "VM is {run_state}");
    Up {
        qmp: qmp.clone(),
        qemu_pid: qemu.pid,
        version: version_text,
        started_usec,
        run_state: Arc::new(Mutex::new(run_state)),
        agent_socket,
    }
}

/// What the serving tasks hand the supervision loop: the requests that end
/// the VM, and the flag a save sets.
struct Serving {
    stop_rx: mpsc::Receiver<dispatch::StopRequest>,
    suspend_rx: mpsc::Receiver<dispatch::SuspendRequest>,
    failure_rx: mpsc::Receiver<shutdown::VmFailure>,
    saving: Arc<AtomicBool>,
    agent_gate: autoports::AgentGate,
}

/// Starts the tasks that serve the running VM: port forwards (and their
/// automatic updates), IPC on maqet's socket and standard QMP on the other,
/// QMP events into `STATUS=` and the journal, the watchdog pings.
fn serve(
    vm: Vm<'_>,
    up: &Up,
    version: &maqet_host::qmp::QemuVersion,
    console: Option<Arc<console::ConsoleHub>>,
    (listener, qmp_listener, qmp_socket): Listeners,
    ports: Option<maqet_host::ports::PortPlan>,
) -> Serving {
    let config = vm.config;
    let qmp = &up.qmp;
    // The forwards QEMU has, changed while it runs (`ports add|rm`,
    // `ports: auto`); they also make the STATUS= suffix.
    let forwards = Arc::new(forwards::Forwards::new(
        vm.name.as_str(),
        qmp.clone(),
        vm.runtime.ports(),
        ports,
        config.guest.network.passt().is_some(),
    ));
    let agent_gate = autoports::AgentGate::default();
    if let (true, Some(agent)) = (config.guest.auto_ports, up.agent_socket.clone()) {
        tokio::spawn(autoports::watch(
            forwards.clone(),
            agent,
            agent_gate.clone(),
        ));
    }
    let (events_tx, _) = broadcast::channel::<Value>(256);
    let (stop_tx, stop_rx) = mpsc::channel(8);
    let (suspend_tx, suspend_rx) = mpsc::channel(8);
    let saving = Arc::new(AtomicBool::new(false));
    let (failure_tx, failure_rx) = mpsc::channel(4);
    let busy_jobs = jobs::BusyJobs::default();
    let dispatch = Arc::new(dispatch::RunnerDispatch {
        vm: vm.name.to_string(),
        runner_pid: std::process::id(),
        qemu_pid: up.qemu_pid,
        qemu_version: up.version.clone(),
        ready_at: now_unix(),
        data_dir: maqet_config::canonical(vm.data_dir.path())
            .to_string_lossy()
            .into_owned(),
        qmp: qmp.clone(),
        run_state: up.run_state.clone(),
        stop_tx,
        suspend_tx,
        events: events_tx.clone(),
        console,
        busy_jobs: busy_jobs.clone(),
        allow_host_exec: config.qmp_allow_host_exec,
        qmp_socket,
        agent_socket: up.agent_socket.clone(),
        failure_tx: failure_tx.clone(),
        started_usec: up.started_usec,
        forwards,
        agent_gate: agent_gate.clone(),
    });
    let shared: Arc<dyn maqet_host::ipc::server::Dispatch> = Arc::new(dispatch::Shared(dispatch));
    if let Some(l) = qmp_listener {
        let greeting = maqet_host::ipc::qmp_endpoint::Greeting::new(version);
        tokio::spawn(maqet_host::ipc::qmp_endpoint::serve_qmp(
            l,
            shared.clone(),
            greeting,
            Default::default(),
        ));
    }
    tokio::spawn(maqet_host::ipc::server::serve(listener, shared));
    tokio::spawn(forward_events(
        qmp.clone(),
        events_tx,
        StateWatch {
            run_state: up.run_state.clone(),
            saving: saving.clone(),
            qemu_pid: up.qemu_pid,
            // Under a restart policy a VM QEMU stopped with internal-error
            // is a failure to restart from; without one it stays, stopped,
            // for the user to look at.
            failure_tx: (config.restart != maqet_config::RestartPolicy::No).then_some(failure_tx),
        },
        busy_jobs.clone(),
    ));
    if let Some(interval) = notify::watchdog_interval() {
        tokio::spawn(watchdog(qmp.clone(), interval, busy_jobs));
    }
    Serving {
        stop_rx,
        suspend_rx,
        failure_rx,
        saving,
        agent_gate,
    }
}

/// Waits for what ends the VM — QEMU's exit, SIGTERM/SIGINT, a stop or
/// suspend request, a failure — and ends it so; returns the exit code.
async fn supervise(
    vm: Vm<'_>,
    qemu: &mut qemu::Qemu,
    up: &Up,
    mut serving: Serving,
) -> Result<i32, RunnerError> {
    let config = vm.config;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    // Validated to (0, 86400] seconds; try_ keeps a slip from panicking.
    let default_timeout = Duration::try_from_secs_f64(config.shutdown_timeout).unwrap_or(
        Duration::from_secs_f64(maqet_config::DEFAULT_SHUTDOWN_TIMEOUT),
    );
    let saver = save::Saver {
        qmp: up.qmp.clone(),
        vm: vm.name.clone(),
        data_dir: vm.data_dir.clone(),
        qemu_version: up.version.clone(),
        qemu_pid: up.qemu_pid,
        saving: serving.saving.clone(),
        run_state: up.run_state.clone(),
    };
    let mut stopper = shutdown::Shutdown::new(
        qemu,
        &up.qmp,
        &mut serving.stop_rx,
        &mut serving.suspend_rx,
        &mut serving.failure_rx,
        up.agent_socket.clone(),
        serving.agent_gate.clone(),
    );
    // One event ends the VM; only a save that failed (the VM runs on)
    // waits for the next.
    loop {
        let event = tokio::select! {
            ev = stopper.next_event() => ev,
            _ = sigterm.recv() => shutdown::Event::Signal("SIGTERM"),
            _ = sigint.recv() => shutdown::Event::Signal("SIGINT"),
        };
        let ended = match event {
            shutdown::Event::Exited(st) => Some(qemu_exited(&mut stopper, st?).await),
            shutdown::Event::Signal(sig) => {
                on_signal(config, &mut stopper, &saver, sig, default_timeout).await
            }
            shutdown::Event::Stop(req) => {
                let timeout = req.timeout.unwrap_or(default_timeout);
                stopper
                    .run(timeout, req.force, req.agent, Some(req.reply))
                    .await;
                Some(STOPPED_EXIT_STATUS)
            }
            shutdown::Event::Suspend(req) => suspend(&mut stopper, &saver, req).await,
            shutdown::Event::Failed(f) => {
                tracing::error!(maqet_failure = true, "{}; stopping the VM", f.cause);
                notify::status(&format!("failed: {}", f.cause));
                let timeout = if f.graceful {
                    default_timeout
                } else {
                    Duration::ZERO
                };
                stopper.run(timeout, false, false, None).await;
                Some(maqet_base::units::VM_FAILED_EXIT_STATUS)
            }
        };
        if let Some(code) = ended {
            return Ok(code);
        }
    }
}

/// QEMU ended by itself: says how, and returns the runner's exit code.
async fn qemu_exited(stopper: &mut shutdown::Shutdown<'_>, st: std::process::ExitStatus) -> i32 {
    let reason = stopper.shutdown_reason().await;
    let said = stopper.qemu_said().await;
    let end = ending::of_exit(st, reason.as_deref(), &said);
    if end.failure {
        tracing::error!(maqet_failure = true, qemu_exit = end.code, "{}", end.text);
    } else {
        tracing::info!(qemu_exit = end.code, "{}", end.text);
    }
    end.code
}

/// SIGTERM or SIGINT: the state saved under `on_stop: save`, else (or
/// when the save fails) the VM shut down. None when QEMU went away during
/// the save: the next event says how.
async fn on_signal(
    config: &maqet_config::VmConfig,
    stopper: &mut shutdown::Shutdown<'_>,
    saver: &save::Saver,
    sig: &str,
    default_timeout: Duration,
) -> Option<i32> {
    if config.on_stop == maqet_config::OnStop::Save {
        tracing::info!("{sig}: saving the VM's state (on_stop: save)");
        // STOPPING=1 arms the unit's stop timeout (sized for
        // the memory); progress extends it.
        notify::stopping(&format!("saving (qemu pid {})", saver.qemu_pid));
        notify::extend_timeout(maqet_host::storage::saved::save_budget(config.memory_bytes));
        match saver.save(maqet_host::state::SaveReason::Stop, true).await {
            Ok(_) => {
                stopper.end_saved().await;
                return Some(STOPPED_EXIT_STATUS);
            }
            // QEMU is gone: the next event says how.
            Err(f) if f.run_state == save::GONE => return None,
            Err(f) => tracing::error!("{f}; powering the VM off instead"),
        }
    } else {
        tracing::info!("{sig}: shutting the VM down");
    }
    stopper.run(default_timeout, false, false, None).await;
    Some(STOPPED_EXIT_STATUS)
}

/// `maqet suspend`: saves the state and ends the VM, replying either way;
/// None when the save failed and the VM runs on.
async fn suspend(
    stopper: &mut shutdown::Shutdown<'_>,
    saver: &save::Saver,
    req: dispatch::SuspendRequest,
) -> Option<i32> {
    let saved = saver
        .save(maqet_host::state::SaveReason::Suspend, false)
        .await;
    let done = saved.is_ok();
    let result = match saved {
        Ok(s) => maqet_host::ipc::protocol::SuspendResult {
            saved: Some(maqet_host::ipc::protocol::SavedInfo {
                path: s.path,
                size: s.size,
                saved_at: s.saved_at,
                save_ms: s.save_ms,
                run_state: s.run_state,
                qemu_version: s.qemu_version,
            }),
            error: None,
            run_state: None,
        },
        Err(f) => maqet_host::ipc::protocol::SuspendResult {
            saved: None,
            error: Some(f.message),
            run_state: Some(f.run_state),
        },
    };
    if done {
        stopper.end_saved().await;
    }
    let (written, wrote) = tokio::sync::oneshot::channel();
    let _ = req.reply.send(dispatch::SuspendReply { result, written });
    if !done {
        return None;
    }
    // The reply must reach the client before the runner exits.
    let _ = tokio::time::timeout(shutdown::REPLY_GRACE, wrote).await;
    Some(STOPPED_EXIT_STATUS)
}

/// What the event loop keeps up to date from QMP events.
struct StateWatch {
    run_state: Arc<Mutex<String>>,
    /// A save is under way: the guest is paused for it.
    saving: Arc<AtomicBool>,
    qemu_pid: u32,
    /// Where a VM QEMU stopped with internal-error is reported as a
    /// failure (only under a restart policy).
    failure_tx: Option<mpsc::Sender<shutdown::VmFailure>>,
}

impl StateWatch {
    /// QEMU's run state after a STOP or RESUME, as `query-status` has it
    /// (a STOP is also how `internal-error`, `io-error` and
    /// `guest-panicked` begin).
    async fn refresh(&self, qmp: &QmpClient, stopped: bool) {
        let asked = qmp
            .execute_timeout("query-status", None, Duration::from_secs(5))
            .await;
        let state = match asked
            .ok()
            .and_then(|v| v.get("status").and_then(Value::as_str).map(str::to_string))
        {
            _ if self.saving.load(Ordering::Relaxed) => "saving".into(),
            Some(s) => s,
            None if stopped => "paused".into(),
            None => "running".into(),
        };
        *self.run_state.lock().unwrap() = state.clone();
        notify::status(&format!("{state} (qemu pid {})", self.qemu_pid));
        if state == "internal-error" {
            let cause = "QEMU stopped the VM with internal-error (the accelerator could not run the guest, e.g. a KVM emulation failure); QEMU's messages above say more".to_string();
            match &self.failure_tx {
                Some(tx) => {
                    let _ = tx
                        .send(shutdown::VmFailure {
                            cause,
                            graceful: false,
                        })
                        .await;
                }
                None => tracing::error!(
                    maqet_failure = true,
                    "{cause}; the VM stays stopped for inspection (no restart policy): `maqet stop` ends it"
                ),
            }
        }
    }
}

/// QMP events → journal (`MAQET_EVENT=`), `STATUS=`, and IPC subscribers.
async fn forward_events(
    qmp: QmpClient,
    tx: broadcast::Sender<Value>,
    watch: StateWatch,
    busy_jobs: jobs::BusyJobs,
) {
    let mut rx = qmp.subscribe();
    loop {
        match rx.recv().await {
            Ok(ev) => {
                busy_jobs.event(&ev.event, &ev.data);
                tracing::info!(maqet_event = %ev.event, data = %ev.data, "QMP event {}", ev.event);
                let ending = *watch.run_state.lock().unwrap() == "shutting down";
                match ev.kind() {
                    // After SHUTDOWN QEMU is on its way out: nothing to ask.
                    EventKind::Stop if !ending => watch.refresh(&qmp, true).await,
                    EventKind::Resume if !ending => watch.refresh(&qmp, false).await,
                    EventKind::Shutdown { .. } => {
                        *watch.run_state.lock().unwrap() = "shutting down".into();
                        notify::status(&format!("shutting down (qemu pid {})", watch.qemu_pid));
                    }
                    _ => {}
                }
                let _ = tx.send(ev.to_json());
            }
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// `WATCHDOG=1` only after a successful QMP round trip, so a hung QEMU (or
/// a hung runner) stops the pings and systemd kills the unit — except
/// while a snapshot job explains QEMU's silence (see [`jobs`]).
async fn watchdog(qmp: QmpClient, interval: Duration, busy_jobs: jobs::BusyJobs) {
    let period = interval / 2;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match qmp.execute_timeout("query-status", None, period).await {
            Ok(_) => notify::watchdog(),
            Err(QmpError::Disconnected) => return,
            Err(e) if busy_jobs.excuse_silence() => {
                tracing::debug!(error = %e, "QEMU is busy with a snapshot job");
                notify::watchdog();
            }
            Err(e) => tracing::warn!(error = %e, "QEMU did not answer the watchdog probe"),
        }
    }
}

#[cfg(test)]
mod fuzz_tests;
