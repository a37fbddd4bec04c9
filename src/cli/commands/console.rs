//! `maqet console VM`: the serial console through the runner's `console`
//! IPC method. Interactive on a terminal (raw mode, Ctrl-] detaches);
//! `--no-tty` (or stdin not a terminal) passes stdin through as is and
//! prints output until the VM stops; `--dump` prints the buffered output.

use std::io::{IsTerminal, Read, Write};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::cli::args::ConsoleArgs;
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::vm::control::ConsoleStream;

/// Ctrl-] — telnet's escape key; rarely needed by a guest.
pub const ESCAPE: u8 = 0x1d;
const ESCAPE_NAME: &str = "Ctrl-]";

pub async fn run(ctx: &Ctx, a: &ConsoleArgs) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let ConsoleStream {
        mut from_vm,
        mut to_vm,
    } = ctx
        .vms()
        .await?
        .console(&vm, a.dump || a.replay, !a.dump)
        .await?;
    let mut stdout = std::io::stdout();

    if a.dump {
        let mut buf = Vec::new();
        from_vm.read_to_end(&mut buf).await?;
        stdout.write_all(&buf)?;
        stdout.flush()?;
        return Ok(());
    }

    let interactive = !a.no_tty && std::io::stdin().is_terminal();
    let _raw = if interactive {
        let raw = RawMode::enter()?;
        eprint!("Connected to the console of {vm}; {ESCAPE_NAME} detaches.\r\n");
        Some(raw)
    } else {
        None
    };

    let mut stdin = Some(stdin_chunks());
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut buf = vec![0u8; 8192];
    let ended = loop {
        tokio::select! {
            n = from_vm.read(&mut buf) => {
                let n = n?;
                if n == 0 {
                    break true;
                }
                stdout.write_all(&buf[..n])?;
                stdout.flush()?;
            }
            chunk = next_chunk(&mut stdin) => match chunk {
                Some(data) => {
                    if interactive {
                        if let Some(at) = data.iter().position(|b| *b == ESCAPE) {
                            to_vm.write_all(&data[..at]).await?;
                            break false;
                        }
                    }
                    to_vm.write_all(&data).await?;
                }
                // Scripts: input is done, output goes on until the VM stops.
                None if !interactive => stdin = None,
                None => break false,
            },
            _ = term.recv() => break false,
            _ = hup.recv() => break false,
        }
    };
    let nl = if interactive { "\r\n" } else { "\n" };
    if ended {
        eprint!("{nl}[console of {vm} closed: the VM stopped]{nl}");
    } else if interactive {
        eprint!("{nl}[detached from the console of {vm}]{nl}");
    }
    Ok(())
}

/// Reads stdin on a plain thread: tokio's stdin would keep the runtime
/// from shutting down while a read blocks; this thread just dies with the
/// process.
fn stdin_chunks() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    });
    rx
}

/// The next stdin chunk; never resolves once stdin is closed.
async fn next_chunk(rx: &mut Option<mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The terminal on stdin in raw mode (no echo, no line editing, no
/// signals from Ctrl-C: every byte goes to the guest) until dropped.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> std::io::Result<RawMode> {
        use rustix::termios::{tcgetattr, tcsetattr, OptionalActions};
        let saved = tcgetattr(std::io::stdin())?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(std::io::stdin(), OptionalActions::Now, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Restores the settings read in `enter`.
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}
