//! Client side of the runner protocol (used by the CLI).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::protocol::{ErrorBody, ErrorKind, Request, Response};

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

pub struct IpcClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    line: String,
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
        })
    }

    /// One request, one reply. `timeout` bounds the wait for the reply.
    pub async fn call(
        &mut self,
        method: &str,
        params: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, IpcError> {
        let id = self.next_id;
        self.next_id += 1;
        let req = Request {
            id,
            method: method.to_string(),
            params,
        };
        let mut buf = serde_json::to_vec(&req).map_err(|e| IpcError::Protocol(e.to_string()))?;
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
