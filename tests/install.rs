//! What an installation ships, exercised through the real binary: the shell
//! completions complete VM names by asking `maqet __complete-vms` at TAB
//! time (in bash, zsh and fish), the man pages render, and `maqet ls` fits
//! a terminal but prints full rows into a pipe. The file layout of
//! `make install` and the .deb is checked by packaging/test-deb.sh (root).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn maqet_bin() -> PathBuf {
    bin_dir().join("maqet")
}

/// The completion script for `shell`, from the binary under test.
fn script(w: &World, shell: &str) -> PathBuf {
    let out = w.ok(&["__generate", "completions", shell]);
    w.write(&format!("completion.{shell}"), &out)
}

fn run(cmd: &mut Command) -> String {
    let o: Output = cmd.output().expect("spawn");
    assert!(
        o.status.success(),
        "{cmd:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Candidates bash offers for `words` (the last one being completed), with
/// the real `maqet` as words[0] and `env` as the environment.
fn bash_complete(script: &Path, words: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(
            r#"source "$1"; shift
               COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
               _maqet "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
               printf '%s\n' "${COMPREPLY[@]}""#,
        )
        .arg("bash")
        .arg(script)
        .args(words)
        .env_remove("MAQET_DATA_DIR");
    for (k, v) in env {
        c.env(k, v);
    }
    run(&mut c)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_subcommands_options_and_defined_vms() {
    let w = World::new("cbash");
    let vm = w.add_vm("web", "");
    let s = script(&w, "bash");
    let bin = maqet_bin();
    let bin = bin.to_str().unwrap();
    let dd = w.data_dir();
    let dd = dd.to_str().unwrap();

    let subs = bash_complete(&s, &[bin, "st"], &[]);
    for want in ["start", "status", "stop"] {
        assert!(subs.contains(&want.to_string()), "{subs:?}");
    }
    assert_eq!(bash_complete(&s, &[bin, "ls", "--js"], &[]), ["--json"]);

    // VM names, from the data directory of the environment…
    let vms = bash_complete(&s, &[bin, "start", ""], &[("MAQET_DATA_DIR", dd)]);
    assert_eq!(vms, std::slice::from_ref(&vm));
    // …or of a --data-dir already typed, in any position.
    let vms = bash_complete(&s, &[bin, "--data-dir", dd, "qmp", "run", ""], &[]);
    assert_eq!(vms, std::slice::from_ref(&vm));
    let vms = bash_complete(&s, &[bin, "stop", "--force", "--data-dir", dd, ""], &[]);
    assert_eq!(vms, std::slice::from_ref(&vm));
    // A VM defined after the script was loaded shows at once (dynamic).
    let db = w.add_vm("db", "");
    let mut vms = bash_complete(&s, &[bin, "logs", "-n", "5", ""], &[("MAQET_DATA_DIR", dd)]);
    vms.sort();
    let mut want = vec![db, vm];
    want.sort();
    assert_eq!(vms, want);
    // After the VM name of a one-VM command, nothing is a VM any more
    // (`start`/`stop` take several names, `restart` one).
    assert!(bash_complete(&s, &[bin, "restart", "x", ""], &[("MAQET_DATA_DIR", dd)]).is_empty());
}

#[test]
fn fish_completes_defined_vms_with_descriptions_for_commands() {
    if !has("fish") {
        panic!("fish is not installed (tests/session/install-deps.sh installs it)");
    }
    let w = World::new("cfish");
    let vm = w.add_vm("web", "");
    let s = script(&w, "fish");
    let path = format!("{}:/usr/bin:/bin", bin_dir().display());
    let complete = |line: &str| {
        run(Command::new("fish")
            .arg("-c")
            .arg(format!(
                "source {}; complete -C'{line}'",
                s.to_str().unwrap()
            ))
            .env("PATH", &path)
            .env("HOME", w.dir.path())
            .env("MAQET_DATA_DIR", w.data_dir()))
    };
    let subs = complete("maqet sta");
    assert!(subs.lines().any(|l| l.starts_with("start\t")), "{subs}");
    assert!(subs.lines().any(|l| l.starts_with("status\t")), "{subs}");
    let vms = complete("maqet start ");
    assert_eq!(vms.trim(), vm, "{vms}");
    let vms = complete("maqet qmp run ");
    assert_eq!(vms.trim(), vm, "{vms}");
}

#[test]
fn zsh_script_finds_the_vm_argument() {
    if !has("zsh") {
        panic!("zsh is not installed (tests/session/install-deps.sh installs it)");
    }
    let w = World::new("czsh");
    let s = script(&w, "zsh");
    // The completion system itself needs a terminal; its decision function
    // is plain zsh and is what the script's compadd calls act on.
    let state = |words: &str| {
        run(Command::new("zsh").arg("-fc").arg(format!(
            "compdef() {{ :; }}; source {}; words=({words}); CURRENT=${{#words}}; \
             local kind node data_dir; _maqet_state; print -r -- \"$kind|$node|$data_dir\"",
            s.to_str().unwrap()
        )))
        .trim()
        .to_string()
    };
    assert_eq!(state("maqet st"), "sub||");
    assert_eq!(state("maqet start ''"), "vm|start|");
    assert_eq!(
        state("maqet --data-dir /srv/x qmp run ''"),
        "vm|qmp run|/srv/x"
    );
    assert_eq!(state("maqet qmp run web ''"), "any|qmp run|");
    assert_eq!(state("maqet add a.yaml ''"), "files|add|");
    assert_eq!(state("maqet ls --"), "opt|ls|");
}

#[test]
fn complete_vms_is_quiet_and_creates_nothing() {
    let w = World::new("cvms");
    // Nothing defined: no output, no error, no data directory created.
    assert_eq!(w.ok(&["__complete-vms"]), "");
    assert!(!w.data_dir().exists());
    let a = w.add_vm("a", "");
    assert_eq!(w.ok(&["__complete-vms"]), format!("{a}\n"));
}

#[test]
fn man_pages_render_for_every_command_in_the_help() {
    if !has("man") {
        panic!("man is not installed (tests/session/install-deps.sh installs man-db)");
    }
    let w = World::new("man");
    let dir = w.dir.path().join("man");
    w.ok(&["__generate", "man", dir.to_str().unwrap()]);
    // Every subcommand `maqet --help` lists has its page.
    let help = w.ok(&["--help"]);
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // A command starts its line at column 2; wrapped descriptions are indented further.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 8, "{commands:?}");
    for c in &commands {
        let page = dir.join(format!("maqet-{c}.1"));
        assert!(page.exists(), "no man page for `maqet {c}`");
    }
    for page in ["maqet.1", "maqet-start.1", "maqet-qmp-run.1"] {
        let o = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(dir.join(page))
            .env("MANWIDTH", "80")
            .env("MANPAGER", "cat")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        let warnings = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && warnings.is_empty(),
            "{page}: {warnings}"
        );
        assert!(
            text.contains("SYNOPSIS") && text.contains("EXIT STATUS"),
            "{text}"
        );
    }
}

/// `maqet ls` in a pseudo-terminal of `columns` columns (util-linux `script`).
fn ls_on_a_terminal(w: &World, columns: u16, extra_env: &str) -> String {
    let cmd = format!(
        "stty cols {columns} rows 50; COLUMNS= {extra_env} {} ls",
        maqet_bin().display()
    );
    let out = run(Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("MAQET_DATA_DIR", w.data_dir())
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .env_remove("COLUMNS"));
    out.replace("\r\n", "\n")
}

#[test]
fn ls_fits_the_terminal_colours_states_and_prints_full_rows_to_a_pipe() {
    if !has("script") {
        panic!("script (util-linux) is not installed");
    }
    let w = World::new("lsterm");
    let vm = w.add_vm("bad", "args:\n  - -no-such-option\n");
    w.fails(1, &["start", &vm]);
    assert_eq!(w.state(&vm), "failed");
    let note = w.status(&vm)["failure"].as_str().unwrap().to_string();

    // Piped: full rows, no escape codes.
    let piped = w.ok(&["ls"]);
    assert!(piped.contains(&note), "{piped}");
    assert!(!piped.contains('\x1b'), "{piped:?}");

    // A terminal narrower than the row: NOTE elided, the state in red.
    let full_width = piped.lines().map(|l| l.chars().count()).max().unwrap();
    let cols = (full_width - 8) as u16;
    let tty = ls_on_a_terminal(&w, cols, "");
    let plain = strip_ansi(&tty);
    for l in plain.lines() {
        assert!(
            l.chars().count() <= cols as usize,
            "{l:?} wider than {cols}"
        );
    }
    assert!(plain.contains('…'), "{plain}");
    assert!(tty.contains("\x1b[1;31mfailed\x1b[0m"), "{tty:?}");
    // NO_COLOR: same layout, no colour.
    let no_colour = ls_on_a_terminal(&w, cols, "NO_COLOR=1");
    assert!(!no_colour.contains('\x1b'), "{no_colour:?}");
    assert_eq!(no_colour, plain);
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn has(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
