//! `maqet`: the command-line client. All logic lives in the library.

use clap::Parser;

fn main() {
    // Like any Unix filter: `maqet ls | head` ends quietly on a closed pipe
    // instead of panicking on the failed write.
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = maqet::cli::args::Cli::parse();
    std::process::exit(maqet::cli::run(cli));
}
