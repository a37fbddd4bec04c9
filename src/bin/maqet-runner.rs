//! `maqet-runner NAME --data-dir DIR`: the main process of
//! `maqet-vm@NAME.service`. Started by systemd (via `maqet start`), never
//! by hand: it needs the listening socket systemd passes as fd 3.

use std::path::PathBuf;

use clap::Parser;
use maqet::paths::DataDir;
use maqet::vmname::VmName;

#[derive(Parser)]
#[command(
    name = "maqet-runner",
    version,
    about = "Runs one maqet VM under systemd (started by `maqet start`)"
)]
struct Args {
    /// The VM to run.
    name: String,
    /// The data directory holding maqet.db (the one the CLI used).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
}

fn main() {
    let args = Args::parse();
    let level = std::env::var("MAQET_LOG")
        .ok()
        .and_then(|s| maqet::logging::level_from_name(&s))
        .unwrap_or(tracing::level_filters::LevelFilter::INFO);
    maqet::logging::init_runner(&args.name, level);
    let code = match (
        VmName::new(&args.name),
        DataDir::resolve(Some(&args.data_dir)),
    ) {
        (Ok(vm), Ok(dir)) => maqet::runner::main(vm, dir),
        (Err(e), _) => {
            tracing::error!("{e}");
            64
        }
        (_, Err(e)) => {
            tracing::error!("{e}");
            64
        }
    };
    std::process::exit(code);
}
