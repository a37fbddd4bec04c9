//! `maqet add`: load, merge and validate YAML files, then store the VM.

use crate::cli::args::AddArgs;
use crate::cli::context::Ctx;
use crate::cli::exit::{code, CliError};
use crate::config::ConfigDocument;
use crate::state::NewVm;
use crate::vmname::VmName;

pub fn run(ctx: &Ctx, a: AddArgs) -> Result<(), CliError> {
    let files: Vec<_> = a.files.iter().chain(&a.vm_config).cloned().collect();
    if files.is_empty() {
        return Err(CliError::usage(
            "no config file given: `maqet add FILE.yaml [MORE.yaml…]` (or --vm-config FILE)",
        ));
    }
    let doc = ConfigDocument::load_files(&files)?;
    // Validated first: a bad `name:` is reported with its file:line:column.
    let config = doc.validate()?;
    let name = match (&a.name, doc.name()) {
        (Some(n), _) => n.clone(),
        (None, Some(n)) => n.to_string(),
        (None, None) => {
            return Err(CliError::new(
                code::INVALID_CONFIG,
                format!(
                    "{}: the VM has no name: add a `name:` key or pass --name NAME",
                    files[0].display()
                ),
            ))
        }
    };
    let vm = VmName::new(&name)?;
    // Printed once, here; not also logged (the log goes to the same stderr).
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    let store = ctx.store()?;
    store
        .insert_vm(&NewVm {
            name: vm.to_string(),
            config: doc.to_json(),
            sources: doc.sources().to_vec(),
            autostart: config.autostart,
        })
        .map_err(|e| match e {
            crate::state::StateError::Exists(_) => CliError::conflict(format!(
                "a VM named '{vm}' already exists; remove it with `maqet rm {vm}` or choose another name with --name"
            )),
            other => other.into(),
        })?;
    if a.json {
        crate::cli::output::print_json(&serde_json::json!({
            "name": vm.to_string(),
            "sources": doc.sources(),
            "warnings": config.warnings,
        }));
    } else {
        println!("{vm}");
    }
    Ok(())
}
