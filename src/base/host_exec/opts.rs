//! QEMU option values and QMP arguments as one flat list of dotted keys
//! and values, so every rule reads both the same way.
//!
//! Duplicates are kept: QEMU takes the last of a repeated key in some
//! parsers and refuses it in others, so the rules look at every value a key
//! has, never at one chosen copy.

use serde_json::Value;

use super::Finding;

/// One value: a string as QEMU reads it, or any other JSON value (its
/// JSON text), which a string-typed option of QEMU refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Val {
    Str(String),
    Other(String),
}

impl Val {
    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            Val::Other(_) => None,
        }
    }

    /// `on`/`yes`/`true` as QEMU's boolean parsers read them (JSON `true`
    /// included).
    pub(super) fn is_true(&self) -> bool {
        match self {
            Val::Str(s) => matches!(s.as_str(), "on" | "yes" | "true" | "y"),
            Val::Other(s) => s == "true",
        }
    }
}

/// `(dotted key, value)` in input order.
pub(super) type Pairs = Vec<(String, Val)>;

/// The values `key` has, in order.
pub(super) fn values<'a>(p: &'a Pairs, key: &'a str) -> impl Iterator<Item = &'a Val> + 'a {
    p.iter().filter(move |(k, _)| k == key).map(|(_, v)| v)
}

/// The key's last segment that names something: `file.driver` → `driver`,
/// `children.0` → `children` (list indexes are skipped).
pub(super) fn last_name(key: &str) -> &str {
    key.rsplit('.')
        .find(|s| !s.is_empty() && !s.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or(key)
}

/// A JSON value flattened the way QEMU flattens nested options (`a.b`,
/// list items `a.0`).
pub(super) fn flatten(v: &Value) -> Pairs {
    let mut out = Vec::new();
    flatten_into("", v, &mut out);
    out
}

fn flatten_into(prefix: &str, v: &Value, out: &mut Pairs) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                flatten_into(&join(k), x, out);
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                flatten_into(&join(&i.to_string()), x, out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), Val::Str(s.clone()))),
        other => out.push((prefix.to_string(), Val::Other(other.to_string()))),
    }
}

/// How QEMU reads one option's value.
#[derive(Debug, Clone, Copy)]
pub(super) struct Syntax {
    /// The key a first part without `=` is a value of (`-netdev tap,…`:
    /// `type`).
    pub implied: Option<&'static str>,
    /// QEMU 7.2 reads a value starting with `{` as JSON for this option.
    pub json: bool,
}

/// Reads `value` as QEMU reads it with `syntax`: JSON (refused when maqet
/// cannot read it, since then it cannot be checked), else QEMU's
/// `name=value,…` syntax (QemuOpts; keyval reads the same text the same
/// way or refuses it): a name ends at the first `=` or `,`; a value ends
/// at a single comma, `,,` being a literal comma; a name without `=` is
/// `name=on` — and `noNAME` is also `NAME=off`, QemuOpts' old short form
/// (`nosmb` is `smb=off`, which runs smbd on a share named "off") — except
/// that the first one is the value of the implied key.
pub(super) fn parse(value: &str, syntax: Syntax) -> Result<Pairs, Finding> {
    if syntax.json && value.starts_with('{') {
        return serde_json::from_str::<Value>(value)
            .map(|v| flatten(&v))
            .map_err(|e| {
                Finding(format!(
                    "a JSON value maqet cannot read, so cannot check ({e})"
                ))
            });
    }
    let mut out = Vec::new();
    let mut rest = value;
    let mut first = true;
    while !rest.is_empty() {
        let end = rest.find(['=', ',']).unwrap_or(rest.len());
        if rest.as_bytes().get(end) == Some(&b'=') {
            let (v, used) = opt_value(&rest[end + 1..]);
            out.push((rest[..end].to_string(), Val::Str(v)));
            rest = &rest[end + 1 + used..];
        } else if let (true, Some(key)) = (first, syntax.implied) {
            let (v, used) = opt_value(rest);
            out.push((key.to_string(), Val::Str(v)));
            rest = &rest[used..];
        } else {
            if end > 0 {
                let name = &rest[..end];
                out.push((name.to_string(), Val::Str("on".into())));
                if let Some(short) = name.strip_prefix("no").filter(|n| !n.is_empty()) {
                    out.push((short.to_string(), Val::Str("off".into())));
                }
            }
            rest = rest.get(end + 1..).unwrap_or("");
        }
        first = false;
    }
    Ok(out)
}

/// A value up to a single comma, `,,` read as one comma; with the number
/// of bytes it took, the ending comma included.
fn opt_value(s: &str) -> (String, usize) {
    let b = s.as_bytes();
    let mut v = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b',' {
            if b.get(i + 1) == Some(&b',') {
                v.push(b',');
                i += 2;
                continue;
            }
            return (String::from_utf8_lossy(&v).into_owned(), i + 1);
        }
        v.push(b[i]);
        i += 1;
    }
    (String::from_utf8_lossy(&v).into_owned(), i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NETDEV: Syntax = Syntax {
        implied: Some("type"),
        json: true,
    };

    fn s(x: &str) -> Val {
        Val::Str(x.into())
    }

    #[test]
    fn key_value_parts_as_qemu_reads_them() {
        let p = parse("tap,,x,id=n,script=a,,b,vhost,,script=no,", NETDEV).unwrap();
        assert_eq!(
            p,
            vec![
                ("type".into(), s("tap,x")),
                ("id".into(), s("n")),
                ("script".into(), s("a,b")),
                // A name ends at a comma even when another follows.
                ("vhost".into(), s("on")),
                ("script".into(), s("no")),
            ]
        );
        // The implied key only for a first part without '='.
        let p = parse("id=n,tap", NETDEV).unwrap();
        assert_eq!(p[1], ("tap".into(), s("on")));
        // The old short form: `nosmb` is also `smb=off`.
        let p = parse("user,nosmb", NETDEV).unwrap();
        assert!(p.contains(&("smb".into(), s("off"))), "{p:?}");
    }

    #[test]
    fn json_values_are_flattened() {
        let p = parse(
            r#"{"type":"stream","addr":{"type":"unix","path":"/s"},"l":[1,"x"]}"#,
            NETDEV,
        )
        .unwrap();
        assert!(p.contains(&("addr.type".into(), s("unix"))));
        assert!(p.contains(&("l.0".into(), Val::Other("1".into()))));
        assert!(p.contains(&("l.1".into(), s("x"))));
        assert!(parse("{not json", NETDEV).is_err());
        let drive = Syntax {
            implied: None,
            json: false,
        };
        // Without JSON support the braces are plain text.
        assert_eq!(parse("{x", drive).unwrap(), vec![("{x".into(), s("on"))]);
        assert_eq!(last_name("file.driver"), "driver");
        assert_eq!(last_name("children.0"), "children");
        assert_eq!(
            flatten(&json!({"a": [{"b": true}]})),
            vec![("a.0.b".into(), Val::Other("true".into()))]
        );
    }
}
