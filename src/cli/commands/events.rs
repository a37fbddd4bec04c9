//! `maqet events VM [--json]`: the VM's QMP events as they happen, until
//! the VM stops.

use crate::cli::args::NameJson;
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::cli::output::rfc3339_utc;
use crate::qmp::QmpEvent;

pub async fn run(ctx: &Ctx, a: &NameJson) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let mut events = ctx.vms().await?.events(&vm).await?;
    // Scripts wait for this line to know the subscription is live.
    eprintln!("following the QMP events of {vm} until it stops");
    while let Some(ev) = events.next().await? {
        if a.json {
            // One object per line (JSON Lines), flushed as it comes.
            println!("{}", ev.to_json());
        } else {
            println!("{}", event_line(&ev));
        }
    }
    eprintln!("{vm} stopped");
    Ok(())
}

/// `2025-01-02T03:04:05.678901Z STOP`, then the event's data as JSON when
/// it has any.
pub fn event_line(ev: &QmpEvent) -> String {
    let when = match ev.timestamp {
        Some((s, us)) if s >= 0 && us >= 0 => {
            let t = rfc3339_utc(s as u64);
            format!("{}.{us:06}Z", t.trim_end_matches('Z'))
        }
        _ => "-".to_string(),
    };
    let name = &ev.event;
    match &ev.data {
        serde_json::Value::Null => format!("{when} {name}"),
        serde_json::Value::Object(m) if m.is_empty() => format!("{when} {name}"),
        data => format!("{when} {name} {data}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(v: serde_json::Value) -> QmpEvent {
        QmpEvent::from_json(v).unwrap()
    }

    #[test]
    fn lines() {
        let e = ev(
            json!({"event": "STOP", "data": {}, "timestamp": {"seconds": 0, "microseconds": 5}}),
        );
        assert_eq!(event_line(&e), "1970-01-01T00:00:00.000005Z STOP");
        let e = ev(
            json!({"event": "SHUTDOWN", "data": {"guest": true}, "timestamp": {"seconds": 0, "microseconds": 0}}),
        );
        assert_eq!(
            event_line(&e),
            "1970-01-01T00:00:00.000000Z SHUTDOWN {\"guest\":true}"
        );
        assert_eq!(
            event_line(&ev(
                json!({"event": "MAQET_EVENTS_LOST", "data": {"count": 3}})
            )),
            "- MAQET_EVENTS_LOST {\"count\":3}"
        );
    }
}
