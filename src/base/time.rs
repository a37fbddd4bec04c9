//! The one wall-clock helper: time since the Unix epoch, and its RFC 3339
//! form.

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

/// RFC 3339 UTC time of a Unix timestamp (no time-zone database needed).
pub fn rfc3339_utc(unix: u64) -> String {
    let days = (unix / 86400) as i64;
    let rem = unix % 86400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
    }
}
