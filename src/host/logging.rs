//! Logging set-up for both binaries: the journal (with structured fields)
//! when running under systemd, stderr otherwise. Never stdout: that is data.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// `-v` count → level: none = warnings and errors, -v info, -vv debug, -vvv trace.
pub fn level_for_verbosity(v: u8) -> LevelFilter {
    match v {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// Parses `MAQET_LOG` (`error`, `warn`, `info`, `debug`, `trace`).
pub fn level_from_name(s: &str) -> Option<LevelFilter> {
    s.trim().parse().ok()
}

/// The CLI: human lines on stderr.
pub fn init_cli(level: LevelFilter) {
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(color_on_stderr())
        .with_filter(level);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// The runner: the journal when systemd connected our stderr to it
/// (`JOURNAL_STREAM`), every record tagged `MAQET_VM=NAME` and, when known,
/// `MAQET_DATA_DIR=DIR` (whose VM it is: unit names are per user, so
/// `maqet logs` tells two data directories' runs of one name apart by it);
/// stderr otherwise.
pub fn init_runner(vm: &str, data_dir: Option<&std::path::Path>, level: LevelFilter) {
    init_journal(vm, data_dir, "maqet-runner", level)
}

/// [`init_runner`] under another syslog identifier (a relayed helper's
/// lines read as `swtpm`, not `maqet-runner`).
pub fn init_journal(
    vm: &str,
    data_dir: Option<&std::path::Path>,
    identifier: &str,
    level: LevelFilter,
) {
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(j) = tracing_journald::layer() {
            let dir = data_dir.map(|d| maqet_config::canonical(d).into_os_string());
            let mut fields = vec![("MAQET_VM", vm.as_bytes())];
            if let Some(d) = &dir {
                fields.push((
                    crate::systemd::journal::DATA_DIR_FIELD,
                    std::os::unix::ffi::OsStrExt::as_bytes(d.as_os_str()),
                ));
            }
            let j = j
                .with_field_prefix(None)
                .with_syslog_identifier(identifier.to_string())
                .with_custom_fields(fields)
                .with_filter(level);
            let _ = tracing_subscriber::registry().with(j).try_init();
            return;
        }
    }
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .with_filter(level);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// Colour only on a terminal, and never with `NO_COLOR` set.
pub fn color_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}
