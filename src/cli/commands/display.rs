//! `maqet display VM [--print]`: the VM's VNC/SPICE socket, opened in the
//! user's viewer or printed as a URI.

use std::os::unix::process::CommandExt;

use crate::cli::args::DisplayArgs;
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::display;

pub async fn run(ctx: &Ctx, a: &DisplayArgs) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let end = ctx.vms_if_session().await?.display(&vm).await?;
    if a.print {
        println!("{}", end.uri);
        return Ok(());
    }
    // Which viewer runs is the front end's choice, as is running it.
    let Some((viewer, program)) = display::find_viewer(end.server) else {
        return Err(CliError::failure(format!(
            "no {} viewer is installed: {} — or connect any viewer to {} (`maqet display {vm} --print`)",
            end.server.as_str().to_uppercase(),
            display::install_hint(Some(end.server)),
            end.socket.display()
        )));
    };
    let argv = viewer.argv(&program, end.server, &end.socket);
    // The viewer takes over this process: its window, its exit status.
    let err = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
    Err(CliError::failure(format!(
        "cannot run {}: {err}",
        program.display()
    )))
}
