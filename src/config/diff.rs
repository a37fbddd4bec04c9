//! What changed between two stored configs (`maqet apply` shows it).

use std::fmt;

use serde::Serialize;
use serde_json::Value as Json;

/// One changed value, by its key path (`memory`, `storage[1].size`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    Added { key: String, value: Json },
    Removed { key: String, value: Json },
    Changed { key: String, old: Json, new: Json },
}

/// The changes from `old` to `new`, in document order. Mappings are
/// compared key by key and lists item by item.
pub fn diff(old: &Json, new: &Json) -> Vec<Change> {
    let mut out = Vec::new();
    walk(old, new, String::new(), &mut out);
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(old: &Json, new: &Json, path: String, out: &mut Vec<Change>) {
    match (old, new) {
        (Json::Object(a), Json::Object(b)) => {
            for (k, va) in a {
                match b.get(k) {
                    Some(vb) => walk(va, vb, join(&path, k), out),
                    None => out.push(Change::Removed {
                        key: join(&path, k),
                        value: va.clone(),
                    }),
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    out.push(Change::Added {
                        key: join(&path, k),
                        value: vb.clone(),
                    });
                }
            }
        }
        (Json::Array(a), Json::Array(b)) => {
            for (i, pair) in a.iter().zip(b).enumerate() {
                walk(pair.0, pair.1, format!("{path}[{i}]"), out);
            }
            for (i, v) in a.iter().enumerate().skip(b.len()) {
                out.push(Change::Removed {
                    key: format!("{path}[{i}]"),
                    value: v.clone(),
                });
            }
            for (i, v) in b.iter().enumerate().skip(a.len()) {
                out.push(Change::Added {
                    key: format!("{path}[{i}]"),
                    value: v.clone(),
                });
            }
        }
        (a, b) if a != b => out.push(Change::Changed {
            key: if path.is_empty() {
                "(config)".into()
            } else {
                path
            },
            old: a.clone(),
            new: b.clone(),
        }),
        _ => {}
    }
}

/// Strings as they are, other values as compact JSON.
fn shown(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Added { key, value } => write!(f, "+ {key}: {}", shown(value)),
            Change::Removed { key, value } => write!(f, "- {key}: {}", shown(value)),
            Change::Changed { key, old, new } => {
                write!(f, "~ {key}: {} -> {}", shown(old), shown(new))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_in_document_order() {
        let old = json!({"memory": "256M", "cpu": 1, "storage": [{"name": "a", "size": "1G"}],
                         "arguments": [{"accel": "tcg"}, "nodefaults"]});
        let new = json!({"memory": "1G", "storage": [{"name": "a", "size": "2G"}, {"name": "b"}],
                         "arguments": [{"accel": "tcg"}], "enable_kvm": true});
        let lines: Vec<String> = diff(&old, &new).iter().map(|c| c.to_string()).collect();
        assert_eq!(
            lines,
            [
                "~ memory: 256M -> 1G",
                "- cpu: 1",
                "~ storage[0].size: 1G -> 2G",
                "+ storage[1]: {\"name\":\"b\"}",
                "- arguments[1]: nodefaults",
                "+ enable_kvm: true",
            ]
        );
        assert!(diff(&new, &new).is_empty());
        assert_eq!(
            serde_json::to_value(&diff(&json!({"a": 1}), &json!({"a": 2}))[0]).unwrap(),
            json!({"change": "changed", "key": "a", "old": 1, "new": 2})
        );
    }

    #[test]
    fn from_an_empty_config() {
        let lines: Vec<String> = diff(&json!({}), &json!({"memory": "1G"}))
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(lines, ["+ memory: 1G"]);
    }
}
