//! One test against a real QEMU, wired exactly as the runner does it: the QMP monitor on a
//! socketpair end passed as an inherited fd. Skipped (with a note) when QEMU is not installed.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::*;

const QEMU: &str = "/usr/bin/qemu-system-x86_64";
/// The fd number QEMU sees; anything but 0–2 (and 3, which the runner keeps for systemd).
const QMP_FD: RawFd = 10;

#[tokio::test]
async fn real_qemu_query_status_then_quit() {
    if !Path::new(QEMU).exists() {
        eprintln!("note: {QEMU} is not installed; skipping the real-QEMU QMP test");
        return;
    }
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let theirs_fd = theirs.as_raw_fd();
    let mut cmd = tokio::process::Command::new(QEMU);
    cmd.args([
        "-nodefaults",
        "-display",
        "none",
        "-m",
        "64",
        "-machine",
        "none",
    ])
    .arg("-chardev")
    .arg(format!("socket,id=qmp,fd={QMP_FD}"))
    .args(["-mon", "chardev=qmp,mode=control"])
    .stdin(Stdio::null())
    .kill_on_drop(true);
    // SAFETY: only async-signal-safe calls (dup2, fcntl: raw system calls
    // through rustix) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // SAFETY: `theirs_fd` stays open in the child until exec; the
            // target number is replaced, never closed: ManuallyDrop.
            let from = BorrowedFd::borrow_raw(theirs_fd);
            // dup2 leaves the new fd without FD_CLOEXEC; if the numbers already match,
            // clear the flag instead.
            if theirs_fd == QMP_FD {
                rustix::io::fcntl_setfd(from, rustix::io::FdFlags::empty())?;
            } else {
                let mut to = std::mem::ManuallyDrop::new(OwnedFd::from_raw_fd(QMP_FD));
                rustix::io::dup2(from, &mut to)?;
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn QEMU");
    drop(theirs);

    ours.set_nonblocking(true).unwrap();
    let stream = tokio::net::UnixStream::from_std(ours).unwrap();
    let (client, version) = QmpClient::connect(stream, Duration::from_secs(10))
        .await
        .expect("QMP handshake with real QEMU");
    assert!(version.major >= 2, "{version}");

    let status = client.execute("query-status", None).await.unwrap();
    assert!(status["status"].is_string(), "{status}");

    let mut events = client.subscribe();
    // QEMU answers `quit` and exits; a reply lost to the exit race is acceptable.
    match client.execute("quit", None).await {
        Ok(_) | Err(QmpError::Disconnected) => {}
        Err(e) => panic!("quit: {e}"),
    }
    tokio::time::timeout(Duration::from_secs(10), client.closed())
        .await
        .expect("closed() resolves after quit");
    assert!(client.is_closed());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("QEMU exits after quit")
        .unwrap();
    assert!(exit.success(), "{exit}");
    // QEMU announces its shutdown before closing the monitor.
    let event = events.recv().await.expect("SHUTDOWN event before close");
    assert_eq!(event.event, "SHUTDOWN", "{event:?}");
}
