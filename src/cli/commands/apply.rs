//! `maqet apply VM [FILES…] [flags]`: parse the flags → the vm layer's
//! `apply` → what changed.

use crate::cli::args::{key_values, ApplyArgs};
use crate::cli::context::Ctx;
use crate::cli::exit::{code, CliError};
use crate::cli::output::{print_json, print_notice};
use crate::cli::progress::{self, Mode};
use crate::vm::define::Changes;
use crate::vm::images::{Images, PullOptions};
use crate::vm::VmError;
use crate::vmname::VmName;

pub async fn run(ctx: &Ctx, a: &ApplyArgs) -> Result<(), CliError> {
    let set = key_values(&a.set)?;
    let changes = Changes {
        images: Images::from_env(progress::sink(Mode::choose(false)), PullOptions::default()).ok(),
        files: a.files.iter().chain(&a.vm_config).cloned().collect(),
        memory: a.memory.clone(),
        cpu: a.cpu.clone(),
        binary: a.binary.clone(),
        enable_kvm: a.enable_kvm,
        set,
    };
    if changes.is_empty() {
        return Err(CliError::usage(
            "nothing to apply: give config files and/or --memory, --cpu, --binary, --enable-kvm, --set KEY=VALUE",
        ));
    }
    let vms = ctx.vms_if_session().await?;
    let applied = match vms.apply(&VmName::new(&a.name)?, &changes, &print_notice).await {
        Err(VmError::NoSuchVm { .. }) => {
            return Err(CliError::new(
                code::NO_SUCH_VM,
                format!(
                    "no VM named '{}' to apply to; define it first with `maqet add FILE.yaml --name {}`",
                    a.name, a.name
                ),
            ))
        }
        r => r?,
    };
    if a.json {
        print_json(&applied.changes);
    }
    let vm = applied.vm;
    if applied.changes.is_empty() {
        eprintln!("VM '{vm}' is unchanged");
        return Ok(());
    }
    if !a.json {
        for c in &applied.changes {
            println!("{c}");
        }
    }
    eprintln!("applied to VM '{vm}' ({} changes)", applied.changes.len());
    Ok(())
}
