//! The QMP policy applied to the config: what `arguments`, `args` and
//! `display` put on QEMU's command line must not make QEMU run a host
//! program (or take commands past the policy) unless the config sets
//! `qmp_allow_host_exec: true`. The reading of QEMU's options is
//! [`maqet_base::host_exec`]'s, the runner's own; this module only maps its
//! refusals to the key, item and position they came from.
//!
//! Each group is checked on its own — the `args` list, each `arguments`
//! item, the `display` value — and a group may not end in an option that
//! still waits for its value: QEMU would take it from the next group, and
//! the groups would no longer pair up the way they were checked.

use super::error::Location;
use super::node::Node;
use super::schema::VmConfig;
use super::validate::Validator;
use maqet_base::host_exec::{self, Refusal, OPT_OUT_KEY};

/// Refuses what the config would make QEMU run. `args` is the `args`
/// node (its items carry their positions), `display` where `display:` was
/// written.
pub(crate) fn check(
    v: &mut Validator,
    cfg: &VmConfig,
    args: Option<&Node>,
    display: Option<&Location>,
) {
    if cfg.qmp_allow_host_exec {
        return;
    }
    if let Some(items) = args.and_then(Node::as_seq) {
        // Only the items that became words (others are errors already).
        let words: Vec<(String, &Location)> = items
            .iter()
            .filter_map(|i| i.scalar_text().map(|t| (t, &i.loc)))
            .collect();
        let text: Vec<String> = words.iter().map(|(w, _)| w.clone()).collect();
        if let Err(r) = host_exec::command_line(&text) {
            let (word, valued) = match &r {
                Refusal::Runs { word, valued, .. } => (*word, *valued),
                Refusal::NoValue { word, .. } => (*word, false),
            };
            let shown = text[word..text.len().min(word + 1 + usize::from(valued))].join(" ");
            let loc = words[word].1;
            let index = items.iter().position(|i| &i.loc == loc).unwrap_or(word);
            let what = format!("args[{index}] '{}'", excerpt(&shown));
            v.error(loc, message(&what, &r, "args"));
        }
    }
    for a in &cfg.arguments {
        if let Err(r) = host_exec::command_line(&a.argv) {
            let what = format!("arguments[{}] '{}'", a.index, excerpt(&a.argv.join(" ")));
            v.error(&a.location, message(&what, &r, "this item"));
        }
    }
    if let (Some(value), Some(loc), None) = (&cfg.display, display, cfg.desktop.display) {
        let words = ["-display".to_string(), value.clone()];
        if let Err(r) = host_exec::command_line(&words) {
            v.error(
                loc,
                message(&format!("display '{}'", excerpt(value)), &r, "display"),
            );
        }
    }
}

fn message(what: &str, r: &Refusal, group: &str) -> String {
    match r {
        Refusal::Runs { finding, .. } => format!(
            "{what}: {finding}; maqet refuses what makes QEMU run a host program or take \
             commands past its QMP policy — set `{OPT_OUT_KEY}: true` in the config to allow it"
        ),
        Refusal::NoValue { option, .. } => format!(
            "{what}: -{option} takes a value, and none follows it in {group}; QEMU would take \
             the next word on its command line instead (give the value right after the option)"
        ),
    }
}

fn excerpt(s: &str) -> String {
    maqet_base::suggest::excerpt(s, 80)
}
