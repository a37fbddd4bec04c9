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
use crate::runner::QMP_FD;
use crate::systemd::properties::data_dir_of_description;
use crate::systemd::{Systemd, UnitStatus, VmState, SERVICE_PATTERN};
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
    pub exit_status: Option<i32>,
    pub status_text: Option<String>,
    pub restarts: u32,
    pub memory_bytes: Option<u64>,
    pub cpu_nsec: Option<u64>,
    pub tasks: Option<u64>,
}

impl StatusReport {
    fn new(vm: &VmName, st: Option<&UnitStatus>) -> Self {
        let state = st.map_or(VmState::Defined, UnitStatus::vm_state);
        let live = state.is_live();
        let since = st
            .filter(|s| live && s.active_enter_timestamp > 0)
            .map(|s| s.active_enter_timestamp / 1_000_000);
        let failed = state == VmState::Failed;
        StatusReport {
            name: vm.to_string(),
            state,
            unit: vm.service_unit(),
            runner_pid: st.filter(|s| s.main_pid != 0).map(|s| s.main_pid),
            qemu_pid: None,
            since,
            result: st
                .filter(|s| !s.result.is_empty())
                .map(|s| s.result.clone()),
            failure: st.filter(|_| failed).map(UnitStatus::failure_reason),
            exit_status: st
                .filter(|s| s.exec_main_code != 0)
                .map(|s| s.exec_main_status),
            status_text: st
                .filter(|s| !s.status_text.is_empty())
                .map(|s| s.status_text.clone()),
            restarts: st.map_or(0, |s| s.n_restarts),
            memory_bytes: st.filter(|_| live).and_then(|s| s.memory_current),
            cpu_nsec: st.filter(|_| live).and_then(|s| s.cpu_usage_nsec),
            tasks: st.filter(|_| live).and_then(|s| s.tasks_current),
        }
    }
}

/// The unit's state if it belongs to this data directory.
fn ours(ctx: &Ctx, st: Option<UnitStatus>) -> Option<UnitStatus> {
    st.filter(|s| {
        data_dir_of_description(&s.description)
            .is_none_or(|d| d == ctx.data_dir.path().to_string_lossy())
    })
}

pub async fn status(ctx: &Ctx, a: &NameJson) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let sd = ctx.systemd().await?;
    let st = ours(ctx, sd.unit_status(&vm.service_unit()).await?);
    let mut r = StatusReport::new(&vm, st.as_ref());
    if let (Some(s), true) = (&st, r.state.is_live()) {
        r.qemu_pid = qemu_pid(&sd, &vm, s.main_pid).await;
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
    if let Some(f) = &r.failure {
        println!("  failure: {f}");
        println!(
            "  (see `maqet logs {}`; `maqet start {}` starts it again)",
            r.name, r.name
        );
    }
    if let Some(m) = r.memory_bytes {
        println!("  memory:  {}", human_bytes(m));
    }
    if let Some(c) = r.cpu_nsec {
        println!("  cpu:     {:.2}s", c as f64 / 1e9);
    }
    if r.restarts > 0 {
        println!("  restarts: {}", r.restarts);
    }
    Ok(())
}

/// QEMU is the unit's process that is not the runner.
async fn qemu_pid(sd: &Systemd, vm: &VmName, runner: u32) -> Option<u32> {
    let procs = sd.unit_processes(&vm.service_unit()).await.ok()?;
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
        let entry = units.get(&vm.service_unit()).filter(|u| {
            data_dir_of_description(&u.1).is_none_or(|d| d == ctx.data_dir.path().to_string_lossy())
        });
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
            if let Some(full) = ours(ctx, sd.unit_status(&vm.service_unit()).await?) {
                st = Some(full);
            }
        }
        let rep = StatusReport::new(&vm, st.as_ref());
        if filter.is_none_or(|f| f == rep.state) {
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
                r.failure.clone().unwrap_or_default(),
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
        VmState::Paused | VmState::Starting | VmState::Stopping => Some("33"),
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
            console_fd: None,
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
