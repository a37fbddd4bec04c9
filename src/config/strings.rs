//! Checks on every string of a config tree, keys included, whatever key
//! it sits under: what no QEMU argv, unit property or path can carry.

use super::node::{Node, Value};
use super::validate::Validator;

/// Reports each key or string value that holds a NUL byte, with its key
/// path (`arguments[2].device.netdev`) and position. Such a string passed
/// `add` before and failed only when `start` built QEMU's command line.
pub(crate) fn check_nul(v: &mut Validator, node: &Node, path: &str) {
    match &node.value {
        Value::Str(s) if s.contains('\0') => v.error(
            &node.loc,
            format!(
                "{}: the value contains a NUL byte (\\0), which no command-line argument or path can hold; remove it",
                shown(path)
            ),
        ),
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                check_nul(v, item, &format!("{path}[{i}]"));
            }
        }
        Value::Map(entries) => {
            for e in entries {
                let here = if path.is_empty() {
                    e.key.clone()
                } else {
                    format!("{path}.{}", e.key)
                };
                if e.key.contains('\0') {
                    v.error(
                        &e.key_loc,
                        format!(
                            "{}: the key contains a NUL byte (\\0); remove it",
                            shown(&here)
                        ),
                    );
                }
                check_nul(v, &e.value, &here);
            }
        }
        _ => {}
    }
}

/// A key path as shown in messages; NUL bytes are spelt `\0`.
fn shown(path: &str) -> String {
    if path.is_empty() {
        "configuration".into()
    } else {
        path.replace('\0', "\\0")
    }
}
