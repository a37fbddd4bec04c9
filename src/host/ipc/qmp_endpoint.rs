//! The VM's QMP socket for standard QMP clients (`qemu.qmp`, `qmp-shell`,
//! libvirt-style tools): the QMP protocol itself, served by the runner in
//! front of its one QMP connection to QEMU.
//!
//! A client gets QEMU's greeting (without capabilities: out-of-band
//! execution is not offered), must negotiate with `qmp_capabilities`, then
//! sends commands with optional `id`s and receives QEMU's asynchronous
//! events. Every command goes through the same [`Dispatch`] as the `qmp`
//! request of maqet's own socket, so the same policy refuses the same
//! commands; refusals are QMP `GenericError`s naming the policy.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;

use super::protocol::{excerpt, valid_qmp_command, Call, QmpParams, MAX_REQUEST_LINE};
use super::server::{accept_loop, write_bounded, Dispatch, Limits};
use super::slots::{Slot, Stream};
use crate::qmp::QemuVersion;

/// `{"QMP": {"version": …, "capabilities": []}}`, as QEMU greets.
#[derive(Debug, Serialize)]
pub struct Greeting {
    #[serde(rename = "QMP")]
    qmp: GreetingBody,
}

#[derive(Debug, Serialize)]
struct GreetingBody {
    version: GreetingVersion,
    capabilities: Vec<String>,
}

#[derive(Debug, Serialize)]
struct GreetingVersion {
    qemu: Triple,
    package: String,
}

#[derive(Debug, Serialize)]
struct Triple {
    major: u32,
    minor: u32,
    micro: u32,
}

impl Greeting {
    pub fn new(v: &QemuVersion) -> Greeting {
        Greeting {
            qmp: GreetingBody {
                version: GreetingVersion {
                    qemu: Triple {
                        major: v.major,
                        minor: v.minor,
                        micro: v.micro,
                    },
                    package: v.package.clone(),
                },
                capabilities: Vec::new(),
            },
        }
    }
}

/// One command as a QMP client sends it. Unknown members are refused, as
/// QEMU does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Command {
    execute: String,
    #[serde(default)]
    arguments: Option<Map<String, Value>>,
    #[serde(default)]
    id: Option<Value>,
}

#[derive(Debug, Serialize)]
struct Return {
    #[serde(rename = "return")]
    value: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Value>,
}

#[derive(Debug, Serialize, PartialEq)]
struct QmpErr {
    class: String,
    desc: String,
}

#[derive(Debug, Serialize)]
struct ErrorReply {
    error: QmpErr,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Value>,
}

fn err(class: &str, desc: impl Into<String>) -> QmpErr {
    QmpErr {
        class: class.into(),
        desc: desc.into(),
    }
}

/// Serves the QMP socket forever. Its connections have their own slots
/// (same cap and idle rules as maqet's socket), so standard clients can
/// never crowd out maqet's own commands.
pub async fn serve_qmp(
    listener: UnixListener,
    dispatch: Arc<dyn Dispatch>,
    greeting: Greeting,
    limits: Limits,
) {
    let greeting: Arc<[u8]> = line(&greeting).into();
    // A client that finds every slot busy gets the error instead of the
    // greeting, which every QMP client reports as a failed connect.
    let full = err(
        "GenericError",
        format!(
            "too many clients: the runner is serving its maximum of {} QMP connections, all busy; try again later",
            limits.max_connections
        ),
    );
    let full = line(&ErrorReply {
        error: full,
        id: None,
    });
    let refuse = move |s: &UnixStream| {
        let _ = s.try_write(&full);
    };
    accept_loop(listener, limits, refuse, move |stream, slot| {
        let (d, g) = (dispatch.clone(), greeting.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(stream, d, g, slot, limits).await {
                tracing::debug!(error = %e, "QMP client connection ended with an error");
            }
        });
    })
    .await
}

fn line<T: Serialize>(v: &T) -> Vec<u8> {
    let mut buf = serde_json::to_vec(v).expect("QMP replies serialize");
    buf.extend_from_slice(b"\r\n");
    buf
}

/// The next event of a negotiated connection; never, before negotiation.
/// `None` once the runner stops publishing (QEMU is gone).
async fn next_event(rx: &mut Option<broadcast::Receiver<Value>>) -> Option<Value> {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(v) => return Some(v),
            // QMP has no "events lost" message; a slow client misses some.
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!(events = n, "a QMP client fell behind");
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// What the client sent next.
enum Next {
    Eof,
    TooLong,
    Json(Value),
    Invalid(String),
}

/// QMP input is a stream of JSON values, not lines: QEMU needs no newline
/// between commands and `qemu.qmp` sends none.
struct Input<R> {
    reader: R,
    buf: Vec<u8>,
}

impl<R: tokio::io::AsyncRead + Unpin> Input<R> {
    /// Cancel-safe (used in `select!`): what was read stays in `buf`.
    async fn next(&mut self) -> std::io::Result<Next> {
        loop {
            let start = self
                .buf
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(self.buf.len());
            self.buf.drain(..start);
            if !self.buf.is_empty() {
                let mut values = serde_json::Deserializer::from_slice(&self.buf).into_iter();
                match values.next() {
                    Some(Ok(v)) => {
                        let used = values.byte_offset();
                        self.buf.drain(..used);
                        return Ok(Next::Json(v));
                    }
                    Some(Err(e)) if e.is_eof() => {}
                    // Like QEMU: report, forget the rest of the input so far.
                    Some(Err(e)) => {
                        self.buf.clear();
                        return Ok(Next::Invalid(e.to_string()));
                    }
                    None => {}
                }
            }
            if self.buf.len() > MAX_REQUEST_LINE {
                return Ok(Next::TooLong);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.reader.read(&mut chunk).await?;
            if n == 0 {
                return Ok(Next::Eof);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

async fn handle(
    stream: UnixStream,
    dispatch: Arc<dyn Dispatch>,
    greeting: Arc<[u8]>,
    slot: Slot,
    limits: Limits,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut input = Input {
        reader: r,
        buf: Vec::new(),
    };
    let wt = limits.write_timeout;
    write_bounded(&mut w, &greeting, wt).await?;
    // Subscribed at negotiation, as QEMU starts sending events then.
    let mut events: Option<broadcast::Receiver<Value>> = None;
    loop {
        // A negotiated connection is an event stream: like `events` on
        // maqet's socket it is busy, never idle or evicted.
        let negotiated = events.is_some();
        if negotiated {
            slot.busy();
        } else {
            slot.idle();
        }
        let read = tokio::select! {
            n = input.next() => n?,
            ev = next_event(&mut events) => match ev {
                Some(v) => {
                    write_bounded(&mut w, &line(&v), wt).await?;
                    continue;
                }
                None => return Ok(()),
            },
            _ = tokio::time::sleep(limits.idle_timeout), if !negotiated => return Ok(()),
            _ = slot.evicted(), if !negotiated => return Ok(()),
        };
        slot.busy();
        let reply = match read {
            Next::Eof => return Ok(()),
            Next::TooLong => {
                let e = err(
                    "GenericError",
                    format!("command longer than {MAX_REQUEST_LINE} bytes"),
                );
                let reply = ErrorReply { error: e, id: None };
                return write_bounded(&mut w, &line(&reply), wt).await;
            }
            Next::Invalid(e) => Err((
                err(
                    "GenericError",
                    format!("JSON parse error, {}", excerpt(&e, 200)),
                ),
                None,
            )),
            Next::Json(v) => {
                let room = || slot.stream(Stream::Events, limits.max_event_streams);
                answer(
                    v,
                    &mut events,
                    dispatch.as_ref(),
                    room,
                    limits.max_event_streams,
                )
                .await
            }
        };
        let reply = match reply {
            Ok((value, id)) => line(&Return { value, id }),
            Err((error, id)) => line(&ErrorReply { error, id }),
        };
        write_bounded(&mut w, &reply, wt).await?;
    }
}

type Answered = Result<(Value, Option<Value>), (QmpErr, Option<Value>)>;

/// One command line: negotiation, or a command forwarded through the
/// dispatcher (policy included). A negotiated session streams events, so
/// negotiating takes one of the `cap` event-stream places (`room`); over
/// the cap it is refused and the connection can try again later.
async fn answer(
    input: Value,
    events: &mut Option<broadcast::Receiver<Value>>,
    dispatch: &dyn Dispatch,
    room: impl FnOnce() -> bool,
    cap: usize,
) -> Answered {
    let cmd = parse(input).map_err(|e| (e, None))?;
    let id = cmd.id;
    let fail = |e: QmpErr| Err((e, id.clone()));
    match (cmd.execute.as_str(), events.is_some()) {
        ("qmp_capabilities", false) => {
            let enable = cmd.arguments.as_ref().and_then(|a| a.get("enable"));
            if let Some(Value::Array(caps)) = enable {
                if let Some(c) = caps.first() {
                    return fail(err(
                        "GenericError",
                        format!("Capability {} not available", excerpt(&c.to_string(), 64)),
                    ));
                }
            }
            if !room() {
                return fail(err(
                    "GenericError",
                    format!("too many clients: the runner serves at most {cap} QMP sessions and event streams at once; try again later"),
                ));
            }
            *events = Some(dispatch.subscribe());
            Ok((Value::Object(Map::new()), id))
        }
        (_, false) => fail(err(
            "CommandNotFound",
            "Expecting capabilities negotiation with 'qmp_capabilities'",
        )),
        ("qmp_capabilities", true) => fail(err(
            "CommandNotFound",
            "Capabilities negotiation is already complete, command ignored",
        )),
        (name, true) if !valid_qmp_command(name) => fail(err(
            "CommandNotFound",
            format!("The command {} has not been found", excerpt(name, 64)),
        )),
        _ => {
            let call = Call::Qmp(QmpParams {
                execute: cmd.execute,
                arguments: cmd.arguments.map(Value::Object),
            });
            match dispatch.call(call).await {
                Ok(a) => Ok((a.value, id)),
                Err(b) => fail(QmpErr {
                    class: b.class.unwrap_or_else(|| "GenericError".into()),
                    desc: b.message,
                }),
            }
        }
    }
}

fn parse(v: Value) -> Result<Command, QmpErr> {
    if !v.is_object() {
        return Err(err("GenericError", "QMP input must be a JSON object"));
    }
    if v.get("execute-oob").is_some() {
        return Err(err(
            "GenericError",
            "out-of-band execution is not offered on this socket",
        ));
    }
    serde_json::from_value(v).map_err(|e| {
        err(
            "GenericError",
            format!("QMP input: {}", excerpt(&e.to_string(), 200)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::protocol::{ConsoleParams, ErrorBody, ErrorKind};
    use crate::ipc::server::{Answer, BoxFuture, ConsoleStream};
    use serde_json::json;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// Answers `query-status`; refuses `human-monitor-command` as policy.
    struct Fake(broadcast::Sender<Value>);

    impl Dispatch for Fake {
        fn call(&self, call: Call) -> BoxFuture<Result<Answer, ErrorBody>> {
            Box::pin(async move {
                match call {
                    Call::Qmp(p) if p.execute == "query-status" => {
                        Ok(json!({"status": "running"}).into())
                    }
                    Call::Qmp(p) if p.execute == "human-monitor-command" => Err(ErrorBody::new(
                        ErrorKind::Policy,
                        "maqet does not forward it",
                    )),
                    _ => Err(ErrorBody {
                        kind: ErrorKind::Qmp,
                        class: Some("CommandNotFound".into()),
                        message: "no".into(),
                    }),
                }
            })
        }
        fn subscribe(&self) -> broadcast::Receiver<Value> {
            self.0.subscribe()
        }
        fn console(&self, _: ConsoleParams) -> Result<ConsoleStream, ErrorBody> {
            Err(ErrorBody::new(ErrorKind::Unavailable, "none"))
        }
    }

    async fn next(r: &mut BufReader<tokio::net::unix::OwnedReadHalf>) -> Value {
        let mut l = String::new();
        r.read_line(&mut l).await.unwrap();
        serde_json::from_str(&l).unwrap()
    }

    async fn ask(w: &mut tokio::net::unix::OwnedWriteHalf, l: &str) {
        w.write_all(format!("{l}\n").as_bytes()).await.unwrap();
    }

    #[tokio::test]
    async fn greeting_negotiation_ids_errors_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.qmp");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, _) = broadcast::channel(8);
        let v = QemuVersion {
            major: 9,
            minor: 2,
            micro: 0,
            package: "pkg".into(),
        };
        tokio::spawn(serve_qmp(
            listener,
            Arc::new(Fake(tx.clone())),
            Greeting::new(&v),
            Limits::default(),
        ));
        let s = UnixStream::connect(&path).await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let g = next(&mut r).await;
        assert_eq!(g["QMP"]["version"]["qemu"]["minor"], 2);
        assert_eq!(g["QMP"]["capabilities"], json!([]));
        ask(&mut w, r#"{"execute":"query-status","id":1}"#).await;
        let e = next(&mut r).await;
        assert_eq!(e["error"]["class"], "CommandNotFound", "{e}");
        assert_eq!(e["id"], 1);
        // No newline after a command (qemu.qmp sends none); two at once.
        w.write_all(br#"{"execute":"qmp_capabilities"}"#)
            .await
            .unwrap();
        assert_eq!(next(&mut r).await, json!({"return": {}}));
        w.write_all(br#" {"execute":"query-status","id":2}{"execute":"query-status","id":3}"#)
            .await
            .unwrap();
        assert_eq!(next(&mut r).await["id"], 2);
        assert_eq!(next(&mut r).await["id"], 3);
        ask(&mut w, r#"{"execute":"query-status","id":"a"}"#).await;
        assert_eq!(
            next(&mut r).await,
            json!({"return": {"status": "running"}, "id": "a"})
        );
        ask(
            &mut w,
            r#"{"execute":"human-monitor-command","arguments":{"command-line":"info"}}"#,
        )
        .await;
        let e = next(&mut r).await;
        assert_eq!(e["error"]["class"], "GenericError");
        assert!(
            e["error"]["desc"].as_str().unwrap().contains("maqet"),
            "{e}"
        );
        ask(&mut w, r#"{"execute":"x","bogus":1}"#).await;
        assert_eq!(next(&mut r).await["error"]["class"], "GenericError");
        ask(&mut w, "not json").await;
        assert_eq!(next(&mut r).await["error"]["class"], "GenericError");
        tx.send(json!({"event": "STOP", "data": {}})).unwrap();
        assert_eq!(next(&mut r).await["event"], "STOP");

        // Hostile input: errors, and the connection stays usable.
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        for bad in [
            &deep[..],
            "[1]",
            "7",
            "{\"execute\":5}",
            "{\"execute-oob\":\"x\"}",
        ] {
            ask(&mut w, bad).await;
            let e = next(&mut r).await;
            assert_eq!(e["error"]["class"], "GenericError", "{bad:.40}: {e}");
            assert!(e.to_string().len() < 1000, "{e}");
        }
        w.write_all(b"{\"execute\":\"query-status\",\"id\":\"\xff\"}\n")
            .await
            .unwrap();
        assert_eq!(next(&mut r).await["error"]["class"], "GenericError");
        ask(&mut w, r#"{"execute":"query-status","id":9}"#).await;
        assert_eq!(next(&mut r).await["id"], 9);
        // An unterminated value over the cap: an error, then the runner hangs up.
        let huge = format!("{{\"execute\":\"{}", "x".repeat(MAX_REQUEST_LINE + 10));
        let _ = w.write_all(huge.as_bytes()).await;
        let e = next(&mut r).await;
        assert!(
            e["error"]["desc"].as_str().unwrap().contains("longer than"),
            "{e}"
        );
        let mut rest = String::new();
        r.read_line(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{rest}");
    }

    #[tokio::test]
    async fn negotiated_sessions_have_a_cap_and_over_it_get_an_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.qmp");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, _) = broadcast::channel(8);
        let v = QemuVersion {
            major: 7,
            minor: 2,
            micro: 0,
            package: String::new(),
        };
        let limits = Limits {
            max_event_streams: 2,
            ..Limits::default()
        };
        tokio::spawn(serve_qmp(
            listener,
            Arc::new(Fake(tx)),
            Greeting::new(&v),
            limits,
        ));
        let mut held = Vec::new();
        for i in 0..3 {
            let s = UnixStream::connect(&path).await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            next(&mut r).await;
            ask(&mut w, r#"{"execute":"qmp_capabilities"}"#).await;
            let reply = next(&mut r).await;
            if i < 2 {
                assert_eq!(reply, json!({"return": {}}));
                held.push((r, w));
            } else {
                let desc = reply["error"]["desc"].as_str().unwrap().to_string();
                assert!(desc.contains("too many clients"), "{reply}");
                // Not negotiated: commands wait for negotiation, as in QEMU.
                ask(&mut w, r#"{"execute":"query-status"}"#).await;
                assert_eq!(next(&mut r).await["error"]["class"], "CommandNotFound");
                // Once a session ends, negotiation succeeds.
                drop(held.pop());
                let mut ok = false;
                for _ in 0..100 {
                    ask(&mut w, r#"{"execute":"qmp_capabilities"}"#).await;
                    if next(&mut r).await == json!({"return": {}}) {
                        ok = true;
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                assert!(ok, "negotiation never succeeded");
            }
        }
    }
}
