//! `maqet display VM [--print]`: the VM's VNC/SPICE socket, opened in the
//! user's viewer or printed as a URI.

use std::os::unix::process::CommandExt;

use crate::cli::args::DisplayArgs;
use crate::cli::context::Ctx;
use crate::cli::exit::{code, CliError};
use crate::display;

pub async fn run(ctx: &Ctx, a: &DisplayArgs) -> Result<(), CliError> {
    let (vm, rec) = ctx.vm(&a.name)?;
    let cfg = crate::vm::stored_config(&rec)?;
    let Some(server) = cfg.desktop.display else {
        return Err(CliError::failure(format!(
            "VM '{vm}' has no display server: set `display: vnc` or `display: spice` in its config (maqet apply), then restart it; `maqet qmp screendump {vm} FILE` works with any display"
        )));
    };
    if !ctx.vms_if_session().await?.is_running(&vm).await? {
        return Err(CliError::conflict(format!(
            "VM '{vm}' is not running (maqet start {vm})"
        )));
    }
    let socket = server.socket(&crate::paths::vm_runtime_dir(&vm)?);
    if a.print {
        println!("{}", server.uri(&socket));
        return Ok(());
    }
    let Some((viewer, program)) = display::find_viewer(server) else {
        return Err(CliError::failure(format!(
            "no {} viewer is installed: {} — or connect any viewer to {} (`maqet display {vm} --print`)",
            server.as_str().to_uppercase(),
            display::install_hint(Some(server)),
            socket.display()
        )));
    };
    let argv = viewer.argv(&program, server, &socket);
    // The viewer takes over this process: its window, its exit status.
    let err = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
    Err(CliError::new(
        code::FAILURE,
        format!("cannot run {}: {err}", program.display()),
    ))
}
