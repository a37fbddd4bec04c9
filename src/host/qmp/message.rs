//! QMP wire messages and their parsing (pure functions, no I/O).

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use super::QmpError;

/// QEMU's version, from the greeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
    /// Distribution package string, e.g. "Debian 1:7.2+dfsg-7"; may be empty.
    pub package: String,
}

impl fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)?;
        if !self.package.is_empty() {
            write!(f, " ({})", self.package)?;
        }
        Ok(())
    }
}

/// An asynchronous event (SHUTDOWN, STOP, RESET, …).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QmpEvent {
    pub event: String,
    /// The event's `data`, or `Null` when QEMU sent none.
    pub data: Value,
    /// (seconds, microseconds) since the epoch, as QEMU stamped it.
    pub timestamp: Option<(i64, i64)>,
}

/// One message from QEMU.
#[derive(Debug, Clone, PartialEq)]
pub enum QmpMessage {
    Greeting {
        version: QemuVersion,
        capabilities: Vec<String>,
    },
    /// A successful reply; `id` echoes the command's id (absent if the command had none).
    Return {
        id: Option<Value>,
        value: Value,
    },
    /// A failed reply.
    Error {
        id: Option<Value>,
        class: String,
        desc: String,
    },
    Event(QmpEvent),
}

/// Parses one line received from QEMU.
pub fn parse_message(line: &str) -> Result<QmpMessage, QmpError> {
    let value: Value = serde_json::from_str(line)
        .map_err(|e| QmpError::Protocol(format!("invalid JSON ({e}): {}", excerpt(line))))?;
    classify(value)
}

/// Classifies an already parsed message (the reader parses once, then needs the id even when
/// classification fails).
pub(crate) fn classify(value: Value) -> Result<QmpMessage, QmpError> {
    let Value::Object(mut obj) = value else {
        return Err(unexpected(&value));
    };
    if let Some(value) = obj.remove("return") {
        return Ok(QmpMessage::Return {
            id: obj.remove("id"),
            value,
        });
    }
    if let Some(error) = obj.get("error") {
        let class = str_field(error, "class");
        let desc = str_field(error, "desc");
        let (Some(class), Some(desc)) = (class, desc) else {
            return Err(bad_field("error", &obj));
        };
        let (class, desc) = (class.to_owned(), desc.to_owned());
        return Ok(QmpMessage::Error {
            id: obj.remove("id"),
            class,
            desc,
        });
    }
    if let Some(event) = obj.get("event") {
        let Some(event) = event.as_str().map(str::to_owned) else {
            return Err(bad_field("event", &obj));
        };
        let timestamp = match obj.get("timestamp") {
            None => None,
            Some(ts) => match (int_field(ts, "seconds"), int_field(ts, "microseconds")) {
                (Some(s), Some(us)) => Some((s, us)),
                _ => return Err(bad_field("timestamp", &obj)),
            },
        };
        return Ok(QmpMessage::Event(QmpEvent {
            event,
            data: obj.remove("data").unwrap_or(Value::Null),
            timestamp,
        }));
    }
    if let Some(qmp) = obj.get("QMP") {
        return greeting(qmp).ok_or_else(|| bad_field("QMP", &obj));
    }
    Err(unexpected(&Value::Object(obj)))
}

fn greeting(qmp: &Value) -> Option<QmpMessage> {
    let version = qmp.get("version")?;
    let qemu = version.get("qemu")?;
    let num = |k| int_field(qemu, k).and_then(|n| u32::try_from(n).ok());
    let capabilities = qmp
        .get("capabilities")?
        .as_array()?
        .iter()
        .map(|c| c.as_str().map(str::to_owned))
        .collect::<Option<Vec<_>>>()?;
    Some(QmpMessage::Greeting {
        version: QemuVersion {
            major: num("major")?,
            minor: num("minor")?,
            micro: num("micro")?,
            package: str_field(version, "package").unwrap_or("").to_owned(),
        },
        capabilities,
    })
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)?.as_str()
}

fn int_field(v: &Value, key: &str) -> Option<i64> {
    v.get(key)?.as_i64()
}

fn bad_field(field: &str, obj: &Map<String, Value>) -> QmpError {
    QmpError::Protocol(format!(
        "malformed '{field}' in message: {}",
        excerpt(&Value::Object(obj.clone()).to_string())
    ))
}

fn unexpected(v: &Value) -> QmpError {
    QmpError::Protocol(format!("unexpected message: {}", excerpt(&v.to_string())))
}

/// Keeps error messages readable when QEMU sent something huge.
fn excerpt(s: &str) -> String {
    const MAX: usize = 200;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_greeting() {
        let m = parse_message(
            r#"{"QMP":{"version":{"qemu":{"micro":0,"minor":2,"major":7},"package":"Debian 1:7.2"},"capabilities":["oob"]}}"#,
        )
        .unwrap();
        let QmpMessage::Greeting {
            version,
            capabilities,
        } = m
        else {
            panic!("{m:?}")
        };
        assert_eq!(version.to_string(), "7.2.0 (Debian 1:7.2)");
        assert_eq!(capabilities, ["oob"]);
    }

    #[test]
    fn parses_return_and_error() {
        assert_eq!(
            parse_message(r#"{"return": {"status": "running"}, "id": 7}"#).unwrap(),
            QmpMessage::Return {
                id: Some(json!(7)),
                value: json!({"status": "running"})
            }
        );
        assert_eq!(
            parse_message(r#"{"return": {}}"#).unwrap(),
            QmpMessage::Return {
                id: None,
                value: json!({})
            }
        );
        assert_eq!(
            parse_message(r#"{"id": 3, "error": {"class": "GenericError", "desc": "no"}}"#)
                .unwrap(),
            QmpMessage::Error {
                id: Some(json!(3)),
                class: "GenericError".into(),
                desc: "no".into()
            }
        );
    }

    #[test]
    fn parses_events() {
        let m = parse_message(
            r#"{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"},
                "timestamp": {"seconds": 1700000000, "microseconds": 123456}}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            QmpMessage::Event(QmpEvent {
                event: "SHUTDOWN".into(),
                data: json!({"guest": true, "reason": "guest-shutdown"}),
                timestamp: Some((1_700_000_000, 123_456)),
            })
        );
        let m = parse_message(r#"{"event": "STOP"}"#).unwrap();
        assert_eq!(
            m,
            QmpMessage::Event(QmpEvent {
                event: "STOP".into(),
                data: Value::Null,
                timestamp: None
            })
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "not json",
            "[1, 2]",
            r#"{"hello": 1}"#,
            r#"{"error": {"class": 1}}"#,
            r#"{"event": 5}"#,
            r#"{"QMP": {"version": {}}}"#,
        ] {
            assert!(
                matches!(parse_message(bad), Err(QmpError::Protocol(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn excerpt_truncates_on_char_boundary() {
        let long = "é".repeat(500);
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), 201);
        assert!(e.ends_with('…'));
    }
}
