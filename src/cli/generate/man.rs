//! Man pages: `maqet(1)` and one page per subcommand (`maqet-start(1)`,
//! `maqet-qmp-run(1)`, …), rendered by clap_mangen from the clap
//! definitions, plus the sections clap does not know about (exit status,
//! environment, files, see also).

use clap::Command;
use clap_mangen::Man;

use crate::cli::exit::EXIT_CODES_HELP;

/// One page: its file name (`maqet-start.1`) and its roff text.
pub struct Page {
    pub file: String,
    pub roff: String,
}

/// Every page, root first. Hidden subcommands and clap's `help` get none.
pub fn pages(cmd: Command) -> Vec<Page> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut all = Vec::new();
    collect(&cmd, &mut all);
    let names: Vec<String> = all.iter().map(page_name).collect();
    all.iter()
        .enumerate()
        .map(|(i, c)| Page {
            file: format!("{}.1", names[i]),
            roff: render(c, i == 0, &names),
        })
        .collect()
}

fn collect(cmd: &Command, out: &mut Vec<Command>) {
    out.push(cmd.clone());
    for s in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(s, out);
    }
}

/// `maqet`, `maqet-start`, `maqet-qmp-run`: clap's display name once built.
fn page_name(cmd: &Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string()
}

fn render(cmd: &Command, root: bool, all: &[String]) -> String {
    let version = env!("CARGO_PKG_VERSION");
    let man = Man::new(cmd.clone())
        .source(format!("maqet {version}"))
        .manual("maqet manual");
    let mut out: Vec<u8> = Vec::new();
    // Section by section, so the root's exit-code help becomes EXIT STATUS
    // instead of clap_mangen's generic "EXTRA".
    type Section = fn(&Man, &mut dyn std::io::Write) -> std::io::Result<()>;
    let sections: [Section; 4] = [
        Man::render_title,
        Man::render_name_section,
        Man::render_synopsis_section,
        Man::render_description_section,
    ];
    for s in sections {
        s(&man, &mut out).expect("writing to memory");
    }
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)
            .expect("writing to memory");
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut out)
            .expect("writing to memory");
    }
    let mut text = String::from_utf8(out).expect("roff is UTF-8");
    if !root {
        if let Some(after) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
            text.push_str(".SH NOTES\n.nf\n");
            text.push_str(&escape_block(&after.to_string()));
            text.push_str(".fi\n");
        }
    }
    text.push_str(&exit_status(root));
    if root {
        text.push_str(ENVIRONMENT);
        text.push_str(FILES);
    }
    text.push_str(&see_also(cmd, root, all));
    text.push_str(&format!(".SH VERSION\nv{version}\n"));
    text
}

/// `EXIT_CODES_HELP` (the text `maqet --help` shows) as a roff list.
fn exit_status(root: bool) -> String {
    let mut s = String::from(".SH \"EXIT STATUS\"\n");
    if !root {
        s.push_str("As for every maqet command (see \\fBmaqet\\fR(1)):\n");
    }
    for (code, meaning) in exit_codes() {
        s.push_str(&format!(".TP\n.B {code}\n{}\n", escape_line(&meaning)));
    }
    s
}

/// `(code, meaning)` pairs parsed from `EXIT_CODES_HELP`, the one list of them.
pub fn exit_codes() -> Vec<(u8, String)> {
    EXIT_CODES_HELP
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let (code, meaning) = l.split_once(char::is_whitespace)?;
            Some((code.parse().ok()?, meaning.trim().to_string()))
        })
        .collect()
}

const ENVIRONMENT: &str = r".SH ENVIRONMENT
.TP
.B MAQET_DATA_DIR
The data directory (same as \fB\-\-data\-dir\fR): \fImaqet.db\fR and the default disk location.
.TP
.B XDG_DATA_HOME
Without \fB\-\-data\-dir\fR, the data directory is \fI$XDG_DATA_HOME/maqet\fR, else \fI~/.local/share/maqet\fR.
.TP
.B XDG_RUNTIME_DIR
The user session's runtime directory; the runner sockets are in \fI$XDG_RUNTIME_DIR/maqet/vm/\fR.
.TP
.B MAQET_HOST
The host of \fB\-H\fR when none is given: a name of \fIhosts.yaml\fR or \fI[USER@]HOST[:PORT]\fR (see \fIdocs/remote.md\fR).
.TP
.B MAQET_RUNNER
Path of \fBmaqet\-runner\fR; by default the one installed next to \fBmaqet\fR.
.TP
.B MAQET_VIRTIOFSD\fR, \fBMAQET_PASST
The virtiofsd (\fIshares:\fR) and passt (\fInetwork: passt\fR) to use, a path or a name in PATH; by default \fBvirtiofsd\fR in PATH or \fI/usr/libexec\fR, \fBpasst\fR in PATH.
.TP
.B NO_COLOR
When set to a non-empty value, output is never coloured (colour is used only on a terminal anyway).
.TP
.B COLUMNS
Width of the terminal that tables are fitted to (default: asked of the terminal).
";

const FILES: &str = r".SH FILES
.TP
.I $XDG_DATA_HOME/maqet/maqet.db
VM definitions (SQLite). Runtime state is never stored: it is systemd's.
.TP
.I $XDG_DATA_HOME/maqet/disks/NAME/
Default location of a VM's disk images.
.TP
.I $XDG_RUNTIME_DIR/maqet/vm/NAME.sock
The IPC socket of a running VM's runner (mode 0600).
.TP
.I $XDG_CONFIG_HOME/maqet/hosts.yaml
Named connections for \fB\-H NAME\fR (\fBmaqet host add|ls|rm\fR): \fIssh\fR, \fIport\fR, \fIidentity\fR, \fIdata_dir\fR, \fImaqet\fR.
.TP
.I $XDG_RUNTIME_DIR/maqet/ssh/
The shared ssh connections of \fB\-H\fR (ControlMaster sockets); forwarded sockets of \fBqmp socket\fR and \fBdisplay\fR under \fI$XDG_RUNTIME_DIR/maqet/remote/\fR.
.TP
.I /usr/lib/systemd/user/maqet.slice
Resource defaults for all VMs (if installed), used by the transient units \fBmaqet\-vm@NAME.service\fR and \fBmaqet\-vm@NAME.socket\fR.
";

fn see_also(cmd: &Command, root: bool, all: &[String]) -> String {
    let me = page_name(cmd);
    let mut refs: Vec<String> = if root {
        all.iter()
            .filter(|n| **n != me)
            .map(|n| format!("\\fB{}\\fR(1)", escape_line(n)))
            .collect()
    } else {
        vec!["\\fBmaqet\\fR(1)".to_string()]
    };
    refs.extend(
        [
            "systemctl(1)",
            "journalctl(1)",
            "systemd.unit(5)",
            "qemu-system-x86_64(1)",
        ]
        .iter()
        .map(|r| {
            let (n, s) = r.split_once('(').expect("name(section)");
            format!("\\fB{}\\fR({s}", escape_line(n))
        }),
    );
    format!(".SH \"SEE ALSO\"\n{}\n", refs.join(", "))
}

/// Escapes one line of text for roff: backslashes, dashes, and a leading
/// `.` or `'` that would read as a request.
fn escape_line(s: &str) -> String {
    let e = s.replace('\\', "\\e").replace('-', "\\-");
    if e.starts_with('.') || e.starts_with('\'') {
        format!("\\&{e}")
    } else {
        e
    }
}

fn escape_block(s: &str) -> String {
    s.lines().map(|l| escape_line(l) + "\n").collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_parse_from_the_help_text() {
        let codes = exit_codes();
        assert_eq!(codes.first().map(|c| c.0), Some(0));
        assert!(codes
            .iter()
            .any(|(c, m)| *c == 3 && m.contains("no such VM")));
        assert_eq!(
            codes.len(),
            EXIT_CODES_HELP.lines().count() - 1,
            "every line but the heading"
        );
    }

    #[test]
    fn escapes_requests_and_dashes() {
        assert_eq!(escape_line(".x -y \\z"), "\\&.x \\-y \\ez");
    }
}
