//! sd_notify messages to the service manager. Silent no-ops outside systemd
//! (no NOTIFY_SOCKET), so the runner can be run by hand for debugging.
//!
//! Messages go through one datagram socket opened by [`init`] at start and
//! kept: `sd_notify::notify` opens a socket per message, which fails with
//! EMFILE once a connection flood has used up the runner's descriptors —
//! and then the watchdog pings are lost and systemd kills a healthy VM
//! (seen: ~1,000 idle connections, killed after 10 s).

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::{Mutex, OnceLock};

use sd_notify::NotifyState;

static SOCKET: OnceLock<Option<(UnixDatagram, SocketAddr)>> = OnceLock::new();
/// Appended to every `STATUS=` text: the VM's forwarded ports (issue 11),
/// so `systemctl --user status` shows them whatever state the line
/// reports; replaced when the forwards change while the VM runs.
static SUFFIX: Mutex<String> = Mutex::new(String::new());
/// The last state sent (without the suffix), sent again with a new suffix.
static LAST: Mutex<String> = Mutex::new(String::new());

/// Sets the text appended to every `STATUS=`; once the VM is ready, the
/// current state is sent again with it.
pub fn set_status_suffix(s: String) {
    *SUFFIX.lock().unwrap_or_else(|e| e.into_inner()) = s;
    if was_ready() {
        let last = LAST.lock().unwrap_or_else(|e| e.into_inner()).clone();
        status(&last);
    }
}

fn with_suffix(status: &str) -> String {
    *LAST.lock().unwrap_or_else(|e| e.into_inner()) = status.to_string();
    let sfx = SUFFIX.lock().unwrap_or_else(|e| e.into_inner());
    match sfx.as_str() {
        "" => status.to_string(),
        s => format!("{status}; {s}"),
    }
}

/// Opens the notify socket (once); later calls do nothing.
pub fn init() {
    SOCKET.get_or_init(open);
}

fn open() -> Option<(UnixDatagram, SocketAddr)> {
    let path = std::env::var_os("NOTIFY_SOCKET")?;
    let addr = match address(path.as_encoded_bytes()) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "NOTIFY_SOCKET is not usable; no sd_notify messages");
            return None;
        }
    };
    match UnixDatagram::unbound() {
        Ok(s) => Some((s, addr)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the sd_notify socket");
            None
        }
    }
}

/// `NOTIFY_SOCKET`: a path, or `@name` for the abstract namespace.
fn address(raw: &[u8]) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    match raw.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(raw)),
    }
}

fn send(states: &[NotifyState]) {
    let Some((sock, addr)) = SOCKET.get_or_init(open) else {
        return;
    };
    let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
    if let Err(e) = sock.send_to_addr(msg.as_bytes(), addr) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Set once `READY=1` was sent: the VM ran.
static READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this runner reported ready (QEMU answered QMP).
pub fn was_ready() -> bool {
    READY.load(std::sync::atomic::Ordering::Relaxed)
}

pub fn ready(status: &str) {
    READY.store(true, std::sync::atomic::Ordering::Relaxed);
    send(&[
        NotifyState::Ready,
        NotifyState::Status(&with_suffix(status)),
    ]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(&with_suffix(status))]);
}

pub fn stopping(status: &str) {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status(&with_suffix(status)),
    ]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC` for our PID).
pub fn watchdog_interval() -> Option<std::time::Duration> {
    let mut usec = 0u64;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| std::time::Duration::from_micros(usec))
}

/// `EXTEND_TIMEOUT_USEC=`: keeps systemd's stop timer from killing a
/// shutdown that was given a longer timeout than the unit's default.
pub fn extend_timeout(by: std::time::Duration) {
    let usec = by.as_micros().min(u32::MAX as u128) as u32;
    send(&[NotifyState::ExtendTimeoutUsec(usec)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        let addr = address(path.as_os_str().as_encoded_bytes()).unwrap();
        client.send_to_addr(b"WATCHDOG=1\n", &addr).unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1\n");

        let name = format!("maqet-notify-test-{}", std::process::id());
        let abs = address(format!("@{name}").as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&abs).unwrap();
        client.send_to_addr(b"READY=1\n", &abs).unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
    }
}
