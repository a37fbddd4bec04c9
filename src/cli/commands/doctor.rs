//! `maqet doctor [--fix] [--json]`: prints the checks of `crate::doctor`.
//! Exit 0 when no error is left (warnings allowed), 1 otherwise.

use crate::cli::args::DoctorArgs;
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::cli::output::print_json;
use crate::doctor::{self, DoctorInput, Severity};

use crate::vm::runner_path;

pub async fn run(ctx: &Ctx, a: &DoctorArgs) -> Result<(), CliError> {
    let input = DoctorInput {
        data_dir: ctx.data_dir.clone(),
        runner: runner_path().map_err(|e| e.to_string()),
        fix: a.fix,
    };
    let report = doctor::run(&input).await;
    if a.json {
        print_json(&report);
    } else {
        for f in &report.findings {
            let label = match (&f.fixed, f.severity) {
                (Some(_), _) => "fixed",
                (None, s) => s.as_str(),
            };
            println!("{label:<8} {:<9} {}", f.check, f.message);
            match (&f.fixed, &f.hint) {
                (Some(done), _) => println!("{:<18} {done}", ""),
                (None, Some(h)) if f.severity >= Severity::Warning => {
                    println!("{:<18} fix: {h}", "")
                }
                _ => {}
            }
        }
        println!(
            "\n{} error(s), {} warning(s){}",
            report.errors,
            report.warnings,
            if !a.fix && report.findings.iter().any(|f| f.open() && f.fixable) {
                "; `maqet doctor --fix` repairs what is safe to repair"
            } else {
                ""
            }
        );
    }
    if report.ok {
        Ok(())
    } else {
        Err(CliError::failure(format!(
            "{} problem(s) need attention (see above)",
            report.errors
        )))
    }
}
