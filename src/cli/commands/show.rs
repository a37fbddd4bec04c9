//! `maqet status|ls|info`: read-only views. State always comes from
//! systemd; nothing here writes.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::args::{LsArgs, NameJson};
use crate::cli::context::Ctx;
use crate::cli::exit::{code, CliError};
use crate::cli::output::{human_bytes, human_duration, now_unix, print_json, rfc3339_utc};
use crate::cli::table;
use crate::cli::term::Term;
use crate::config::{ConfigDocument, RenderContext};
use crate::runner::{CONSOLE_FD, QMP_FD};
use crate::systemd::{Systemd, UnitStatus, Usage, UsageSource, VmState, SERVICE_PATTERN};
use crate::vm::{owned_by, Owner, UnitOwner};
use crate::vmname::VmName;

/// `maqet status --json`: stable keys, documented in docs/cli.md.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub name: String,
    pub state: VmState,
    pub unit: String,
    pub runner_pid: Option<u32>,
    pub qemu_pid: Option<u32>,
    /// Unix seconds the unit became active (running since).
    pub since: Option<u64>,
    /// systemd's `Result` of the last run (`success`, `exit-code`, `signal`, `watchdog`, …).
    pub result: Option<String>,
    pub failure: Option<String>,
    /// QEMU's last error line (from the journal) of the run that failed.
    pub last_error: Option<String>,
    pub exit_status: Option<i32>,
    pub status_text: Option<String>,
    pub restarts: u32,
    pub memory_bytes: Option<u64>,
    pub cpu_nsec: Option<u64>,
    pub tasks: Option<u64>,
    /// Where memory/cpu/tasks came from: `systemd` (cgroup accounting) or
    /// `proc` (the unit's processes, where systemd accounts nothing).
    pub usage_source: Option<UsageSource>,
    /// Seconds since the unit became active.
    pub uptime_sec: Option<u64>,
}

impl StatusReport {
    pub(super) fn new(vm: &VmName, st: Option<&UnitStatus>) -> Self {
        let state = st.map_or(VmState::Defined, UnitStatus::vm_state);
        // Up: a runner is there (a pending restart has none yet).
        let up = state.is_live() && state != VmState::Restarting;
        let since = st
            .filter(|s| up && s.active_enter_timestamp > 0)
            .map(|s| s.active_enter_timestamp / 1_000_000);
        // A pending restart says why the last run ended, like a failure.
        let failed = matches!(state, VmState::Failed | VmState::Restarting);
        let mut r = StatusReport {
            name: vm.to_string(),
            state,
            unit: vm.service_unit(),
            runner_pid: st.filter(|s| s.main_pid != 0).map(|s| s.main_pid),
            qemu_pid: None,
            since,
            result: st
                .filter(|s| !s.result.is_empty())
                .map(|s| s.effective_result().to_string()),
            failure: st.filter(|_| failed).map(UnitStatus::failure_reason),
            last_error: None,
            exit_status: st
                .filter(|s| s.exec_main_code != 0)
                .map(|s| s.exec_main_status),
            status_text: st
                .filter(|s| up && !s.status_text.is_empty())
                .map(|s| s.status_text.clone()),
            restarts: st.map_or(0, |s| s.n_restarts),
            memory_bytes: None,
            cpu_nsec: None,
            tasks: None,
            usage_source: None,
            uptime_sec: since.map(|s| now_unix().saturating_sub(s)),
        };
        if let Some(s) = st.filter(|_| up) {
            r.set_usage(Usage::from_systemd(s));
        }
        r
    }

    /// For a failed or restarting VM, QEMU's last error from the journal.
    pub(super) fn fill_last_error(&mut self, vm: &VmName, st: Option<&UnitStatus>) {
        if let Some(s) = st.filter(|_| self.failure.is_some()) {
            self.last_error = crate::systemd::journal::last_error_of_runner(vm, s.exec_main_pid);
        }
    }

    fn set_usage(&mut self, u: Usage) {
        self.memory_bytes = u.memory_bytes;
        self.cpu_nsec = u.cpu_nsec;
        self.tasks = u.tasks;
        self.usage_source = u.source;
    }

    /// Where systemd accounts nothing, the unit's processes from /proc
    /// (`procs`: the unit's processes if already fetched).
    pub(super) async fn fill_usage(
        &mut self,
        sd: &Systemd,
        procs: Option<&[(String, u32, String)]>,
    ) {
        if self.usage_source.is_some() || self.runner_pid.is_none() {
            return;
        }
        let pids: Vec<u32> = match procs {
            Some(p) => p.iter().map(|(_, pid, _)| *pid).collect(),
            None => match sd.unit_processes(&self.unit).await {
                Ok(p) => p.iter().map(|(_, pid, _)| *pid).collect(),
                Err(_) => return,
            },
        };
        let u = Usage::from_proc(&pids);
        if !u.is_empty() {
            self.set_usage(u);
        }
    }
}

/// This data directory's unit of `vm` in whatever state (`None`: not
/// loaded, or a stopped unit of another data directory); refuses while
/// another data directory's VM of that name runs.
pub(super) async fn our_unit(
    ctx: &Ctx,
    sd: &Systemd,
    vm: &VmName,
) -> Result<Option<UnitStatus>, CliError> {
    Ok(UnitOwner::of(sd, vm, ctx.data_dir.path())
        .await?
        .refuse_other_live(vm, ctx.data_dir.path())?)
}

pub async fn status(ctx: &Ctx, a: &NameJson) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let sd = ctx.systemd().await?;
    let st = our_unit(ctx, &sd, &vm).await?;
    let mut r = StatusReport::new(&vm, st.as_ref());
    r.fill_last_error(&vm, st.as_ref());
    if let Some(runner) = r.runner_pid {
        let procs = sd.unit_processes(&r.unit).await.ok();
        if let Some(p) = &procs {
            r.qemu_pid = qemu_pid(p, runner);
        }
        r.fill_usage(&sd, procs.as_deref()).await;
    }
    if a.json {
        print_json(&r);
        return Ok(());
    }
    let term = Term::stdout();
    println!(
        "{}: {}",
        r.name,
        term.paint(r.state.as_str(), state_sgr(r.state))
    );
    println!("  unit:    {}", r.unit);
    if let Some(since) = r.since {
        println!(
            "  since:   {} ({} ago)",
            rfc3339_utc(since),
            human_duration(now_unix().saturating_sub(since))
        );
    }
    if let Some(p) = r.runner_pid {
        println!("  runner:  pid {p}");
    }
    if let Some(p) = r.qemu_pid {
        println!("  qemu:    pid {p}");
    }
    if let Some(t) = &r.status_text {
        println!("  status:  {t}");
    }
    match (&r.failure, r.state) {
        (Some(f), VmState::Restarting) => {
            println!("  last run: {f}");
            if let Some(e) = &r.last_error {
                println!("  last error: {e}");
            }
            println!(
                "  (its restart policy starts it again shortly; `maqet stop {}` cancels that)",
                r.name
            );
        }
        (Some(f), _) => {
            println!("  failure: {f}");
            if let Some(e) = &r.last_error {
                println!("  last error: {e}");
            }
            println!(
                "  (see `maqet logs {}`; `maqet start {}` starts it again)",
                r.name, r.name
            );
        }
        (None, _) => {}
    }
    if r.runner_pid.is_some() {
        let (fields, note) = usage_fields(&r);
        for (k, v) in fields {
            println!("  {:<9}{v}", format!("{k}:"));
        }
        if let Some(n) = note {
            println!("  {n}");
        }
    }
    if r.restarts > 0 || r.state == VmState::Restarting {
        println!("  restarts: {}", r.restarts);
    }
    Ok(())
}

/// `memory`/`cpu`/`tasks` values ("-" where nothing reports a figure) and
/// a note on where they came from.
pub(super) fn usage_fields(
    r: &StatusReport,
) -> (Vec<(&'static str, String)>, Option<&'static str>) {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let fields = vec![
        ("memory", or_dash(r.memory_bytes.map(human_bytes))),
        (
            "cpu",
            or_dash(r.cpu_nsec.map(|c| format!("{:.2}s", c as f64 / 1e9))),
        ),
        ("tasks", or_dash(r.tasks.map(|t| t.to_string()))),
    ];
    let note = match r.usage_source {
        Some(UsageSource::Proc) => Some(
            "(summed over the unit's processes from /proc: systemd accounts nothing here, see docs/systemd.md)",
        ),
        None if r.runner_pid.is_some() => Some("(systemd reports no usage for this unit)"),
        _ => None,
    };
    (fields, note)
}

/// QEMU is the unit's process that is not the runner.
pub(super) fn qemu_pid(procs: &[(String, u32, String)], runner: u32) -> Option<u32> {
    procs
        .iter()
        .filter(|(_, pid, _)| *pid != runner)
        .find(|(_, _, cmd)| cmd.contains("qemu"))
        .or_else(|| procs.iter().find(|(_, pid, _)| *pid != runner))
        .map(|(_, pid, _)| *pid)
}

pub async fn ls(ctx: &Ctx, a: &LsArgs) -> Result<(), CliError> {
    let filter = match &a.state {
        Some(s) => Some(VmState::parse(s).ok_or_else(|| {
            CliError::usage(format!(
                "unknown state '{s}'; states: {}",
                VmState::ALL.map(VmState::as_str).join(", ")
            ))
        })?),
        None => None,
    };
    let records = match ctx.store_if_exists()? {
        Some(s) => s.list_vms()?,
        None => Vec::new(),
    };
    // One call for every VM unit, whatever its state.
    let sd = ctx.systemd().await?;
    let units: HashMap<String, _> = sd
        .list_units(&[SERVICE_PATTERN])
        .await?
        .into_iter()
        .map(|u| (u.0.clone(), u))
        .collect();
    let mut reports = Vec::new();
    for r in &records {
        let Ok(vm) = VmName::new(&r.name) else {
            continue;
        };
        // Another data directory's unit of the same name is not this VM's
        // state: the VM shows as defined here.
        let entry = units
            .get(&vm.service_unit())
            .filter(|u| owned_by(&u.1, ctx.data_dir.path()) == Owner::Ours);
        let mut st = entry.map(|u| UnitStatus {
            unit: u.0.clone(),
            load_state: u.2.clone(),
            active_state: u.3.clone(),
            sub_state: u.4.clone(),
            description: u.1.clone(),
            ..Default::default()
        });
        // Details (uptime, CPU, memory, paused) only for units that run.
        if st
            .as_ref()
            .is_some_and(|s| s.vm_state().is_live() || s.active_state == "failed")
        {
            if let Some(full) = UnitOwner::of(&sd, &vm, ctx.data_dir.path()).await?.ours() {
                st = Some(full);
            }
        }
        let mut rep = StatusReport::new(&vm, st.as_ref());
        if filter.is_none_or(|f| f == rep.state) {
            rep.fill_usage(&sd, None).await;
            rep.fill_last_error(&vm, st.as_ref());
            reports.push(rep);
        }
    }
    if a.json {
        print_json(&reports);
        return Ok(());
    }
    if reports.is_empty() {
        eprintln!(
            "no VMs{}",
            a.state
                .as_ref()
                .map(|s| format!(" in state {s}"))
                .unwrap_or_default()
        );
        return Ok(());
    }
    let now = now_unix();
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.state.to_string(),
                r.since
                    .map(|s| human_duration(now.saturating_sub(s)))
                    .unwrap_or_else(|| "-".into()),
                r.cpu_nsec
                    .map(|c| format!("{:.1}s", c as f64 / 1e9))
                    .unwrap_or_else(|| "-".into()),
                r.memory_bytes
                    .map(human_bytes)
                    .unwrap_or_else(|| "-".into()),
                match (&r.failure, &r.last_error) {
                    (Some(f), Some(e)) => format!("{f}: {e}"),
                    (Some(f), None) => f.clone(),
                    _ => String::new(),
                },
            ]
        })
        .collect();
    // Fitted to the terminal (NOTE elided), full rows when piped.
    print!(
        "{}",
        table::render(
            &["NAME", "STATE", "UPTIME", "CPU", "MEM", "NOTE"],
            &rows,
            &Term::stdout(),
            |col, cell| match col {
                1 => VmState::parse(cell).and_then(state_sgr),
                _ => None,
            },
        )
    );
    Ok(())
}

/// The colour of a state on a terminal: green runs, yellow is in between,
/// red failed; a VM that is merely defined stays plain.
fn state_sgr(s: VmState) -> Option<&'static str> {
    match s {
        VmState::Running => Some("32"),
        VmState::Paused | VmState::Starting | VmState::Stopping | VmState::Restarting => Some("33"),
        VmState::Failed => Some("1;31"),
        VmState::Defined => None,
    }
}

pub fn info(ctx: &Ctx, a: &NameJson) -> Result<(), CliError> {
    let (vm, rec) = ctx.vm(&a.name)?;
    let doc = ConfigDocument::from_stored(&rec.config)?;
    let argv = match doc.validate() {
        Ok(cfg) => Ok(cfg.render_argv(&RenderContext {
            vm_name: vm.to_string(),
            qmp_fd: QMP_FD,
            console_fd: Some(CONSOLE_FD),
            disk_dir: ctx.data_dir.disk_dir(&vm),
        })),
        Err(e) => Err(e.to_string()),
    };
    if a.json {
        let mut v = json!({
            "name": vm.to_string(),
            "config": rec.config,
            "sources": rec.sources,
            "autostart": rec.autostart,
            "created_at": rec.created_at,
            "updated_at": rec.updated_at,
            "unit": vm.service_unit(),
        });
        match &argv {
            Ok(a) => v["qemu_argv"] = json!(a),
            Err(e) => {
                v["qemu_argv"] = Value::Null;
                v["config_error"] = json!(e);
            }
        }
        print_json(&v);
        return Ok(());
    }
    println!("name:      {vm}");
    println!("unit:      {}", vm.service_unit());
    for s in &rec.sources {
        println!("source:    {}", s.display());
    }
    println!("created:   {}", rfc3339_utc(rec.created_at.max(0) as u64));
    println!("config:");
    for line in serde_json::to_string_pretty(&rec.config)
        .unwrap_or_default()
        .lines()
    {
        println!("  {line}");
    }
    match argv {
        Ok(a) => println!("qemu argv:\n  {}", a.join(" ")),
        Err(e) => {
            return Err(CliError::new(
                code::INVALID_CONFIG,
                format!("the stored configuration no longer validates: {e}"),
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys of `status --json` (and of each `ls --json` row) are a
    /// documented, stable interface: each one is in docs/cli.md's table.
    #[test]
    fn status_json_keys_are_documented() {
        let doc = include_str!("../../../docs/cli.md");
        let section = doc
            .split("### `maqet status NAME --json`")
            .nth(1)
            .and_then(|s| s.split("\n### ").next())
            .expect("docs/cli.md has the status --json section");
        let vm = VmName::new("x").unwrap();
        let v = serde_json::to_value(StatusReport::new(&vm, None)).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert!(keys.len() >= 10, "{keys:?}");
        for k in keys {
            assert!(
                section.contains(&format!("| `{k}` |")),
                "status --json key `{k}` is not documented in docs/cli.md"
            );
        }
    }
}
