//! `maqet add`: files (or `--empty NAME`) → the vm layer's `define` →
//! the name (or JSON).

use crate::cli::args::AddArgs;
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::cli::output::print_notice;
use crate::cli::progress::{self, Mode};
use crate::vm::define::{define, Source};
use crate::vm::images::{Images, PullOptions};
use crate::vmname::VmName;

pub fn run(ctx: &Ctx, a: AddArgs) -> Result<(), CliError> {
    let source = match a.empty {
        Some(name) => Source::Empty {
            name: VmName::new(&name)?,
        },
        None => {
            let files: Vec<_> = a.files.iter().chain(&a.vm_config).cloned().collect();
            if files.is_empty() {
                return Err(CliError::usage(
                    "no config file given: `maqet add FILE.yaml [MORE.yaml…]` (or --vm-config FILE, or --empty NAME)",
                ));
            }
            Source::Files {
                files,
                name: a.name.as_deref().map(VmName::new).transpose()?,
            }
        }
    };
    // Warnings are printed once, as notices; not also logged (the log goes
    // to the same stderr).
    // Only needed for `base: image:REF`; without a cache directory such a
    // base is refused by `define`.
    let images = Images::from_env(progress::sink(Mode::choose(false)), PullOptions::default()).ok();
    let d = define(&ctx.data_dir, &source, images.as_ref(), &print_notice)?;
    if a.json {
        crate::cli::output::print_json(&serde_json::json!({
            "name": d.vm.to_string(),
            "sources": d.sources,
            "warnings": d.warnings,
        }));
    } else {
        println!("{}", d.vm);
    }
    Ok(())
}
