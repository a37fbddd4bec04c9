//! `maqet events VM [--json]`: the VM's QMP events as they happen, from the
//! runner's `events` stream, until the VM stops.

use std::time::Duration;

use serde_json::Value;

use crate::cli::args::NameJson;
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::cli::output::rfc3339_utc;

pub async fn run(ctx: &Ctx, a: &NameJson) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let mut client = ctx.runner(&vm).await?;
    client.events(Duration::from_secs(10)).await?;
    // Scripts wait for this line to know the subscription is live.
    eprintln!("following the QMP events of {vm} until it stops");
    while let Some(ev) = client.next_event().await? {
        if a.json {
            // One object per line (JSON Lines), flushed as it comes.
            println!("{ev}");
        } else {
            println!("{}", event_line(&ev));
        }
    }
    eprintln!("{vm} stopped");
    Ok(())
}

/// `2025-01-02T03:04:05.678901Z STOP`, then the event's data as JSON when
/// it has any.
pub fn event_line(ev: &Value) -> String {
    let name = ev["event"].as_str().unwrap_or("?");
    let ts = &ev["timestamp"];
    let when = match (ts["seconds"].as_u64(), ts["microseconds"].as_u64()) {
        (Some(s), Some(us)) => {
            let t = rfc3339_utc(s);
            format!("{}.{us:06}Z", t.trim_end_matches('Z'))
        }
        _ => "-".to_string(),
    };
    match &ev["data"] {
        Value::Null => format!("{when} {name}"),
        Value::Object(m) if m.is_empty() => format!("{when} {name}"),
        data => format!("{when} {name} {data}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines() {
        let ev =
            json!({"event": "STOP", "data": {}, "timestamp": {"seconds": 0, "microseconds": 5}});
        assert_eq!(event_line(&ev), "1970-01-01T00:00:00.000005Z STOP");
        let ev = json!({"event": "SHUTDOWN", "data": {"guest": true}, "timestamp": {"seconds": 0, "microseconds": 0}});
        assert_eq!(
            event_line(&ev),
            "1970-01-01T00:00:00.000000Z SHUTDOWN {\"guest\":true}"
        );
        assert_eq!(
            event_line(&json!({"event": "MAQET_EVENTS_LOST", "data": {"count": 3}})),
            "- MAQET_EVENTS_LOST {\"count\":3}"
        );
    }
}
