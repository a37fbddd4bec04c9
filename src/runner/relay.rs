//! `maqet-runner --relay NAME [--ready-socket PATH] -- PROGRAM ARGS…`: runs
//! a VM's helper (swtpm, virtiofsd, passt) as the main process's child and
//! logs what it prints to the journal with the VM's fields (`MAQET_VM=NAME`,
//! `MAQET_SOURCE=`).
//!
//! Why a relay: journald (systemd 252) ignores `LogExtraFields=` for user
//! units, so a helper's own stdout stream carries no `MAQET_VM=`; and a
//! VM's journal is queried by that field (`maqet logs`, and processes that
//! exit fast lose `_SYSTEMD_USER_UNIT`). The relay keeps the helper's
//! exit status (its own, or 128+signal) so systemd's `Result` tells the
//! truth, and holds no descriptor the helper needs: the sockets systemd
//! passes (fd 3…) are inherited as they are.
//!
//! `--ready-socket PATH` is for a helper that binds its socket itself
//! (passt; systemd cannot hand it a listening one): the unit is
//! `Type=notify`, and the relay sends `READY=1` once PATH listens, so the
//! VM — ordered after the helper — never connects before it can.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a helper may take to listen on its `--ready-socket`.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Spawns `program` and relays its output until it exits; returns the
/// exit code the relay should exit with.
pub fn run(program: &OsString, args: &[OsString], ready_socket: Option<&Path>) -> i32 {
    let source = std::path::Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "helper".into());
    if let Some(path) = ready_socket {
        if let Err(e) = prepare_socket_path(path) {
            tracing::error!(maqet_source = source.as_str(), "{e}");
            return 1;
        }
    }
    let mut child = match Command::new(program)
        .args(args)
        .env_remove("NOTIFY_SOCKET")
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
    if let Some(path) = ready_socket {
        if let Some(code) = wait_listening(&mut child, path, &source) {
            for r in readers {
                let _ = r.join();
            }
            return code;
        }
    }
    let status = child.wait();
    for r in readers {
        let _ = r.join();
    }
    match status {
        Ok(s) => code_of(s, &source),
        Err(e) => {
            tracing::error!(
                maqet_source = source.as_str(),
                "waiting for {source} failed: {e}"
            );
            1
        }
    }
}

/// The relay's exit code for the helper's end (its own, or 128+signal), logged.
fn code_of(s: std::process::ExitStatus, source: &str) -> i32 {
    match (s.code(), s.signal()) {
        (Some(c), _) => {
            tracing::info!(maqet_source = source, "{source} exited with {c}");
            c
        }
        (None, Some(sig)) => {
            tracing::warn!(maqet_source = source, "{source} was killed by signal {sig}");
            128 + sig
        }
        _ => 1,
    }
}

/// The helper's socket directory exists (0700, as systemd makes the VM's
/// runtime directory) and no socket is left at `path` from a killed run,
/// which would make the helper's bind fail. Anything but a socket there is
/// not ours to remove.
fn prepare_socket_path(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove the old socket {}: {e}", path.display())),
        Ok(_) => Err(format!(
            "{} exists and is not a socket; remove it",
            path.display()
        )),
        Err(_) => Ok(()),
    }
}

/// Waits until `path` listens, then tells systemd (READY=1). None when it
/// does; the exit code to end with when the helper exits first or does not
/// listen within [`READY_WITHIN`] (then it is killed). Polls: the helper
/// binds and listens in one step of its start-up, which no file-system
/// event marks (the file appears at bind, before listen).
fn wait_listening(child: &mut Child, path: &Path, source: &str) -> Option<i32> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => {
                tracing::error!(
                    maqet_source = source,
                    "{source} ended before it listened on {}",
                    path.display()
                );
                return Some(code_of(s, source));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(maqet_source = source, "waiting for {source} failed: {e}");
                return Some(1);
            }
        }
        if listening(path) {
            crate::notify::init();
            crate::notify::ready(&format!("{source} listening on {}", path.display()));
            return None;
        }
        if start.elapsed() > READY_WITHIN {
            tracing::error!(
                maqet_source = source,
                "{source} did not listen on {} within {READY_WITHIN:?}; stopping it",
                path.display()
            );
            let _ = child.kill();
            let _ = child.wait();
            return Some(1);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a listening Unix socket is bound at `path` (`/proc/net/unix`:
/// flag `__SO_ACCEPTCON`, 0x10000). Connecting to find out would hand the
/// helper a client it might take for QEMU.
pub fn listening(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let want = path.to_string_lossy();
    table.lines().skip(1).any(|line| {
        // Num RefCount Protocol Flags Type St Inode Path
        let mut fields = line.split_whitespace();
        let flags = fields.nth(3).and_then(|f| u32::from_str_radix(f, 16).ok());
        // The path is the rest of the line (it may hold blanks).
        let bound = fields.skip(3).collect::<Vec<_>>().join(" ") == want;
        bound && flags.is_some_and(|f| f & 0x10000 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_seen_a_bound_one_is_not() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("s.sock");
        assert!(!listening(&path));
        // Bound but not listening (a datagram socket never listens).
        let dgram = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        assert!(!listening(&path));
        drop(dgram);
        // A stale socket file is cleared for the helper's bind.
        prepare_socket_path(&path).unwrap();
        assert!(!path.exists());
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(listening(&path));
        drop(l);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"x").unwrap();
        assert!(prepare_socket_path(&path)
            .unwrap_err()
            .contains("not a socket"));
    }
}
