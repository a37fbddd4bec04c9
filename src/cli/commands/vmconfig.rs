//! `maqet config VM`: the stored, merged config as YAML that `maqet add`
//! accepts again (paths are absolute, so the file works from anywhere).

use crate::cli::args::NameJson;
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::cli::output::print_json;
use crate::config::ConfigDocument;

pub fn run(ctx: &Ctx, a: &NameJson) -> Result<(), CliError> {
    let (vm, rec) = ctx.vm(&a.name)?;
    if a.json {
        print_json(&rec.config);
        return Ok(());
    }
    let doc = ConfigDocument::from_stored(&rec.config)?;
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
    print!("{}", doc.to_yaml(Some(vm.as_str())));
    Ok(())
}
