//! Server side of the runner protocol: accepts connections on the socket
//! systemd passed in and hands each request to a [`Dispatch`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc};

use super::protocol::{ErrorBody, ErrorKind, Request, Response, MAX_REQUEST_LINE, METHODS};

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

/// What the runner does with requests.
pub trait Dispatch: Send + Sync + 'static {
    /// Answers one request (every method except `events` and `console`).
    fn call(&self, method: String, params: Value) -> BoxFuture<Result<Answer, ErrorBody>>;
    /// A fresh subscription to the VM's events, as JSON objects.
    fn subscribe(&self) -> broadcast::Receiver<Value>;
    /// Attaches a viewer to the serial console (`console` params).
    fn console(&self, params: Value) -> Result<ConsoleStream, ErrorBody>;
}

/// Accepts connections until the listener fails; each connection runs in
/// its own task so a slow QMP command never blocks another client.
pub async fn serve(listener: UnixListener, dispatch: Arc<dyn Dispatch>) {
    let my_uid = unsafe { libc::geteuid() };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // The socket is 0600 in a 0700 directory; checking the peer
                // as well costs nothing and survives a chmod by mistake.
                match stream.peer_cred() {
                    Ok(c) if c.uid() == my_uid || c.uid() == 0 => {}
                    Ok(c) => {
                        tracing::warn!(
                            peer_uid = c.uid(),
                            "refused a connection from another user"
                        );
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read peer credentials; connection refused");
                        continue;
                    }
                }
                let d = dispatch.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle_connection(stream, d).await {
                        tracing::debug!(error = %e, "client connection ended with an error");
                    }
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "accept on the runner socket failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
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

async fn write_response<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    r: &Response,
) -> std::io::Result<()> {
    let mut buf = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    buf.push(b'\n');
    w.write_all(&buf).await
}

async fn handle_connection(stream: UnixStream, dispatch: Arc<dyn Dispatch>) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    loop {
        let text = match read_bounded_line(&mut reader).await? {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                let e = ErrorBody::new(
                    ErrorKind::BadRequest,
                    format!("request line longer than {MAX_REQUEST_LINE} bytes"),
                );
                return write_response(&mut w, &Response::error(0, e)).await;
            }
            Line::Text(t) => t,
        };
        let req: Request = match serde_json::from_str(text.trim_end()) {
            Ok(r) => r,
            Err(e) => {
                let body = ErrorBody::new(ErrorKind::BadRequest, format!("invalid request: {e}"));
                write_response(&mut w, &Response::error(0, body)).await?;
                continue;
            }
        };
        if req.method == "events" {
            return stream_events(req.id, reader, w, dispatch.subscribe()).await;
        }
        if req.method == "console" {
            match dispatch.console(req.params) {
                Ok(c) => return stream_console(req.id, reader, w, c).await,
                Err(e) => {
                    write_response(&mut w, &Response::error(req.id, e)).await?;
                    continue;
                }
            }
        }
        let mut written = None;
        let resp = if METHODS.contains(&req.method.as_str()) {
            match dispatch.call(req.method, req.params).await {
                Ok(a) => {
                    written = a.written;
                    Response::result(req.id, a.value)
                }
                Err(e) => Response::error(req.id, e),
            }
        } else {
            Response::error(
                req.id,
                ErrorBody::new(
                    ErrorKind::BadRequest,
                    format!(
                        "unknown method '{}'; known: {}",
                        req.method,
                        METHODS.join(", ")
                    ),
                ),
            )
        };
        write_response(&mut w, &resp).await?;
        if let Some(tx) = written {
            let _ = tx.send(());
        }
    }
}

/// Streams events until the client hangs up or the runner stops.
async fn stream_events(
    id: u64,
    mut reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    mut w: tokio::net::unix::OwnedWriteHalf,
    mut rx: broadcast::Receiver<Value>,
) -> std::io::Result<()> {
    write_response(&mut w, &Response::result(id, json!({"streaming": true}))).await?;
    let mut sink = [0u8; 256];
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(v) => write_response(&mut w, &Response::event(id, v)).await?,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let v = json!({"event": "MAQET_EVENTS_LOST", "data": {"count": n}});
                    write_response(&mut w, &Response::event(id, v)).await?;
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
) -> std::io::Result<()> {
    let follow = c.output.is_some();
    let reply = json!({"streaming": follow, "replay_bytes": c.replay.len()});
    write_response(&mut w, &Response::result(id, reply)).await?;
    w.write_all(&c.replay).await?;
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
                Ok(bytes) => w.write_all(&bytes).await?,
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

    impl Dispatch for Echo {
        fn call(&self, method: String, params: Value) -> BoxFuture<Result<Answer, ErrorBody>> {
            Box::pin(async move {
                match method.as_str() {
                    "status" => Ok(json!({"echo": params}).into()),
                    _ => Err(ErrorBody::new(ErrorKind::Unavailable, "nope")),
                }
            })
        }
        fn subscribe(&self) -> broadcast::Receiver<Value> {
            self.0.subscribe()
        }
        fn console(&self, _params: Value) -> Result<ConsoleStream, ErrorBody> {
            Err(ErrorBody::new(ErrorKind::Unavailable, "no console here"))
        }
    }

    /// A console with history "history", live output from `out`, input to `input`.
    struct Console {
        out: broadcast::Sender<Arc<[u8]>>,
        input: mpsc::Sender<Vec<u8>>,
    }

    impl Dispatch for Console {
        fn call(&self, _: String, _: Value) -> BoxFuture<Result<Answer, ErrorBody>> {
            Box::pin(async { Err(ErrorBody::new(ErrorKind::Unavailable, "nope")) })
        }
        fn subscribe(&self) -> broadcast::Receiver<Value> {
            broadcast::channel(1).1
        }
        fn console(&self, params: Value) -> Result<ConsoleStream, ErrorBody> {
            let p: crate::ipc::protocol::ConsoleParams = serde_json::from_value(params).unwrap();
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

    #[tokio::test]
    async fn requests_errors_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, _) = broadcast::channel(8);
        tokio::spawn(serve(listener, Arc::new(Echo(tx.clone()))));

        let mut c = IpcClient::connect(&path).await.unwrap();
        let v = c.call("status", json!({"x": 1}), None).await.unwrap();
        assert_eq!(v, json!({"echo": {"x": 1}}));
        let e = c.call("qmp", Value::Null, None).await.unwrap_err();
        assert_eq!(e.remote_kind(), Some(ErrorKind::Unavailable));
        let e = c.call("bogus", Value::Null, None).await.unwrap_err();
        assert!(e.to_string().contains("unknown method 'bogus'"), "{e}");
        // A refused console leaves the connection usable.
        let e = c.call("console", Value::Null, None).await.unwrap_err();
        assert!(e.to_string().contains("no console here"), "{e}");
        c.call("status", Value::Null, None).await.unwrap();

        let mut ev = IpcClient::connect(&path).await.unwrap();
        ev.call("events", Value::Null, None).await.unwrap();
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
