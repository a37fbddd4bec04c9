//! sd_notify messages to the service manager. Silent no-ops outside systemd
//! (no NOTIFY_SOCKET), so the runner can be run by hand for debugging.

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
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
