//! `maqet apply VM [FILES…] [flags]`: stored config ← files ← flags,
//! validated like `add`, refused while the VM runs; prints what changed.

use serde_json::json;

use crate::cli::args::ApplyArgs;
use crate::cli::context::Ctx;
use crate::cli::exit::{code, CliError};
use crate::cli::output::print_json;
use crate::config::{diff, ConfigDocument};

pub async fn run(ctx: &Ctx, a: &ApplyArgs) -> Result<(), CliError> {
    let files: Vec<_> = a.files.iter().chain(&a.vm_config).cloned().collect();
    let no_flags = a.memory.is_none()
        && a.cpu.is_none()
        && a.binary.is_none()
        && !a.enable_kvm
        && a.set.is_empty();
    if files.is_empty() && no_flags {
        return Err(CliError::usage(
            "nothing to apply: give config files and/or --memory, --cpu, --binary, --enable-kvm, --set KEY=VALUE",
        ));
    }
    let sets = a
        .set
        .iter()
        .map(|kv| {
            kv.split_once('=').ok_or_else(|| {
                CliError::usage(format!(
                    "--set {kv}: expected KEY=VALUE, e.g. --set memory=2G"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (vm, rec) = ctx.vm(&a.name).map_err(|e| {
        if e.code == code::NO_SUCH_VM {
            CliError::new(
                code::NO_SUCH_VM,
                format!(
                    "no VM named '{}' to apply to; define it first with `maqet add FILE.yaml --name {}`",
                    a.name, a.name
                ),
            )
        } else {
            e
        }
    })?;
    if ctx.vms_if_session().await?.is_running(&vm).await? {
        return Err(CliError::conflict(format!(
            "VM '{vm}' is running; stop it first with `maqet stop {vm}`, then apply (a running VM keeps the config it was started with)"
        )));
    }
    let mut doc = ConfigDocument::from_stored(&rec.config)?;
    let layer = ConfigDocument::load_files(&files)?;
    if let Some(n) = layer.name().filter(|n| *n != vm.as_str()) {
        eprintln!(
            "warning: {}: name '{n}' is ignored; apply does not rename VM '{vm}'",
            layer
                .name_location()
                .map(|l| l.to_string())
                .unwrap_or_default()
        );
    }
    doc.merge(layer);
    if let Some(m) = &a.memory {
        doc.set_yaml("memory", m, "--memory")?;
    }
    if let Some(c) = &a.cpu {
        doc.set_yaml("cpu", c, "--cpu")?;
    }
    if let Some(b) = &a.binary {
        doc.set("binary", json!(b), "--binary");
    }
    if a.enable_kvm {
        doc.set("enable_kvm", json!(true), "--enable-kvm");
    }
    for (k, v) in sets {
        doc.set_path(k, v)?;
    }
    let cfg = doc.validate_all().map_err(|errors| {
        CliError::new(
            code::INVALID_CONFIG,
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    let old = if rec.config.is_null() {
        json!({})
    } else {
        rec.config.clone()
    };
    let new = doc.to_json();
    let changes = diff(&old, &new);
    if a.json {
        print_json(&changes);
    }
    if changes.is_empty() {
        eprintln!("VM '{vm}' is unchanged");
        return Ok(());
    }
    let mut sources = rec.sources.clone();
    for s in doc.sources() {
        if !sources.contains(s) {
            sources.push(s.clone());
        }
    }
    let store = ctx.store()?;
    // The flag follows the config only when this apply changes `autostart`: otherwise a
    // `maqet enable` would be undone by any unrelated change.
    let autostart = (old.get("autostart") != new.get("autostart")).then_some(cfg.autostart);
    store.update_config(vm.as_str(), &new, &sources, autostart)?;
    if !a.json {
        for c in &changes {
            println!("{c}");
        }
    }
    eprintln!("applied to VM '{vm}' ({} changes)", changes.len());
    Ok(())
}
