//! `maqet config VM`: the stored, merged config as YAML that `maqet add`
//! accepts again (paths are absolute, so the file works from anywhere).

use crate::cli::args::NameJson;
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::cli::output::print_json;
use crate::vm::info::config_yaml;
use crate::vmname::VmName;

pub fn run(ctx: &Ctx, a: &NameJson) -> Result<(), CliError> {
    let vm = VmName::new(&a.name)?;
    let (rec, yaml) = config_yaml(&ctx.data_dir, &vm)?;
    if a.json {
        print_json(&rec.config);
        return Ok(());
    }
    let yaml = yaml?;
    let sources: Vec<String> = rec
        .sources
        .iter()
        .map(|s| s.display().to_string())
        .collect();
    println!(
        "# VM '{vm}' as stored by maqet{}",
        if sources.is_empty() {
            String::new()
        } else {
            format!(", merged from {}", sources.join(", "))
        }
    );
    print!("{yaml}");
    Ok(())
}
