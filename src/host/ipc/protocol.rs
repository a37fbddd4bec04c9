//! Wire types of the runner protocol, shared by client and server.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest request line the runner accepts. Replies are not capped (a QMP
/// schema is several hundred KiB).
pub const MAX_REQUEST_LINE: usize = 1 << 20;

/// The protocol version this build speaks; the runner reports it in its
/// `status` reply. Version 1 is the runner before typed requests: its
/// status reply has no `protocol` key. See [`Need::since`] for what each
/// version offers.
pub const PROTOCOL: u32 = 6;

/// The version a `status` reply without `protocol` stands for.
pub const PROTOCOL_UNTYPED: u32 = 1;

/// Method names, in one place so the server's "unknown method" error can list them.
pub const METHODS: &[&str] = &[
    "status",
    "qmp",
    "stop",
    "events",
    "console",
    "snapshot",
    "companion_failed",
    "suspend",
    "forward",
];

/// One request, as both sides see it. On the wire it is the `method` and
/// `params` of the JSON line `{"id":N,"method":…,"params":…}` (serde's
/// adjacent tagging); the server reads it with [`Call::from_wire`], which
/// keeps the precise error messages and the range checks.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "method", content = "params", rename_all = "snake_case")]
pub enum Call {
    /// The runner's [`StatusInfo`].
    Status,
    /// One QMP command, behind maqet's policy; the result is QEMU's `return`.
    Qmp(QmpParams),
    /// Stop the VM; answered with a [`StopResult`] once QEMU has exited.
    Stop(StopParams),
    /// Answered with a [`StreamStart`], then the connection streams events.
    Events,
    /// Answered with a [`StreamStart`], then the connection is the console.
    Console(ConsoleParams),
    /// A live snapshot job the runner runs to its end, freezing the guest's
    /// file systems around a save; answered with a [`SnapshotResult`].
    Snapshot(SnapshotParams),
    /// A helper unit of the VM (swtpm) ended in failure: the VM cannot run
    /// on without it. Sent by the helper unit's `ExecStopPost=`; answered
    /// with `null` once the runner took it.
    CompanionFailed(CompanionFailure),
    /// Save the VM's running state to its state file and end the VM
    /// (protocol 5); answered with a [`SuspendResult`] — once QEMU has
    /// exited after a save, at once when the save failed and the VM runs on.
    Suspend,
    /// Adds or removes a port forward of the VM's user-mode network while
    /// it runs (protocol 6); answered with a [`ForwardReply`] once QEMU
    /// has it and the port plan says so.
    Forward(ForwardParams),
}

/// What a caller may need from a runner. Requests map to one each
/// ([`Call::need`]); features that are not requests have their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Status,
    Qmp,
    Stop,
    Events,
    Console,
    /// The per-VM QMP socket for standard QMP clients.
    QmpEndpoint,
    Snapshot,
    /// `stop` asking the guest agent first (the runner does it and says so).
    AgentStop,
    CompanionFailed,
    Suspend,
    /// Port forwards changed while the VM runs (`maqet ports add|rm`).
    Forward,
}

impl Need {
    /// The compatibility rule, in one place: the first protocol version
    /// whose runner offers this. A client asks for the runner's version
    /// only when this is above [`PROTOCOL_UNTYPED`] (every runner speaks 1).
    pub fn since(self) -> u32 {
        match self {
            Need::Status | Need::Qmp | Need::Stop | Need::Events | Need::Console => 1,
            Need::QmpEndpoint => 2,
            Need::Snapshot => 3,
            Need::AgentStop | Need::CompanionFailed => 4,
            Need::Suspend => 5,
            Need::Forward => 6,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Need::Status => "the status request",
            Need::Qmp => "the qmp request",
            Need::Stop => "the stop request",
            Need::Events => "the events request",
            Need::Console => "the console request",
            Need::QmpEndpoint => "the QMP socket for standard QMP clients",
            Need::Snapshot => {
                "a live snapshot run by the runner (with the guest's file systems frozen)"
            }
            Need::AgentStop => "a stop through the guest agent run by the runner",
            Need::CompanionFailed => "the companion_failed request",
            Need::Suspend => "saving the VM's running state (maqet suspend)",
            Need::Forward => "changing port forwards while the VM runs",
        }
    }
}

impl Call {
    pub fn method(&self) -> &'static str {
        match self {
            Call::Status => "status",
            Call::Qmp(_) => "qmp",
            Call::Stop(_) => "stop",
            Call::Events => "events",
            Call::Console(_) => "console",
            Call::Snapshot(_) => "snapshot",
            Call::CompanionFailed(_) => "companion_failed",
            Call::Suspend => "suspend",
            Call::Forward(_) => "forward",
        }
    }

    pub fn need(&self) -> Need {
        match self {
            Call::Status => Need::Status,
            Call::Qmp(_) => Need::Qmp,
            Call::Stop(p) if p.agent => Need::AgentStop,
            Call::Stop(_) => Need::Stop,
            Call::Events => Need::Events,
            Call::Console(_) => Need::Console,
            Call::Snapshot(_) => Need::Snapshot,
            Call::CompanionFailed(_) => Need::CompanionFailed,
            Call::Suspend => Need::Suspend,
            Call::Forward(_) => Need::Forward,
        }
    }

    /// Reads a request's method and params strictly: unknown methods and
    /// fields, params that are not objects, out-of-range stop timeouts and
    /// malformed QMP command names are `bad_request` errors that quote at
    /// most an excerpt of the input. maqet's QMP policy is the runner's.
    pub fn from_wire(method: &str, params: Value) -> Result<Call, ErrorBody> {
        let bad = |m: String| ErrorBody::new(ErrorKind::BadRequest, m);
        match method {
            "status" => no_params("status", params).map(|()| Call::Status),
            "events" => no_params("events", params).map(|()| Call::Events),
            "qmp" => QmpParams::from_params(params).map(Call::Qmp),
            "stop" => StopParams::from_params(params).map(Call::Stop).map_err(bad),
            "console" => ConsoleParams::from_params(params).map(Call::Console),
            "snapshot" => SnapshotParams::from_params(params)
                .map(Call::Snapshot)
                .map_err(bad),
            "companion_failed" => CompanionFailure::from_params(params)
                .map(Call::CompanionFailed)
                .map_err(bad),
            "suspend" => no_params("suspend", params).map(|()| Call::Suspend),
            "forward" => ForwardParams::from_params(params)
                .map(Call::Forward)
                .map_err(bad),
            other => Err(bad(format!(
                "unknown method '{}'; known: {}",
                excerpt(other, 64),
                METHODS.join(", ")
            ))),
        }
    }
}

/// Methods without params accept none, `null` or `{}`.
fn no_params(method: &str, params: Value) -> Result<(), ErrorBody> {
    match params {
        Value::Null => Ok(()),
        Value::Object(m) if m.is_empty() => Ok(()),
        _ => Err(ErrorBody::new(
            ErrorKind::BadRequest,
            format!("{method} takes no params"),
        )),
    }
}

/// The wire envelope of a request. Unknown fields are refused here and in
/// the params types: a misspelt `timeout` must not silently become the
/// default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub id: u64,
    pub method: String,
    #[serde(default)]
    pub params: Value,
}

/// A request as the client writes it.
#[derive(Debug, Serialize)]
pub struct Outgoing<'a> {
    pub id: u64,
    #[serde(flatten)]
    pub call: &'a Call,
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
    /// The request clashes with the VM's state (protocol 6: a port that is
    /// taken or already forwarded).
    Conflict,
    /// What the request names is not there (protocol 6: no such forward).
    NotFound,
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
    /// The runner's protocol version; absent from a version-1 runner.
    #[serde(default = "untyped")]
    pub protocol: u32,
    /// The maqet version the runner was built as; absent before protocol 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maqet_version: Option<String>,
    /// The QMP socket the runner serves for standard QMP clients; absent
    /// when it serves none (protocol 1, or a unit created without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qmp_socket: Option<std::path::PathBuf>,
}

fn untyped() -> u32 {
    PROTOCOL_UNTYPED
}

/// `stop` result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StopResult {
    pub outcome: StopOutcome,
    /// [`StopOutcome::describe`], for clients that only print it.
    pub message: String,
}

/// The reply to `events` and `console` before the connection turns into a
/// stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StreamStart {
    /// `false` for a console dump: the runner hangs up after the replay.
    pub streaming: bool,
    /// Console only: how many replayed bytes follow the reply line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_bytes: Option<usize>,
}

/// Which live snapshot job a `snapshot` request runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotJob {
    /// QMP `snapshot-save`, with the guest's file systems frozen around it
    /// when `freeze` is set and the guest agent answers.
    Save,
    /// QMP `snapshot-load`; a guest that was saved frozen is thawed after.
    Load,
}

/// `snapshot` params: the job's tag, the node that holds the VM state and
/// every writable disk's node (the client picks them from `query-block`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SnapshotParams {
    pub job: SnapshotJob,
    pub tag: String,
    pub vmstate: String,
    pub devices: Vec<String>,
    /// Freeze the guest's file systems around a save (ignored by a load).
    #[serde(default)]
    pub freeze: bool,
}

impl SnapshotParams {
    pub fn from_params(params: Value) -> Result<SnapshotParams, String> {
        if !params.is_object() {
            return Err(not_an_object("snapshot", &params));
        }
        let p: SnapshotParams = serde_json::from_value(params)
            .map_err(|e| format!("snapshot params: {}", excerpt(&e.to_string(), 200)))?;
        if p.tag.is_empty() || p.vmstate.is_empty() || p.devices.is_empty() {
            return Err("snapshot params: tag, vmstate and devices must not be empty".into());
        }
        Ok(p)
    }
}

/// `snapshot` result. A failed job is a result, not an error reply: what
/// happened to the guest's file systems must reach the caller either way.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotResult {
    /// QEMU's (or the runner's) words when the job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub freeze: FreezeReport,
}

/// What the runner did with the guest's file systems.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct FreezeReport {
    /// The VM has a guest agent channel (`guest_agent: true` at its start).
    pub agent: bool,
    /// The file systems were frozen during the save.
    pub frozen: bool,
    /// How many file systems the agent froze.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystems: Option<u64>,
    /// Why a VM with an agent was saved unfrozen; after a load, why it is
    /// unknown whether the loaded guest is frozen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The thaw after the save (or after a load of a frozen state) failed:
    /// the guest's file systems may still be frozen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thaw_error: Option<String>,
    /// After a load: how many file systems were thawed because the loaded
    /// state had them frozen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thawed_after_load: Option<u64>,
}

/// `suspend` result. A failed save is a result, not an error reply: the
/// caller needs to know whether the VM runs on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SuspendResult {
    /// The saved state, when the save completed (QEMU has exited then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<SavedInfo>,
    /// Why the save failed; the runner's words, naming the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// After a failed save: QEMU's run state now (the guest continues as it
    /// was before the save).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_state: Option<String>,
}

/// A completed save, as the runner recorded it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SavedInfo {
    pub path: std::path::PathBuf,
    /// Bytes of the state file.
    pub size: u64,
    /// Unix seconds.
    pub saved_at: i64,
    /// From pausing the guest to the synced, recorded file.
    pub save_ms: u64,
    /// What a resume continues: `running` or `paused`.
    pub run_state: String,
    pub qemu_version: String,
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
    /// Ask the guest agent to power the guest off first (protocol 4; never
    /// with `force`). Absent from older clients' requests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub agent: bool,
}

/// What a `forward` request does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ForwardOp {
    Add,
    Remove,
}

/// `forward` params: the host side of a forward (protocol, loopback
/// address, port) and, to add one, the guest port. The runner checks them
/// again (loopback only, no privileged host port) and refuses a host side
/// that is forwarded or taken.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardParams {
    pub op: ForwardOp,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub host_addr: std::net::Ipv4Addr,
    pub host_port: u16,
    /// Needed to add; to remove, when given, it must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_port: Option<u16>,
}

impl ForwardParams {
    pub fn from_params(params: Value) -> Result<ForwardParams, String> {
        if !params.is_object() {
            return Err(not_an_object("forward", &params));
        }
        let p: ForwardParams = serde_json::from_value(params)
            .map_err(|e| format!("forward params: {}", excerpt(&e.to_string(), 200)))?;
        if p.protocol != "tcp" && p.protocol != "udp" {
            return Err(format!(
                "forward params: protocol must be tcp or udp, not '{}'",
                excerpt(&p.protocol, 16)
            ));
        }
        if !p.host_addr.is_loopback() {
            return Err(format!(
                "forward params: host address {} is not a loopback address; forwards listen on 127.0.0.0/8 only",
                p.host_addr
            ));
        }
        if p.host_port == 0 || p.guest_port == Some(0) {
            return Err("forward params: ports are 1 to 65535".into());
        }
        if p.op == ForwardOp::Add && p.guest_port.is_none() {
            return Err("forward params: adding a forward needs guest_port".into());
        }
        Ok(p)
    }
}

/// `forward` result: the forward as it is now (added) or was (removed),
/// and the VM's forwards after the change, as `STATUS=` shows them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ForwardReply {
    pub protocol: String,
    pub host_addr: std::net::Ipv4Addr,
    pub host_port: u16,
    pub guest_port: u16,
    pub summary: String,
}

/// Longest `stop` timeout the runner accepts: a day, the same bound as the
/// config's `shutdown_timeout`. Longer ones are refused, not saturated, so
/// a typo (`1e9`) is an error rather than a stop that never ends.
pub const MAX_STOP_TIMEOUT_SECS: f64 = 86_400.0;

impl StopParams {
    pub fn new(timeout: Option<Duration>, force: bool) -> StopParams {
        StopParams {
            timeout: timeout.map(|t| t.as_secs_f64()),
            force,
            agent: false,
        }
    }

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

/// `companion_failed` params: which helper unit ended, how (systemd's
/// `SERVICE_RESULT`, `EXIT_CODE`, `EXIT_STATUS` as its `ExecStopPost=`
/// got them), and when (µs since the epoch), so a runner that started
/// after that ignores it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CompanionFailure {
    pub unit: String,
    pub result: String,
    #[serde(default)]
    pub exit_code: String,
    #[serde(default)]
    pub exit_status: String,
    pub at_usec: u64,
}

impl CompanionFailure {
    pub fn from_params(params: Value) -> Result<CompanionFailure, String> {
        if !params.is_object() {
            return Err(not_an_object("companion_failed", &params));
        }
        let p: CompanionFailure = serde_json::from_value(params)
            .map_err(|e| format!("companion_failed params: {}", excerpt(&e.to_string(), 200)))?;
        let short = |s: &str| s.len() <= 256;
        if !(short(&p.unit) && short(&p.result) && short(&p.exit_code) && short(&p.exit_status)) {
            return Err("companion_failed params: a field is longer than 256 bytes".into());
        }
        Ok(p)
    }

    /// "maqet-tpm@w.service failed (exit-code: swtpm's relay exited with
    /// status 137, killed by SIGKILL)".
    pub fn describe(&self) -> String {
        let how = match (self.exit_code.as_str(), self.exit_status.parse::<i32>()) {
            ("exited", Ok(n)) if n > 128 && n <= 128 + 64 => format!(
                ", its process exited with status {n}: killed by {}",
                maqet_base::units::signal_name(n - 128)
            ),
            ("exited", Ok(n)) => format!(", its process exited with status {n}"),
            ("killed" | "dumped", _) => {
                format!(", its process was killed by SIG{}", self.exit_status)
            }
            _ => String::new(),
        };
        format!("{} failed ({}{how})", self.unit, self.result)
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
    /// The guest powered off after the guest agent's shutdown request
    /// (protocol 4: only in reply to a `stop` with `agent`).
    Agent,
    /// QEMU ended on a signal someone else sent it (QMP SHUTDOWN reason
    /// `host-signal`, e.g. `systemctl --user kill`) while the stop ran.
    Signalled,
}

impl StopOutcome {
    pub fn describe(self) -> &'static str {
        match self {
            StopOutcome::Powerdown => "guest powered off (ACPI power-down)",
            StopOutcome::Quit => "guest did not power off in time; QEMU was told to quit",
            StopOutcome::Killed => "QEMU was killed",
            StopOutcome::AlreadyStopped => "QEMU had already exited",
            StopOutcome::Agent => "guest powered off (guest agent shutdown)",
            StopOutcome::Signalled => {
                "QEMU was ended by a signal sent to it, not by the guest or maqet (QMP SHUTDOWN reason host-signal)"
            }
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

impl ConsoleParams {
    /// Reads `console` params; `null` (no params) means the defaults.
    pub fn from_params(params: Value) -> Result<ConsoleParams, ErrorBody> {
        let bad = |m: String| ErrorBody::new(ErrorKind::BadRequest, m);
        match params {
            Value::Null => Ok(ConsoleParams {
                replay: false,
                follow: true,
            }),
            Value::Object(_) => serde_json::from_value(params)
                .map_err(|e| bad(format!("console params: {}", excerpt(&e.to_string(), 200)))),
            _ => Err(bad(not_an_object("console", &params))),
        }
    }
}

/// `qmp` params.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QmpParams {
    pub execute: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
}

impl QmpParams {
    /// Reads `qmp` params: a well-formed command name and, if present, an
    /// arguments object.
    pub fn from_params(params: Value) -> Result<QmpParams, ErrorBody> {
        const SHAPE: &str = "(expected {\"execute\": NAME, \"arguments\": {…}})";
        let bad = |m: String| ErrorBody::new(ErrorKind::BadRequest, m);
        if !params.is_object() {
            return Err(bad(format!("{} {SHAPE}", not_an_object("qmp", &params))));
        }
        let p: QmpParams = serde_json::from_value(params).map_err(|e| {
            bad(format!(
                "qmp params: {} {SHAPE}",
                excerpt(&e.to_string(), 200)
            ))
        })?;
        if p.arguments.as_ref().is_some_and(|a| !a.is_object()) {
            return Err(bad("QMP arguments must be a JSON object".into()));
        }
        if !valid_qmp_command(&p.execute) {
            return Err(bad(format!(
                "'{}' is not a QMP command name (lower-case letters, digits, '-' and '_')",
                excerpt(&p.execute, 64)
            )));
        }
        Ok(p)
    }
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

pub use maqet_base::suggest::excerpt;

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
        let call = Call::from_wire(&r.method, r.params).unwrap();
        let Call::Qmp(p) = &call else {
            panic!("{call:?}")
        };
        assert_eq!(p.execute, "query-status");
        let bare: Request = serde_json::from_str(r#"{"id":2,"method":"status"}"#).unwrap();
        assert!(bare.params.is_null());
    }

    /// What the client writes is what the server reads, and the wire
    /// format is the one protocol-1 runners read.
    #[test]
    fn every_call_round_trips_in_the_version_1_format() {
        let calls = [
            (Call::Status, json!({"id": 7, "method": "status"})),
            (Call::Events, json!({"id": 7, "method": "events"})),
            (
                Call::Qmp(QmpParams {
                    execute: "query-status".into(),
                    arguments: None,
                }),
                json!({"id": 7, "method": "qmp", "params": {"execute": "query-status"}}),
            ),
            (
                Call::Stop(StopParams::new(Some(Duration::from_millis(2500)), true)),
                json!({"id": 7, "method": "stop", "params": {"timeout": 2.5, "force": true}}),
            ),
            (
                Call::Console(ConsoleParams {
                    replay: true,
                    follow: false,
                }),
                json!({"id": 7, "method": "console", "params": {"replay": true, "follow": false}}),
            ),
        ];
        for (call, wire) in calls {
            let text = serde_json::to_string(&Outgoing { id: 7, call: &call }).unwrap();
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), wire);
            let r: Request = serde_json::from_str(&text).unwrap();
            assert_eq!(r.method, call.method());
            assert_eq!(Call::from_wire(&r.method, r.params).unwrap(), call);
            assert_eq!(call.need().since(), PROTOCOL_UNTYPED, "{call:?}");
        }
    }

    #[test]
    fn snapshot_requests_need_protocol_3_and_are_checked() {
        let call = Call::Snapshot(SnapshotParams {
            job: SnapshotJob::Save,
            tag: "s1".into(),
            vmstate: "#block1".into(),
            devices: vec!["#block1".into()],
            freeze: true,
        });
        let text = serde_json::to_string(&Outgoing { id: 1, call: &call }).unwrap();
        let r: Request = serde_json::from_str(&text).unwrap();
        assert_eq!(r.method, "snapshot");
        assert_eq!(Call::from_wire(&r.method, r.params).unwrap(), call);
        assert_eq!(call.need().since(), 3);
        assert!(call.need().since() <= PROTOCOL);
        let ok = json!({"job": "load", "tag": "s", "vmstate": "n", "devices": ["n"]});
        let Call::Snapshot(p) = Call::from_wire("snapshot", ok).unwrap() else {
            panic!()
        };
        assert!(!p.freeze, "freeze defaults to off");
        for bad in [
            json!({"job": "save", "tag": "", "vmstate": "n", "devices": ["n"]}),
            json!({"job": "save", "tag": "s", "vmstate": "n", "devices": []}),
            json!({"job": "revert", "tag": "s", "vmstate": "n", "devices": ["n"]}),
            json!({"job": "save", "tag": "s", "vmstate": "n", "devices": ["n"], "frozen": 1}),
            json!("save"),
        ] {
            let e = Call::from_wire("snapshot", bad.clone()).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadRequest, "{bad}");
        }
    }

    #[test]
    fn calls_without_params_refuse_params() {
        assert_eq!(Call::from_wire("status", json!({})).unwrap(), Call::Status);
        for p in [json!({"x": 1}), json!([]), json!("x")] {
            let e = Call::from_wire("events", p).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadRequest);
        }
        let e = Call::from_wire("selfdestruct", Value::Null).unwrap_err();
        assert!(e.message.contains("unknown method 'selfdestruct'"), "{e:?}");
    }

    #[test]
    fn version_1_status_replies_read_as_protocol_1() {
        let v1 = json!({"vm": "a", "runner_pid": 1, "qemu_pid": 2, "qemu_version": "9.2.0",
            "run_state": "running", "ready_at": 5});
        let s: StatusInfo = serde_json::from_value(v1).unwrap();
        assert_eq!((s.protocol, s.maqet_version, s.qmp_socket), (1, None, None));
        assert!(Need::QmpEndpoint.since() > s.protocol);
        assert!(Need::QmpEndpoint.since() <= PROTOCOL);
    }

    #[test]
    fn protocol_4_adds_the_agent_stop_and_companion_failures() {
        let Call::Stop(p) = Call::from_wire("stop", json!({"agent": true})).unwrap() else {
            panic!()
        };
        assert!(p.agent);
        assert_eq!(Call::Stop(p).need(), Need::AgentStop);
        assert_eq!(Need::AgentStop.since(), 4);
        // Older clients' stops are unchanged on the wire.
        let plain = serde_json::to_value(Call::Stop(StopParams::new(None, true))).unwrap();
        assert_eq!(plain, json!({"method": "stop", "params": {"force": true}}));
        assert_eq!(Call::Stop(StopParams::default()).need(), Need::Stop);

        let ok = json!({"unit": "maqet-tpm@w.service", "result": "exit-code",
            "exit_code": "exited", "exit_status": "137", "at_usec": 5});
        let Call::CompanionFailed(f) = Call::from_wire("companion_failed", ok).unwrap() else {
            panic!()
        };
        assert_eq!(
            f.describe(),
            "maqet-tpm@w.service failed (exit-code, its process exited with status 137: killed by SIGKILL)"
        );
        assert_eq!(Call::CompanionFailed(f).need().since(), 4);
        for bad in [
            json!({"unit": "u", "result": "r"}),
            json!({"unit": "u", "result": "r", "at_usec": 1, "extra": 1}),
            json!({"unit": "u".repeat(300), "result": "r", "at_usec": 1}),
            json!("u"),
        ] {
            let e = Call::from_wire("companion_failed", bad.clone()).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadRequest, "{bad}");
        }
        assert!(METHODS.contains(&"companion_failed"));
    }

    #[test]
    fn protocol_5_adds_suspend() {
        let call = Call::from_wire("suspend", Value::Null).unwrap();
        assert_eq!(call, Call::Suspend);
        assert_eq!(call.need(), Need::Suspend);
        assert_eq!(Need::Suspend.since(), 5);
        let text = serde_json::to_string(&Outgoing { id: 9, call: &call }).unwrap();
        assert_eq!(text, r#"{"id":9,"method":"suspend"}"#);
        assert!(METHODS.contains(&"suspend"));
        let e = Call::from_wire("suspend", json!({"now": true})).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        // A failed save says why and how the VM is; a completed one what was saved.
        let failed: SuspendResult =
            serde_json::from_value(json!({"error": "no space left in /d", "run_state": "running"}))
                .unwrap();
        assert_eq!(failed.saved, None);
        let done = SuspendResult {
            saved: Some(SavedInfo {
                path: "/d/state.sav".into(),
                size: 5,
                saved_at: 1,
                save_ms: 2,
                run_state: "running".into(),
                qemu_version: "7.2.22".into(),
            }),
            error: None,
            run_state: None,
        };
        let v = serde_json::to_value(&done).unwrap();
        assert_eq!(v["saved"]["size"], 5);
        assert!(v.get("error").is_none());
    }

    #[test]
    fn protocol_6_adds_forwards_which_are_checked() {
        let call = Call::Forward(ForwardParams {
            op: ForwardOp::Add,
            protocol: "tcp".into(),
            host_addr: std::net::Ipv4Addr::LOCALHOST,
            host_port: 8080,
            guest_port: Some(80),
        });
        let text = serde_json::to_string(&Outgoing { id: 1, call: &call }).unwrap();
        let r: Request = serde_json::from_str(&text).unwrap();
        assert_eq!(r.method, "forward");
        assert_eq!(Call::from_wire(&r.method, r.params).unwrap(), call);
        assert_eq!(call.need(), Need::Forward);
        assert_eq!(Need::Forward.since(), 6);
        assert_eq!(PROTOCOL, 6);
        let rm =
            json!({"op": "remove", "protocol": "udp", "host_addr": "127.0.0.2", "host_port": 5353});
        let Call::Forward(p) = Call::from_wire("forward", rm).unwrap() else {
            panic!()
        };
        assert_eq!((p.op, p.guest_port), (ForwardOp::Remove, None));
        for bad in [
            json!({"op": "add", "protocol": "tcp", "host_addr": "127.0.0.1", "host_port": 8080}),
            json!({"op": "add", "protocol": "tcp", "host_addr": "0.0.0.0", "host_port": 8080, "guest_port": 80}),
            json!({"op": "add", "protocol": "tcp", "host_addr": "10.0.0.1", "host_port": 8080, "guest_port": 80}),
            json!({"op": "add", "protocol": "sctp", "host_addr": "127.0.0.1", "host_port": 8080, "guest_port": 80}),
            json!({"op": "add", "protocol": "tcp", "host_addr": "127.0.0.1", "host_port": 0, "guest_port": 80}),
            json!({"op": "add", "protocol": "tcp", "host_addr": "127.0.0.1", "host_port": 70000, "guest_port": 80}),
            json!({"op": "add", "protocol": "tcp", "host_addr": "::1", "host_port": 8080, "guest_port": 80}),
            json!({"op": "swap", "protocol": "tcp", "host_addr": "127.0.0.1", "host_port": 8080}),
            json!({"op": "remove", "protocol": "tcp", "host_addr": "127.0.0.1", "host_port": 8080, "x": 1}),
            json!([1]),
        ] {
            let e = Call::from_wire("forward", bad.clone()).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadRequest, "{bad}");
        }
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
