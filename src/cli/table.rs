//! Text tables that fit the terminal: columns padded to their widest cell;
//! when a row would be wider than the terminal, the last column (free text
//! such as NOTE) is elided with `…` — or dropped if no room is left. Colour
//! is applied after the layout, so escape codes never skew the padding.

use super::term::Term;

const GAP: usize = 2;

/// Renders `rows` under `headers` for `term`; `style(col, cell)` names the
/// SGR colour of a cell (used only when `term.colour`).
pub fn render(
    headers: &[&str],
    rows: &[Vec<String>],
    term: &Term,
    style: impl Fn(usize, &str) -> Option<&'static str>,
) -> String {
    let mut headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut rows: Vec<Vec<String>> = rows.to_vec();
    let mut widths = column_widths(&headers, &rows);
    if let Some(max) = term.width {
        fit_last_column(&mut headers, &mut rows, &mut widths, max);
    }
    let line = |cells: &[String], colour: bool| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let painted = if colour {
                term.paint(c, style(i, c))
            } else {
                c.clone()
            };
            s.push_str(&painted);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(widths[i] - width(c) + GAP));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(&headers, false);
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r, true));
        out.push('\n');
    }
    out
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn column_widths(headers: &[String], rows: &[Vec<String>]) -> Vec<usize> {
    let mut w: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(width(c));
        }
    }
    w
}

/// Shrinks the last column so each line fits `max` columns.
fn fit_last_column(
    headers: &mut Vec<String>,
    rows: &mut [Vec<String>],
    widths: &mut Vec<usize>,
    max: usize,
) {
    let Some(last) = widths.len().checked_sub(1) else {
        return;
    };
    let before: usize = widths[..last].iter().map(|w| w + GAP).sum();
    if before + widths[last] <= max {
        return;
    }
    let room = max.saturating_sub(before);
    // Too little room to show anything useful: drop the column.
    if room < headers[last].chars().count().max(4) {
        headers.pop();
        widths.pop();
        for r in rows.iter_mut() {
            r.truncate(last);
        }
        return;
    }
    for r in rows.iter_mut() {
        if let Some(c) = r.get_mut(last) {
            *c = elide(c, room);
        }
    }
    widths[last] = room;
}

/// `s` cut to `n` characters, the last one `…` when cut.
pub fn elide(s: &str, n: usize) -> String {
    if width(s) <= n {
        return s.to_string();
    }
    let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Vec<String>> {
        vec![
            vec![
                "web".into(),
                "failed".into(),
                "qemu exited with status 1: could not open disk image".into(),
            ],
            vec!["db".into(), "running".into(), "".into()],
        ]
    }

    const PIPE: Term = Term {
        width: None,
        colour: false,
    };

    #[test]
    fn full_rows_when_piped() {
        let t = render(&["NAME", "STATE", "NOTE"], &rows(), &PIPE, |_, _| {
            Some("31")
        });
        assert_eq!(
            t,
            "NAME  STATE    NOTE\n\
             web   failed   qemu exited with status 1: could not open disk image\n\
             db    running\n"
        );
    }

    #[test]
    fn last_column_is_elided_to_the_terminal_width() {
        let term = Term {
            width: Some(30),
            colour: false,
        };
        let t = render(&["NAME", "STATE", "NOTE"], &rows(), &term, |_, _| None);
        for l in t.lines() {
            assert!(l.chars().count() <= 30, "{l:?} is wider than 30");
        }
        assert!(t.contains("web   failed   qemu exited wi…"), "{t}");
    }

    #[test]
    fn last_column_is_dropped_when_nothing_fits() {
        let term = Term {
            width: Some(17),
            colour: false,
        };
        let t = render(&["NAME", "STATE", "NOTE"], &rows(), &term, |_, _| None);
        assert_eq!(t, "NAME  STATE\nweb   failed\ndb    running\n");
    }

    #[test]
    fn colour_does_not_change_the_layout() {
        let term = Term {
            width: Some(200),
            colour: true,
        };
        let t = render(&["NAME", "STATE", "NOTE"], &rows(), &term, |col, _| {
            (col == 1).then_some("32")
        });
        let second = t.lines().nth(2).unwrap();
        assert_eq!(second, "db    \x1b[32mrunning\x1b[0m");
        let first = t.lines().nth(1).unwrap();
        assert!(
            first.starts_with("web   \x1b[32mfailed\x1b[0m   qemu"),
            "{first:?}"
        );
        assert!(
            !t.lines().next().unwrap().contains('\x1b'),
            "headers stay plain"
        );
    }

    #[test]
    fn elide_counts_characters() {
        assert_eq!(elide("abcdef", 4), "abc…");
        assert_eq!(elide("abc", 4), "abc");
    }
}
