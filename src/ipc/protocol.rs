//! Wire types of the runner protocol, shared by client and server.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest request line the runner accepts. Replies are not capped (a QMP
/// schema is several hundred KiB).
pub const MAX_REQUEST_LINE: usize = 1 << 20;

/// Method names, in one place so the server's "unknown method" error can list them.
pub const METHODS: &[&str] = &["status", "qmp", "stop", "events", "console"];

/// Unknown fields are refused here and in the params types: a misspelt
/// `timeout` must not silently become the default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub id: u64,
    pub method: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// QEMU answered with a QMP error (`class` is QEMU's error class).
    Qmp,
    /// The request was malformed or named an unknown method.
    BadRequest,
    /// maqet's QMP policy refused the command.
    Policy,
    /// QEMU is gone or not answering.
    Unavailable,
    Timeout,
    Internal,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    pub message: String,
}

impl ErrorBody {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorBody {
            kind,
            class: None,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Value>,
}

impl Response {
    pub fn result(id: u64, v: Value) -> Self {
        Response {
            id,
            result: Some(v),
            error: None,
            event: None,
        }
    }
    pub fn error(id: u64, e: ErrorBody) -> Self {
        Response {
            id,
            result: None,
            error: Some(e),
            event: None,
        }
    }
    pub fn event(id: u64, v: Value) -> Self {
        Response {
            id,
            result: None,
            error: None,
            event: Some(v),
        }
    }
}

/// `status` result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusInfo {
    pub vm: String,
    pub runner_pid: u32,
    pub qemu_pid: Option<u32>,
    pub qemu_version: String,
    /// QEMU's run state from `query-status` (`running`, `paused`, …).
    pub run_state: String,
    /// Unix seconds when QEMU answered QMP.
    pub ready_at: u64,
    /// The runner's data directory (canonical path), so a client can tell
    /// that the socket it reached is its own data directory's VM. Absent
    /// from runners that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
}

/// `stop` params.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct StopParams {
    /// Seconds to wait for the guest after ACPI power-down; the VM's
    /// `shutdown_timeout` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    #[serde(default)]
    pub force: bool,
}

/// Longest `stop` timeout the runner accepts: a day, the same bound as the
/// config's `shutdown_timeout`. Longer ones are refused, not saturated, so
/// a typo (`1e9`) is an error rather than a stop that never ends.
pub const MAX_STOP_TIMEOUT_SECS: f64 = 86_400.0;

impl StopParams {
    /// Reads `stop` params; `null` (no params) means the defaults.
    pub fn from_params(params: Value) -> Result<StopParams, String> {
        let p: StopParams = match params {
            Value::Null => StopParams::default(),
            Value::Object(_) => serde_json::from_value(params)
                .map_err(|e| format!("stop params: {}", excerpt(&e.to_string(), 200)))?,
            _ => return Err(not_an_object("stop", &params)),
        };
        p.timeout_duration()?;
        Ok(p)
    }

    /// The requested timeout as a `Duration`, or why it is out of range
    /// (negative, not finite or longer than [`MAX_STOP_TIMEOUT_SECS`]).
    pub fn timeout_duration(&self) -> Result<Option<Duration>, String> {
        match self.timeout {
            None => Ok(None),
            Some(t) if t.is_finite() && (0.0..=MAX_STOP_TIMEOUT_SECS).contains(&t) => {
                Ok(Some(Duration::from_secs_f64(t)))
            }
            Some(t) => Err(format!(
                "stop timeout must be between 0 and {MAX_STOP_TIMEOUT_SECS} seconds, not {t}"
            )),
        }
    }
}

/// How a stop ended; the runner replies with it once QEMU has exited.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StopOutcome {
    /// The guest powered off after ACPI power-down.
    Powerdown,
    /// The guest ignored power-down until the timeout; QEMU was told to quit.
    Quit,
    /// QEMU was killed (`--force`, or it ignored `quit`).
    Killed,
    /// QEMU had already exited.
    AlreadyStopped,
}

impl StopOutcome {
    pub fn describe(self) -> &'static str {
        match self {
            StopOutcome::Powerdown => "guest powered off (ACPI power-down)",
            StopOutcome::Quit => "guest did not power off in time; QEMU was told to quit",
            StopOutcome::Killed => "QEMU was killed",
            StopOutcome::AlreadyStopped => "QEMU had already exited",
        }
    }
}

/// `console` params. After the reply the connection carries raw bytes:
/// the replayed buffer (when `replay`), then the console's output (when
/// `follow`) one way and keyboard input the other.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleParams {
    /// Send the recently buffered output first.
    #[serde(default)]
    pub replay: bool,
    /// Stay attached for live output and input; `false` closes the
    /// connection after the replay (`maqet console --dump`).
    #[serde(default = "yes")]
    pub follow: bool,
}

fn yes() -> bool {
    true
}

/// `qmp` params.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QmpParams {
    pub execute: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
}

/// The error for params that are not a JSON object (serde would read a
/// struct from an array, by position).
pub fn not_an_object(method: &str, params: &Value) -> String {
    let found = match params {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    format!("{method} params must be a JSON object, not {found}")
}

/// `text` cut to at most `max` bytes (on a char boundary) for echoing
/// client input in an error message: a 1 MiB method name is not repeated.
pub fn excerpt(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// A QMP command name as QEMU spells them; anything else never reaches QEMU.
pub fn valid_qmp_command(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_round_trip() {
        let r: Request = serde_json::from_str(
            r#"{"id":1,"method":"qmp","params":{"execute":"query-status","arguments":{}}}"#,
        )
        .unwrap();
        assert_eq!(r.method, "qmp");
        let p: QmpParams = serde_json::from_value(r.params.clone()).unwrap();
        assert_eq!(p.execute, "query-status");
        let back: Request = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let bare: Request = serde_json::from_str(r#"{"id":2,"method":"status"}"#).unwrap();
        assert!(bare.params.is_null());
    }

    #[test]
    fn responses_serialize_only_their_part() {
        let ok = serde_json::to_value(Response::result(3, json!({"a":1}))).unwrap();
        assert_eq!(ok, json!({"id":3,"result":{"a":1}}));
        let mut body = ErrorBody::new(ErrorKind::Qmp, "no such device");
        body.class = Some("DeviceNotFound".into());
        let err = serde_json::to_value(Response::error(4, body)).unwrap();
        assert_eq!(
            err,
            json!({"id":4,"error":{"kind":"qmp","class":"DeviceNotFound","message":"no such device"}})
        );
    }

    #[test]
    fn qmp_command_names() {
        for ok in ["query-status", "system_powerdown", "x-query-foo", "quit"] {
            assert!(valid_qmp_command(ok), "{ok}");
        }
        for bad in ["", "Query", "1x", "a b", "a;b", "-x", "äx"] {
            assert!(!valid_qmp_command(bad), "{bad}");
        }
    }

    #[test]
    fn console_params_default_to_follow_without_replay() {
        let p: ConsoleParams = serde_json::from_value(json!({})).unwrap();
        assert_eq!(
            p,
            ConsoleParams {
                replay: false,
                follow: true
            }
        );
    }

    #[test]
    fn stop_timeouts_are_range_checked() {
        let ok = |v: Value| {
            StopParams::from_params(v)
                .unwrap()
                .timeout_duration()
                .unwrap()
        };
        assert_eq!(ok(Value::Null), None);
        assert_eq!(ok(json!({"timeout": 0})), Some(Duration::ZERO));
        assert_eq!(
            ok(json!({"timeout": 2.5})),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            ok(json!({"timeout": 86400})),
            Some(Duration::from_secs(86_400))
        );
        // 1e400 is not valid JSON for serde_json (it is an error there);
        // everything else that is a number but out of range is refused.
        for bad in [
            json!({"timeout": 1e20}),
            json!({"timeout": -1}),
            json!({"timeout": -0.001}),
            json!({"timeout": 86400.5}),
            json!({"timeout": u64::MAX}),
            json!({"timeout": i64::MIN}),
            json!({"timeout": f64::MAX}),
            json!({"timeout": "NaN"}),
            json!({"timeout": "inf"}),
            json!({"timeout": [1]}),
            json!({"force": "yes"}),
            json!("stop"),
            json!([1, 2]),
            json!(7),
        ] {
            let e = StopParams::from_params(bad.clone()).unwrap_err();
            assert!(e.contains("stop"), "{bad}: {e}");
        }
        assert!(serde_json::from_str::<Value>(r#"{"timeout": 1e400}"#).is_err());
    }

    #[test]
    fn excerpts_cut_on_char_boundaries() {
        assert_eq!(excerpt("abc", 5), "abc");
        let long = "é".repeat(100);
        let e = excerpt(&long, 5);
        assert!(e.starts_with("éé…"), "{e}");
        assert!(e.ends_with("(200 bytes)"), "{e}");
    }

    #[test]
    fn stop_params_default() {
        let p: StopParams = serde_json::from_value(json!({})).unwrap();
        assert_eq!(p, StopParams::default());
        let o: StopOutcome = serde_json::from_value(json!("powerdown")).unwrap();
        assert_eq!(o, StopOutcome::Powerdown);
    }
}
