//! `maqet inspect VM [--json]`: renders the vm layer's [`Inspection`].

use crate::cli::args::NameJson;
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::cli::output::{human_bytes, print_json, usage_fields};
use crate::vm::inspect::Inspection;

pub async fn run(ctx: &Ctx, a: &NameJson) -> Result<(), CliError> {
    // An unknown VM is exit 3 even without a user session.
    let (vm, _) = ctx.vm(&a.name)?;
    let report = ctx.vms().await?.inspect(&vm).await?;
    if a.json {
        print_json(&report);
    } else {
        print_human(&report);
    }
    Ok(())
}

fn print_human(r: &Inspection) {
    let s = &r.status;
    println!("{}: {}", s.name, s.state);
    println!("  unit:      {}", s.unit);
    if let Some(c) = &r.cgroup {
        println!("  cgroup:    {c}");
    }
    if let Some(u) = s.uptime_sec {
        println!("  uptime:    {}", crate::cli::output::human_duration(u));
    }
    if let Some(f) = &s.failure {
        println!("  last run:  {f}");
    }
    let delay = r
        .restart_sec
        .map(|d| format!(", after {d}s"))
        .unwrap_or_default();
    println!(
        "  restart:   {}{delay} ({} restarts)",
        r.restart_policy, s.restarts
    );
    println!("  autostart: {}", if r.autostart { "yes" } else { "no" });
    println!("  on stop:   {}", r.on_stop);
    if let Some(v) = &s.saved {
        println!("  saved:     {}", crate::cli::output::saved_line(v));
    }
    for c in s.companion_lines() {
        println!("  helper:    {c}");
    }
    if s.runner_pid.is_some() {
        let (fields, note) = usage_fields(s);
        for (k, v) in fields {
            println!("  {:<11}{v}", format!("{k}:"));
        }
        if let Some(n) = note {
            println!("  {n}");
        }
    }
    let limits: Vec<String> = [
        "MemoryMax",
        "CPUQuotaPerSecUSec",
        "CPUWeight",
        "IOWeight",
        "TasksMax",
    ]
    .iter()
    .filter_map(|k| {
        let v = r.properties.get(*k)?;
        (!v.is_null()).then(|| format!("{k}={v}"))
    })
    .collect();
    if !limits.is_empty() {
        println!("  limits:    {}", limits.join(" "));
    }
    if !r.processes.is_empty() {
        println!("  processes:");
        for p in &r.processes {
            println!("    {:>7}  {}", p.pid, p.command);
        }
    }
    for sock in &r.sockets {
        let f = &sock.file;
        println!(
            "  socket:    {} ({}) {}{}",
            sock.unit,
            sock.active_state.as_deref().unwrap_or("not loaded"),
            f.path,
            match (&f.mode, f.is_socket) {
                (Some(m), true) => format!(" mode {m}"),
                (Some(m), false) => format!(" mode {m}, not a socket"),
                (None, _) => " (no file)".to_string(),
            }
        );
    }
    if let Some(q) = &r.status.qmp_socket {
        println!("  qmp:       {q} (standard QMP clients, e.g. qmp-shell)");
    }
    if !r.disks.is_empty() {
        println!("  disks:");
        for d in &r.disks {
            let size = d
                .size_bytes
                .map(|b| format!(", {}", human_bytes(b)))
                .unwrap_or_default();
            println!(
                "    {} ({}{}) {}{}{}",
                d.name,
                d.kind,
                d.interface
                    .as_deref()
                    .map(|i| format!(", {i}"))
                    .unwrap_or_default(),
                d.path,
                if d.exists {
                    ""
                } else {
                    " (missing: created at start)"
                },
                size
            );
        }
    }
    if let Some(e) = &r.config_error {
        println!("  config:    no longer validates: {e}");
    }
}
