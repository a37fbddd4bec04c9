//! The one wall-clock helper: time since the Unix epoch.

fn since_epoch() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Now, in whole seconds since the epoch (0 if the clock is before it).
pub fn now_unix() -> u64 {
    since_epoch().as_secs()
}

/// Now, in microseconds since the epoch (as systemd's timestamps).
pub fn now_unix_usec() -> u64 {
    since_epoch().as_micros().min(u64::MAX as u128) as u64
}
