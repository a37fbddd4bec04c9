//! Command-line definitions (clap derive). Man pages, shell completions and
//! the reference in docs/cli.md are generated from these (`cli::generate`),
//! so help texts are the documentation. A positional argument that takes a
//! VM name is called `name` (or `names`, `vm`, `vms`): completion then
//! offers the defined VMs for it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::exit::EXIT_CODES_HELP;

#[derive(Debug, Parser)]
#[command(
    name = "maqet",
    version,
    about = "Run QEMU virtual machines as systemd --user units",
    long_about = "maqet defines QEMU VMs from YAML files and runs each one as a transient \
systemd user unit, maqet-vm@NAME.service, so `systemctl --user` and `journalctl --user` \
show the truth about every VM.",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// Data directory holding maqet.db and the default disk location.
    #[arg(long, global = true, env = "MAQET_DATA_DIR", value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub data_dir: Option<PathBuf>,
    /// More output on stderr: -v info, -vv debug, -vvv trace.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Define a VM from one or more YAML files (later files override earlier ones).
    Add(AddArgs),
    /// Start a VM; returns once QEMU answers QMP.
    Start(StartArgs),
    /// Stop a VM: ACPI power-down, then quit after the timeout.
    Stop(StopArgs),
    /// Stop a VM if it runs, then start it.
    Restart(StartArgs),
    /// Show one VM's state (from systemd).
    Status(NameJson),
    /// List every defined VM with its state.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Remove a VM definition.
    Rm(RmArgs),
    /// Show a VM's stored configuration and the exact QEMU command line.
    Info(NameJson),
    /// Talk QMP to a running VM.
    #[command(subcommand)]
    Qmp(QmpCommand),
    /// Show a VM's journal (runner and QEMU output).
    Logs(LogsArgs),
    /// Generate man pages, shell completions or the CLI reference (for packaging).
    #[command(name = "__generate", hide = true)]
    Generate(super::generate::GenerateArgs),
    /// Print the defined VM names, one per line (for shell completion).
    #[command(name = "__complete-vms", hide = true)]
    CompleteVms,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// VM config files (YAML), merged left to right.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// More config files, merged after the positional ones (the original tool's spelling).
    #[arg(long = "vm-config", value_name = "FILE", num_args = 1..)]
    pub vm_config: Vec<PathBuf>,
    /// The VM's name (overrides `name:` in the files).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Name of the VM.
    pub name: String,
    /// Seconds to wait for QEMU to answer QMP.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Name of the VM.
    pub name: String,
    /// Kill QEMU now instead of powering the guest down.
    #[arg(long)]
    pub force: bool,
    /// Seconds the guest gets to power off before QEMU is told to quit
    /// (default: the VM's shutdown_timeout, 30 unless configured).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
}

#[derive(Debug, Args)]
pub struct NameJson {
    /// Name of the VM.
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Only VMs in this state (defined, starting, running, paused, stopping, failed).
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Name of the VM.
    pub name: String,
    /// Stop the VM first (forcefully) if it is running.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum QmpCommand {
    /// Run one QMP command and print QEMU's "return" value as JSON.
    Run(QmpRunArgs),
}

#[derive(Debug, Args)]
pub struct QmpRunArgs {
    /// Name of the VM.
    pub name: String,
    /// QMP command, e.g. query-status.
    pub command: String,
    /// The command's arguments as a JSON object, e.g. '{"device":"ide0-hd0"}'.
    #[arg(value_name = "ARGS_JSON")]
    pub arguments: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Name of the VM.
    pub name: String,
    /// Keep printing new entries.
    #[arg(short, long)]
    pub follow: bool,
    /// Number of recent entries to show.
    #[arg(short = 'n', long, value_name = "N")]
    pub lines: Option<u32>,
}
