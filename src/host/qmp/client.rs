//! The shared QMP connection: a reader task, a writer task, and cheap handles to both.

use std::collections::HashMap;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::message::{classify, QemuVersion, QmpEvent, QmpMessage};
use super::QmpError;

/// Events buffered per subscriber; a subscriber that falls further behind loses the oldest
/// (it sees `RecvError::Lagged`) instead of stalling the reader for everyone.
const EVENT_CAPACITY: usize = 256;
/// Lines queued for the writer task before `execute` waits.
const WRITE_QUEUE: usize = 64;

type Reply = Result<Value, QmpError>;

/// One line for the writer task, with a descriptor to pass along with it
/// (`SCM_RIGHTS`, for `getfd`).
struct Outgoing {
    line: String,
    fd: Option<OwnedFd>,
}

/// A handle to one QMP connection. Clones share it; the connection (and its tasks) end when
/// QEMU closes it or when the last clone is dropped.
#[derive(Clone)]
pub struct QmpClient {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    lines: mpsc::Sender<Outgoing>,
    /// Dropped with the last clone, which tells the reader task to stop.
    _stop_reader: oneshot::Sender<()>,
}

/// State the tasks and the handles share.
struct Shared {
    state: Mutex<State>,
    /// Flips to true once, when the connection ends.
    closed: watch::Sender<bool>,
    next_id: AtomicU64,
}

struct State {
    closed: bool,
    pending: HashMap<u64, oneshot::Sender<Reply>>,
    /// `None` once closed, so subscribers see `RecvError::Closed` rather than wait forever.
    events: Option<broadcast::Sender<QmpEvent>>,
}

impl QmpClient {
    /// Reads the greeting, sends `qmp_capabilities`, spawns the reader and writer tasks (on the
    /// current tokio runtime). Returns the greeting's QEMU version. The whole handshake must
    /// finish within `handshake_timeout`.
    pub async fn connect(
        stream: UnixStream,
        handshake_timeout: Duration,
    ) -> Result<(QmpClient, QemuVersion), QmpError> {
        let deadline = tokio::time::Instant::now() + handshake_timeout;
        let (read, write) = stream.into_split();
        // The same BufReader goes on to the reader task, so nothing read ahead is lost.
        let mut reader = BufReader::new(read);
        let version = tokio::time::timeout_at(deadline, read_greeting(&mut reader))
            .await
            .map_err(|_| QmpError::Timeout(handshake_timeout))??;
        let client = QmpClient::spawn(reader, write);
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client
            .execute_timeout("qmp_capabilities", None, remaining)
            .await
        {
            Ok(_) => Ok((client, version)),
            Err(QmpError::Timeout(_)) => Err(QmpError::Timeout(handshake_timeout)),
            Err(e) => Err(e),
        }
    }

    fn spawn(reader: BufReader<OwnedReadHalf>, writer: OwnedWriteHalf) -> QmpClient {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                closed: false,
                pending: HashMap::new(),
                events: Some(events),
            }),
            closed: watch::Sender::new(false),
            next_id: AtomicU64::new(1),
        });
        let (lines, lines_rx) = mpsc::channel(WRITE_QUEUE);
        let (stop_tx, stop_rx) = oneshot::channel();
        tokio::spawn(read_loop(reader, shared.clone(), stop_rx));
        tokio::spawn(write_loop(writer, shared.clone(), lines_rx));
        QmpClient {
            inner: Arc::new(Inner {
                shared,
                lines,
                _stop_reader: stop_tx,
            }),
        }
    }

    /// Runs `command` and returns its `"return"` value. Waits as long as it takes, or until
    /// the connection closes (`Disconnected`). Dropping the future abandons the call cleanly.
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        self.send(command, arguments, None).await
    }

    /// Runs `command` with a copy of `fd` passed in the same message
    /// (`SCM_RIGHTS`): QEMU's `getfd` takes the descriptor that came with
    /// it. Only the runner's own connection does this; clients' `getfd` is
    /// refused by the runner's policy.
    pub async fn execute_with_fd(
        &self,
        command: &str,
        arguments: Option<Value>,
        fd: BorrowedFd<'_>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let copy = fd.try_clone_to_owned()?;
        tokio::time::timeout(timeout, self.send(command, arguments, Some(copy)))
            .await
            .map_err(|_| QmpError::Timeout(timeout))?
    }

    async fn send(
        &self,
        command: &str,
        arguments: Option<Value>,
        fd: Option<OwnedFd>,
    ) -> Result<Value, QmpError> {
        let shared = &self.inner.shared;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = Map::new();
        msg.insert("execute".into(), command.into());
        if let Some(arguments) = arguments {
            msg.insert("arguments".into(), arguments);
        }
        msg.insert("id".into(), id.into());
        // Compact JSON never contains a raw newline, so one message is exactly one line.
        let mut line = Value::Object(msg).to_string();
        line.push('\n');

        // Register before sending: the reply may arrive before `send` returns.
        let (tx, rx) = oneshot::channel();
        {
            let mut state = shared.lock();
            if state.closed {
                return Err(QmpError::Disconnected);
            }
            state.pending.insert(id, tx);
        }
        let _unregister = PendingGuard { shared, id };
        tracing::trace!(command, id, "QMP command");
        if self.inner.lines.send(Outgoing { line, fd }).await.is_err() {
            return Err(QmpError::Disconnected);
        }
        // A dropped sender means the connection closed before a reply.
        rx.await.unwrap_or(Err(QmpError::Disconnected))
    }

    /// Like `execute`, but fails with `Timeout` after `timeout` (the call is then forgotten; a
    /// late reply is ignored).
    pub async fn execute_timeout(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        tokio::time::timeout(timeout, self.execute(command, arguments))
            .await
            .map_err(|_| QmpError::Timeout(timeout))?
    }

    /// A receiver of every event from now on. After the connection closed, the receiver
    /// reports `Closed` at once.
    pub fn subscribe(&self) -> broadcast::Receiver<QmpEvent> {
        match &self.inner.shared.lock().events {
            Some(events) => events.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        *self.inner.shared.closed.borrow()
    }

    /// Resolves when the connection ends (typically: QEMU exited).
    pub async fn closed(&self) {
        let mut closed = self.inner.shared.closed.subscribe();
        // Cannot fail: `Shared` (the sender) lives as long as `self`.
        let _ = closed.wait_for(|c| *c).await;
    }

    #[cfg(test)]
    pub(crate) fn pending_len(&self) -> usize {
        self.inner.shared.lock().pending.len()
    }
}

impl fmt::Debug for QmpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QmpClient")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, but a poisoned map is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the connection closed and fails every pending call with `Disconnected`.
    fn close(&self) {
        let pending = {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            state.closed = true;
            state.events = None;
            // Inside the lock, so `is_closed()` is already true for anyone who then sees
            // `Disconnected`.
            self.closed.send_replace(true);
            std::mem::take(&mut state.pending)
        };
        for (_, tx) in pending {
            let _ = tx.send(Err(QmpError::Disconnected));
        }
        tracing::debug!("QMP connection closed");
    }

    fn reply(&self, id: Option<u64>, reply: Reply) {
        let tx = id.and_then(|id| self.lock().pending.remove(&id));
        match tx {
            Some(tx) => {
                let _ = tx.send(reply);
            }
            // Normal for calls that timed out or were dropped.
            None => tracing::debug!(?id, "QMP reply for no pending call; ignored"),
        }
    }

    /// Routes one line from QEMU.
    fn dispatch(&self, line: &[u8]) {
        let Ok(text) = std::str::from_utf8(line) else {
            tracing::warn!("QMP message is not UTF-8; ignored");
            return;
        };
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "QMP message is not JSON; ignored");
                return;
            }
        };
        let id = value.get("id").and_then(Value::as_u64);
        match classify(value) {
            Ok(QmpMessage::Return { value, .. }) => self.reply(id, Ok(value)),
            Ok(QmpMessage::Error { class, desc, .. }) => {
                if id.is_none() {
                    tracing::warn!(%class, %desc, "QMP error without id");
                }
                self.reply(id, Err(QmpError::Command { class, desc }));
            }
            Ok(QmpMessage::Event(event)) => {
                tracing::trace!(event = %event.event, "QMP event");
                if let Some(events) = &self.lock().events {
                    // No subscribers is fine.
                    let _ = events.send(event);
                }
            }
            Ok(QmpMessage::Greeting { .. }) => tracing::warn!("unexpected second QMP greeting"),
            // A malformed reply still fails its caller instead of leaving it waiting.
            Err(e) if id.is_some() => self.reply(id, Err(e)),
            Err(e) => tracing::warn!(error = %e, "unroutable QMP message; ignored"),
        }
    }
}

/// Removes a call's pending entry however the call ends (reply, timeout, cancellation).
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().pending.remove(&self.id);
    }
}

async fn read_greeting(reader: &mut BufReader<OwnedReadHalf>) -> Result<QemuVersion, QmpError> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line).await? == 0 {
        return Err(QmpError::Disconnected);
    }
    let text = String::from_utf8(line)
        .map_err(|_| QmpError::Protocol("QMP greeting is not UTF-8".into()))?;
    match super::parse_message(&text)? {
        QmpMessage::Greeting { version, .. } => Ok(version),
        other => Err(QmpError::Protocol(format!(
            "expected the QMP greeting, got {other:?}"
        ))),
    }
}

/// Reads lines until EOF, an error, or the last handle is dropped; then closes the connection.
/// Lines have no length cap: `query-qmp-schema` replies are hundreds of KiB.
async fn read_loop(
    mut reader: BufReader<OwnedReadHalf>,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = tokio::select! {
            read = reader.read_until(b'\n', &mut line) => read,
            _ = &mut stop => break,
        };
        match read {
            Ok(0) => break,
            Ok(_) => shared.dispatch(&line),
            Err(e) => {
                tracing::debug!(error = %e, "QMP read failed");
                break;
            }
        }
    }
    shared.close();
}

/// Writes queued lines one at a time, each whole, so concurrent callers never interleave.
/// Owning the write half here also means a cancelled `execute` can never leave half a line.
async fn write_loop(
    mut writer: OwnedWriteHalf,
    shared: Arc<Shared>,
    mut lines: mpsc::Receiver<Outgoing>,
) {
    let mut closed = shared.closed.subscribe();
    loop {
        let out = tokio::select! {
            out = lines.recv() => out,
            _ = closed.wait_for(|c| *c) => return,
        };
        // `None`: every handle is gone; dropping the write half ends the connection.
        let Some(out) = out else { return };
        let bytes = out.line.as_bytes();
        let written = match &out.fd {
            // The descriptor rides on the line's first bytes; the rest follows.
            Some(fd) => match send_with_fd(&writer, bytes, fd.as_fd()).await {
                Ok(n) => writer.write_all(&bytes[n..]).await,
                Err(e) => Err(e),
            },
            None => writer.write_all(bytes).await,
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "QMP write failed");
            shared.close();
            return;
        }
    }
}

/// Sends (a first part of) `bytes` with `fd` attached as `SCM_RIGHTS`;
/// returns how many bytes went.
async fn send_with_fd(
    writer: &OwnedWriteHalf,
    bytes: &[u8],
    fd: BorrowedFd<'_>,
) -> std::io::Result<usize> {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::mem::MaybeUninit;
    let stream: &UnixStream = writer.as_ref();
    loop {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            let fds = [fd];
            control.push(SendAncillaryMessage::ScmRights(&fds));
            let iov = [std::io::IoSlice::new(bytes)];
            sendmsg(stream, &iov, &mut control, SendFlags::NOSIGNAL).map_err(std::io::Error::from)
        });
        match sent {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}
