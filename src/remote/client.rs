//! The client end: one `ssh … maqet serve --stdio` child per connection,
//! the handshake, and calls.

use std::path::PathBuf;
use std::process::Stdio;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::protocol::{
    Call, Greeting, Hello, Reply, Request, Stream, Upload, OLDEST_PROTOCOL, PROTOCOL_VERSION,
};
use super::ssh::Transport;

/// ssh's exit status when it could not connect or authenticate.
const SSH_FAILED: i32 = 255;
/// A shell's status for "command not found".
const NOT_FOUND: i32 = 127;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot reach {host}: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("maqet is not installed on {host} (`{program}` was not found there): install maqet there (or set `maqet:` in hosts.yaml)")]
    NoMaqet { host: String, program: String },
    #[error("the maqet on {host} cannot serve `maqet -H` (`{program} serve --stdio` exited with status {status}): install maqet {ours} or newer there")]
    TooOld {
        host: String,
        program: String,
        status: String,
        ours: &'static str,
    },
    #[error("the maqet on {host} is maqet {theirs} and speaks protocol {theirs_range}; this is maqet {ours} and speaks protocol {ours_range}: install matching maqet versions")]
    Version {
        host: String,
        theirs: String,
        theirs_range: String,
        ours: &'static str,
        ours_range: String,
    },
    #[error("{host}: the remote side does not speak maqet's protocol; it sent: {line}")]
    Garbled { host: String, line: String },
    #[error("{host}: the connection ended before the answer ({status})")]
    Closed { host: String, status: String },
    #[error("cannot run ssh: {0}")]
    Spawn(std::io::Error),
    #[error("{host}: {source}")]
    Io {
        host: String,
        source: std::io::Error,
    },
    /// The remote maqet refused or failed: its exit code and its message.
    #[error("{message}")]
    Failed { code: i32, message: String },
}

/// An open protocol channel to one remote maqet.
pub struct Connection {
    pub transport: Transport,
    /// The negotiated protocol version.
    pub protocol: u32,
    /// The remote maqet's version.
    pub remote_maqet: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    /// The greeting has been read (the hello is sent at open; the first
    /// request follows it without waiting).
    greeted: bool,
    log: SshLog,
}

/// ssh's own messages (`-E`), read back when it fails; removed on drop.
struct SshLog(PathBuf);

impl SshLog {
    fn new() -> std::io::Result<SshLog> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = super::ssh::control_dir().unwrap_or_else(std::env::temp_dir);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = dir.join(format!("log-{}-{nanos}", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(SshLog(path))
    }

    fn text(&self) -> String {
        let t = std::fs::read_to_string(&self.0).unwrap_or_default();
        let t = t.trim();
        match t.is_empty() {
            true => "ssh failed without a message".into(),
            false => t.lines().collect::<Vec<_>>().join("; "),
        }
    }
}

impl Drop for SshLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn status_text(s: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => s.to_string(),
    }
}

impl Connection {
    /// Starts ssh and says hello; the greeting is read (and the versions
    /// checked) before the first reply, or by [`Connection::ready`].
    pub async fn open(transport: Transport) -> Result<Connection, RemoteError> {
        let log = SshLog::new().map_err(RemoteError::Spawn)?;
        let mut child = Command::new("ssh")
            .args(transport.protocol_argv(&log.0))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(RemoteError::Spawn)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(RemoteError::Spawn(std::io::Error::other("no pipes")));
        };
        let mut c = Connection {
            transport,
            protocol: 0,
            remote_maqet: String::new(),
            child,
            stdin: Some(stdin),
            lines: BufReader::new(stdout).lines(),
            next_id: 0,
            greeted: false,
            log,
        };
        let hello = serde_json::to_string(&Hello::ours()).expect("hello serialises");
        c.send(hello).await?;
        Ok(c)
    }

    /// Reads the greeting if it has not been read: the host is reachable
    /// and its maqet speaks a protocol version of ours.
    pub async fn ready(&mut self) -> Result<(), RemoteError> {
        if !self.greeted {
            self.handshake().await?;
            self.greeted = true;
        }
        Ok(())
    }

    fn host(&self) -> String {
        self.transport.label.clone()
    }

    async fn send(&mut self, line: String) -> Result<(), RemoteError> {
        let host = self.host();
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(RemoteError::Closed {
                host,
                status: "closed".into(),
            });
        };
        let r = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.write_all(b"\n").await?;
            stdin.flush().await
        }
        .await;
        match r {
            Ok(()) => Ok(()),
            // The far end is gone: why is in ssh's status.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(self.ended().await),
            Err(source) => Err(RemoteError::Io { host, source }),
        }
    }

    /// The next line, or why there is none.
    async fn line(&mut self) -> Result<String, RemoteError> {
        match self.lines.next_line().await {
            Ok(Some(l)) => Ok(l),
            Ok(None) => Err(self.ended().await),
            Err(source) => Err(RemoteError::Io {
                host: self.host(),
                source,
            }),
        }
    }

    /// Why the channel ended: ssh's exit status says it.
    async fn ended(&mut self) -> RemoteError {
        let host = self.host();
        self.stdin = None;
        let status = match self.child.wait().await {
            Ok(s) => s,
            Err(source) => return RemoteError::Io { host, source },
        };
        let program = self.transport.maqet.clone();
        match status.code() {
            Some(SSH_FAILED) => RemoteError::Unreachable {
                host,
                reason: self.log.text(),
            },
            Some(NOT_FOUND) | Some(126) if self.protocol == 0 => {
                RemoteError::NoMaqet { host, program }
            }
            _ if self.protocol == 0 => RemoteError::TooOld {
                host,
                program,
                status: status_text(&status),
                ours: env!("CARGO_PKG_VERSION"),
            },
            _ => RemoteError::Closed {
                host,
                status: status_text(&status),
            },
        }
    }

    async fn handshake(&mut self) -> Result<(), RemoteError> {
        let line = self.line().await?;
        let greeting: Greeting = serde_json::from_str(&line).map_err(|_| RemoteError::Garbled {
            host: self.host(),
            line: clip(&line),
        })?;
        let range = |o: u32, n: u32| match o == n {
            true => n.to_string(),
            false => format!("{o} to {n}"),
        };
        let version_error = |theirs: String, theirs_range: String| RemoteError::Version {
            host: self.host(),
            theirs,
            theirs_range,
            ours: env!("CARGO_PKG_VERSION"),
            ours_range: range(OLDEST_PROTOCOL, PROTOCOL_VERSION),
        };
        match greeting {
            Greeting::Welcome { maqet, protocol }
                if (OLDEST_PROTOCOL..=PROTOCOL_VERSION).contains(&protocol) =>
            {
                self.protocol = protocol;
                self.remote_maqet = maqet;
                Ok(())
            }
            Greeting::Welcome { maqet, protocol } => {
                Err(version_error(maqet, protocol.to_string()))
            }
            Greeting::Refused {
                maqet,
                protocol,
                oldest,
            } => Err(version_error(maqet, range(oldest, protocol))),
        }
    }

    async fn request(&mut self, call: Call) -> Result<u64, RemoteError> {
        self.next_id += 1;
        let id = self.next_id;
        let line = serde_json::to_string(&Request { id, call }).expect("requests serialise");
        self.send(line).await?;
        Ok(id)
    }

    async fn reply(&mut self, id: u64) -> Result<Reply, RemoteError> {
        self.ready().await?;
        loop {
            let line = self.line().await?;
            let reply: Reply = serde_json::from_str(&line).map_err(|_| RemoteError::Garbled {
                host: self.host(),
                line: clip(&line),
            })?;
            // A reply to an earlier, abandoned request is not this one's.
            if reply.id() == id {
                return Ok(reply);
            }
        }
    }

    /// A typed call: its result, or the remote maqet's refusal.
    pub async fn call<T: DeserializeOwned>(&mut self, call: Call) -> Result<T, RemoteError> {
        let id = self.request(call).await?;
        match self.reply(id).await? {
            Reply::Done { value, .. } => {
                serde_json::from_value(value).map_err(|e| RemoteError::Garbled {
                    host: self.host(),
                    line: clip(&e.to_string()),
                })
            }
            Reply::Failed { code, message, .. } => Err(RemoteError::Failed { code, message }),
            other => Err(RemoteError::Garbled {
                host: self.host(),
                line: clip(&format!("{other:?}")),
            }),
        }
    }

    /// `maqet ARGV…` on the remote host; `out` gets its output as it
    /// comes. Returns its exit code.
    pub async fn run(
        &mut self,
        argv: Vec<String>,
        uploads: Vec<Upload>,
        out: &mut dyn FnMut(Stream, &str),
    ) -> Result<i32, RemoteError> {
        let id = self.request(Call::Run { argv, uploads }).await?;
        loop {
            match self.reply(id).await? {
                Reply::Output { stream, data, .. } => out(stream, &data),
                Reply::Exit { code, .. } => return Ok(code),
                Reply::Failed { code, message, .. } => {
                    return Err(RemoteError::Failed { code, message })
                }
                Reply::Done { .. } => {
                    return Err(RemoteError::Garbled {
                        host: self.host(),
                        line: "a `done` reply to `run`".into(),
                    })
                }
            }
        }
    }

    /// Ends the channel once the last answer is in: the ssh client is
    /// killed (and reaped) without waiting for the far end to wind down,
    /// which would cost one more round trip for nothing; the master
    /// connection then closes the session and the server sees end of input.
    pub async fn close(mut self) {
        self.stdin = None;
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// At most 200 bytes of what the other side sent, for a message.
fn clip(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
