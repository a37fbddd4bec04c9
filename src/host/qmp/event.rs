//! QMP events as types: what an event means, for the code that acts on it
//! (a reboot waits for [`EventKind::Reset`], `device_del` for
//! [`EventKind::DeviceDeleted`]), so no caller compares event names or
//! data fields as strings. The name and data stay in [`QmpEvent`] for
//! whoever shows them; the runner streams events to its clients in the
//! form [`QmpEvent::to_json`] writes and [`QmpEvent::from_json`] reads.

use serde_json::{json, Value};

use super::message::classify;
use super::{QmpError, QmpEvent, QmpMessage};

/// The runner's own event, sent in place of events a slow reader missed.
pub const EVENTS_LOST: &str = "MAQET_EVENTS_LOST";

/// Why QEMU shut down or reset: QMP's `ShutdownCause`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShutdownCause {
    None,
    HostError,
    HostQmpQuit,
    HostQmpSystemReset,
    HostSignal,
    HostUi,
    GuestShutdown,
    GuestReset,
    GuestPanic,
    SubsystemReset,
    SnapshotLoad,
    /// A cause this maqet does not know (a newer QEMU's).
    Other(String),
}

const CAUSES: [(&str, ShutdownCause); 11] = [
    ("none", ShutdownCause::None),
    ("host-error", ShutdownCause::HostError),
    ("host-qmp-quit", ShutdownCause::HostQmpQuit),
    ("host-qmp-system-reset", ShutdownCause::HostQmpSystemReset),
    ("host-signal", ShutdownCause::HostSignal),
    ("host-ui", ShutdownCause::HostUi),
    ("guest-shutdown", ShutdownCause::GuestShutdown),
    ("guest-reset", ShutdownCause::GuestReset),
    ("guest-panic", ShutdownCause::GuestPanic),
    ("subsystem-reset", ShutdownCause::SubsystemReset),
    ("snapshot-load", ShutdownCause::SnapshotLoad),
];

impl ShutdownCause {
    pub fn parse(s: &str) -> ShutdownCause {
        CAUSES
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| ShutdownCause::Other(s.to_string()))
    }

    /// QEMU's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            ShutdownCause::Other(s) => s,
            known => CAUSES
                .iter()
                .find(|(_, c)| c == known)
                .map(|(name, _)| *name)
                .unwrap_or("none"),
        }
    }
}

/// What an event says, for the events maqet acts on; every other event is
/// [`EventKind::Other`] (its name and data are in the [`QmpEvent`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// QEMU is shutting down (`guest`: the guest asked for it).
    Shutdown {
        guest: bool,
        reason: Option<ShutdownCause>,
    },
    /// The machine was reset (`guest`: by the guest, e.g. a reboot).
    Reset {
        guest: bool,
        reason: Option<ShutdownCause>,
    },
    /// The ACPI power button was pressed (`system_powerdown`).
    Powerdown,
    /// The CPUs stopped (paused, or an error state beginning).
    Stop,
    /// The CPUs run again.
    Resume,
    /// A device is gone: named by its id (`device`, absent for a device
    /// added without one) and by its QOM path.
    DeviceDeleted {
        device: Option<String>,
        path: Option<String>,
    },
    /// maqet's runner dropped `count` events for a reader that fell behind.
    EventsLost {
        count: u64,
    },
    Other,
}

impl EventKind {
    /// Whether this is the removal of device `id` (its id or QOM path).
    pub fn deleted(&self, id: &str) -> bool {
        match self {
            EventKind::DeviceDeleted { device, path } => {
                device.as_deref() == Some(id) || path.as_deref() == Some(id)
            }
            _ => false,
        }
    }
}

impl QmpEvent {
    /// What the event says (see [`EventKind`]).
    pub fn kind(&self) -> EventKind {
        let text = |k: &str| self.data.get(k).and_then(Value::as_str).map(str::to_string);
        let guest = self.data.get("guest").and_then(Value::as_bool) == Some(true);
        let reason = text("reason").map(|r| ShutdownCause::parse(&r));
        match self.event.as_str() {
            "SHUTDOWN" => EventKind::Shutdown { guest, reason },
            "RESET" => EventKind::Reset { guest, reason },
            "POWERDOWN" => EventKind::Powerdown,
            "STOP" => EventKind::Stop,
            "RESUME" => EventKind::Resume,
            "DEVICE_DELETED" => EventKind::DeviceDeleted {
                device: text("device"),
                path: text("path"),
            },
            EVENTS_LOST => EventKind::EventsLost {
                count: self.data.get("count").and_then(Value::as_u64).unwrap_or(0),
            },
            _ => EventKind::Other,
        }
    }

    /// The form the runner streams events in: QEMU's own (`event`, `data`,
    /// `timestamp` when QEMU stamped it).
    pub fn to_json(&self) -> Value {
        let mut v = json!({"event": self.event, "data": self.data});
        if let Some((s, us)) = self.timestamp {
            v["timestamp"] = json!({"seconds": s, "microseconds": us});
        }
        v
    }

    /// An event in the runner's stream (see [`to_json`](Self::to_json)).
    pub fn from_json(v: Value) -> Result<QmpEvent, QmpError> {
        match classify(v)? {
            QmpMessage::Event(ev) => Ok(ev),
            other => Err(QmpError::Protocol(format!(
                "expected an event, got {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(v: Value) -> QmpEvent {
        QmpEvent::from_json(v).unwrap()
    }

    #[test]
    fn kinds() {
        let reset = ev(json!({"event": "RESET", "data": {"guest": true, "reason": "guest-reset"}}));
        assert_eq!(
            reset.kind(),
            EventKind::Reset {
                guest: true,
                reason: Some(ShutdownCause::GuestReset)
            }
        );
        let off =
            ev(json!({"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-signal"}}));
        assert_eq!(
            off.kind(),
            EventKind::Shutdown {
                guest: false,
                reason: Some(ShutdownCause::HostSignal)
            }
        );
        assert_eq!(ev(json!({"event": "STOP"})).kind(), EventKind::Stop);
        assert_eq!(
            ev(json!({"event": "MAQET_EVENTS_LOST", "data": {"count": 3}})).kind(),
            EventKind::EventsLost { count: 3 }
        );
        assert_eq!(
            ev(json!({"event": "BLOCK_JOB_READY", "data": {}})).kind(),
            EventKind::Other
        );
        let future =
            ev(json!({"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-sleepwalk"}}));
        assert_eq!(
            future.kind(),
            EventKind::Shutdown {
                guest: true,
                reason: Some(ShutdownCause::Other("guest-sleepwalk".into()))
            }
        );
    }

    #[test]
    fn device_deleted_matches_id_or_path() {
        let named = ev(json!({"event": "DEVICE_DELETED",
            "data": {"device": "rng0", "path": "/machine/peripheral/rng0"}}));
        assert!(named.kind().deleted("rng0"));
        assert!(named.kind().deleted("/machine/peripheral/rng0"));
        assert!(!named.kind().deleted("rng1"));
        let anon = ev(json!({"event": "DEVICE_DELETED",
            "data": {"path": "/machine/peripheral-anon/device[0]"}}));
        assert!(anon.kind().deleted("/machine/peripheral-anon/device[0]"));
        assert!(!ev(json!({"event": "STOP"})).kind().deleted("rng0"));
    }

    #[test]
    fn causes_round_trip() {
        for (name, cause) in CAUSES.iter() {
            assert_eq!(&ShutdownCause::parse(name), cause);
            assert_eq!(cause.as_str(), *name);
        }
        assert_eq!(ShutdownCause::parse("new").as_str(), "new");
    }

    #[test]
    fn the_wire_form_is_qemus() {
        let line = r#"{"event":"SHUTDOWN","data":{"guest":true},"timestamp":{"seconds":1,"microseconds":2}}"#;
        let e = ev(serde_json::from_str(line).unwrap());
        assert_eq!(e.to_json().to_string(), line);
        let lost = json!({"event": "MAQET_EVENTS_LOST", "data": {"count": 3}});
        assert_eq!(ev(lost.clone()).to_json(), lost);
        assert!(QmpEvent::from_json(json!({"return": {}})).is_err());
    }
}
