//! Cross-checks of the generated artefacts against the clap definitions
//! and the documents in the source tree.

use clap::{CommandFactory, Parser};

use super::*;
use crate::cli::args::Cli;

/// Every visible command path: `["start"]`, `["qmp", "run"]`, ….
fn command_paths() -> Vec<Vec<String>> {
    let tree = model::Node::from_command(Cli::command().disable_help_subcommand(true));
    tree.walk()
        .into_iter()
        .filter(|n| !n.path.is_empty())
        .map(|n| n.path.clone())
        .collect()
}

#[test]
fn every_subcommand_has_a_man_page() {
    let pages = man::pages(documented_command());
    let files: Vec<&str> = pages.iter().map(|p| p.file.as_str()).collect();
    assert_eq!(files[0], "maqet.1");
    for path in command_paths() {
        let want = format!("maqet-{}.1", path.join("-"));
        assert!(
            files.contains(&want.as_str()),
            "no man page {want}: {files:?}"
        );
    }
    assert_eq!(files.len(), command_paths().len() + 1, "{files:?}");
    let root = &pages[0].roff;
    for section in [
        "SYNOPSIS",
        "OPTIONS",
        "\"EXIT STATUS\"",
        "ENVIRONMENT",
        "\"SEE ALSO\"",
    ] {
        assert!(
            root.contains(&format!(".SH {section}")),
            "maqet.1 lacks {section}"
        );
    }
    assert!(
        root.contains("maqet\\-start(1)"),
        "maqet.1 lists its subcommands"
    );
    assert!(!root.contains("__generate") && !root.contains("__complete"));
}

/// The table entry of the command `key` in a completion script.
fn entry<'a>(script: &'a str, shell: Shell, key: &str) -> Option<&'a str> {
    let (open, close) = match shell {
        Shell::Fish => (
            format!("        case {}\n", fish_quote(key)),
            "        case ",
        ),
        _ => (format!("        {})\n", sh_quote(key)), ";;"),
    };
    let start = script.find(&open)? + open.len();
    let end = start + script[start..].find(close)?;
    Some(&script[start..end])
}

fn fish_quote(s: &str) -> String {
    format!("'{s}'")
}

/// The words of the `subs` line of a table entry.
fn subs_of(entry: &str) -> Vec<String> {
    let line = entry
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("subs=") || l.starts_with("set subs"))
        .expect("a subs line");
    let list = line
        .trim_start_matches("set subs")
        .trim_start_matches("subs=")
        .trim_matches(|c| c == '(' || c == ')');
    list.split_whitespace()
        .map(|w| w.trim_matches('\'').to_string())
        .collect()
}

#[test]
fn every_subcommand_is_in_every_completion_script() {
    for shell in Shell::ALL {
        let script = shell.script();
        for path in command_paths() {
            let key = path.join(" ");
            assert!(
                entry(&script, shell, &key).is_some(),
                "{shell:?}: no entry for `maqet {key}`"
            );
            let parent = entry(&script, shell, &path[..path.len() - 1].join(" "))
                .unwrap_or_else(|| panic!("{shell:?}: no entry for the parent of {key}"));
            let name = path.last().unwrap();
            assert!(
                subs_of(parent).contains(name),
                "{shell:?}: `{key}` is not offered after its parent: {:?}",
                subs_of(parent)
            );
        }
        assert!(
            script.contains("__complete-vms"),
            "{shell:?}: VM names are dynamic"
        );
        let top = subs_of(entry(&script, shell, "").expect("a root entry"));
        assert!(
            top.iter().all(|s| !s.starts_with("__")),
            "{shell:?}: hidden commands stay hidden: {top:?}"
        );
    }
}

/// The command lines shown as `$ maqet …` in a Markdown file.
fn shown_commands(doc: &str) -> Vec<String> {
    doc.lines()
        .filter_map(|l| l.trim().strip_prefix("$ "))
        .filter(|l| l.starts_with("maqet "))
        .map(|l| match l.find(" #") {
            Some(i) => l[..i].trim().to_string(),
            None => l.trim().to_string(),
        })
        .collect()
}

/// Splits like a shell would for these simple lines (quotes, no expansion).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// README.md and every docs/*.md, read from the source tree.
fn documents() -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable document");
            (p.strip_prefix(root).unwrap().display().to_string(), text)
        })
        .collect()
}

#[test]
fn commands_shown_in_the_docs_parse() {
    let mut seen = 0;
    for (file, text) in documents() {
        for line in shown_commands(&text) {
            // The maqet part only: a redirection or pipe ends it.
            let words: Vec<String> = shell_words(&line)
                .into_iter()
                .take_while(|w| !matches!(w.as_str(), ">" | ">>" | "2>" | "|" | "&&" | "||" | ";"))
                .collect();
            if let Err(e) = Cli::try_parse_from(&words) {
                if e.kind() != clap::error::ErrorKind::DisplayHelp
                    && e.kind() != clap::error::ErrorKind::DisplayVersion
                {
                    panic!("{file}: `{line}` does not parse:\n{e}");
                }
            }
            seen += 1;
        }
    }
    assert!(seen >= 10, "only {seen} commands found in the docs");
}

#[test]
fn shell_words_handles_quotes() {
    assert_eq!(
        shell_words(r#"maqet qmp run vm x '{"a": 1}'"#),
        ["maqet", "qmp", "run", "vm", "x", r#"{"a": 1}"#]
    );
}

#[test]
fn cli_reference_in_docs_is_current() {
    let doc = include_str!("../../../docs/cli.md");
    let fresh = reference::splice(doc, &reference::render(documented_command()))
        .expect("docs/cli.md has the generated-reference markers");
    assert!(
        fresh == doc,
        "docs/cli.md's command reference is out of date: run `make docs` and commit it"
    );
}

#[test]
fn every_vm_name_positional_is_documented() {
    fn walk(cmd: &clap::Command, path: &str) {
        for a in cmd.get_arguments().filter(|a| a.is_positional()) {
            if super::model::is_vm_arg(a) {
                assert!(
                    a.get_help().is_some(),
                    "{path}: positional {} has no doc comment",
                    a.get_id()
                );
            }
        }
        for s in cmd.get_subcommands() {
            walk(s, &format!("{path} {}", s.get_name()));
        }
    }
    use clap::CommandFactory;
    walk(&crate::cli::args::Cli::command(), "maqet");
}
