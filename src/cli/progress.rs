//! Showing a pull: a progress bar with size, rate and time left when
//! stderr is a terminal (indicatif), a plain line every few seconds when
//! it is not (logs, CI), or JSON lines on stdout (`--json`). The library
//! sends [`PullEvent`]s; everything about their look is here.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::image::{Progress, PullEvent};

use super::output::human_bytes;

/// How often a plain progress line is written.
const LINE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A bar on stderr (a terminal).
    Bar,
    /// Plain lines on stderr.
    Lines,
    /// One JSON object per event on stdout.
    Json,
}

impl Mode {
    /// `Json` when asked, else a bar on a terminal and lines otherwise.
    pub fn choose(json: bool) -> Mode {
        match (json, std::io::stderr().is_terminal()) {
            (true, _) => Mode::Json,
            (false, true) => Mode::Bar,
            (false, false) => Mode::Lines,
        }
    }
}

/// The progress sink for `mode`.
pub fn sink(mode: Mode) -> Progress {
    match mode {
        Mode::Json => Arc::new(|e: &PullEvent| {
            let mut out = std::io::stdout().lock();
            let _ = serde_json::to_writer(&mut out, e);
            let _ = out.write_all(b"\n");
            let _ = out.flush();
        }),
        Mode::Bar => {
            let state = Mutex::new(BarState::default());
            Arc::new(move |e: &PullEvent| {
                if let Ok(mut s) = state.lock() {
                    s.event(e);
                }
            })
        }
        Mode::Lines => {
            let state = Mutex::new(LineState::default());
            Arc::new(move |e: &PullEvent| {
                if let Ok(mut s) = state.lock() {
                    if let Some(line) = s.event(e, Instant::now()) {
                        eprintln!("{line}");
                    }
                }
            })
        }
    }
}

/// The last part of a URL: what the user recognises.
fn short(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

/// The line for an event that is not a byte count (the same in both modes).
fn message(e: &PullEvent) -> Option<String> {
    Some(match e {
        PullEvent::Waiting { url } => {
            format!("{}: another maqet is pulling it; waiting", short(url))
        }
        PullEvent::Checksums { url } => format!("reading {url}"),
        PullEvent::Cached { url, why } => format!("{}: using the cached copy ({why})", short(url)),
        PullEvent::Retry {
            url,
            attempt,
            delay_ms,
            error,
        } => format!(
            "{}: attempt {attempt} failed ({error}); trying again in {}s",
            short(url),
            delay_ms / 1000
        ),
        PullEvent::Restart { url, why } => format!("{}: starting over: {why}", short(url)),
        PullEvent::Verified { url, digest, by } => {
            format!("{}: verified {digest} (by {by})", short(url))
        }
        PullEvent::Unverified { url } => format!(
            "{}: NOT verified (--insecure-skip-verify); recorded as unverified",
            short(url)
        ),
        PullEvent::Decompressing { url, compression } => {
            format!("{}: decompressing ({compression})", short(url))
        }
        PullEvent::Converting { url, from } => {
            format!("{}: converting {from} to qcow2", short(url))
        }
        PullEvent::Done { file, size, .. } => {
            format!("stored {} ({})", file.display(), human_bytes(*size))
        }
        PullEvent::Start { .. } | PullEvent::Progress { .. } => return None,
    })
}

/// Rate and time left from the bytes of this run.
#[derive(Debug, Default)]
struct Meter {
    started: Option<(Instant, u64)>,
}

impl Meter {
    fn start(&mut self, now: Instant, offset: u64) {
        self.started = Some((now, offset));
    }

    /// Bytes per second since the start, once there is something to say.
    fn rate(&self, now: Instant, done: u64) -> Option<f64> {
        let (t0, b0) = self.started?;
        let secs = now.duration_since(t0).as_secs_f64();
        (secs >= 0.5 && done > b0).then(|| (done - b0) as f64 / secs)
    }
}

/// The plain line of a progress event.
fn progress_line(url: &str, done: u64, total: Option<u64>, rate: Option<f64>) -> String {
    let mut line = format!("{}: {}", short(url), human_bytes(done));
    if let Some(t) = total.filter(|t| *t > 0) {
        line.push_str(&format!(
            " of {} ({}%)",
            human_bytes(t),
            done.saturating_mul(100) / t
        ));
    }
    if let Some(r) = rate {
        line.push_str(&format!(", {}/s", human_bytes(r as u64)));
        if let Some(t) = total.filter(|t| *t > done) {
            line.push_str(&format!(
                ", {}s left",
                ((t - done) as f64 / r).ceil() as u64
            ));
        }
    }
    line
}

#[derive(Debug, Default)]
struct LineState {
    meter: Meter,
    last_line: Option<Instant>,
}

impl LineState {
    fn event(&mut self, e: &PullEvent, now: Instant) -> Option<String> {
        match e {
            PullEvent::Start { url, offset, total } => {
                self.meter.start(now, *offset);
                self.last_line = Some(now);
                Some(match (offset, total) {
                    (0, Some(t)) => format!("downloading {url} ({})", human_bytes(*t)),
                    (0, None) => format!("downloading {url}"),
                    (o, _) => format!("resuming {url} at {}", human_bytes(*o)),
                })
            }
            PullEvent::Progress { url, done, total } => {
                let due = self
                    .last_line
                    .is_none_or(|t| now.duration_since(t) >= LINE_EVERY);
                let finished = total.is_some_and(|t| t == *done);
                (due || finished).then(|| {
                    self.last_line = Some(now);
                    progress_line(url, *done, *total, self.meter.rate(now, *done))
                })
            }
            other => message(other),
        }
    }
}

#[derive(Default)]
struct BarState {
    bar: Option<ProgressBar>,
}

impl BarState {
    fn event(&mut self, e: &PullEvent) {
        match e {
            PullEvent::Start { url, offset, total } => {
                self.finish();
                let bar = match total {
                    Some(t) => ProgressBar::with_draw_target(
                        Some(*t),
                        ProgressDrawTarget::stderr(),
                    )
                    .with_style(
                        ProgressStyle::with_template(
                            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta} left",
                        )
                        .expect("a valid template")
                        .progress_chars("=> "),
                    ),
                    None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                        .with_style(
                            ProgressStyle::with_template(
                                "{prefix} {spinner} {bytes} {bytes_per_sec}",
                            )
                            .expect("a valid template"),
                        ),
                };
                bar.set_prefix(short(url).to_string());
                bar.set_position(*offset);
                bar.reset_eta();
                self.bar = Some(bar);
            }
            PullEvent::Progress { done, .. } => {
                if let Some(b) = &self.bar {
                    b.set_position(*done);
                }
            }
            other => {
                if let Some(m) = message(other) {
                    match &self.bar {
                        Some(b) if !b.is_finished() => b.println(m),
                        _ => eprintln!("{m}"),
                    }
                }
                if matches!(
                    other,
                    PullEvent::Verified { .. }
                        | PullEvent::Unverified { .. }
                        | PullEvent::Done { .. }
                        | PullEvent::Restart { .. }
                ) {
                    self.finish();
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish();
        }
    }
}

impl Drop for BarState {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_come_every_few_seconds_with_rate_and_time_left() {
        let mut s = LineState::default();
        let t0 = Instant::now();
        let url = "http://h/d/disk.qcow2".to_string();
        let start = PullEvent::Start {
            url: url.clone(),
            offset: 0,
            total: Some(100 << 20),
        };
        assert_eq!(
            s.event(&start, t0).unwrap(),
            "downloading http://h/d/disk.qcow2 (100.0M)"
        );
        let p = |done: u64| PullEvent::Progress {
            url: url.clone(),
            done,
            total: Some(100 << 20),
        };
        assert_eq!(s.event(&p(1 << 20), t0 + Duration::from_secs(1)), None);
        let line = s.event(&p(50 << 20), t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(line, "disk.qcow2: 50.0M of 100.0M (50%), 10.0M/s, 5s left");
        // The end is always said.
        assert!(s
            .event(&p(100 << 20), t0 + Duration::from_secs(6))
            .unwrap()
            .contains("(100%)"));
        let resumed = PullEvent::Start {
            url: url.clone(),
            offset: 3 << 20,
            total: None,
        };
        assert!(s.event(&resumed, t0).unwrap().starts_with("resuming"));
    }

    #[test]
    fn events_serialize_with_their_kind() {
        let e = PullEvent::Progress {
            url: "u".into(),
            done: 5,
            total: None,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"progress","url":"u","done":5,"total":null}"#
        );
    }
}
