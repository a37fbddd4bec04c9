//! `maqet start|stop|restart`: the unit pair's life, driven over D-Bus.

use std::time::Duration;

use crate::cli::args::{StartArgs, StopArgs};
use crate::cli::context::Ctx;
use crate::cli::exit::{code, CliError};
use crate::cli::journal;
use crate::config::{ConfigDocument, VmConfig};
use crate::ipc::{IpcClient, IpcError, StopOutcome};
use crate::paths;
use crate::state::VmRecord;
use crate::storage::Provisioned;
use crate::systemd::{RestartPolicy, Systemd, SystemdError, VmUnitSpec};
use crate::vm::{owner, OwnerError};
use crate::vmname::VmName;

/// Margin on top of the guest's shutdown timeout for `quit` and SIGKILL.
const STOP_MARGIN: Duration = Duration::from_secs(15);
/// How long a guest that accepted the guest agent's shutdown gets before
/// `maqet stop` falls back to the runner's ACPI power-down (issue 11).
const AGENT_GRACE: Duration = Duration::from_secs(10);
/// systemd kills a runner that has not pinged within this interval.
const WATCHDOG: Duration = Duration::from_secs(10);

/// A positive, finite number of seconds from the command line.
pub fn seconds(s: f64, what: &str) -> Result<Duration, CliError> {
    if s.is_finite() && s > 0.0 && s < 1e9 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(CliError::usage(format!(
            "{what} must be a positive number of seconds, not {s}"
        )))
    }
}

/// The runner binary: `MAQET_RUNNER`, else beside this executable.
pub fn runner_path() -> Result<std::path::PathBuf, CliError> {
    if let Some(p) = std::env::var_os("MAQET_RUNNER") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    let p = exe.with_file_name("maqet-runner");
    if p.is_file() {
        Ok(p)
    } else {
        Err(CliError::failure(format!(
            "cannot find maqet-runner next to {} (install both binaries together, or set MAQET_RUNNER)",
            exe.display()
        )))
    }
}

pub fn unit_spec(
    ctx: &Ctx,
    vm: &VmName,
    cfg: &VmConfig,
    start_timeout: Duration,
) -> Result<VmUnitSpec, CliError> {
    Ok(VmUnitSpec {
        vm: vm.clone(),
        data_dir: ctx.data_dir.path().to_path_buf(),
        runner: runner_path()?,
        socket_path: paths::socket_path(vm)?,
        start_timeout,
        stop_timeout: Duration::from_secs_f64(cfg.shutdown_timeout) + STOP_MARGIN,
        watchdog: WATCHDOG,
        restart: cfg
            .restart_policy()
            .map(|(restart, delay)| RestartPolicy { restart, delay }),
        resources: cfg.resource_limits().unwrap_or_default(),
        log_filter: match ctx.verbosity {
            0 | 1 => None,
            2 => Some("debug".into()),
            _ => Some("trace".into()),
        },
        // hook: issue 10 — swtpm and other helpers, created with the pair
        companions: crate::companion::for_vm(
            vm,
            cfg,
            &ctx.data_dir.disk_dir(vm),
            &paths::vm_runtime_dir(vm)?,
        ),
    })
}

pub async fn start(ctx: &Ctx, a: &StartArgs) -> Result<(), CliError> {
    let timeout = seconds(a.timeout, "--timeout")?;
    // An unknown VM is "no such VM" without touching the data directory.
    ctx.vm(&a.name)?;
    // Read the definition (again) under the lock: an `rm` either finished
    // before (no such VM) or waits until this start is done.
    let _lock = ctx.lock_vm(&a.name, timeout + STOP_MARGIN)?;
    let (vm, record) = ctx.vm(&a.name)?;
    tracing::debug!("definition read");
    let sd = ctx.systemd().await?;
    tracing::debug!("connected to the user manager");
    start_record(ctx, &sd, &vm, &record, timeout).await
}

/// Starts a stored VM and waits until it is ready (or failed). The caller
/// holds the VM's lock (`Ctx::lock_vm`) and read `record` under it.
pub async fn start_record(
    ctx: &Ctx,
    sd: &Systemd,
    vm: &VmName,
    record: &VmRecord,
    timeout: Duration,
) -> Result<(), CliError> {
    // Revalidate: the binary or a disk may have gone since `add`.
    let cfg = ConfigDocument::from_stored(&record.config)?.validate()?;
    let spec = unit_spec(ctx, vm, &cfg, timeout)?;
    if super::storage::running_on(ctx, sd, vm).await? {
        return Err(already_running(ctx, sd, vm).await);
    }
    // hook: issue 11 (base digests, cloud-init seed, ports; a taken port is exit 5)
    crate::provision::prepare(&ctx.data_dir, vm, &cfg)?;
    // Disks exist before the unit does; a failed start removes them again.
    let store = ctx.store()?;
    let mut provisioned = Provisioned::default();
    if let Err(mut e) = super::storage::provision(ctx, vm, &cfg, &store, &mut provisioned) {
        e.message
            .push_str(&super::storage::undo(ctx, vm, provisioned, &store).await);
        return Err(e);
    }
    let started = sd.start_vm(&spec, timeout).await;
    // The unit is the winner's then: never stop it.
    let lost_race = matches!(started, Err(SystemdError::AlreadyRunning { .. }));
    let result = match started {
        Ok(_) => Ok(()),
        Err(SystemdError::AlreadyRunning { unit }) => {
            // Lost a race with another start of this name (maybe from
            // another data directory). Once the winner is up, its QEMU shows
            // which files it uses; what this start made and the winner does
            // not use goes, and no record of it stays.
            let _ = sd.wait_until_settled(&unit, timeout).await;
            Err(already_running(ctx, sd, vm).await)
        }
        Err(SystemdError::Failed { unit, status }) => {
            let lines = journal::problems_of_runner(vm, status.exec_main_pid, 12);
            let mut msg = format!("VM '{vm}' failed to start: {}", status.failure_reason());
            for l in lines {
                msg.push_str("\n  ");
                msg.push_str(&l);
            }
            msg.push_str(&format!(
                "\n(full log: maqet logs {vm}; unit: systemctl --user status {unit})"
            ));
            Err(CliError::failure(msg))
        }
        Err(e @ SystemdError::Timeout { .. }) => {
            // Leave nothing half-started behind.
            let _ = sd.stop_unit(&vm.service_unit()).await;
            let _ = sd
                .wait_until_down(&vm.service_unit(), Duration::from_secs(60))
                .await;
            Err(CliError::new(
                code::TIMEOUT,
                format!("{e}; the VM was stopped again (see `maqet logs {vm}`)"),
            ))
        }
        Err(e) => Err(e.into()),
    };
    match result {
        Err(mut e) => {
            if cfg.restart_policy().is_some() && !lost_race {
                // systemd may be about to restart it; it must not find
                // its disks gone.
                let _ = sd.stop_unit(&vm.service_unit()).await;
                let _ = sd
                    .wait_until_down(&vm.service_unit(), Duration::from_secs(60))
                    .await;
            }
            e.message
                .push_str(&super::storage::undo(ctx, vm, provisioned, &store).await);
            Err(e)
        }
        ok => ok,
    }
}

async fn already_running(ctx: &Ctx, sd: &Systemd, vm: &VmName) -> CliError {
    match owner::live_unit(sd, vm, ctx.data_dir.path()).await {
        Err(e @ OwnerError::OtherDataDir { .. }) => e.into(),
        _ => CliError::conflict(format!(
            "VM '{vm}' is already running (see `maqet status {vm}`)"
        )),
    }
}

/// Stops this data directory's running VM; `Ok(None)` when it was not
/// running; refuses another data directory's VM of the same name.
///
/// `timeout` (the guest's time to power off) holds on every path: the
/// runner is given it over IPC; without a reachable runner systemd's stop
/// job is given that long before the unit is killed.
pub async fn stop_vm(
    ctx: &Ctx,
    sd: &Systemd,
    vm: &VmName,
    timeout: Option<Duration>,
    force: bool,
) -> Result<Option<StopOutcome>, CliError> {
    let unit = vm.service_unit();
    let Some(st) = owner::live_unit(sd, vm, ctx.data_dir.path()).await? else {
        return Ok(None);
    };
    if st.is_auto_restart() {
        // No runner and no guest: a stop job cancels the pending restart
        // at once, so there is nothing for `timeout` to bound.
        sd.stop_unit(&unit).await?;
        sd.wait_until_down(&unit, STOP_MARGIN).await?;
        sd.reset_failed(&unit).await;
        sd.reset_failed(&vm.socket_unit()).await;
        return Ok(Some(StopOutcome::AlreadyStopped));
    }
    let outcome = stop_through_runner(ctx, vm, timeout, force).await?;
    let mut killed = force;
    if outcome.is_none() {
        // Through a stop job in either case: a unit that merely dies (e.g.
        // to a KillUnit alone) would be restarted by its restart policy.
        sd.stop_unit(&unit).await?;
        if force {
            sd.wait_until_stopping(&unit, STOP_MARGIN).await?;
            sd.kill(&unit, libc::SIGKILL).await?;
        } else if let Some(t) = timeout {
            // The runner powers the guest down on SIGTERM but only knows
            // the VM's shutdown_timeout; --timeout is enforced here.
            match sd.wait_until_down(&unit, t).await {
                Ok(_) => {}
                Err(SystemdError::Timeout { .. }) => {
                    tracing::warn!("guest still up after {t:?}; killing the unit");
                    sd.kill(&unit, libc::SIGKILL).await?;
                    killed = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let down_wait = match (outcome, timeout) {
        (Some(_), _) => Duration::from_secs(30),
        (None, Some(_)) => STOP_MARGIN,
        (None, None) => runner_wait(None),
    };
    let last = sd.wait_until_down(&unit, down_wait).await?;
    if killed {
        // A SIGKILLed unit is "failed" only because we asked for it.
        sd.reset_failed(&unit).await;
        sd.reset_failed(&vm.socket_unit()).await;
    }
    Ok(Some(outcome.unwrap_or(match last {
        Some(s) if s.result == "success" && !killed => StopOutcome::Powerdown,
        _ => StopOutcome::Killed,
    })))
}

/// How long the runner may take to answer a stop: the guest may take
/// `timeout` (or its shutdown_timeout, at most 300 s), then `quit`/SIGKILL.
fn runner_wait(timeout: Option<Duration>) -> Duration {
    timeout.unwrap_or(Duration::from_secs(300)) + STOP_MARGIN + Duration::from_secs(10)
}

/// Asks the runner to stop the VM; `Ok(None)` when it cannot be reached or
/// did not complete (the caller falls back to systemd). A runner of another
/// data directory behind the socket is refused, never stopped. The whole
/// exchange (connect, status, stop) is bounded: a runner that accepts but
/// never answers must not hold `stop` forever.
async fn stop_through_runner(
    ctx: &Ctx,
    vm: &VmName,
    timeout: Option<Duration>,
    force: bool,
) -> Result<Option<StopOutcome>, CliError> {
    let wait = runner_wait(timeout);
    tokio::time::timeout(wait, ask_runner_to_stop(ctx, vm, timeout, force, wait))
        .await
        .unwrap_or_else(|_| {
            tracing::warn!("runner did not complete the stop within {wait:?}; asking systemd");
            Ok(None)
        })
}

async fn ask_runner_to_stop(
    ctx: &Ctx,
    vm: &VmName,
    timeout: Option<Duration>,
    force: bool,
    wait: Duration,
) -> Result<Option<StopOutcome>, CliError> {
    let socket = paths::socket_path(vm)?;
    let mut c = match IpcClient::connect(&socket).await {
        Ok(c) => c,
        Err(IpcError::NotRunning { .. }) if !socket.exists() => {
            tracing::warn!(
                "the control socket {} is missing; stopping through systemd",
                socket.display()
            );
            return Ok(None);
        }
        Err(e) => {
            tracing::warn!("cannot reach the runner ({e}); asking systemd");
            return Ok(None);
        }
    };
    match owner::verify_runner(&mut c, vm, ctx.data_dir.path()).await {
        Ok(()) => {}
        Err(e @ OwnerError::OtherDataDir { .. }) => return Err(e.into()),
        // The unit's description said ours; a runner that cannot answer
        // `status` is stopped through systemd.
        Err(e) => {
            tracing::warn!("the runner did not answer status ({e}); asking systemd");
            return Ok(None);
        }
    }
    // The runner answers once QEMU is gone; the guest may take `timeout`.
    match c.stop(timeout, force, wait).await {
        Ok(r) => Ok(Some(r.outcome)),
        Err(IpcError::Closed) => Ok(None),
        // The runner is fine and said no: asking systemd instead would
        // stop the VM with a timeout the user did not ask for.
        Err(e @ IpcError::Remote(_))
            if e.remote_kind() == Some(crate::ipc::ErrorKind::BadRequest) =>
        {
            Err(e.into())
        }
        Err(e) => {
            tracing::warn!("runner did not complete the stop ({e}); asking systemd");
            Ok(None)
        }
    }
}

pub async fn stop(ctx: &Ctx, a: &StopArgs) -> Result<(), CliError> {
    let timeout = a.timeout.map(|t| seconds(t, "--timeout")).transpose()?;
    let max = crate::ipc::protocol::MAX_STOP_TIMEOUT_SECS;
    if timeout.is_some_and(|t| t.as_secs_f64() > max) {
        return Err(CliError::usage(format!(
            "--timeout must be at most {max} seconds (a day)"
        )));
    }
    let (vm, record) = ctx.vm(&a.name)?;
    let sd = ctx.systemd().await?;
    // hook: issue 11 (the guest agent is asked first; ACPI follows in the runner)
    let via_agent = !a.force
        && super::storage::running_on(ctx, &sd, &vm)
            .await
            .unwrap_or(false)
        && super::cloud::agent_shutdown(&record, &vm);
    // A guest that took the agent's request gets up to AGENT_GRACE to go
    // down by itself; then (or at once without an agent) the runner stops
    // it: ACPI power-down, then quit.
    let agent_done = via_agent
        && sd
            .wait_until_down(
                &vm.service_unit(),
                AGENT_GRACE.min(timeout.unwrap_or(AGENT_GRACE)),
            )
            .await
            .is_ok();
    let outcome = if agent_done {
        Some(StopOutcome::Powerdown)
    } else {
        match stop_vm(ctx, &sd, &vm, timeout, a.force).await? {
            // The agent's power-off finished before the runner was asked.
            None if via_agent => Some(StopOutcome::Powerdown),
            o => o,
        }
    };
    let message = outcome.map(|o| match o {
        StopOutcome::Powerdown if via_agent => "guest powered off (guest agent shutdown)",
        o => o.describe(),
    });
    if a.json {
        crate::cli::output::print_json(&serde_json::json!({
            "name": vm.to_string(),
            "was_running": outcome.is_some(),
            "outcome": outcome,
            "guest_agent": via_agent,
            "message": message,
        }));
        return Ok(());
    }
    match message {
        Some(m) => println!("{vm}: {m}"),
        None => eprintln!("{vm} is not running"),
    }
    Ok(())
}

pub async fn restart(ctx: &Ctx, a: &StartArgs) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let sd = ctx.systemd().await?;
    stop_vm(ctx, &sd, &vm, None, false).await?;
    drop(sd);
    start(ctx, a).await
}
