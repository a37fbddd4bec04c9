//! Client side of the runner protocol: one method per request, typed
//! replies, and the protocol-version check for what older runners lack.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::protocol::{
    Call, CompanionFailure, ConsoleParams, ErrorBody, ErrorKind, ForwardParams, ForwardReply, Need,
    Outgoing, QmpParams, Response, SnapshotParams, SnapshotResult, StatusInfo, StopParams,
    StopResult, StreamStart, SuspendResult, PROTOCOL_UNTYPED,
};

#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// Nothing listens on the socket: the VM is not running.
    #[error("no runner is listening on {path} (the VM is not running)")]
    NotRunning { path: PathBuf },
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("lost the connection to the runner: {0}")]
    Io(#[from] std::io::Error),
    #[error("the runner closed the connection")]
    Closed,
    #[error("unexpected reply from the runner: {0}")]
    Protocol(String),
    #[error("the runner did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{}", describe_remote(.0))]
    Remote(ErrorBody),
    /// The runner is older than what the caller needs (it was started by an
    /// older maqet and keeps running after an upgrade).
    #[error("the runner speaks protocol {runner} (started by {}); {} needs protocol {}", started_by(.maqet_version), .need.describe(), .need.since())]
    Outdated {
        runner: u32,
        maqet_version: Option<String>,
        need: Need,
    },
}

/// "maqet 0.4.0", or what is known about a runner that does not say.
pub fn started_by(version: &Option<String>) -> String {
    match version {
        Some(v) => format!("maqet {v}"),
        None => "an older maqet".into(),
    }
}

fn describe_remote(e: &ErrorBody) -> String {
    match &e.class {
        Some(class) => format!("{}: {}", class, e.message),
        None => e.message.clone(),
    }
}

impl IpcError {
    pub fn remote_kind(&self) -> Option<ErrorKind> {
        match self {
            IpcError::Remote(b) => Some(b.kind),
            _ => None,
        }
    }
}

/// `status` must answer even when QEMU is busy (the runner bounds its own
/// QEMU probe to 2 s).
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// A forward is one HMP command to QEMU and a file write.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, IpcError> {
    let shown = v.to_string();
    serde_json::from_value(v)
        .map_err(|e| IpcError::Protocol(format!("{e}: {}", super::protocol::excerpt(&shown, 200))))
}

pub struct IpcClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    line: String,
    /// The runner's status, once asked (its protocol version does not change
    /// while the connection lives).
    status: Option<StatusInfo>,
}

impl IpcClient {
    pub async fn connect(path: &Path) -> Result<Self, IpcError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    IpcError::NotRunning {
                        path: path.to_path_buf(),
                    }
                }
                _ => IpcError::Connect {
                    path: path.to_path_buf(),
                    source: e,
                },
            })?;
        let (r, w) = stream.into_split();
        Ok(IpcClient {
            reader: BufReader::new(r),
            writer: w,
            next_id: 1,
            line: String::new(),
            status: None,
        })
    }

    /// The runner's status (asked afresh each time).
    pub async fn status(&mut self) -> Result<StatusInfo, IpcError> {
        let v = self.request(&Call::Status, Some(STATUS_TIMEOUT)).await?;
        let s: StatusInfo = typed(v)?;
        self.status = Some(s.clone());
        Ok(s)
    }

    /// The runner's protocol version, asked once per connection.
    pub async fn protocol(&mut self) -> Result<(u32, Option<String>), IpcError> {
        if self.status.is_none() {
            self.status().await?;
        }
        let s = self.status.as_ref().expect("status was just read");
        Ok((s.protocol, s.maqet_version.clone()))
    }

    /// Ok when the runner offers `need`; every runner offers what protocol
    /// 1 had, so only newer needs cost a `status` round trip.
    pub async fn require(&mut self, need: Need) -> Result<(), IpcError> {
        if need.since() <= PROTOCOL_UNTYPED {
            return Ok(());
        }
        let (runner, maqet_version) = self.protocol().await?;
        if runner >= need.since() {
            return Ok(());
        }
        Err(IpcError::Outdated {
            runner,
            maqet_version,
            need,
        })
    }

    /// One QMP command; the runner bounds it (and says so) when QEMU is slow.
    pub async fn qmp(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, IpcError> {
        self.qmp_within(command, arguments, None).await
    }

    /// [`qmp`](Self::qmp) with a bound on the wait for the reply.
    pub async fn qmp_within(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        timeout: Option<Duration>,
    ) -> Result<Value, IpcError> {
        let call = Call::Qmp(QmpParams {
            execute: command.to_string(),
            arguments,
        });
        self.request(&call, timeout).await
    }

    /// Asks the runner to stop the VM (`timeout`: for the guest after ACPI
    /// power-down, the VM's `shutdown_timeout` when `None`); the reply comes
    /// once QEMU is gone, `wait` bounds it.
    pub async fn stop(
        &mut self,
        timeout: Option<Duration>,
        force: bool,
        agent: bool,
        wait: Duration,
    ) -> Result<StopResult, IpcError> {
        let mut params = StopParams::new(timeout, force);
        params.agent = agent && !force;
        let call = Call::Stop(params);
        self.require(call.need()).await?;
        typed(self.request(&call, Some(wait)).await?)
    }

    /// Has the runner run a live snapshot job to its end (freezing the
    /// guest's file systems around a save when asked). Unbounded: writing
    /// the VM state takes as long as the guest's RAM needs, and the runner
    /// reports a failed job in the result.
    pub async fn snapshot(&mut self, p: SnapshotParams) -> Result<SnapshotResult, IpcError> {
        self.require(Need::Snapshot).await?;
        typed(self.request(&Call::Snapshot(p), None).await?)
    }

    /// Has the runner save the VM's running state and end the VM (protocol
    /// 5). Unbounded: writing the state takes as long as the guest's RAM
    /// needs (the runner gives up on a save that stops making progress).
    pub async fn suspend(&mut self) -> Result<SuspendResult, IpcError> {
        self.require(Need::Suspend).await?;
        typed(self.request(&Call::Suspend, None).await?)
    }

    /// Adds or removes a port forward of the running VM (protocol 6); the
    /// reply comes once QEMU has it and the port plan is rewritten.
    pub async fn forward(&mut self, p: ForwardParams) -> Result<ForwardReply, IpcError> {
        self.require(Need::Forward).await?;
        typed(
            self.request(&Call::Forward(p), Some(FORWARD_TIMEOUT))
                .await?,
        )
    }

    /// Tells the runner that a helper unit of its VM failed (protocol 4).
    pub async fn companion_failed(&mut self, p: CompanionFailure) -> Result<(), IpcError> {
        self.require(Need::CompanionFailed).await?;
        self.request(&Call::CompanionFailed(p), Some(STATUS_TIMEOUT))
            .await
            .map(drop)
    }

    /// Turns the connection into the VM's event stream; read it with
    /// [`next_event`](Self::next_event). Subscribed once this returns.
    pub async fn events(&mut self, within: Duration) -> Result<StreamStart, IpcError> {
        typed(self.request(&Call::Events, Some(within)).await?)
    }

    /// Attaches to the serial console; after this the connection is raw
    /// bytes ([`into_raw`](Self::into_raw)).
    pub async fn console(
        &mut self,
        replay: bool,
        follow: bool,
        within: Duration,
    ) -> Result<StreamStart, IpcError> {
        let call = Call::Console(ConsoleParams { replay, follow });
        typed(self.request(&call, Some(within)).await?)
    }

    /// One request, one reply. `timeout` bounds the wait for the reply.
    pub(super) async fn request(
        &mut self,
        call: &Call,
        timeout: Option<Duration>,
    ) -> Result<Value, IpcError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut buf = serde_json::to_vec(&Outgoing { id, call })
            .map_err(|e| IpcError::Protocol(e.to_string()))?;
        buf.push(b'\n');
        self.writer.write_all(&buf).await?;
        let reply = match timeout {
            Some(t) => tokio::time::timeout(t, self.read_response())
                .await
                .map_err(|_| IpcError::Timeout(t))??,
            None => self.read_response().await?,
        };
        // Id 0 is the server speaking for the connection (refused, closed
        // as idle, unparseable request): its error is the answer.
        if let (0, Some(e)) = (reply.id, &reply.error) {
            return Err(IpcError::Remote(e.clone()));
        }
        if reply.id != id {
            return Err(IpcError::Protocol(format!(
                "reply for request {} while waiting for {}",
                reply.id, id
            )));
        }
        match (reply.result, reply.error) {
            (_, Some(e)) => Err(IpcError::Remote(e)),
            (Some(v), None) => Ok(v),
            (None, None) => Err(IpcError::Protocol("reply without result or error".into())),
        }
    }

    /// The next streamed event after an `events` call; `None` when the
    /// runner closed the stream (the VM stopped).
    pub async fn next_event(&mut self) -> Result<Option<Value>, IpcError> {
        match self.read_response().await {
            Ok(r) => match (r.event, r.error) {
                (Some(ev), _) => Ok(Some(ev)),
                (None, Some(e)) => Err(IpcError::Remote(e)),
                (None, None) => Err(IpcError::Protocol("expected an event".into())),
            },
            Err(IpcError::Closed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The connection's two halves, for a method that switches it to a raw
    /// byte stream (`console`). Bytes already read past the last reply stay
    /// in the returned reader.
    pub fn into_raw(self) -> (BufReader<OwnedReadHalf>, OwnedWriteHalf) {
        (self.reader, self.writer)
    }

    async fn read_response(&mut self) -> Result<Response, IpcError> {
        self.line.clear();
        let n = self.reader.read_line(&mut self.line).await?;
        if n == 0 {
            return Err(IpcError::Closed);
        }
        serde_json::from_str(self.line.trim_end())
            .map_err(|e| IpcError::Protocol(format!("{e}: {}", self.line.trim_end())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::net::UnixListener;

    /// A runner that answers `status` with `status` (counting the asks)
    /// and `qmp` with `{}`.
    async fn runner(status: Value) -> (tempfile::TempDir, std::path::PathBuf, Arc<AtomicUsize>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let asked = Arc::new(AtomicUsize::new(0));
        let count = asked.clone();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            while let Some(l) = lines.next_line().await.unwrap() {
                let req: Value = serde_json::from_str(&l).unwrap();
                let result = if req["method"] == "status" {
                    count.fetch_add(1, Ordering::SeqCst);
                    status.clone()
                } else {
                    json!({})
                };
                let reply = json!({"id": req["id"], "result": result});
                w.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
            }
        });
        (dir, path, asked)
    }

    fn status_v(protocol: Option<u32>) -> Value {
        let mut v = json!({"vm": "a", "runner_pid": 1, "qemu_pid": 2, "qemu_version": "9.2.0",
            "run_state": "running", "ready_at": 5});
        if let Some(p) = protocol {
            v["protocol"] = json!(p);
            v["maqet_version"] = json!("9.9.9");
        }
        v
    }

    #[tokio::test]
    async fn an_old_runner_serves_old_requests_and_refuses_new_ones_once_asked() {
        let (_d, path, asked) = runner(status_v(None)).await;
        let mut c = IpcClient::connect(&path).await.unwrap();
        // Protocol-1 requests need no version round trip.
        c.require(Need::Qmp).await.unwrap();
        c.qmp("query-status", None).await.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 0);
        let e = c.require(Need::QmpEndpoint).await.unwrap_err();
        assert!(
            matches!(
                &e,
                IpcError::Outdated {
                    runner: 1,
                    maqet_version: None,
                    need: Need::QmpEndpoint
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("started by an older maqet"), "{e}");
        // Asked once per connection.
        c.require(Need::QmpEndpoint).await.unwrap_err();
        assert_eq!(asked.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_current_runner_offers_everything() {
        let (_d, path, _) = runner(status_v(Some(2))).await;
        let mut c = IpcClient::connect(&path).await.unwrap();
        c.require(Need::QmpEndpoint).await.unwrap();
        assert_eq!(c.protocol().await.unwrap(), (2, Some("9.9.9".into())));
    }
}
