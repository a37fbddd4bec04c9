//! Output helpers: data on stdout (tables, JSON), never logs.

use serde::Serialize;

pub fn print_json<T: Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

/// One JSON object on one line (the end of a JSON-lines event stream).
pub fn print_json_line<T: Serialize>(v: &T) {
    println!("{}", serde_json::to_string(v).expect("serializable"));
}

/// A plain text table: columns padded to their widest cell, last column
/// unpadded so lines carry no trailing blanks. Never fitted or coloured;
/// `table::render` does that for a terminal.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let plain = super::term::Term {
        width: None,
        colour: false,
    };
    super::table::render(headers, rows, &plain, |_, _| None)
}

/// `1h 02m`, `3m 04s`, `12s`.
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// A saved state in one line: when, how big, why, where, and why a start
/// would not resume it.
pub fn saved_line(v: &crate::vm::SavedView) -> String {
    let at = v.saved_at.max(0) as u64;
    let why = match v.reason {
        crate::state::SaveReason::Suspend => "maqet suspend",
        crate::state::SaveReason::Stop => "stopped by systemd, on_stop: save",
    };
    let mut s = format!(
        "{} ({} ago), {}, {why}: {}",
        rfc3339_utc(at),
        human_duration(crate::time::now_unix().saturating_sub(at)),
        human_bytes(v.size),
        v.path.display()
    );
    if let Some(p) = &v.problem {
        s.push_str(&format!("; not resumable: {p}"));
    }
    s
}

/// `512.0M`, `1.5G`: binary units, like systemctl.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

pub use crate::time::{now_unix, rfc3339_utc};

/// `memory`/`cpu`/`tasks` values ("-" where nothing reports a figure) and
/// a note on where they came from.
pub fn usage_fields(
    r: &crate::vm::view::StatusReport,
) -> (Vec<(&'static str, String)>, Option<&'static str>) {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let fields = vec![
        ("memory", or_dash(r.memory_bytes.map(human_bytes))),
        (
            "cpu",
            or_dash(r.cpu_nsec.map(|c| format!("{:.2}s", c as f64 / 1e9))),
        ),
        ("tasks", or_dash(r.tasks.map(|t| t.to_string()))),
    ];
    let note = match r.usage_source {
        Some(crate::systemd::UsageSource::Proc) => Some(
            "(summed over the unit's processes from /proc: systemd accounts nothing here, see docs/systemd.md)",
        ),
        None if r.runner_pid.is_some() => Some("(systemd reports no usage for this unit)"),
        _ => None,
    };
    (fields, note)
}

/// Shows a notice of the vm layer (progress, kept files) on stderr,
/// worded by `cli/notice.rs`.
pub fn print_notice(n: crate::vm::Notice) {
    super::notice::print(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns() {
        let t = render_table(
            &["NAME", "STATE"],
            &[
                vec!["a".into(), "running".into()],
                vec!["longer".into(), "defined".into()],
            ],
        );
        assert_eq!(t, "NAME    STATE\na       running\nlonger  defined\n");
    }

    #[test]
    fn formats() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(65), "1m 05s");
        assert_eq!(human_duration(3725), "1h 02m");
        assert_eq!(human_duration(90000), "1d 01h");
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(3 << 20), "3.0M");
    }
}
