//! What stdout is: a terminal (fit tables to its width, colour allowed) or
//! a pipe/file (full rows, never colour). `NO_COLOR` (no-color.org) and
//! `TERM=dumb` turn colour off even on a terminal.

use std::io::IsTerminal;

/// How output to stdout should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    /// Columns to fit tables into; `None` when not a terminal (full rows).
    pub width: Option<usize>,
    pub colour: bool,
}

impl Term {
    /// Decides for this process's stdout and environment.
    pub fn stdout() -> Term {
        let tty = std::io::stdout().is_terminal();
        Term::decide(
            tty,
            std::env::var("COLUMNS").ok().as_deref(),
            tty.then(ioctl_width).flatten(),
            std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
            std::env::var("TERM").ok().as_deref(),
        )
    }

    /// The decision itself, from the facts (pure, for tests).
    pub fn decide(
        tty: bool,
        columns_env: Option<&str>,
        ioctl: Option<usize>,
        no_color: bool,
        term: Option<&str>,
    ) -> Term {
        if !tty {
            return Term {
                width: None,
                colour: false,
            };
        }
        let env_width = columns_env
            .and_then(|c| c.trim().parse::<usize>().ok())
            .filter(|w| *w > 0);
        Term {
            width: env_width.or(ioctl).or(Some(80)),
            colour: !no_color && term != Some("dumb"),
        }
    }

    /// `text` in the SGR style `sgr` (e.g. `"32"` green) when colour is on.
    pub fn paint(&self, text: &str, sgr: Option<&str>) -> String {
        match sgr {
            Some(code) if self.colour => format!("\x1b[{code}m{text}\x1b[0m"),
            _ => text.to_string(),
        }
    }
}

/// The terminal's width in columns, asked of the terminal on stdout.
fn ioctl_width() -> Option<usize> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    (ws.ws_col > 0).then_some(usize::from(ws.ws_col))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_get_full_rows_and_no_colour() {
        let t = Term::decide(false, Some("40"), None, false, Some("xterm"));
        assert_eq!(
            t,
            Term {
                width: None,
                colour: false
            }
        );
        assert_eq!(t.paint("running", Some("32")), "running");
    }

    #[test]
    fn terminals_get_their_width_and_colour_unless_no_color() {
        let t = Term::decide(true, None, Some(120), false, Some("xterm"));
        assert_eq!(t.width, Some(120));
        assert!(t.colour);
        assert_eq!(t.paint("x", Some("32")), "\x1b[32mx\x1b[0m");
        assert_eq!(t.paint("x", None), "x");
        // COLUMNS wins over the ioctl; nonsense falls back to it.
        assert_eq!(
            Term::decide(true, Some("50"), Some(120), false, None).width,
            Some(50)
        );
        assert_eq!(
            Term::decide(true, Some("wide"), Some(120), false, None).width,
            Some(120)
        );
        assert!(!Term::decide(true, None, Some(80), true, Some("xterm")).colour);
        assert!(!Term::decide(true, None, Some(80), false, Some("dumb")).colour);
    }
}
