//! Deep merge of config layers (2.6), with the original's defects fixed.
//!
//! - mapping + mapping: recursive; existing keys keep their position (the
//!   argv order), new keys go at the end;
//! - list + list: joined (so a storage name in two files is a duplicate);
//! - anything else: the later value wins, `null` included (a way to unset);
//! - top-level `arguments` + `arguments`: by option name, in place. Each
//!   item of the later list replaces the first *not yet replaced* item of
//!   the earlier list with the same option name, else it is appended. Items
//!   of one list never replace each other, so two `device:` items of one
//!   file stay two devices, and a later `arguments: []` changes nothing.

use super::node::{Node, Value};

/// Merges the top-level mapping `later` into `earlier`.
pub(crate) fn merge_root(earlier: &mut Node, later: Node) {
    merge_node(earlier, later, true);
}

fn merge_node(earlier: &mut Node, later: Node, top_level: bool) {
    match (&mut earlier.value, later.value) {
        (Value::Map(a), Value::Map(b)) => {
            for entry in b {
                match a.iter_mut().find(|e| e.key == entry.key) {
                    Some(slot) => {
                        let is_arguments = top_level && slot.key == "arguments";
                        match (&mut slot.value.value, entry.value.value) {
                            (Value::Seq(x), Value::Seq(y)) if is_arguments => merge_arguments(x, y),
                            (_, v) => {
                                merge_node(&mut slot.value, Node::new(v, entry.value.loc), false)
                            }
                        }
                    }
                    None => a.push(entry),
                }
            }
        }
        (Value::Seq(a), Value::Seq(b)) => a.extend(b),
        (_, v) => *earlier = Node::new(v, later.loc),
    }
}

fn merge_arguments(earlier: &mut Vec<Node>, later: Vec<Node>) {
    let n_earlier = earlier.len();
    let mut replaced = vec![false; n_earlier];
    for item in later {
        let name = option_name(&item);
        let slot = name.as_deref().and_then(|name| {
            (0..n_earlier)
                .find(|&i| !replaced[i] && option_name(&earlier[i]).as_deref() == Some(name))
        });
        match slot {
            Some(i) => {
                earlier[i] = item;
                replaced[i] = true;
            }
            None => earlier.push(item),
        }
    }
}

/// The option an `arguments` item stands for: the first key of a mapping,
/// or a string item itself, without leading dashes (`nodefaults` and
/// `-nodefaults` are the same option; the original treated them apart).
pub(crate) fn option_name(item: &Node) -> Option<String> {
    let raw = match &item.value {
        Value::Str(s) => s.as_str(),
        Value::Map(m) => m.first()?.key.as_str(),
        _ => return None,
    };
    let name = raw.trim_start_matches('-');
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::load::parse_str;
    use super::*;
    use serde_json::json;

    fn merged(a: &str, b: &str) -> serde_json::Value {
        let mut x = parse_str(a, "a.yaml").unwrap();
        merge_root(&mut x, parse_str(b, "b.yaml").unwrap());
        x.to_json()
    }

    #[test]
    fn scalars_later_wins_keys_keep_position() {
        let j = merged("memory: 256M\ncpu: 1\n", "name: x\nmemory: 1G\n");
        assert_eq!(j, json!({"memory": "1G", "cpu": 1, "name": "x"}));
        let keys: Vec<_> = j.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["memory", "cpu", "name"]);
    }

    #[test]
    fn null_overrides() {
        assert_eq!(
            merged("memory: 1G\n", "memory: null\n"),
            json!({"memory": null})
        );
    }

    #[test]
    fn maps_merge_recursively_lists_join() {
        let j = merged(
            "resources: {cpu_weight: 10, io_weight: 20}\nstorage: [{name: a}]\nargs: [-a]\n",
            "resources: {io_weight: 30, tasks_max: 5}\nstorage: [{name: b}]\nargs: [-b]\n",
        );
        assert_eq!(
            j,
            json!({
                "resources": {"cpu_weight": 10, "io_weight": 30, "tasks_max": 5},
                "storage": [{"name": "a"}, {"name": "b"}],
                "args": ["-a", "-b"],
            })
        );
    }

    #[test]
    fn different_types_later_wins() {
        assert_eq!(merged("a: [1]\n", "a: {b: 1}\n"), json!({"a": {"b": 1}}));
        assert_eq!(merged("a: {b: 1}\n", "a: 2\n"), json!({"a": 2}));
    }

    #[test]
    fn layered_example_arguments() {
        let j = merged(
            "arguments:\n  - accel: tcg\n  - display: none\n  - nodefaults\n  - device: virtio-rng-pci\n",
            "arguments:\n  - device: virtio-balloon-pci\n  - smp: 2\n",
        );
        assert_eq!(
            j["arguments"],
            json!([{"accel": "tcg"}, {"display": "none"}, "nodefaults",
                   {"device": "virtio-balloon-pci"}, {"smp": 2}])
        );
    }

    #[test]
    fn same_file_repeats_are_never_collapsed() {
        let a = "arguments:\n  - device: a\n  - device: b\n  - netdev: n0\n";
        assert_eq!(
            merged(a, "arguments: []\n")["arguments"],
            json!([{"device": "a"}, {"device": "b"}, {"netdev": "n0"}])
        );
        // One later device replaces the first earlier one only.
        assert_eq!(
            merged(a, "arguments: [{device: c}]\n")["arguments"],
            json!([{"device": "c"}, {"device": "b"}, {"netdev": "n0"}])
        );
        // Later repeats replace earlier ones pairwise, the rest is appended.
        assert_eq!(
            merged(a, "arguments: [{device: c}, {device: d}, {device: e}]\n")["arguments"],
            json!([{"device": "c"}, {"device": "d"}, {"netdev": "n0"}, {"device": "e"}])
        );
        // Two repeats in the later file stay two even against one earlier item.
        assert_eq!(
            merged(
                "arguments: [{device: a}]\n",
                "arguments: [{device: c}, {device: d}]\n"
            )["arguments"],
            json!([{"device": "c"}, {"device": "d"}])
        );
    }

    #[test]
    fn string_items_match_with_or_without_dash() {
        assert_eq!(
            merged(
                "arguments: [nodefaults, -snapshot]\n",
                "arguments: [-nodefaults, {snapshot: null}]\n"
            )["arguments"],
            json!(["-nodefaults", {"snapshot": null}])
        );
    }

    #[test]
    fn multi_key_items_are_entered_once() {
        assert_eq!(
            merged(
                "arguments: [{display: gtk, zoom-to-fit: \"on\"}, {accel: tcg}]\n",
                "arguments: [{display: none}]\n"
            )["arguments"],
            json!([{"display": "none"}, {"accel": "tcg"}])
        );
    }

    #[test]
    fn only_one_side_has_arguments() {
        assert_eq!(
            merged("memory: 1G\n", "arguments: [{device: a}, {device: a}]\n")["arguments"],
            json!([{"device": "a"}, {"device": "a"}])
        );
    }

    #[test]
    fn nested_arguments_key_is_not_special() {
        assert_eq!(
            merged("x: {arguments: [a]}\n", "x: {arguments: [a]}\n"),
            json!({"x": {"arguments": ["a", "a"]}})
        );
    }
}
