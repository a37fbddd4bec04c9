//! `maqet __generate` and `maqet __complete-vms`: man pages, shell
//! completions and the CLI reference, all generated from the clap
//! definitions of `args.rs`, so a subcommand added there appears in every
//! one of them with nothing else to edit.
//!
//! They are hidden subcommands of `maqet` itself rather than a build script
//! or a separate tool: the pages and scripts come from exactly the binary
//! that gets installed, `make install` needs nothing but that binary, and
//! the completion scripts need `maqet` at completion time anyway (for VM
//! names, which change while the scripts stay installed).

mod bash;
mod fish;
pub mod man;
pub mod model;
pub mod reference;
mod zsh;

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Subcommand, ValueEnum};

use crate::cli::args::Cli;
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: Generate,
}

#[derive(Debug, Subcommand)]
pub enum Generate {
    /// Write maqet.1 and one page per subcommand (maqet-start.1, …) into DIR.
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the completion script for SHELL.
    Completions { shell: Shell },
    /// Print the Markdown command reference of docs/cli.md.
    Reference {
        /// Replace the generated part of this Markdown file in place instead.
        #[arg(long, value_name = "FILE")]
        splice: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// The command tree the generators document: the clap definitions, with a
/// description for any VM-name option that has none. Positionals are left
/// alone: clap's `mut_arg` re-appends an argument, which would reorder
/// positionals (they must carry a doc comment instead; a test checks).
pub fn documented_command() -> clap::Command {
    fn fill(mut cmd: clap::Command) -> clap::Command {
        let ids: Vec<String> = cmd
            .get_arguments()
            .filter(|a| model::is_vm_arg(a) && a.get_help().is_none() && !a.is_positional())
            .map(|a| a.get_id().to_string())
            .collect();
        for id in ids {
            cmd = cmd.mut_arg(id, |a| a.help("Name of the VM."));
        }
        let subs: Vec<String> = cmd
            .get_subcommands()
            .map(|s| s.get_name().to_string())
            .collect();
        for s in subs {
            cmd = cmd.mut_subcommand(s, fill);
        }
        cmd
    }
    fill(Cli::command())
}

impl Shell {
    pub const ALL: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

    /// The script for this shell.
    pub fn script(self) -> String {
        let tree = model::Node::from_command(documented_command());
        match self {
            Shell::Bash => bash::render(&tree),
            Shell::Zsh => zsh::render(&tree),
            Shell::Fish => fish::render(&tree),
        }
    }
}

pub fn run(a: &GenerateArgs) -> Result<(), CliError> {
    match &a.what {
        Generate::Man { dir } => write_man_pages(dir),
        Generate::Completions { shell } => {
            print!("{}", shell.script());
            Ok(())
        }
        Generate::Reference { splice: None } => {
            print!("{}", reference::render(documented_command()));
            Ok(())
        }
        Generate::Reference { splice: Some(file) } => splice_reference(file),
    }
}

fn write_man_pages(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        CliError::failure(format!(
            "cannot create the directory {}: {e}",
            dir.display()
        ))
    })?;
    for page in man::pages(documented_command()) {
        let path = dir.join(&page.file);
        std::fs::write(&path, page.roff)
            .map_err(|e| CliError::failure(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

fn splice_reference(file: &Path) -> Result<(), CliError> {
    let doc = std::fs::read_to_string(file)
        .map_err(|e| CliError::failure(format!("cannot read {}: {e}", file.display())))?;
    let new =
        reference::splice(&doc, &reference::render(documented_command())).ok_or_else(|| {
            CliError::failure(format!(
                "{} has no generated section: add the lines\n{}\n{}",
                file.display(),
                reference::BEGIN,
                reference::END
            ))
        })?;
    if new != doc {
        std::fs::write(file, new)
            .map_err(|e| CliError::failure(format!("cannot write {}: {e}", file.display())))?;
    }
    Ok(())
}

/// `maqet __complete-vms`: the defined VM names, one per line. Reads only
/// the DB (no systemd), and prints nothing where nothing is defined, so a
/// TAB press is fast and quiet.
pub fn complete_vms(ctx: &Ctx) -> Result<(), CliError> {
    if let Some(store) = ctx.store_if_exists()? {
        for vm in store.list_vms()? {
            println!("{}", vm.name);
        }
    }
    Ok(())
}

/// `maqet __complete-images`: the catalog's image names, one per line
/// (nothing on any error, so a TAB press stays quiet).
pub fn complete_images() -> Result<(), CliError> {
    for n in crate::image::Catalog::from_env().names() {
        println!("{n}");
    }
    Ok(())
}

/// A POSIX-shell single-quoted word (bash and zsh).
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && !s.starts_with('=')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests;
