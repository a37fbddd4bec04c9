//! D-Bus property values as JSON, for `maqet inspect --json`.
//!
//! systemd encodes "unset" and "infinity" of 64-bit counters and limits as
//! `u64::MAX` (`systemctl show` prints `[not set]` or `infinity`); they
//! become `null` here, so no consumer has to know that convention.

use serde_json::{json, Map, Value as Json};
use zbus::zvariant::Value;

pub fn to_json(v: &Value<'_>) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::U64(x) if *x == u64::MAX => Json::Null,
        Value::U64(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Str(s) => json!(s.as_str()),
        Value::Signature(s) => json!(s.to_string()),
        Value::ObjectPath(p) => json!(p.as_str()),
        Value::Value(inner) => to_json(inner),
        Value::Array(a) => {
            // `ay` is how systemd sends IDs (InvocationID): hex is readable.
            if a.element_signature() == "y" {
                let bytes: String = a
                    .iter()
                    .filter_map(|b| match b {
                        Value::U8(x) => Some(format!("{x:02x}")),
                        _ => None,
                    })
                    .collect();
                return json!(bytes);
            }
            Json::Array(a.iter().map(to_json).collect())
        }
        Value::Dict(d) => {
            let mut m = Map::new();
            for (k, v) in d.iter() {
                let key = match to_json(k) {
                    Json::String(s) => s,
                    other => other.to_string(),
                };
                m.insert(key, to_json(v));
            }
            Json::Object(m)
        }
        Value::Structure(s) => Json::Array(s.fields().iter().map(to_json).collect()),
        // File descriptors mean nothing outside this process.
        #[allow(unreachable_patterns)]
        _ => Json::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_systemd_shapes() {
        assert_eq!(to_json(&Value::from(5u64)), json!(5));
        assert_eq!(to_json(&Value::from(u64::MAX)), Json::Null);
        assert_eq!(to_json(&Value::from("x")), json!("x"));
        assert_eq!(to_json(&Value::from(vec![0xabu8, 0x01])), json!("ab01"));
        let listen = vec![("Stream".to_string(), "/run/x.sock".to_string())];
        assert_eq!(
            to_json(&Value::from(listen)),
            json!([["Stream", "/run/x.sock"]])
        );
        assert_eq!(
            to_json(&Value::from((vec![100i32], Vec::<i32>::new()))),
            json!([[100], []])
        );
    }
}
