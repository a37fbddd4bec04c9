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
    /// Attach to a VM's serial console (needs `console: true`); Ctrl-] detaches.
    Console(ConsoleArgs),
    /// Print a VM's QMP events as they happen, until it stops.
    Events(NameJson),
    /// Reset a VM at once, like pressing its reset button (QMP system_reset).
    Reset(VmArg),
    /// Ask the guest to reboot (Ctrl-Alt-Delete) and wait until it does.
    Reboot(RebootArgs),
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
    /// Only VMs in this state (defined, starting, running, paused, stopping, failed).
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
    /// Press one key combination, e.g. `keys VM ctrl alt delete` (QEMU qcode names).
    Keys(QmpKeysArgs),
    /// Type text on the guest's keyboard (US layout), one key at a time.
    Type(QmpTypeArgs),
    /// Save the VM's screen to FILE: PNG if it ends in .png, else PPM.
    Screendump(ScreendumpArgs),
    /// Pause the VM's CPUs (QMP stop).
    Pause(VmArg),
    /// Resume a paused VM (QMP cont).
    Resume(VmArg),
    /// Hot-plug a device, e.g. `device-add VM virtio-rng-pci --id rng0`.
    DeviceAdd(DeviceAddArgs),
    /// Hot-unplug a device and wait until the guest has released it.
    DeviceDel(DeviceDelArgs),
}

#[derive(Debug, Args)]
pub struct VmArg {
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    pub name: String,
    /// Do not switch the terminal to raw mode and take no escape key: stdin
    /// goes to the console as is and output is printed until the VM stops
    /// (also the behaviour when stdin is not a terminal).
    #[arg(long)]
    pub no_tty: bool,
    /// Print the recently buffered output (up to 64 KiB) and exit.
    #[arg(long)]
    pub dump: bool,
    /// Print the recently buffered output first, then attach.
    #[arg(long)]
    pub replay: bool,
}

#[derive(Debug, Args)]
pub struct RebootArgs {
    pub name: String,
    /// Seconds to wait for the guest to reboot.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct QmpKeysArgs {
    pub name: String,
    /// Keys pressed together, e.g. `ctrl alt f2`.
    #[arg(value_name = "KEY", required = true)]
    pub keys: Vec<String>,
    /// How long the keys stay pressed, in milliseconds.
    #[arg(long, default_value_t = 100, value_name = "MS", value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub hold_time: u32,
}

#[derive(Debug, Args)]
pub struct QmpTypeArgs {
    pub name: String,
    /// The text: letters, digits, ASCII punctuation, space, tab, newline (Enter).
    pub text: String,
    /// How long each key stays pressed, in milliseconds.
    #[arg(long, default_value_t = 100, value_name = "MS", value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub hold_time: u32,
}

#[derive(Debug, Args)]
pub struct ScreendumpArgs {
    pub name: String,
    /// Output file; a relative path is relative to the current directory.
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct DeviceAddArgs {
    pub name: String,
    /// QEMU device type, e.g. virtio-rng-pci (`-device help` lists them).
    pub driver: String,
    /// The device's id, needed to remove it again with device-del.
    #[arg(long)]
    pub id: Option<String>,
    /// Device properties, e.g. `bus=pci.0 addr=0x6`.
    #[arg(value_name = "PROP=VALUE")]
    pub props: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DeviceDelArgs {
    pub name: String,
    /// The device's id (or QOM path).
    pub id: String,
    /// Seconds to wait for the guest to release the device.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub timeout: f64,
    /// Return once QEMU accepted the request, without waiting for the guest.
    #[arg(long)]
    pub no_wait: bool,
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
