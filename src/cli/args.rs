//! Command-line definitions (clap derive). Man pages and completions are
//! generated from these, so help texts are the documentation.

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
    #[arg(long, global = true, env = "MAQET_DATA_DIR", value_name = "DIR")]
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
    /// Everything about one VM: state, live usage, unit properties, cgroup,
    /// processes, control socket, disks.
    Inspect(NameJson),
    /// Mark a VM for autostart (`maqet autostart`, run at login by
    /// maqet-autostart.service).
    Enable(EnableArgs),
    /// Unmark a VM for autostart.
    Disable(EnableArgs),
    /// Start every VM marked for autostart that is not running.
    Autostart(AutostartArgs),
    /// Check the user session, lingering, KVM, QEMU, the journal, the
    /// database and leftover units; --fix repairs what is safe to repair.
    Doctor(DoctorArgs),
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
    pub name: String,
    /// Seconds to wait for QEMU to answer QMP.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct StopArgs {
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
    /// Only VMs in this state (defined, starting, running, paused, stopping, failed, restarting).
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
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
    pub name: String,
    /// QMP command, e.g. query-status.
    pub command: String,
    /// The command's arguments as a JSON object, e.g. '{"device":"ide0-hd0"}'.
    #[arg(value_name = "ARGS_JSON")]
    pub arguments: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub name: String,
    /// Keep printing new entries.
    #[arg(short, long)]
    pub follow: bool,
    /// Number of recent entries to show.
    #[arg(short = 'n', long, value_name = "N")]
    pub lines: Option<u32>,
}

#[derive(Debug, Args)]
pub struct EnableArgs {
    pub name: String,
    /// Also start (enable) or stop (disable) the VM now.
    #[arg(long)]
    pub now: bool,
}

#[derive(Debug, Args)]
pub struct AutostartArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Seconds each VM gets to answer QMP.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Repair what is safe to repair: reset failed units of defined VMs and
    /// leftover failed units, remove stale socket files.
    #[arg(long)]
    pub fix: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}
