//! The command tree as the completion scripts need it, read from the clap
//! definitions. Every subcommand, option and positional argument of
//! `args.rs` (including ones added later) appears here without any list to
//! keep in step; hidden ones (`__generate`, `__complete-vms`) do not.

use clap::{Arg, ArgAction, Command, ValueHint};

/// What a value of an option or positional argument completes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Values {
    /// A defined VM, asked of `maqet __complete-vms` at completion time.
    Vm,
    /// A catalog image, asked of `maqet __complete-images` at completion time.
    Image,
    /// A host of hosts.yaml, asked of `maqet __complete-hosts` at completion time.
    Host,
    Files,
    Dirs,
    /// One of a fixed set (clap's possible values).
    Choices(Vec<String>),
    /// Free text: nothing to offer.
    Any,
}

impl Values {
    /// The word the shell scripts switch on (`choices` carry their words apart).
    pub fn kind(&self) -> &'static str {
        match self {
            Values::Vm => "vm",
            Values::Image => "image",
            Values::Host => "host",
            Values::Files => "files",
            Values::Dirs => "dirs",
            Values::Choices(_) => "choices",
            Values::Any => "any",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Opt {
    /// `--json`, `-n`, … (long name, visible aliases and short name).
    pub names: Vec<String>,
    pub help: String,
    /// `None` for a flag.
    pub value: Option<Values>,
}

#[derive(Debug, Clone)]
pub struct Node {
    /// Canonical names from the root, e.g. `["qmp", "run"]`; empty for `maqet`.
    pub path: Vec<String>,
    pub aliases: Vec<String>,
    pub about: String,
    pub opts: Vec<Opt>,
    /// Positional arguments in order.
    pub positionals: Vec<Values>,
    /// The last positional takes any number of values.
    pub last_repeats: bool,
    pub subcommands: Vec<Node>,
}

impl Node {
    /// The tree of a clap command (built here, so global options are
    /// propagated to every subcommand).
    pub fn from_command(mut cmd: Command) -> Node {
        cmd.build();
        Node::read(&cmd, Vec::new())
    }

    fn read(cmd: &Command, path: Vec<String>) -> Node {
        let visible = || cmd.get_arguments().filter(|a| !a.is_hide_set());
        let opts = visible()
            .filter(|a| !a.is_positional())
            .map(|a| Opt {
                names: option_names(a),
                help: first_line(a.get_help().map(|h| h.to_string())),
                value: takes_value(a).then(|| values_of(a)),
            })
            .filter(|o| !o.names.is_empty())
            .collect();
        let positionals: Vec<&Arg> = visible().filter(|a| a.is_positional()).collect();
        let last_repeats = positionals.last().is_some_and(|a| {
            a.get_num_args()
                .is_some_and(|n| n.max_values() > 1 || n.max_values() == 0)
        });
        let subcommands = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| {
                let mut p = path.clone();
                p.push(s.get_name().to_string());
                Node::read(s, p)
            })
            .collect();
        Node {
            aliases: cmd.get_visible_aliases().map(str::to_string).collect(),
            about: first_line(cmd.get_about().map(|h| h.to_string())),
            opts,
            positionals: positionals.iter().map(|a| values_of(a)).collect(),
            last_repeats,
            subcommands,
            path,
        }
    }

    /// This node and every node below it, depth first.
    pub fn walk(&self) -> Vec<&Node> {
        let mut out = vec![self];
        for s in &self.subcommands {
            out.extend(s.walk());
        }
        out
    }

    pub fn name(&self) -> &str {
        self.path.last().map_or("maqet", String::as_str)
    }

    /// `"qmp run"`; `""` for the root. The key the scripts look nodes up by.
    pub fn key(&self) -> String {
        self.path.join(" ")
    }
}

/// Positional arguments called `name`/`names`/`vm`/`vms` take a VM name:
/// the convention of `args.rs` that makes completion offer defined VMs.
pub fn is_vm_arg(a: &Arg) -> bool {
    a.is_positional() && matches!(a.get_id().as_str(), "name" | "names" | "vm" | "vms")
}

/// `-H/--host` and positional arguments called `host` take a host of
/// hosts.yaml.
pub fn is_host_arg(a: &Arg) -> bool {
    a.get_id().as_str() == "host"
}

/// Positional arguments called `image`/`images` take a catalog image name.
pub fn is_image_arg(a: &Arg) -> bool {
    a.is_positional() && matches!(a.get_id().as_str(), "image" | "images")
}

fn option_names(a: &Arg) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(l) = a.get_long() {
        names.push(format!("--{l}"));
    }
    for l in a.get_visible_aliases().unwrap_or_default() {
        names.push(format!("--{l}"));
    }
    if let Some(s) = a.get_short() {
        names.push(format!("-{s}"));
    }
    names
}

fn takes_value(a: &Arg) -> bool {
    !matches!(
        a.get_action(),
        ArgAction::SetTrue
            | ArgAction::SetFalse
            | ArgAction::Count
            | ArgAction::Help
            | ArgAction::HelpShort
            | ArgAction::HelpLong
            | ArgAction::Version
    ) && a.get_num_args().is_none_or(|n| n.takes_values())
}

fn values_of(a: &Arg) -> Values {
    if is_vm_arg(a) {
        return Values::Vm;
    }
    if is_image_arg(a) {
        return Values::Image;
    }
    if is_host_arg(a) {
        return Values::Host;
    }
    let choices: Vec<String> = a
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_string())
        .collect();
    if !choices.is_empty() {
        return Values::Choices(choices);
    }
    match a.get_value_hint() {
        ValueHint::AnyPath | ValueHint::FilePath | ValueHint::ExecutablePath => Values::Files,
        ValueHint::DirPath => Values::Dirs,
        _ => Values::Any,
    }
}

fn first_line(s: Option<String>) -> String {
    s.unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn tree() -> Node {
        Node::from_command(crate::cli::args::Cli::command())
    }

    fn find<'a>(root: &'a Node, key: &str) -> &'a Node {
        root.walk()
            .into_iter()
            .find(|n| n.key() == key)
            .unwrap_or_else(|| panic!("no node {key:?}"))
    }

    #[test]
    fn image_positionals_complete_catalog_names() {
        let t = tree();
        assert_eq!(find(&t, "image pull").positionals, vec![Values::Image]);
        assert_eq!(find(&t, "image rm").positionals, vec![Values::Image]);
        assert_eq!(find(&t, "launch").positionals, vec![Values::Image]);
        assert_eq!(find(&t, "wait").positionals, vec![Values::Vm]);
        for script in [
            super::super::bash::render(&t),
            super::super::zsh::render(&t),
            super::super::fish::render(&t),
        ] {
            assert!(script.contains("__complete-images"));
        }
    }

    #[test]
    fn hosts_complete_from_hosts_yaml() {
        let t = tree();
        assert_eq!(find(&t, "host rm").positionals, vec![Values::Host]);
        // A new host's name is not an existing one.
        assert_eq!(
            find(&t, "host add").positionals,
            vec![Values::Any, Values::Any]
        );
        let host_opt = t
            .opts
            .iter()
            .find(|o| o.names.contains(&"--host".to_string()))
            .expect("-H/--host");
        assert_eq!(host_opt.value, Some(Values::Host));
        assert!(host_opt.names.contains(&"-H".to_string()));
        for script in [
            super::super::bash::render(&t),
            super::super::zsh::render(&t),
            super::super::fish::render(&t),
        ] {
            assert!(script.contains("__complete-hosts"));
        }
    }

    #[test]
    fn reads_subcommands_aliases_and_hides_internal_ones() {
        let t = tree();
        let names: Vec<&str> = t.subcommands.iter().map(Node::name).collect();
        assert!(names.contains(&"start") && names.contains(&"qmp"));
        assert!(names.iter().all(|n| !n.starts_with("__")), "{names:?}");
        assert_eq!(find(&t, "ls").aliases, vec!["list"]);
        assert!(find(&t, "qmp run").path == ["qmp", "run"]);
    }

    #[test]
    fn classifies_values() {
        let t = tree();
        let start = find(&t, "start");
        assert_eq!(start.positionals, vec![Values::Vm]);
        // Global options reach every subcommand.
        let dd = start
            .opts
            .iter()
            .find(|o| o.names.contains(&"--data-dir".to_string()))
            .expect("--data-dir on start");
        assert_eq!(dd.value, Some(Values::Dirs));
        let json = find(&t, "ls")
            .opts
            .iter()
            .find(|o| o.names == ["--json"])
            .unwrap();
        assert_eq!(json.value, None);
        let add = find(&t, "add");
        assert_eq!(add.positionals, vec![Values::Files]);
        assert!(add.last_repeats);
        let name = add.opts.iter().find(|o| o.names == ["--name"]).unwrap();
        assert_eq!(name.value, Some(Values::Any), "add --name is a new name");
        let run = find(&t, "qmp run");
        assert_eq!(run.positionals[0], Values::Vm);
        assert!(!run.last_repeats);
        let verbose = t.opts.iter().find(|o| o.names.contains(&"-v".into()));
        assert_eq!(verbose.unwrap().value, None, "-v counts, takes no value");
    }
}
