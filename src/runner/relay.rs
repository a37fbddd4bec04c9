//! `maqet-runner --relay NAME -- PROGRAM ARGS…`: runs a VM's helper
//! (swtpm) as the main process's child and logs what it prints to the
//! journal with the VM's fields (`MAQET_VM=NAME`, `MAQET_SOURCE=`).
//!
//! Why a relay: journald (systemd 252) ignores `LogExtraFields=` for user
//! units, so a helper's own stdout stream carries no `MAQET_VM=`; and a
//! VM's journal is queried by that field (`maqet logs`, and processes that
//! exit fast lose `_SYSTEMD_USER_UNIT`). The relay keeps the helper's
//! exit status (its own, or 128+signal) so systemd's `Result` tells the
//! truth, and holds no descriptor the helper needs: the sockets systemd
//! passes (fd 3…) are inherited as they are.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

/// Spawns `program` and relays its output until it exits; returns the
/// exit code the relay should exit with.
pub fn run(program: &OsString, args: &[OsString]) -> i32 {
    let source = std::path::Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "helper".into());
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                maqet_source = source.as_str(),
                "cannot start {}: {e}",
                program.to_string_lossy()
            );
            // 127: command not found/not executable, as a shell says.
            return 127;
        }
    };
    tracing::info!(
        maqet_source = source.as_str(),
        "{source} started (pid {})",
        child.id()
    );
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|r| {
        let source = source.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                tracing::warn!(maqet_source = source.as_str(), "{line}");
            }
        })
    })
    .collect();
    let status = child.wait();
    for r in readers {
        let _ = r.join();
    }
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => {
                tracing::info!(maqet_source = source.as_str(), "{source} exited with {c}");
                c
            }
            (None, Some(sig)) => {
                tracing::warn!(
                    maqet_source = source.as_str(),
                    "{source} was killed by signal {sig}"
                );
                128 + sig
            }
            _ => 1,
        },
        Err(e) => {
            tracing::error!(
                maqet_source = source.as_str(),
                "waiting for {source} failed: {e}"
            );
            1
        }
    }
}
