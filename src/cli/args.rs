//! Command-line definitions (clap derive). Man pages, shell completions and
//! the reference in docs/cli.md are generated from these (`cli::generate`),
//! so help texts are the documentation. A positional argument that takes a
//! VM name is called `name` (or `names`, `vm`, `vms`): completion then
//! offers the defined VMs for it.

use std::path::PathBuf;
use std::time::Duration;

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
    /// Run the command on another machine, through ssh and the maqet installed there: a host of hosts.yaml (`maqet host ls`) or [USER@]HOST[:PORT]. Repeatable for `ls`. With it, --data-dir and the paths inside configs are the remote host's.
    #[arg(
        short = 'H',
        long = "host",
        global = true,
        env = "MAQET_HOST",
        value_name = "HOST"
    )]
    pub host: Vec<String>,
    /// `ls` on every host of hosts.yaml, with a HOST column.
    #[arg(long, global = true)]
    pub all_hosts: bool,
    /// With -H: send this local text file along (repeatable); it lands beside the uploaded configs in the remote DATA_DIR/uploads/, so a relative path in a config names it.
    #[arg(long, global = true, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub copy: Vec<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Define a VM from one or more YAML files (later files override earlier ones).
    Add(AddArgs),
    /// Start VMs (several at once: concurrently); returns once QEMU answers QMP.
    Start(StartArgs),
    /// Stop VMs (several at once: concurrently): ACPI power-down, then quit after the timeout.
    Stop(StopArgs),
    /// Stop a VM if it runs, then start it.
    Restart(RestartArgs),
    /// Save a running VM's state (RAM and devices) to a file and stop it; `maqet start` resumes it.
    ///
    /// The guest is paused and QEMU writes its state to DATA_DIR/disks/NAME/state.sav
    /// (0600); the file is trusted only once it is complete and recorded, so a save that
    /// fails or is killed never leaves a state a start would load. A failed save (a full
    /// disk) leaves the VM running and says which directory. While a VM is saved, whatever
    /// would change its disks or hardware (snapshots, storage attach, apply of anything but
    /// unit settings, clone --full) is refused; `--discard` throws the state away.
    Suspend(SuspendArgs),
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
    ///
    /// Shows the runner's and QEMU's lines and systemd's about each run, of
    /// this data directory's runs only: another data directory's VM of the
    /// same name shares the unit's journal, so its runs are left out, and
    /// while it runs the command exits 5 (see docs/systemd.md, "Journal").
    Logs(LogsArgs),
    /// Change a stopped VM's config: merge files, then flags, on top of it; shows what changed.
    Apply(ApplyArgs),
    /// Print a VM's stored config as YAML that `maqet add` accepts.
    Config(NameJson),
    /// Disk images: create them now, or list them with their sizes and snapshots.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Internal snapshots of qcow2 disks: offline with qemu-img, or --live with RAM.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Everything about one VM: state, live usage, unit properties, cgroup,
    /// processes, control socket, disks.
    Inspect(NameJson),
    /// Mark a VM for autostart (`maqet autostart`, run at login by
    /// maqet-autostart.service).
    Enable(EnableArgs),
    /// Unmark a VM for autostart.
    Disable(EnableArgs),
    /// Start every VM marked for autostart that is not running, and resume every VM whose state was saved when systemd stopped it (`on_stop: save`); one that fails is reported and the others are started all the same.
    Autostart(AutostartArgs),
    /// Check the user session, lingering, KVM, QEMU, the journal, the
    /// database, leftover units and what interrupted commands left
    /// (incomplete clones, temporary files); --fix repairs what is safe to
    /// repair.
    Doctor(DoctorArgs),
    /// Generate man pages, shell completions or the CLI reference (for packaging).
    #[command(name = "__generate", hide = true)]
    Generate(super::generate::GenerateArgs),
    /// Print the defined VM names, one per line (for shell completion).
    #[command(name = "__complete-vms", hide = true)]
    CompleteVms,
    /// Attach to a VM's serial console (needs `console: true`); Ctrl-] detaches.
    Console(ConsoleArgs),
    /// Print a VM's QMP events as they happen, until it stops.
    Events(NameJson),
    /// Open a VM's graphical display (`display: vnc` or `spice`) in a viewer.
    Display(DisplayArgs),
    /// Reset a VM at once, like pressing its reset button (QMP system_reset).
    Reset(VmArg),
    /// Ask the guest to reboot (Ctrl-Alt-Delete) and wait until it does.
    Reboot(RebootArgs),
    /// List a running VM's forwarded ports, or add and remove forwards while it runs.
    ///
    /// `maqet ports NAME` lists the forwards QEMU has: from `ports:`, the
    /// ssh port, `ports add` (added) and `ports: auto` (auto). `add` and
    /// `rm` change them without a restart; with --save the definition too.
    Ports(PortsArgs),
    /// VM-to-VM networks (`networks:` in a config): list them with their VMs.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Run ssh into a VM through its forwarded port, as the cloud-init user.
    Ssh(SshArgs),
    /// Copy a VM's definition under a new name, with fresh disks and identity.
    Clone(CloneArgs),
    /// Ask the QEMU guest agent in a VM (`guest_agent: true`).
    Guest(GuestArgs),
    /// Cloud images: pull (verified) into the cache, list, remove, prune; the catalog.
    #[command(subcommand)]
    Image(ImageCommand),
    /// From an image to a running VM you can ssh into, in one command.
    ///
    /// Pulls IMAGE if the cache lacks it (verified), defines a VM from the
    /// catalog's defaults and your flags with cloud-init (the image's user,
    /// your ~/.ssh/*.pub keys, the VM's name as host name), starts it and
    /// waits until `maqet ssh NAME` works. The VM is an ordinary one
    /// afterwards: `maqet config NAME` shows its YAML.
    Launch(LaunchArgs),
    /// Wait until a running VM is ready: ssh logins work, the guest agent
    /// answers, or cloud-init has finished (its result is shown).
    Wait(WaitArgs),
    /// Print the catalog's image names, one per line (for shell completion).
    #[command(name = "__complete-images", hide = true)]
    CompleteImages,
    /// Named connections to other machines (hosts.yaml), for `maqet -H NAME`.
    #[command(subcommand)]
    Host(HostCommand),
    /// Answer `maqet -H` requests from another machine on stdin/stdout (run by ssh, not by hand).
    ///
    /// `maqet -H HOST …` runs `maqet serve --stdio` on HOST through ssh and
    /// speaks maqet's remote protocol with it (newline-delimited JSON,
    /// versioned; docs/remote.md). Nothing listens anywhere: the process
    /// lives as long as the ssh session.
    Serve(ServeArgs),
    /// Print the host names of hosts.yaml, one per line (for shell completion).
    #[command(name = "__complete-hosts", hide = true)]
    CompleteHosts,
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// List the named connections of hosts.yaml.
    #[command(visible_alias = "list")]
    Ls(HostLsArgs),
    /// Name a connection: `maqet host add lab alice@lab.example`, then `maqet -H lab ls`.
    Add(HostAddArgs),
    /// Forget a named connection.
    Rm(HostRmArgs),
}

#[derive(Debug, Args)]
pub struct HostLsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HostAddArgs {
    /// The connection's name (letters, digits, '.', '_', '-').
    #[arg(value_name = "NAME")]
    pub alias: String,
    /// Where it is: [USER@]HOST[:PORT] (HOST may be an alias of your ssh config).
    #[arg(value_name = "DESTINATION")]
    pub destination: String,
    /// The ssh port (instead of :PORT).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// The ssh identity file (`ssh -i`).
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub identity: Option<PathBuf>,
    /// The remote maqet's data directory (a path on that host).
    #[arg(long, value_name = "DIR")]
    pub remote_data_dir: Option<String>,
    /// The remote maqet program (default: `maqet` in the remote PATH).
    #[arg(long, value_name = "PATH")]
    pub maqet: Option<String>,
}

#[derive(Debug, Args)]
pub struct HostRmArgs {
    /// The connection's name.
    #[arg(value_name = "NAME")]
    pub host: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Speak the protocol on stdin and stdout (the only transport).
    #[arg(long, required = true)]
    pub stdio: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Download IMAGE into the cache and verify it: a catalog name (debian-12), an https:// URL or a path.
    ///
    /// The download is used only when its digest matches: the catalog's
    /// pinned digest or its line in the distribution's checksum file
    /// (SHA256SUMS, SHA512SUMS, FILE.sha256…; for a bare URL the ones
    /// beside it are tried). A cached copy is checked against upstream
    /// again; when upstream cannot be reached, the cached copy is used.
    Pull(ImagePullArgs),
    /// List the cached images: catalog name, verification, size, which VMs use them.
    #[command(visible_alias = "list")]
    Ls(ImageLsArgs),
    /// List the catalog: the images `pull` and `launch` know by name.
    Catalog(ImageLsArgs),
    /// Remove cached images (catalog names, URLs or digest prefixes); refused while a VM uses one.
    Rm(ImageRmArgs),
    /// Remove every cached image no VM uses, and unfinished downloads.
    Prune(ImagePruneArgs),
}

#[derive(Debug, Args)]
pub struct ImagePullArgs {
    /// A catalog name (`maqet image catalog`), an https:// or http:// URL, or a path.
    pub image: String,
    /// The digest the image must have (sha256:HEX or sha512:HEX), instead of the catalog's.
    #[arg(long, value_name = "ALG:HEX", value_parser = digest)]
    pub digest: Option<crate::image::Digest>,
    /// The checksum file that lists the image (SHA256SUMS, …), fetched over the image's scheme.
    #[arg(long, value_name = "URL", conflicts_with = "digest")]
    pub checksums: Option<String>,
    /// Use an image nothing verifies; it is recorded as unverified.
    #[arg(long)]
    pub insecure_skip_verify: bool,
    /// Store the disk converted to qcow2 (e.g. a raw or VMDK image).
    #[arg(long)]
    pub qcow2: bool,
    /// Print progress events and the result as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImageLsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImageRmArgs {
    /// Catalog names, URLs, or sha256 digest prefixes (12+ hex digits) of cached images.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImagePruneArgs {
    /// Only say what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// A catalog name (default: debian-13), an https:// URL or a path.
    pub image: Option<String>,
    /// The VM's name (default: IMAGE-XXXX, printed).
    #[arg(long)]
    pub name: Option<String>,
    /// Number of CPUs (default: the catalog's, else 2).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=255))]
    pub cpus: Option<u32>,
    /// Memory, QEMU -m syntax: 512M, 4G (default: the catalog's, else 2G).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Disk size, at least the image's (default: the catalog's, else 20G).
    #[arg(long, value_name = "SIZE")]
    pub disk: Option<String>,
    /// Forward 127.0.0.1:HOST to the guest's GUEST port (repeatable; ssh gets a port of its own).
    #[arg(long = "port", value_name = "HOST:GUEST")]
    pub ports: Vec<String>,
    /// Sets any config key, as `apply --set` does (e.g. `--set enable_kvm=false`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Define the VM, but do not start it.
    #[arg(long)]
    pub no_start: bool,
    /// Seconds to wait for the VM to answer ssh after it started.
    #[arg(long, default_value = "600", value_name = "SECONDS", value_parser = seconds)]
    pub timeout: Duration,
    /// Use an image nothing verifies (recorded as unverified in the cache).
    #[arg(long)]
    pub insecure_skip_verify: bool,
    /// Print progress events and the result as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Name of the VM.
    pub name: String,
    /// What to wait for: ssh (a login runs `true`), agent (the guest agent answers), cloud-init (it has finished; through the agent or ssh).
    #[arg(long = "for", value_name = "WHAT", default_value = "ssh", value_parser = ["ssh", "agent", "cloud-init"])]
    pub what: String,
    /// Seconds to wait at most (exit 7 after that).
    #[arg(long, default_value = "300", value_name = "SECONDS", value_parser = seconds)]
    pub timeout: Duration,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GuestArgs {
    /// Name of the VM.
    pub name: String,
    /// Seconds to wait for the agent's answer (for `exec`: for the program to end).
    #[arg(long, default_value = "30", value_name = "SECONDS", global = true, value_parser = seconds)]
    pub timeout: Duration,
    #[command(subcommand)]
    pub action: GuestAction,
}

#[derive(Debug, Subcommand)]
pub enum GuestAction {
    /// Check that the agent answers.
    Ping,
    /// The agent's version and the commands it supports.
    Info,
    /// The guest's network interfaces with their addresses.
    Ip {
        /// Print the agent's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a program in the guest; its output is printed and its exit code is maqet's.
    Exec {
        /// Program and arguments (after `--`).
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Freeze the guest's file systems (e.g. around a host-side backup).
    Fsfreeze,
    /// Thaw file systems frozen by `fsfreeze`.
    Fsthaw,
}

#[derive(Debug, Args)]
pub struct SshArgs {
    /// Name of the VM.
    pub name: String,
    /// Wait up to this many seconds for the guest's sshd to answer, and retry while it turns the connection away before the version exchange (0: do not wait).
    #[arg(long, default_value = "0", value_name = "SECONDS", value_parser = seconds_or_zero)]
    pub wait: Duration,
    /// Log in as this user (default: `cloud_init.user`, else your user name).
    #[arg(short = 'l', long)]
    pub user: Option<String>,
    /// Command to run in the guest (after `--`); none opens a shell.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CloneArgs {
    /// The VM to copy (must be stopped when --full copies its disks).
    pub name: String,
    /// Name of the new VM.
    #[arg(value_name = "NEW_NAME")]
    pub new_name: String,
    /// Copy every disk image in full instead of giving `base:` disks fresh overlays (holds NAME's lock while it copies; an interrupted copy leaves NEW_NAME marked incomplete, never started).
    #[arg(long)]
    pub full: bool,
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
    /// Define VM NAME without a file: an empty config, so QEMU's defaults (128 MiB, one CPU, TCG) and a VNC display on the VM's private socket; change it later with `maqet apply`.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["files", "vm_config", "name"])]
    pub empty: Option<String>,
    /// Print the result as JSON (`name`, `sources`, `warnings`).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Names of the VMs; several start concurrently, one line each, and
    /// the exit code is the most severe of theirs.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Seconds to wait for QEMU to answer QMP (with --no-wait: how long systemd gives the start before failing it).
    #[arg(long, default_value = "30", value_name = "SECONDS", value_parser = seconds)]
    pub timeout: Duration,
    /// Return once systemd has queued the start (checks and disk creation are done first); follow it with `maqet status NAME`. A failure after that shows there, and the disks this start created stay.
    #[arg(long)]
    pub no_wait: bool,
    /// Boot afresh: discard a saved running state (`maqet suspend`, `on_stop: save`) instead of resuming it; asks first on a terminal.
    #[arg(long)]
    pub fresh: bool,
    /// With --fresh: discard without asking (required when stdin is not a terminal).
    #[arg(long, requires = "fresh")]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct SuspendArgs {
    /// Name of the VM.
    pub name: String,
    /// Discard the stopped VM's saved state instead (the next start boots afresh); asks first on a terminal.
    #[arg(long)]
    pub discard: bool,
    /// With --discard: do not ask (required when stdin is not a terminal).
    #[arg(long, requires = "discard")]
    pub yes: bool,
    /// Print the result as JSON (`name`, `path`, `size`, `saved_at`, `save_ms`, `run_state`, `qemu_version`; with --discard: `name`, `discarded`, `state`, `deleted`, `kept`).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Name of the VM.
    pub name: String,
    /// Seconds to wait for QEMU to answer QMP.
    #[arg(long, default_value = "30", value_name = "SECONDS", value_parser = seconds)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Names of the VMs; several stop concurrently, one line each, and
    /// the exit code is the most severe of theirs.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Kill QEMU now instead of powering the guest down.
    #[arg(long)]
    pub force: bool,
    /// Seconds the guest gets to power off before QEMU is told to quit
    /// (default: the VM's shutdown_timeout, 30 unless configured; at most
    /// 86400).
    #[arg(long, value_name = "SECONDS", value_parser = stop_seconds)]
    pub timeout: Option<Duration>,
    /// Print the result as JSON (`name`, `was_running`, `outcome`, `guest_agent`, `message`;
    /// for several names an array, a failed VM's entry has `error` and `exit_code`).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PortsArgs {
    /// Name of the VM whose forwards to list.
    #[arg(required = true)]
    pub name: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub action: Option<PortsAction>,
}

#[derive(Debug, Subcommand)]
pub enum PortsAction {
    /// List the VM's forwards (as `maqet ports NAME`).
    #[command(visible_alias = "list")]
    Ls(NameJson),
    /// Forward a host port on 127.0.0.1 (or ADDR, a 127.x address) to a guest port, now.
    Add(PortsAddArgs),
    /// Stop forwarding a host port, now.
    Rm(PortsRmArgs),
}

#[derive(Debug, Args)]
pub struct PortsAddArgs {
    /// Name of the VM.
    pub name: String,
    /// [ADDR:]HOST:GUEST[/tcp|/udp], e.g. 8080:80, 127.0.0.2:8080:80 or 5353:53/udp.
    #[arg(value_name = "[ADDR:]HOST:GUEST")]
    pub spec: String,
    /// Forward UDP (as a /udp suffix does).
    #[arg(long)]
    pub udp: bool,
    /// Also add it to the VM's definition (`ports:`), so every start has it; for a stopped VM only that.
    #[arg(long)]
    pub save: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PortsRmArgs {
    /// Name of the VM.
    pub name: String,
    /// The forward's host side, [ADDR:]HOST[/tcp|/udp] (a :GUEST after HOST must match, if given).
    #[arg(value_name = "[ADDR:]HOST[:GUEST]")]
    pub spec: String,
    /// Remove a UDP forward (as a /udp suffix does).
    #[arg(long)]
    pub udp: bool,
    /// Also remove it from the VM's definition (`ports:`); for a stopped VM only that.
    #[arg(long)]
    pub save: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// List the networks: this data directory's VMs that name one, every running VM on one, and each switch's state.
    #[command(visible_alias = "list")]
    Ls(JsonArg),
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
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
    /// Only VMs in this state (defined, starting, running, paused, prelaunch, internal-error, stopping, failed, restarting).
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Name of the VM.
    #[arg(required_unless_present = "all")]
    pub name: Option<String>,
    /// Remove every VM of the data directory, one line each (on a terminal: lists them and asks first).
    #[arg(long, conflicts_with_all = ["name", "delete_files"])]
    pub all: bool,
    /// With --all: do not ask (required when stdin is not a terminal).
    #[arg(long, short = 'y', requires = "all")]
    pub yes: bool,
    /// Stop the VM first (forcefully) if it is running.
    #[arg(long)]
    pub force: bool,
    /// Also delete the files maqet created for the VM (disk images, directories, UEFI variables, TPM state, the cloud-init seed) that nothing uses; files you brought are kept. Without it they are all kept, and listed.
    #[arg(long, alias = "clean-storage")]
    pub delete_storage: bool,
    /// Also delete this disk image of the VM although maqet did not create it (repeatable).
    #[arg(long = "delete-file", value_name = "PATH")]
    pub delete_files: Vec<PathBuf>,
}

/// `maqet qmp SUBCOMMAND …`; the original tool's shorthand
/// `maqet qmp VM COMMAND [ARGS_JSON]` is accepted too (as `qmp run`).
#[derive(Debug, Subcommand)]
#[command(allow_external_subcommands = true)]
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
    /// Print the path of the VM's QMP socket for standard QMP clients
    /// (`qmp-shell PATH`, `qemu.qmp`); same policy as `qmp run`.
    Socket(VmArg),
    /// The original tool's shorthand: VM COMMAND [ARGS_JSON].
    #[command(external_subcommand)]
    Shorthand(Vec<String>),
}

#[derive(Debug, Args)]
pub struct VmArg {
    /// Name of the VM.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Name of the VM.
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
    /// Name of the VM.
    pub name: String,
    /// Seconds to wait for the guest to reboot.
    #[arg(long, default_value = "30", value_name = "SECONDS", value_parser = seconds)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct QmpKeysArgs {
    /// Name of the VM.
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
    /// Name of the VM.
    pub name: String,
    /// The text: letters, digits, ASCII punctuation, space, tab, newline (Enter).
    pub text: String,
    /// How long each key stays pressed, in milliseconds.
    #[arg(long, default_value_t = 100, value_name = "MS", value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub hold_time: u32,
}

#[derive(Debug, Args)]
pub struct DisplayArgs {
    /// Name of the VM.
    pub name: String,
    /// Print the display's URI (e.g. vnc+unix:///run/user/1000/maqet/vm/NAME/vnc.sock)
    /// instead of opening a viewer. The viewer used otherwise is the first of
    /// remote-viewer, vncviewer (VNC) or spicy (SPICE) found in PATH.
    #[arg(long)]
    pub print: bool,
}

#[derive(Debug, Args)]
pub struct ScreendumpArgs {
    /// Name of the VM.
    pub name: String,
    /// Output file, which must not exist yet; a relative path is relative to the current directory.
    pub file: PathBuf,
    /// Replace FILE if it exists (a regular file only: never a FIFO, device or directory).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct DeviceAddArgs {
    /// Name of the VM.
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
    /// Name of the VM.
    pub name: String,
    /// The device's id (or QOM path).
    pub id: String,
    /// Seconds to wait for the guest to release the device.
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = seconds)]
    pub timeout: Duration,
    /// Return once QEMU accepted the request, without waiting for the guest.
    #[arg(long)]
    pub no_wait: bool,
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

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Name of the VM.
    pub name: String,
    /// Config files (YAML) merged on top of the stored config, left to right.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// More config files, merged after the positional ones (the original tool's spelling).
    #[arg(long = "vm-config", value_name = "FILE", num_args = 1..)]
    pub vm_config: Vec<PathBuf>,
    /// Sets `memory` (QEMU -m syntax: 512M, 2G).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Sets `cpu` (number of CPUs).
    #[arg(long, value_name = "N")]
    pub cpu: Option<String>,
    /// Sets `binary` (the QEMU executable; a relative path is taken from here).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<String>,
    /// Sets `enable_kvm: true`.
    #[arg(long)]
    pub enable_kvm: bool,
    /// Sets any key; VALUE is YAML (`4G`, `2`, `true`, `[a, b]`); dotted keys reach into mappings and lists (resources.memory_max=2G, storage.0.size=20G).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the changes as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Create the VM's missing disk images (and share directories) now instead of at first start.
    Create(StorageCreateArgs),
    /// List disk images with format, sizes, backing chain and snapshot count; flags files no VM uses.
    Ls(StorageLsArgs),
    /// Check every disk the VMs' definitions record: it exists, is readable, `qemu-img check` passes, an overlay has its configured base; and list what interrupted commands left (exit 1 if any fails).
    Verify(StorageVerifyArgs),
    /// Add a disk to a VM's definition: FILE (an existing image) or SPEC (name=data,size=1G); --live hot-plugs it into the running VM too.
    Attach(StorageAttachArgs),
    /// Give a stopped UEFI VM made before qcow2 variable stores a qcow2 copy of its raw one (efi-vars.fd → efi-vars.qcow2), so it can take live snapshots; the raw file is kept.
    ConvertNvram(StorageCreateArgs),
}

#[derive(Debug, Args)]
pub struct StorageVerifyArgs {
    /// VMs to check; none: every VM of the data directory.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Print JSON (one object per disk).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StorageAttachArgs {
    /// Name of the VM.
    pub name: String,
    /// An existing image, or KEY=VALUE pairs of a `storage:` disk entry (name, type, file, size, interface, backing_file, backing_format, base, sha256, readonly), comma-separated; a new image is created at the next start.
    #[arg(value_name = "FILE|SPEC")]
    pub disk: String,
    /// Hot-plug the disk into the running VM (blockdev-add + device_add) and record it; without it a running VM is refused.
    #[arg(long)]
    pub live: bool,
    /// The guest sees the disk read-only (`readonly: true`).
    #[arg(long)]
    pub readonly: bool,
    /// The image format (the entry's `type`); probed with qemu-img info when omitted for a FILE.
    #[arg(long, value_name = "FORMAT", value_parser = ["qcow2", "raw"])]
    pub format: Option<String>,
    /// How the guest sees the disk (the entry's `interface`); default virtio.
    #[arg(long = "if", value_name = "INTERFACE", value_parser = ["virtio", "scsi", "sata", "ide", "none"])]
    pub interface: Option<String>,
}

#[derive(Debug, Args)]
pub struct StorageCreateArgs {
    /// Name of the VM.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct StorageLsArgs {
    /// Only this VM's disks (and unreferenced files in its disk directory).
    pub name: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `maqet snapshot ACTION VM DRIVE [SNAPSHOT]`; the original tool's order,
/// `maqet snapshot VM ACTION DRIVE --name SNAPSHOT`, is accepted too.
#[derive(Debug, Subcommand)]
#[command(allow_external_subcommands = true)]
pub enum SnapshotCommand {
    /// Take a snapshot: disk-only of DRIVE with the VM stopped; with --live, of every disk plus RAM of the running VM.
    Create(SnapshotCreateArgs),
    /// Go back to a snapshot: DRIVE's disk with the VM stopped; with --live, every disk plus RAM of the running VM.
    Load(SnapshotArgs),
    /// Delete a snapshot: from DRIVE with the VM stopped; with --live, from every disk of the running VM.
    Delete(SnapshotArgs),
    /// List snapshots (tag, date, VM-state size, live or disk-only) of DRIVE, or of every qcow2 disk.
    #[command(visible_alias = "ls")]
    List(SnapshotListArgs),
    /// The original tool's argument order: VM ACTION DRIVE --name NAME.
    #[command(external_subcommand)]
    Legacy(Vec<String>),
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The VM's name.
    pub vm: String,
    /// The disk (`storage[].name`); with --live it holds the VM state.
    pub drive: String,
    /// The snapshot's name (or give it with --name).
    pub snapshot: Option<String>,
    /// The snapshot's name (the original tool's spelling).
    #[arg(long = "name", value_name = "NAME")]
    pub name: Option<String>,
    /// Work on the running VM through QEMU: every writable disk plus the VM state.
    #[arg(long)]
    pub live: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotCreateArgs {
    #[command(flatten)]
    pub common: SnapshotArgs,
    /// Replace a snapshot of the same name.
    #[arg(long)]
    pub overwrite: bool,
    /// With --live and `guest_agent: true`: do not freeze the guest's file systems around the save.
    #[arg(long)]
    pub no_freeze: bool,
    /// Print the result as JSON (with --live: whether and how many file systems were frozen).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotListArgs {
    /// The VM's name.
    pub vm: String,
    /// Only this disk.
    pub drive: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EnableArgs {
    /// Name of the VM.
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
    #[arg(long, default_value = "30", value_name = "SECONDS", value_parser = seconds)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Repair what is safe to repair: reset failed units of defined VMs and
    /// leftover failed units, remove stale socket files and temporary files
    /// no process writes any more.
    #[arg(long)]
    pub fix: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Longest timeout any command takes (about 31 years).
const MAX_SECONDS: f64 = 999_999_999.0;

/// A `--timeout`: a positive number of seconds, at most `max`.
fn seconds_up_to(s: &str, max: f64, bound: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if v.is_nan() || v <= 0.0 {
        return Err(format!("must be a positive number of seconds, not {s}"));
    }
    if v > max {
        return Err(format!("must be at most {max} seconds{bound}, not {s}"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn seconds(s: &str) -> Result<Duration, String> {
    seconds_up_to(s, MAX_SECONDS, "")
}

/// A wait that may be 0 (do not wait).
fn seconds_or_zero(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(0.0) => Ok(Duration::ZERO),
        _ => seconds(s),
    }
}

/// `--digest sha256:HEX`.
fn digest(s: &str) -> Result<crate::image::Digest, String> {
    s.parse()
}

/// `stop --timeout`: the runner accepts at most a day.
fn stop_seconds(s: &str) -> Result<Duration, String> {
    seconds_up_to(s, crate::ipc::protocol::MAX_STOP_TIMEOUT_SECS, " (a day)")
}

/// `--set K=V` pairs.
pub fn key_values(set: &[String]) -> Result<Vec<(String, String)>, crate::cli::exit::CliError> {
    set.iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    crate::cli::exit::CliError::usage(format!(
                        "--set {kv}: expected KEY=VALUE, e.g. --set memory=2G"
                    ))
                })
        })
        .collect()
}

#[cfg(test)]
mod timeout_tests {
    use super::*;

    #[test]
    fn timeouts_are_positive_bounded_seconds_with_precise_messages() {
        assert_eq!(seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(stop_seconds("86400"), Ok(Duration::from_secs(86400)));
        assert_eq!(
            stop_seconds("1e20").unwrap_err(),
            "must be at most 86400 seconds (a day), not 1e20"
        );
        assert!(stop_seconds("inf").unwrap_err().contains("at most 86400"));
        assert!(seconds("1e20").unwrap_err().contains("at most 999999999"));
        for bad in ["0", "-1", "NaN"] {
            assert!(
                seconds(bad).unwrap_err().contains("positive number"),
                "{bad}"
            );
        }
        assert!(seconds("soon").unwrap_err().contains("not a number"));
    }
}
