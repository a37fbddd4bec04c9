//! Writing a config back as YAML (`maqet config VM`), in a form maqet's own
//! loader (YAML 1.1 typing, see [`super::node`]) reads back to the same
//! values: a string is written plain only when it would load as that same
//! string, otherwise double-quoted.

use serde_json::Value as Json;

use super::node::{self, Value};

/// Block-style YAML of a JSON value whose top level is an object.
pub fn to_yaml(value: &Json) -> String {
    let mut out = String::new();
    match value {
        Json::Object(m) if !m.is_empty() => map(&mut out, m, 0),
        other => {
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
    out
}

fn map(out: &mut String, m: &serde_json::Map<String, Json>, indent: usize) {
    for (k, v) in m {
        out.push_str(&" ".repeat(indent));
        out.push_str(&scalar_str(k));
        out.push(':');
        block_value(out, v, indent);
    }
}

fn seq(out: &mut String, items: &[Json], indent: usize) {
    for v in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match v {
            // A collection inside a sequence item starts on the dash's line.
            Json::Object(m) if !m.is_empty() => {
                let mut inner = String::new();
                map(&mut inner, m, indent + 2);
                out.push(' ');
                out.push_str(&inner[indent + 2..]);
            }
            Json::Array(a) if !a.is_empty() => {
                let mut inner = String::new();
                seq(&mut inner, a, indent + 2);
                out.push(' ');
                out.push_str(&inner[indent + 2..]);
            }
            other => {
                out.push(' ');
                out.push_str(&inline(other));
                out.push('\n');
            }
        }
    }
}

/// What follows `key:`: a scalar on the same line, or an indented block.
fn block_value(out: &mut String, v: &Json, indent: usize) {
    match v {
        Json::Object(m) if !m.is_empty() => {
            out.push('\n');
            map(out, m, indent + 2);
        }
        Json::Array(a) if !a.is_empty() => {
            out.push('\n');
            seq(out, a, indent + 2);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

/// Scalars and empty collections.
fn inline(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            // u64 beyond i64 loads as text; keep that meaning.
            (None, _) if n.is_u64() => quoted(&n.to_string()),
            (None, Some(f)) => float(f),
            (None, None) => quoted(&n.to_string()),
        },
        Json::String(s) => scalar_str(s),
        Json::Array(_) => "[]".into(),
        Json::Object(_) => "{}".into(),
    }
}

/// A float in YAML 1.1 syntax, which needs a dot (`1e20` would be text).
fn float(f: f64) -> String {
    let t = format!("{f:?}");
    match t.split_once('e') {
        Some((mantissa, exp)) => {
            let mantissa = if mantissa.contains('.') {
                mantissa.to_string()
            } else {
                format!("{mantissa}.0")
            };
            let exp = if exp.starts_with('-') {
                exp.to_string()
            } else {
                format!("+{exp}")
            };
            format!("{mantissa}e{exp}")
        }
        None => t,
    }
}

/// A string, plain when that reads back as the same string.
fn scalar_str(s: &str) -> String {
    if plain_ok(s) {
        s.to_string()
    } else {
        quoted(s)
    }
}

/// JSON string syntax is valid YAML double-quoted syntax.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    // Would it load as something else (bool, number, null)?
    if !matches!(node::resolve_plain(s), Value::Str(_)) {
        return false;
    }
    if s.starts_with(' ') || s.ends_with(' ') || s.ends_with(':') {
        return false;
    }
    if s.contains(": ") || s.contains(" #") {
        return false;
    }
    if s.chars().any(|c| c.is_control() || c == '\u{feff}') {
        return false;
    }
    // Indicators may not start a plain scalar; `-x` is fine, `- x` is not.
    match first {
        '-' => s[1..].starts_with(|c: char| c.is_ascii_alphanumeric()),
        '?' | ':' | ',' | '[' | ']' | '{' | '}' | '#' | '&' | '*' | '!' | '|' | '>' | '\''
        | '"' | '%' | '@' | '`' => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::super::load::parse_str;
    use super::*;
    use serde_json::json;

    fn round_trip(v: &Json) {
        let text = to_yaml(v);
        let back = parse_str(&text, "t.yaml")
            .unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
            .to_json();
        assert_eq!(&back, v, "\n---\n{text}");
    }

    #[test]
    fn tricky_scalars_round_trip() {
        let strings = [
            "on",
            "off",
            "yes",
            "No",
            "true",
            "null",
            "~",
            "",
            " x",
            "x ",
            "1",
            "1.0",
            "0644",
            "0x1F",
            ".inf",
            "1e3",
            "a: b",
            "a #b",
            "#x",
            "- x",
            "-x",
            "--x",
            "-",
            "---",
            "x:",
            "key:value",
            "tcp::2222-:22",
            "file=/a,b",
            "[a]",
            "{a}",
            "*x",
            "&x",
            "!x",
            "|",
            ">",
            "'q'",
            "\"q\"",
            "%x",
            "@x",
            "`x",
            "line\nbreak",
            "tab\there",
            "ünïcode",
            "?x",
            ":x",
            "y",
            "n",
            "52:54:00:12:34:56",
            "1:30",
            "99999999999999999999",
        ];
        let v = json!({
            "strings": strings.to_vec(),
            "as_keys": strings.iter().filter(|s| !s.is_empty()).map(|s| (s.to_string(), json!(1))).collect::<serde_json::Map<_, _>>(),
        });
        round_trip(&v);
    }

    #[test]
    fn numbers_and_structures_round_trip() {
        round_trip(&json!({
            "ints": [0, -3, 512, i64::MAX, i64::MIN],
            "floats": [1.0, 1.5, -2.5, 1e20, 1.5e-7, 0.1],
            "bools": [true, false],
            "null": null,
            "empty_map": {},
            "empty_list": [],
            "nested": [[1, [2, {"a": [3]}]], {"x": {"y": {"z": null}}}],
            "arguments": [
                {"accel": "tcg"},
                "nodefaults",
                {"netdev": {"user": null, "id": "n0", "hostfwd": "tcp::2222-:22"}},
                {"display": "gtk", "zoom-to-fit": "on"},
                {"device": ["a", "b"]},
                {"foo": {}},
            ],
        }));
    }

    #[test]
    fn readable_output() {
        let text = to_yaml(&json!({
            "memory": "256M",
            "cpu": 2,
            "storage": [{"name": "hdd", "size": "2G"}],
            "arguments": [{"accel": "tcg"}, "nodefaults", {"vga": "on"}],
        }));
        assert_eq!(
            text,
            "memory: 256M\ncpu: 2\nstorage:\n  - name: hdd\n    size: 2G\narguments:\n  - accel: tcg\n  - nodefaults\n  - vga: \"on\"\n"
        );
    }

    #[test]
    fn floats_need_a_dot() {
        assert_eq!(float(1e20), "1.0e+20");
        assert_eq!(float(1.5e-7), "1.5e-7");
        assert_eq!(float(2.0), "2.0");
    }
}
