//! Server side of the runner protocol: accepts connections on the socket
//! systemd passed in and hands each request to a [`Dispatch`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc};

use super::protocol::{
    excerpt, Call, ConsoleParams, ErrorBody, ErrorKind, Request, Response, StreamStart,
    MAX_REQUEST_LINE,
};
use super::slots::{Slot, Slots, Stream, MAX_CONNECTIONS, MAX_CONSOLES, MAX_EVENT_STREAMS};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A successful answer. `written` is signalled once the reply is on the
/// wire, so a runner that is about to exit can wait for it.
pub struct Answer {
    pub value: Value,
    pub written: Option<tokio::sync::oneshot::Sender<()>>,
}

impl From<Value> for Answer {
    fn from(value: Value) -> Self {
        Answer {
            value,
            written: None,
        }
    }
}

/// A viewer's attachment to the serial console: the output to replay, the
/// live output (`None`: replay only, then hang up) and where input goes.
pub struct ConsoleStream {
    pub replay: Vec<u8>,
    pub output: Option<broadcast::Receiver<Arc<[u8]>>>,
    pub input: mpsc::Sender<Vec<u8>>,
}

/// What the runner does with requests, already parsed and checked by
/// [`Call::from_wire`].
pub trait Dispatch: Send + Sync + 'static {
    /// Answers one request: every call except `events` and `console`,
    /// which the server turns into streams with the two methods below.
    fn call(&self, call: Call) -> BoxFuture<Result<Answer, ErrorBody>>;
    /// A fresh subscription to the VM's events, as JSON objects.
    fn subscribe(&self) -> broadcast::Receiver<Value>;
    /// Attaches a viewer to the serial console.
    fn console(&self, params: ConsoleParams) -> Result<ConsoleStream, ErrorBody>;
}

/// How long a connection may take to send its next request line, counted
/// from connecting or from its previous reply. Streams (`events`,
/// `console`) and requests in flight are never idle.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one reply (or a piece of streamed output) may wait for a client
/// that does not read; then the connection is closed, so a client that
/// never reads cannot hold a slot forever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// At most one "accept failed" line per this interval: a flood must not
/// flood the journal as well.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// The server's bounds; [`serve`] uses the constants above, tests shrink them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// Event streams (and negotiated QMP sessions), below `max_connections`.
    pub max_event_streams: usize,
    /// Console viewers, below `max_connections`.
    pub max_consoles: usize,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            max_event_streams: MAX_EVENT_STREAMS,
            max_consoles: MAX_CONSOLES,
            idle_timeout: IDLE_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
        }
    }
}

/// Accepts connections forever with the default [`Limits`].
pub async fn serve(listener: UnixListener, dispatch: Arc<dyn Dispatch>) {
    serve_with(listener, dispatch, Limits::default()).await
}

/// Accepts connections forever; each one runs in its own task so a slow
/// QMP command never blocks another client.
pub async fn serve_with(listener: UnixListener, dispatch: Arc<dyn Dispatch>, limits: Limits) {
    let refuse = move |stream: &UnixStream| {
        let e = ErrorBody::new(
            ErrorKind::Unavailable,
            format!(
                "too many clients: the runner is serving its maximum of {} connections, all busy; try again later",
                limits.max_connections
            ),
        );
        notice(stream, e);
    };
    accept_loop(listener, limits, refuse, move |stream, slot| {
        let d = dispatch.clone();
        tokio::spawn(async move {
            if let Err(e) = handle_connection(stream, d, slot, limits).await {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
        });
    })
    .await
}

/// The accept loop both runner sockets share: peer check, one slot per
/// connection (`refuse` tells a newcomer that every slot is busy), then
/// `serve` spawns the connection's task.
pub(super) async fn accept_loop(
    listener: UnixListener,
    limits: Limits,
    refuse: impl Fn(&UnixStream),
    serve: impl Fn(UnixStream, Slot),
) {
    let my_uid = rustix::process::geteuid().as_raw();
    let slots = Arc::new(Slots::default());
    let mut last_warn = None;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_failed(e, &slots, &mut last_warn).await;
                continue;
            }
        };
        if !peer_allowed(&stream, my_uid) {
            continue;
        }
        match slots.acquire(limits.max_connections) {
            Some(slot) => serve(stream, slot),
            None => refuse(&stream),
        }
    }
}

/// The socket is 0600 in a 0700 directory; checking the peer as well costs
/// nothing and survives a chmod by mistake.
fn peer_allowed(stream: &UnixStream, my_uid: u32) -> bool {
    match stream.peer_cred() {
        Ok(c) if c.uid() == my_uid || c.uid() == 0 => true,
        Ok(c) => {
            tracing::warn!(peer_uid = c.uid(), "refused a connection from another user");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read peer credentials; connection refused");
            false
        }
    }
}

/// Out of descriptors, the pending connection stays in the backlog and the
/// listener stays readable, so retrying at once would spin: wait until a
/// connection closes (or a second passes).
async fn accept_failed(e: std::io::Error, slots: &Slots, last_warn: &mut Option<Instant>) {
    if last_warn.is_none_or(|t: Instant| t.elapsed() >= ACCEPT_WARN_EVERY) {
        tracing::error!(error = %e, "accept on the runner socket failed");
        *last_warn = Some(Instant::now());
    }
    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
        let _ = tokio::time::timeout(Duration::from_secs(1), slots.freed.notified()).await;
    } else {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A last line to a connection that is being closed, without waiting: a
/// client that does not read gets nothing rather than a stalled server.
fn notice(stream: &UnixStream, e: ErrorBody) {
    let _ = stream.try_write(&notice_line(e));
}

enum Line {
    Eof,
    TooLong,
    Text(String),
}

async fn read_bounded_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(MAX_REQUEST_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() != Some(&b'\n') {
        return Ok(if n > MAX_REQUEST_LINE {
            Line::TooLong
        } else {
            Line::Eof
        });
    }
    Ok(Line::Text(String::from_utf8_lossy(&buf).into_owned()))
}

/// Writes `bytes` within `limit`; a client that stops reading is cut off.
pub(super) async fn write_bounded<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    limit: Duration,
) -> std::io::Result<()> {
    match tokio::time::timeout(limit, w.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the client read nothing for {}s", limit.as_secs_f64()),
        )),
    }
}

async fn write_response<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    r: &Response,
    limit: Duration,
) -> std::io::Result<()> {
    let mut buf = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    buf.push(b'\n');
    write_bounded(w, &buf, limit).await
}

/// Why an idle connection is being closed.
enum Closed {
    Idle(Duration),
    Evicted,
}

impl Closed {
    fn body(self, max: usize) -> ErrorBody {
        match self {
            Closed::Idle(t) => ErrorBody::new(
                ErrorKind::Timeout,
                format!("closed: no request line within {}s", t.as_secs_f64()),
            ),
            Closed::Evicted => ErrorBody::new(
                ErrorKind::Unavailable,
                format!("closed: the runner serves at most {max} connections and this one was the longest idle"),
            ),
        }
    }
}

async fn handle_connection(
    stream: UnixStream,
    dispatch: Arc<dyn Dispatch>,
    slot: Slot,
    limits: Limits,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let wt = limits.write_timeout;
    loop {
        slot.idle();
        let line = tokio::select! {
            l = read_bounded_line(&mut reader) => l?,
            _ = tokio::time::sleep(limits.idle_timeout) => {
                let why = Closed::Idle(limits.idle_timeout).body(limits.max_connections);
                let _ = w.try_write(&notice_line(why));
                Line::Eof
            }
            _ = slot.evicted() => {
                let _ = w.try_write(&notice_line(Closed::Evicted.body(limits.max_connections)));
                Line::Eof
            }
        };
        slot.busy();
        let text = match line {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                let e = ErrorBody::new(
                    ErrorKind::BadRequest,
                    format!("request line longer than {MAX_REQUEST_LINE} bytes"),
                );
                return write_response(&mut w, &Response::error(0, e), wt).await;
            }
            Line::Text(t) => t,
        };
        match handle_line(&text, dispatch.as_ref()).await {
            Handled::Reply(resp, written) => {
                write_response(&mut w, &resp, wt).await?;
                if let Some(tx) = written {
                    let _ = tx.send(());
                }
            }
            Handled::Events(id) => {
                if slot.stream(Stream::Events, limits.max_event_streams) {
                    return stream_events(id, reader, w, dispatch.subscribe(), wt).await;
                }
                let e = too_many(limits.max_event_streams, "event streams");
                write_response(&mut w, &Response::error(id, e), wt).await?;
            }
            Handled::Console(id, c) => {
                if slot.stream(Stream::Console, limits.max_consoles) {
                    return stream_console(id, reader, w, c, wt).await;
                }
                let e = too_many(limits.max_consoles, "console viewers");
                write_response(&mut w, &Response::error(id, e), wt).await?;
            }
        }
    }
}

/// The refusal of a stream over its cap. The connection stays open for
/// other requests: the cap keeps streams from crowding out control.
pub(super) fn too_many(cap: usize, what: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorKind::Unavailable,
        format!("too many clients: the runner serves at most {cap} {what} at once; close one and try again"),
    )
}

/// What one request line turns into.
pub enum Handled {
    /// A reply, and the channel to signal once it is written.
    Reply(Response, Option<tokio::sync::oneshot::Sender<()>>),
    /// The connection becomes an event stream for request `id`.
    Events(u64),
    /// The connection becomes a console stream for request `id`.
    Console(u64, ConsoleStream),
}

/// Parses one request line and dispatches it: every line that is not a
/// well-formed request of a known method gets a `bad_request` error.
pub async fn handle_line(text: &str, dispatch: &dyn Dispatch) -> Handled {
    let req: Request = match serde_json::from_str(text.trim_end()) {
        Ok(r) => r,
        Err(e) => {
            let body = ErrorBody::new(
                ErrorKind::BadRequest,
                format!("invalid request: {}", excerpt(&e.to_string(), 200)),
            );
            return Handled::Reply(Response::error(0, body), None);
        }
    };
    let call = match Call::from_wire(&req.method, req.params) {
        Ok(c) => c,
        Err(e) => return Handled::Reply(Response::error(req.id, e), None),
    };
    match call {
        Call::Events => Handled::Events(req.id),
        Call::Console(p) => match dispatch.console(p) {
            Ok(c) => Handled::Console(req.id, c),
            Err(e) => Handled::Reply(Response::error(req.id, e), None),
        },
        call => match dispatch.call(call).await {
            Ok(a) => Handled::Reply(Response::result(req.id, a.value), a.written),
            Err(e) => Handled::Reply(Response::error(req.id, e), None),
        },
    }
}

fn notice_line(e: ErrorBody) -> Vec<u8> {
    let mut buf = serde_json::to_vec(&Response::error(0, e)).unwrap_or_default();
    buf.push(b'\n');
    buf
}

fn stream_start(streaming: bool, replay_bytes: Option<usize>) -> Value {
    let s = StreamStart {
        streaming,
        replay_bytes,
    };
    serde_json::to_value(s).expect("a stream start serializes")
}

/// Streams events until the client hangs up or the runner stops.
async fn stream_events(
    id: u64,
    mut reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    mut w: tokio::net::unix::OwnedWriteHalf,
    mut rx: broadcast::Receiver<Value>,
    wt: Duration,
) -> std::io::Result<()> {
    write_response(&mut w, &Response::result(id, stream_start(true, None)), wt).await?;
    let mut sink = [0u8; 256];
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(v) => write_response(&mut w, &Response::event(id, v), wt).await?,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let v = json!({"event": crate::qmp::event::EVENTS_LOST, "data": {"count": n}});
                    write_response(&mut w, &Response::event(id, v), wt).await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            n = reader.read(&mut sink) => if n? == 0 { return Ok(()) },
        }
    }
}

/// After the reply the connection is a raw byte stream: the replay, then
/// console output to the client and the client's bytes to the console,
/// until either side hangs up.
async fn stream_console(
    id: u64,
    mut reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    mut w: tokio::net::unix::OwnedWriteHalf,
    c: ConsoleStream,
    wt: Duration,
) -> std::io::Result<()> {
    let follow = c.output.is_some();
    let reply = stream_start(follow, Some(c.replay.len()));
    write_response(&mut w, &Response::result(id, reply), wt).await?;
    write_bounded(&mut w, &c.replay, wt).await?;
    let Some(mut output) = c.output else {
        return w.shutdown().await;
    };
    // Bytes the client sent right behind its request line are input too.
    let early = reader.buffer().to_vec();
    reader.consume(early.len());
    if !early.is_empty() {
        let _ = c.input.send(early).await;
    }
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            chunk = output.recv() => match chunk {
                Ok(bytes) => write_bounded(&mut w, &bytes, wt).await?,
                // A slow viewer loses output rather than stalling the rest.
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(chunks = n, "a console viewer fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => return w.shutdown().await,
            },
            n = reader.read(&mut buf) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                let _ = c.input.send(buf[..n].to_vec()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::client::{IpcClient, IpcError};

    struct Echo(broadcast::Sender<Value>);

    /// `qmp echo` answers with its arguments; every other call is refused.
    impl Dispatch for Echo {
        fn call(&self, call: Call) -> BoxFuture<Result<Answer, ErrorBody>> {
            Box::pin(async move {
                match call {
                    Call::Qmp(p) if p.execute == "echo" => Ok(json!({"echo": p.arguments}).into()),
                    _ => Err(ErrorBody::new(ErrorKind::Unavailable, "nope")),
                }
            })
        }
        fn subscribe(&self) -> broadcast::Receiver<Value> {
            self.0.subscribe()
        }
        fn console(&self, _params: ConsoleParams) -> Result<ConsoleStream, ErrorBody> {
            Err(ErrorBody::new(ErrorKind::Unavailable, "no console here"))
        }
    }

    /// A console with history "history", live output from `out`, input to
    /// `input`; events from `events`.
    struct Console {
        out: broadcast::Sender<Arc<[u8]>>,
        input: mpsc::Sender<Vec<u8>>,
        events: broadcast::Sender<Value>,
    }

    impl Dispatch for Console {
        fn call(&self, _: Call) -> BoxFuture<Result<Answer, ErrorBody>> {
            Box::pin(async { Err(ErrorBody::new(ErrorKind::Unavailable, "nope")) })
        }
        fn subscribe(&self) -> broadcast::Receiver<Value> {
            self.events.subscribe()
        }
        fn console(&self, p: ConsoleParams) -> Result<ConsoleStream, ErrorBody> {
            Ok(ConsoleStream {
                replay: if p.replay {
                    b"history".to_vec()
                } else {
                    vec![]
                },
                output: p.follow.then(|| self.out.subscribe()),
                input: self.input.clone(),
            })
        }
    }

    #[tokio::test]
    async fn console_is_a_raw_stream_after_the_reply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (out, _) = broadcast::channel(8);
        let (input, mut input_rx) = mpsc::channel(8);
        let d = Console {
            out: out.clone(),
            input,
            events: broadcast::channel(1).0,
        };
        tokio::spawn(serve(listener, Arc::new(d)));

        // Attached: reply line, replay, live output; input typed right
        // behind the request line is not lost.
        let s = UnixStream::connect(&path).await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"{\"id\":1,\"method\":\"console\",\"params\":{\"replay\":true}}\nXY")
            .await
            .unwrap();
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        let reply: Response = serde_json::from_str(&line).unwrap();
        assert_eq!(reply.result.unwrap()["streaming"], true);
        let mut got = [0u8; 7];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"history");
        assert_eq!(input_rx.recv().await.unwrap(), b"XY");
        out.send(Arc::from(&b"live"[..])).unwrap();
        let mut got = [0u8; 4];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"live");
        w.write_all(b"Z").await.unwrap();
        assert_eq!(input_rx.recv().await.unwrap(), b"Z");

        // Dump: the replay, then the runner hangs up.
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(
            b"{\"id\":2,\"method\":\"console\",\"params\":{\"replay\":true,\"follow\":false}}\n",
        )
        .await
        .unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        let text = String::from_utf8(all).unwrap();
        let (reply, rest) = text.split_once('\n').unwrap();
        assert!(reply.contains("\"streaming\":false"), "{reply}");
        assert_eq!(rest, "history");
    }

    const T: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn requests_errors_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, _) = broadcast::channel(8);
        tokio::spawn(serve(listener, Arc::new(Echo(tx.clone()))));

        let mut c = IpcClient::connect(&path).await.unwrap();
        let v = c.qmp("echo", Some(json!({"x": 1}))).await.unwrap();
        assert_eq!(v, json!({"echo": {"x": 1}}));
        let e = c.status().await.unwrap_err();
        assert_eq!(e.remote_kind(), Some(ErrorKind::Unavailable));
        let mut raw = UnixStream::connect(&path).await.unwrap();
        raw.write_all(b"{\"id\":1,\"method\":\"bogus\"}\n")
            .await
            .unwrap();
        let e = read_reply(&mut raw).await.error.unwrap();
        assert!(e.message.contains("unknown method 'bogus'"), "{e:?}");
        // A refused console leaves the connection usable.
        let e = c.console(false, true, T).await.unwrap_err();
        assert!(e.to_string().contains("no console here"), "{e}");
        c.qmp("echo", None).await.unwrap();

        let mut ev = IpcClient::connect(&path).await.unwrap();
        ev.events(T).await.unwrap();
        // The subscription exists once the reply arrived.
        tx.send(json!({"event": "STOP"})).unwrap();
        assert_eq!(
            ev.next_event().await.unwrap(),
            Some(json!({"event": "STOP"}))
        );
    }

    #[tokio::test]
    async fn over_long_line_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, _) = broadcast::channel(8);
        tokio::spawn(serve(listener, Arc::new(Echo(tx))));
        let mut s = UnixStream::connect(&path).await.unwrap();
        let big = vec![b'x'; MAX_REQUEST_LINE + 10];
        let _ = s.write_all(&big).await;
        let mut out = String::new();
        BufReader::new(s).read_line(&mut out).await.unwrap();
        assert!(out.contains("longer than"), "{out}");
    }

    async fn read_reply(s: &mut UnixStream) -> Response {
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    fn serve_small(path: &std::path::Path, limits: Limits) {
        let listener = UnixListener::bind(path).unwrap();
        let (tx, _) = broadcast::channel(8);
        tokio::spawn(serve_with(listener, Arc::new(Echo(tx)), limits));
    }

    #[tokio::test]
    async fn idle_connections_make_room_busy_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        serve_small(
            &path,
            Limits {
                max_connections: 3,
                max_event_streams: 3,
                max_consoles: 3,
                idle_timeout: Duration::from_secs(600),
                write_timeout: Duration::from_secs(600),
            },
        );
        // Two event streams (busy) and one idle connection fill the slots.
        let mut ev1 = IpcClient::connect(&path).await.unwrap();
        ev1.events(T).await.unwrap();
        let mut ev2 = IpcClient::connect(&path).await.unwrap();
        ev2.events(T).await.unwrap();
        let mut idle = UnixStream::connect(&path).await.unwrap();
        // A newcomer takes the idle one's slot and is served.
        let mut c = IpcClient::connect(&path).await.unwrap();
        c.qmp("echo", None).await.unwrap();
        let r = read_reply(&mut idle).await;
        let e = r.error.unwrap();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(e.message.contains("longest idle"), "{}", e.message);
        // c, idle again after its reply, makes room for a third stream;
        // with every slot busy, a newcomer is refused with one line.
        let mut busy = IpcClient::connect(&path).await.unwrap();
        busy.events(T).await.unwrap();
        let mut refused = UnixStream::connect(&path).await.unwrap();
        let r = read_reply(&mut refused).await;
        assert!(r.error.unwrap().message.contains("maximum of 3"));
    }

    #[tokio::test]
    async fn streams_at_their_cap_leave_room_for_control_and_consoles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (out, _) = broadcast::channel(8);
        let (input, _input_rx) = mpsc::channel(8);
        let limits = Limits {
            max_connections: 6,
            max_event_streams: 2,
            max_consoles: 1,
            idle_timeout: Duration::from_secs(600),
            write_timeout: Duration::from_secs(600),
        };
        let events = broadcast::channel(8).0;
        tokio::spawn(serve_with(
            listener,
            Arc::new(Console { out, input, events }),
            limits,
        ));
        let mut streams = Vec::new();
        for _ in 0..2 {
            let mut c = IpcClient::connect(&path).await.unwrap();
            c.events(T).await.unwrap();
            streams.push(c);
        }
        // A third event stream: "too many clients", at once, and the same
        // connection still serves other requests.
        let mut third = IpcClient::connect(&path).await.unwrap();
        let e = tokio::time::timeout(T, third.events(T))
            .await
            .expect("an answer, not a wait")
            .unwrap_err();
        assert!(e.to_string().contains("too many clients"), "{e}");
        assert!(e.to_string().contains("2 event streams"), "{e}");
        let e = third.status().await.unwrap_err();
        assert!(e.to_string().contains("nope"), "served: {e}");
        // A console has places of its own; one more than those is refused.
        let mut viewer = IpcClient::connect(&path).await.unwrap();
        viewer.console(true, true, T).await.unwrap();
        let mut second = IpcClient::connect(&path).await.unwrap();
        let e = second.console(true, true, T).await.unwrap_err();
        assert!(e.to_string().contains("1 console viewers"), "{e}");
        // Control still gets in while all of those stream.
        let mut control = IpcClient::connect(&path).await.unwrap();
        assert!(control
            .status()
            .await
            .unwrap_err()
            .to_string()
            .contains("nope"));
        drop(streams);
        drop(viewer);
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_idle_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        serve_small(
            &path,
            Limits {
                max_connections: 4,
                max_event_streams: 4,
                max_consoles: 4,
                idle_timeout: Duration::from_millis(200),
                write_timeout: Duration::from_secs(600),
            },
        );
        // Half a line counts as idle too (no slowloris).
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(b"{\"id\":1,").await.unwrap();
        let r = read_reply(&mut s).await;
        assert_eq!(r.error.unwrap().kind, ErrorKind::Timeout);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "closed after the notice");
    }

    #[tokio::test]
    async fn a_client_that_never_reads_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        serve_small(
            &path,
            Limits {
                max_connections: 4,
                max_event_streams: 4,
                max_consoles: 4,
                idle_timeout: Duration::from_secs(600),
                write_timeout: Duration::from_millis(200),
            },
        );
        // Requests with large replies until the socket buffers fill up;
        // the server must then close the connection, not block forever.
        let s = UnixStream::connect(&path).await.unwrap();
        let (_r, mut w) = s.into_split();
        let big = format!(
            "{{\"id\":1,\"method\":\"qmp\",\"params\":{{\"execute\":\"echo\",\"arguments\":{{\"x\":\"{}\"}}}}}}\n",
            "x".repeat(64 * 1024)
        );
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if w.write_all(big.as_bytes()).await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(outcome.is_ok(), "the server kept the connection open");
    }

    #[tokio::test]
    async fn missing_socket_means_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let err = IpcClient::connect(&dir.path().join("none.sock"))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, IpcError::NotRunning { .. }));
    }
}
