//! `maqet`: the command-line client. All logic lives in the library.

use clap::Parser;

fn main() {
    let cli = maqet::cli::args::Cli::parse();
    std::process::exit(maqet::cli::run(cli));
}
