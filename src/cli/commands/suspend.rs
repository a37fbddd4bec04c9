//! `maqet suspend NAME`: save a running VM's state and stop it; with
//! `--discard`, throw a stopped VM's saved state away (asking first on a
//! terminal).

use serde_json::json;

use crate::cli::args::SuspendArgs;
use crate::cli::confirm::{cancelled, discard_states};
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::cli::output::{human_bytes, print_json};

pub async fn run(ctx: &Ctx, a: &SuspendArgs) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let vms = ctx.vms().await?;
    if a.discard {
        let state = vms.saved_state(&vm)?;
        let view: Vec<_> = state
            .iter()
            .map(|s| (vm.clone(), crate::vm::SavedView::of(s)))
            .collect();
        if !discard_states(&view, a.yes, "suspend --discard")? {
            return Err(cancelled("the saved state stays"));
        }
        let d = vms.discard_saved(&vm).await?;
        if a.json {
            print_json(&json!({
                "name": vm.to_string(),
                "discarded": d.state.is_some(),
                "state": d.state,
                "deleted": d.deleted,
                "kept": d.kept.iter().map(|(p, why)| json!({"path": p, "why": why})).collect::<Vec<_>>(),
            }));
        } else {
            for p in &d.deleted {
                eprintln!("deleted {}", p.display());
            }
            for (p, why) in &d.kept {
                eprintln!("kept {} ({why})", p.display());
            }
            match &d.state {
                Some(_) => println!("{vm}: saved state discarded; the next start boots afresh"),
                None => println!("{vm}: has no saved state"),
            }
        }
        return Ok(());
    }
    let s = vms.suspend(&vm).await?;
    if a.json {
        print_json(&s);
        return Ok(());
    }
    let secs = s.saved.save_ms as f64 / 1000.0;
    println!(
        "{vm}: saved {} to {} in {secs:.1}s; `maqet start {vm}` resumes it",
        human_bytes(s.saved.size),
        s.saved.path.display()
    );
    Ok(())
}
