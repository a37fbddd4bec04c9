//! `maqet status|ls|info`: read-only views. State always comes from
//! systemd; nothing here writes.

use serde_json::{json, Value};

use crate::cli::args::{LsArgs, NameJson};
use crate::cli::context::Ctx;
use crate::cli::exit::{code, CliError};
use crate::cli::output::{human_bytes, human_duration, print_json, rfc3339_utc, usage_fields};
use crate::cli::table;
use crate::cli::term::Term;
use crate::systemd::VmState;
use crate::time::now_unix;
use crate::vm::info::Info;
use crate::vm::view::StatusReport;
use crate::vmname::VmName;

pub async fn status(ctx: &Ctx, a: &NameJson) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let r = ctx.vms().await?.status(&vm).await?;
    print_status(&r, a.json);
    Ok(())
}

/// `status` as shown, from a report of this host's or another's (`-H`).
pub fn print_status(r: &StatusReport, json: bool) {
    if json {
        print_json(r);
        return;
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
    for c in r.companion_lines() {
        println!("  helper:  {c}");
    }
    if let Some(p) = r.ports.as_ref().filter(|p| !p.forwards.is_empty()) {
        println!("  ports:   {}", p.summary());
    }
    if let Some(v) = &r.saved {
        println!("  saved:   {}", crate::cli::output::saved_line(v));
        if v.resumable() {
            println!(
                "  (`maqet start {}` resumes it; `maqet start --fresh {}` boots afresh and discards it)",
                r.name, r.name
            );
        }
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
        let (fields, note) = usage_fields(r);
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
}

/// `ls --state STATE`'s state.
pub fn state_filter(state: Option<&str>) -> Result<Option<VmState>, CliError> {
    state
        .map(|s| {
            VmState::parse(s).ok_or_else(|| {
                CliError::usage(format!(
                    "unknown state '{s}'; states: {}",
                    VmState::ALL.map(VmState::as_str).join(", ")
                ))
            })
        })
        .transpose()
}

pub async fn ls(ctx: &Ctx, a: &LsArgs) -> Result<(), CliError> {
    let filter = state_filter(a.state.as_deref())?;
    let reports = ctx.vms().await?.list(filter).await?;
    let rows: Vec<_> = reports.into_iter().map(|r| (None, r)).collect();
    print_ls(&rows, a);
    Ok(())
}

/// `ls` as shown: each report with the host it is from (`-H`, several
/// hosts: a HOST column first, and `host` in each JSON object); `None`
/// for this host's.
pub fn print_ls(reports: &[(Option<String>, StatusReport)], a: &LsArgs) {
    let hosts = reports.iter().any(|(h, _)| h.is_some());
    if a.json {
        match hosts {
            false => print_json(&reports.iter().map(|(_, r)| r).collect::<Vec<_>>()),
            true => print_json(
                &reports
                    .iter()
                    .map(|(h, r)| {
                        let mut v = json!({ "host": h });
                        if let (Some(o), Value::Object(m)) = (
                            v.as_object_mut(),
                            serde_json::to_value(r).unwrap_or_default(),
                        ) {
                            o.extend(m);
                        }
                        v
                    })
                    .collect::<Vec<_>>(),
            ),
        }
        return;
    }
    if reports.is_empty() {
        eprintln!(
            "no VMs{}",
            a.state
                .as_ref()
                .map(|s| format!(" in state {s}"))
                .unwrap_or_default()
        );
        return;
    }
    let now = now_unix();
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|(host, r)| {
            let mut row = Vec::new();
            if hosts {
                row.push(host.clone().unwrap_or_else(|| "-".into()));
            }
            row.extend([
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
                match (&r.failure, &r.last_error, &r.saved) {
                    (_, _, Some(v)) if v.resumable() => format!(
                        "saved {} ago, {}",
                        human_duration(now.saturating_sub(v.saved_at.max(0) as u64)),
                        human_bytes(v.size)
                    ),
                    (Some(f), Some(e), _) => format!("{f}: {e}"),
                    (Some(f), None, _) => f.clone(),
                    _ => String::new(),
                },
            ]);
            row
        })
        .collect();
    let mut headers = vec!["NAME", "STATE", "UPTIME", "CPU", "MEM", "NOTE"];
    if hosts {
        headers.insert(0, "HOST");
    }
    let state_col = usize::from(hosts) + 1;
    // Fitted to the terminal (NOTE elided), full rows when piped.
    print!(
        "{}",
        table::render(&headers, &rows, &Term::stdout(), |col, cell| match col {
            c if c == state_col => VmState::parse(cell).and_then(state_sgr),
            _ => None,
        })
    );
}

/// The colour of a state on a terminal: green runs, yellow is in between,
/// red failed; a VM that is merely defined stays plain.
fn state_sgr(s: VmState) -> Option<&'static str> {
    match s {
        VmState::Running => Some("32"),
        VmState::Paused
        | VmState::Prelaunch
        | VmState::Starting
        | VmState::Stopping
        | VmState::Saving
        | VmState::Restarting => Some("33"),
        // Not running, but holding a guest's work: not merely defined.
        VmState::Saved => Some("36"),
        VmState::Failed | VmState::InternalError => Some("1;31"),
        VmState::Defined => None,
    }
}

/// What [`crate::ports::CHOSEN_AT_START`] stands for.
const CHOSEN_AT_START_MEANS: &str =
    "a free port on 127.0.0.1 for the guest's ssh, chosen at each start";

pub fn info(ctx: &Ctx, a: &NameJson) -> Result<(), CliError> {
    let vm = VmName::new(&a.name)?;
    let Info {
        record: rec,
        command,
    } = crate::vm::info::info(&ctx.data_dir, &vm)?;
    let command = command.map_err(|e| e.to_string());
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
        match &command {
            Ok(c) => {
                v["qemu_argv"] = json!(c.argv);
                v["chosen_at_start"] = json!(c
                    .chosen_at_start
                    .iter()
                    .map(|p| (p.to_string(), json!(CHOSEN_AT_START_MEANS)))
                    .collect::<serde_json::Map<_, _>>());
            }
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
    match command {
        Ok(c) => {
            println!("qemu argv:\n  {}", c.argv.join(" "));
            for p in c.chosen_at_start {
                println!("  ({p}: {CHOSEN_AT_START_MEANS})");
            }
        }
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
    use crate::vm::view::StatusReport;
    use crate::vmname::VmName;

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
