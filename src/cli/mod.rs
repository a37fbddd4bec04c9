//! The `maqet` command line: parse, run one command, map errors to exit codes.

pub mod args;
mod commands;
mod confirm;
mod context;
pub mod exit;
pub mod generate;
pub mod notice;
pub mod output;
pub mod progress;
mod remote;
mod serve;
pub mod table;
pub mod term;

use args::{Cli, Command};
use context::Ctx;
use exit::{code, CliError};

use crate::paths::DataDir;

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    crate::logging::init_cli(crate::logging::level_for_verbosity(cli.verbose));
    match execute(cli) {
        Ok(()) => code::OK,
        Err(e) => {
            // Empty: said already (by a remote maqet, or a program whose
            // exit status this is).
            if !e.message.is_empty() {
                eprintln!("maqet: {}", e.message);
            }
            e.code
        }
    }
}

fn execute(cli: Cli) -> Result<(), CliError> {
    // Needs no data directory (packaging may run it without HOME).
    if let Command::Generate(a) = &cli.command {
        return generate::run(a);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot create the async runtime: {e}")))?;
    // Commands that are this host's whatever -H (or MAQET_HOST) says.
    let here = matches!(
        cli.command,
        Command::Host(_) | Command::Serve(_) | Command::CompleteHosts
    );
    if !here && (!cli.host.is_empty() || cli.all_hosts) {
        if cli.all_hosts && !matches!(cli.command, Command::Ls(_)) {
            return Err(CliError::usage("--all-hosts is for `maqet ls`"));
        }
        return remote::run(&cli, &rt);
    }
    if !cli.copy.is_empty() {
        return Err(CliError::usage(
            "--copy sends a file to another host: give it with -H HOST",
        ));
    }
    use commands::*;
    match cli.command {
        Command::Host(c) => return host::run(c),
        Command::CompleteHosts => return host::complete(),
        _ => {}
    }
    let ctx = Ctx {
        data_dir: DataDir::resolve(cli.data_dir.as_deref())?,
        verbosity: cli.verbose,
    };
    match cli.command {
        Command::Serve(_) => rt.block_on(serve::run(&ctx)),
        Command::Host(_) | Command::CompleteHosts => Ok(()),
        Command::Add(a) => add::run(&ctx, a),
        Command::Start(a) => rt.block_on(lifecycle::start(&ctx, &a)),
        Command::Stop(a) => rt.block_on(lifecycle::stop(&ctx, &a)),
        Command::Restart(a) => rt.block_on(lifecycle::restart(&ctx, &a)),
        Command::Suspend(a) => rt.block_on(suspend::run(&ctx, &a)),
        Command::Status(a) => rt.block_on(show::status(&ctx, &a)),
        Command::Ls(a) => rt.block_on(show::ls(&ctx, &a)),
        Command::Info(a) => show::info(&ctx, &a),
        Command::Rm(a) => rt.block_on(rm::run(&ctx, &a)),
        Command::Qmp(c) => rt.block_on(qmp::run(&ctx, c)),
        Command::Logs(a) => rt.block_on(logs::run(&ctx, &a)),
        Command::Apply(a) => rt.block_on(apply::run(&ctx, &a)),
        Command::Config(a) => vmconfig::run(&ctx, &a),
        Command::Storage(c) => rt.block_on(storage::run(&ctx, c)),
        Command::Snapshot(c) => rt.block_on(snapshot::run(&ctx, c)),
        Command::Inspect(a) => rt.block_on(inspect::run(&ctx, &a)),
        Command::Enable(a) => rt.block_on(autostart::enable(&ctx, &a, true)),
        Command::Disable(a) => rt.block_on(autostart::enable(&ctx, &a, false)),
        Command::Autostart(a) => rt.block_on(autostart::run(&ctx, &a)),
        Command::Doctor(a) => rt.block_on(doctor::run(&ctx, &a)),
        Command::Generate(a) => generate::run(&a),
        Command::CompleteVms => generate::complete_vms(&ctx),
        Command::Console(a) => rt.block_on(console::run(&ctx, &a)),
        Command::Events(a) => rt.block_on(events::run(&ctx, &a)),
        Command::Display(a) => rt.block_on(display::run(&ctx, &a)),
        Command::Reset(a) => rt.block_on(power::reset(&ctx, &a)),
        Command::Reboot(a) => rt.block_on(power::reboot(&ctx, &a)),
        // hook: issue 11
        Command::Ports(a) => rt.block_on(cloud::ports(&ctx, &a)),
        // hook: issue 19
        Command::Network(c) => rt.block_on(network::run(&ctx, c)),
        Command::Ssh(a) => rt.block_on(cloud::ssh(&ctx, &a)),
        Command::Clone(a) => rt.block_on(cloud::clone(&ctx, &a)),
        Command::Guest(a) => rt.block_on(cloud::guest(&ctx, &a)),
        // hook: issue 18
        Command::Image(c) => image::run(&ctx, c, &rt),
        Command::Launch(a) => launch::launch(&ctx, &a, &rt),
        Command::Wait(a) => rt.block_on(launch::wait(&ctx, &a)),
        Command::CompleteImages => generate::complete_images(),
    }
}
