//! Wire types of the runner protocol, shared by client and server.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest request line the runner accepts. Replies are not capped (a QMP
/// schema is several hundred KiB).
pub const MAX_REQUEST_LINE: usize = 1 << 20;

/// Method names, in one place so the server's "unknown method" error can list them.
pub const METHODS: &[&str] = &["status", "qmp", "stop", "events", "console"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
pub struct StopParams {
    /// Seconds to wait for the guest after ACPI power-down; the VM's
    /// `shutdown_timeout` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    #[serde(default)]
    pub force: bool,
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
pub struct QmpParams {
    pub execute: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
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
    fn stop_params_default() {
        let p: StopParams = serde_json::from_value(json!({})).unwrap();
        assert_eq!(p, StopParams::default());
        let o: StopOutcome = serde_json::from_value(json!("powerdown")).unwrap();
        assert_eq!(o, StopOutcome::Powerdown);
    }
}
