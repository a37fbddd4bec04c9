//! The marked config tree: every value remembers where it was written, so
//! validation can name file, line and column long after merging.
//!
//! Scalars are typed with the YAML 1.1 rules of the original's loader
//! (PyYAML): unquoted `on`/`off`/`yes`/`no`/`true`/`false` in lower, Title or
//! UPPER case are booleans. Like PyYAML, and unlike the YAML 1.1 spec's
//! table, `y`/`n` stay strings (`id: y` meant "y" to the original). Two
//! deliberate departures that only ever broke configs: leading-zero numbers
//! (`0644`) and colon-separated numbers (`52:54:00:12:34:56`, a MAC) stay
//! strings instead of becoming octal and base-60 integers.

use serde_json::{Map as JsonMap, Number, Value as Json};

use super::error::Location;

/// One config value with its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub loc: Location,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys are unique and keep their written order (the argv order).
    Map(Vec<Entry>),
}

/// A mapping entry. Keys are always text: an unquoted `on:` key stays "on".
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_loc: Location,
    pub value: Node,
}

impl Node {
    pub fn new(value: Value, loc: Location) -> Self {
        Node { value, loc }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// Looks a key up in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|e| e.key == key)
            .map(|e| &e.value)
    }

    /// A short name of the value's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The text a scalar contributes to a QEMU option; booleans are `on`/`off`
    /// (the original wrote Python's `True`/`False`, which QEMU rejects).
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Null => Some(String::new()),
            Value::Bool(b) => Some(if *b { "on" } else { "off" }.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(float_text(*f)),
            Value::Str(s) => Some(s.clone()),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }

    pub fn to_json(&self) -> Json {
        match &self.value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::Number((*i).into()),
            // JSON has no inf/nan; keep the YAML spelling as text.
            Value::Float(f) => Number::from_f64(*f)
                .map(Json::Number)
                .unwrap_or_else(|| Json::String(float_text(*f))),
            Value::Str(s) => Json::String(s.clone()),
            Value::Seq(items) => Json::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => {
                let mut m = JsonMap::new();
                for e in entries {
                    m.insert(e.key.clone(), e.value.to_json());
                }
                Json::Object(m)
            }
        }
    }

    /// Builds a tree from JSON; every node gets `loc` (JSON has no positions).
    pub fn from_json(v: &Json, loc: &Location) -> Node {
        let value = match v {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if n.is_u64() {
                    Value::Str(n.to_string())
                } else {
                    Value::Float(n.as_f64().unwrap_or(0.0))
                }
            }
            Json::String(s) => Value::Str(s.clone()),
            Json::Array(a) => Value::Seq(a.iter().map(|x| Node::from_json(x, loc)).collect()),
            Json::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, x)| Entry {
                        key: k.clone(),
                        key_loc: loc.clone(),
                        value: Node::from_json(x, loc),
                    })
                    .collect(),
            ),
        };
        Node::new(value, loc.clone())
    }

    /// Bytes of text in this subtree, keys and values (bounds alias
    /// expansion and what is stored); a number or boolean counts 8.
    pub fn bytes(&self) -> usize {
        match &self.value {
            Value::Str(s) => s.len(),
            Value::Seq(items) => items.iter().map(Node::bytes).sum(),
            Value::Map(entries) => entries.iter().map(|e| e.key.len() + e.value.bytes()).sum(),
            _ => 8,
        }
    }

    /// Number of nodes in this subtree (bounds alias expansion).
    pub fn size(&self) -> usize {
        1 + match &self.value {
            Value::Seq(items) => items.iter().map(Node::size).sum(),
            Value::Map(entries) => entries.iter().map(|e| e.value.size()).sum(),
            _ => 0,
        }
    }
}

/// Python-like float text (`1.0`, `2.5`), so numbers read as they were written.
fn float_text(f: f64) -> String {
    if f.is_nan() {
        ".nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { ".inf" } else { "-.inf" }.into()
    } else {
        format!("{f:?}")
    }
}

/// Types an unquoted, untagged scalar by the YAML 1.1 rules (see module doc).
pub(crate) fn resolve_plain(text: &str) -> Value {
    if is_null(text) {
        return Value::Null;
    }
    if let Some(b) = parse_bool(text) {
        return Value::Bool(b);
    }
    if let Some(v) = parse_int(text) {
        return v;
    }
    if let Some(f) = parse_float(text) {
        return Value::Float(f);
    }
    Value::Str(text.to_string())
}

pub(crate) fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// YAML 1.1 integers: decimal, `0x` hex and `0b` binary, `_` as separator.
/// Values beyond i64 stay text rather than losing digits.
pub(crate) fn parse_int(text: &str) -> Option<Value> {
    let (neg, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, digits) = if let Some(h) = body.strip_prefix("0x") {
        (16, h)
    } else if let Some(b) = body.strip_prefix("0b") {
        (2, b)
    } else {
        // Decimal: `0` or a non-zero first digit (a leading zero would be
        // YAML 1.1 octal, which we keep as a string on purpose).
        let first = body.chars().next()?;
        if !first.is_ascii_digit() || (first == '0' && body.len() > 1) {
            return None;
        }
        (10, body)
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || !digits.chars().all(|c| c == '_' || c.is_digit(radix))
    {
        return None;
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    if clean.is_empty() {
        return None;
    }
    let signed = if neg { format!("-{clean}") } else { clean };
    match i64::from_str_radix(&signed, radix) {
        Ok(i) => Some(Value::Int(i)),
        Err(_) => Some(Value::Str(text.to_string())),
    }
}

/// YAML 1.1 floats: they need a dot (`1.5`, `.5`, `1.`, `1.5e+3`), plus
/// `.inf`/`.nan`. `1e3` is a string in YAML 1.1.
pub(crate) fn parse_float(text: &str) -> Option<f64> {
    let (neg, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let sign = if neg { -1.0 } else { 1.0 };
    if matches!(body, ".inf" | ".Inf" | ".INF") {
        return Some(sign * f64::INFINITY);
    }
    if matches!(text, ".nan" | ".NaN" | ".NAN") {
        return Some(f64::NAN);
    }
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = mantissa.split_once('.')?;
    let digits_ok = |s: &str| s.chars().all(|c| c == '_' || c.is_ascii_digit());
    if !digits_ok(int_part) || !digits_ok(frac_part) {
        return None;
    }
    if int_part.starts_with('_') || (int_part.is_empty() && frac_part.is_empty()) {
        return None;
    }
    // `.5` needs digits after the dot; `1.` needs digits before it.
    if int_part.is_empty() && !frac_part.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if let Some(e) = exponent {
        let rest = e.strip_prefix(['+', '-'])?;
        if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
    }
    let clean: String = body.chars().filter(|c| *c != '_').collect();
    let clean = if clean.starts_with('.') {
        format!("0{clean}")
    } else {
        clean
    };
    clean.parse::<f64>().ok().map(|f| sign * f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml11_booleans() {
        for t in [
            "on", "On", "ON", "yes", "Yes", "YES", "true", "True", "TRUE",
        ] {
            assert_eq!(resolve_plain(t), Value::Bool(true), "{t}");
        }
        for t in [
            "off", "Off", "OFF", "no", "No", "NO", "false", "False", "FALSE",
        ] {
            assert_eq!(resolve_plain(t), Value::Bool(false), "{t}");
        }
        // PyYAML's table (the original's loader) has no y/n.
        for t in ["oN", "yES", "tRUE", "onn", "y", "Y", "n", "N"] {
            assert!(matches!(resolve_plain(t), Value::Str(_)), "{t}");
        }
    }

    #[test]
    fn nulls() {
        for t in ["", "~", "null", "Null", "NULL"] {
            assert_eq!(resolve_plain(t), Value::Null);
        }
        assert!(matches!(resolve_plain("nULL"), Value::Str(_)));
    }

    #[test]
    fn integers() {
        assert_eq!(resolve_plain("0"), Value::Int(0));
        assert_eq!(resolve_plain("512"), Value::Int(512));
        assert_eq!(resolve_plain("-3"), Value::Int(-3));
        assert_eq!(resolve_plain("+7"), Value::Int(7));
        assert_eq!(resolve_plain("1_000"), Value::Int(1000));
        assert_eq!(resolve_plain("0x1F"), Value::Int(31));
        assert_eq!(resolve_plain("0b101"), Value::Int(5));
        // Deliberate deviations: these stay text.
        assert_eq!(resolve_plain("0644"), Value::Str("0644".into()));
        assert_eq!(resolve_plain("1:30"), Value::Str("1:30".into()));
        assert_eq!(
            resolve_plain("52:54:00:12:34:56"),
            Value::Str("52:54:00:12:34:56".into())
        );
        assert_eq!(
            resolve_plain("99999999999999999999"),
            Value::Str("99999999999999999999".into())
        );
        for t in ["256M", "0x", "_1", "12a", "-", "0xZZ"] {
            assert!(
                !matches!(resolve_plain(t), Value::Int(_)),
                "{t} must not be an int"
            );
        }
    }

    #[test]
    fn floats() {
        assert_eq!(resolve_plain("1.5"), Value::Float(1.5));
        assert_eq!(resolve_plain("1."), Value::Float(1.0));
        assert_eq!(resolve_plain(".5"), Value::Float(0.5));
        assert_eq!(resolve_plain("-2.5e+2"), Value::Float(-250.0));
        assert_eq!(resolve_plain(".inf"), Value::Float(f64::INFINITY));
        assert!(matches!(resolve_plain(".nan"), Value::Float(f) if f.is_nan()));
        for t in ["1e3", "10.0.2.15", "1.2.3", ".", "1.5e3", "pc-q35-7.2"] {
            assert!(matches!(resolve_plain(t), Value::Str(_)), "{t}");
        }
    }

    #[test]
    fn scalar_text_renders_qemu_style() {
        let l = Location::default();
        assert_eq!(
            Node::new(Value::Bool(true), l.clone()).scalar_text(),
            Some("on".into())
        );
        assert_eq!(
            Node::new(Value::Bool(false), l.clone()).scalar_text(),
            Some("off".into())
        );
        assert_eq!(
            Node::new(Value::Int(2), l.clone()).scalar_text(),
            Some("2".into())
        );
        assert_eq!(
            Node::new(Value::Float(1.0), l.clone()).scalar_text(),
            Some("1.0".into())
        );
        assert_eq!(Node::new(Value::Seq(vec![]), l).scalar_text(), None);
    }

    #[test]
    fn json_round_trip_keeps_order_and_types() {
        let j: Json = serde_json::json!({"z": 1, "a": [true, null, "on", 2.5], "m": {"k": "v"}});
        let n = Node::from_json(&j, &Location::label("stored config"));
        assert_eq!(n.to_json(), j);
        let keys: Vec<_> = n.as_map().unwrap().iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["z", "a", "m"]);
    }

    #[test]
    fn non_finite_floats_become_text_in_json() {
        let n = Node::new(Value::Float(f64::INFINITY), Location::default());
        assert_eq!(n.to_json(), Json::String(".inf".into()));
    }
}
