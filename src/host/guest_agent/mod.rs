//! QEMU guest agent client (issue 11). With `guest_agent: true` QEMU gets a
//! virtio-serial port named `org.qemu.guest_agent.0` whose host end is a
//! listening unix socket beside the runner's (`$XDG_RUNTIME_DIR/maqet/vm/
//! VM.qga.sock`, in the same 0700 directory, gone with the runtime
//! directory). The agent speaks QMP-like JSON lines; every session starts
//! with `guest-sync-delimited` so a reply left over from an earlier,
//! interrupted client is never taken for ours.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use maqet_base::vmname::VmName;

/// The virtio-serial port name guest agents look for.
pub const CHANNEL: &str = "org.qemu.guest_agent.0";

/// How long a guest that took the agent's shutdown request gets to power
/// off before ACPI power-down follows.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the guest agent socket {}: {source} (is the VM running with `guest_agent: true`?)", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the guest agent did not answer within {0:?} (is qemu-guest-agent running in the guest?)"
    )]
    Timeout(Duration),
    #[error("talking to the guest agent: {0}")]
    Io(#[from] std::io::Error),
    #[error("the guest agent sent something that is not JSON: {0}")]
    Garbled(String),
    #[error("the guest agent refused {command}: {class}: {desc}")]
    Refused {
        command: String,
        class: String,
        desc: String,
    },
    #[error("{0}")]
    Path(#[from] maqet_base::paths::PathError),
}

/// The agent socket of a VM that may be running (in its runtime
/// directory, or beside it for a VM started before that layout).
pub fn socket_path(vm: &VmName) -> Result<PathBuf, maqet_base::paths::PathError> {
    Ok(maqet_base::paths::VmRuntime::locate(vm)?.agent())
}

/// QEMU options for the agent channel on `socket`.
pub fn qemu_argv(socket: &Path) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!(
            "socket,id=maqet-qga,path={},server=on,wait=off",
            socket.to_string_lossy().replace(',', ",,")
        ),
        "-device".into(),
        "virtio-serial-pci,id=maqet-serial".into(),
        "-device".into(),
        format!("virtserialport,chardev=maqet-qga,name={CHANNEL}"),
    ]
}

pub struct Agent {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    timeout: Duration,
}

impl Agent {
    /// Connects and synchronises; fails with [`AgentError::Timeout`] when
    /// no agent answers in the guest.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Agent, AgentError> {
        let s = UnixStream::connect(path).map_err(|source| AgentError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let mut a = Agent {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
            timeout,
        };
        a.sync()?;
        Ok(a)
    }

    fn sync(&mut self) -> Result<(), AgentError> {
        let id = u64::from(std::process::id()) << 16 | (now_nanos() & 0xffff);
        // 0xFF first: the agent drops any partial command it was reading.
        self.writer.write_all(&[0xff])?;
        self.send("guest-sync-delimited", Some(json!({ "id": id })))?;
        // The reply follows a 0xFF sentinel; anything before it is stale.
        let mut skipped = Vec::new();
        self.map_timeout(|r| r.read_until(0xff, &mut skipped))?;
        loop {
            let v = self.read_reply()?;
            if v.get("return").and_then(Value::as_u64) == Some(id) {
                return Ok(());
            }
        }
    }

    fn send(&mut self, command: &str, args: Option<Value>) -> Result<(), AgentError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        Ok(())
    }

    fn map_timeout<T>(
        &mut self,
        f: impl FnOnce(&mut BufReader<UnixStream>) -> std::io::Result<T>,
    ) -> Result<T, AgentError> {
        match f(&mut self.reader) {
            Ok(t) => Ok(t),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(AgentError::Timeout(self.timeout))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn read_reply(&mut self) -> Result<Value, AgentError> {
        loop {
            let mut line = String::new();
            let n = self.map_timeout(|r| r.read_line(&mut line))?;
            if n == 0 {
                return Err(AgentError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let t = line.trim_matches(|c: char| c.is_whitespace() || c == '\u{ff}');
            if t.is_empty() {
                continue;
            }
            return serde_json::from_str(t).map_err(|_| AgentError::Garbled(t.to_string()));
        }
    }

    /// Runs one command; its `return` value.
    pub fn call(&mut self, command: &str, args: Option<Value>) -> Result<Value, AgentError> {
        self.send(command, args)?;
        let v = self.read_reply()?;
        if let Some(e) = v.get("error") {
            return Err(AgentError::Refused {
                command: command.to_string(),
                class: e["class"].as_str().unwrap_or("Error").to_string(),
                desc: e["desc"].as_str().unwrap_or("").to_string(),
            });
        }
        Ok(v.get("return").cloned().unwrap_or(Value::Null))
    }

    /// Bounds each later reply (e.g. a freeze, which syncs the guest's
    /// file systems first, gets longer than the handshake).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), AgentError> {
        self.reader.get_ref().set_read_timeout(Some(timeout))?;
        self.writer.set_write_timeout(Some(timeout))?;
        self.timeout = timeout;
        Ok(())
    }

    /// `guest-fsfreeze-freeze`: how many file systems the agent froze
    /// (ones that cannot be frozen, like an initramfs root, do not count).
    pub fn fsfreeze(&mut self) -> Result<u64, AgentError> {
        let n = self.call("guest-fsfreeze-freeze", None)?;
        count(&n, "guest-fsfreeze-freeze")
    }

    /// `guest-fsfreeze-thaw`: how many file systems were thawed.
    pub fn fsthaw(&mut self) -> Result<u64, AgentError> {
        let n = self.call("guest-fsfreeze-thaw", None)?;
        count(&n, "guest-fsfreeze-thaw")
    }

    /// Whether the guest's file systems are frozen (`guest-fsfreeze-status`).
    pub fn is_frozen(&mut self) -> Result<bool, AgentError> {
        match self.call("guest-fsfreeze-status", None)?.as_str() {
            Some("frozen") => Ok(true),
            Some("thawed") => Ok(false),
            _ => Err(AgentError::Garbled(
                "guest-fsfreeze-status returned neither \"frozen\" nor \"thawed\"".into(),
            )),
        }
    }

    /// `guest-set-time` to `unix_ns` (nanoseconds since the epoch): the
    /// guest's system clock, then its hardware clock (the agent runs
    /// `hwclock -w`; its failure comes back as an error although the
    /// system clock is already set).
    pub fn set_time(&mut self, unix_ns: u64) -> Result<(), AgentError> {
        self.call("guest-set-time", Some(json!({ "time": unix_ns })))
            .map(drop)
    }

    /// `guest-shutdown` (power-down). The agent answers only when it could
    /// not start the shutdown; silence within `grace` means it is under way.
    pub fn shutdown(&mut self, grace: Duration) -> Result<(), AgentError> {
        self.send("guest-shutdown", Some(json!({ "mode": "powerdown" })))?;
        self.reader.get_ref().set_read_timeout(Some(grace))?;
        match self.read_reply() {
            Ok(v) if v.get("error").is_some() => Err(AgentError::Refused {
                command: "guest-shutdown".into(),
                class: v["error"]["class"].as_str().unwrap_or("Error").into(),
                desc: v["error"]["desc"].as_str().unwrap_or("").into(),
            }),
            // The guest went away under us, or kept quiet: both mean it is
            // shutting down.
            Ok(_) | Err(AgentError::Timeout(_)) | Err(AgentError::Io(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The contents of file `path` in the guest (at most `limit` bytes),
    /// or `None` when it does not exist (`guest-file-open`/`-read`/`-close`).
    pub fn read_file(&mut self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, AgentError> {
        let handle = match self.call(
            "guest-file-open",
            Some(json!({ "path": path, "mode": "r" })),
        ) {
            Ok(h) => h
                .as_i64()
                .ok_or_else(|| AgentError::Garbled("guest-file-open returned no handle".into()))?,
            // qemu-ga says "failed to open file '…' (mode: 'r'): No such file or directory".
            Err(AgentError::Refused { desc, .. }) if desc.contains("No such file") => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        let result = loop {
            let r = match self.call(
                "guest-file-read",
                Some(json!({ "handle": handle, "count": 65536 })),
            ) {
                Ok(r) => r,
                Err(e) => break Err(e),
            };
            out.extend(base64_decode(r["buf-b64"].as_str().unwrap_or("")));
            if out.len() > limit {
                break Err(AgentError::Garbled(format!(
                    "{path} is larger than {limit} bytes"
                )));
            }
            if r["eof"].as_bool() != Some(false) || r["count"].as_u64() == Some(0) {
                break Ok(Some(std::mem::take(&mut out)));
            }
        };
        // Handles are the agent's resource: always given back.
        let _ = self.call("guest-file-close", Some(json!({ "handle": handle })));
        result
    }

    /// Runs a program in the guest and waits for it: exit code, stdout,
    /// stderr.
    pub fn exec(&mut self, argv: &[String]) -> Result<ExecResult, AgentError> {
        let pid = self.call(
            "guest-exec",
            Some(json!({ "path": argv[0], "arg": &argv[1..], "capture-output": true })),
        )?["pid"]
            .as_i64()
            .ok_or_else(|| AgentError::Garbled("guest-exec returned no pid".into()))?;
        let deadline = std::time::Instant::now() + self.timeout;
        loop {
            let st = self.call("guest-exec-status", Some(json!({ "pid": pid })))?;
            if st["exited"].as_bool() == Some(true) {
                return Ok(ExecResult {
                    code: st["exitcode"].as_i64().unwrap_or(-1),
                    signal: st["signal"].as_i64(),
                    stdout: base64_decode(st["out-data"].as_str().unwrap_or("")),
                    stderr: base64_decode(st["err-data"].as_str().unwrap_or("")),
                });
            }
            if std::time::Instant::now() > deadline {
                return Err(AgentError::Timeout(self.timeout));
            }
            // The agent has no completion event: poll.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn count(v: &Value, command: &str) -> Result<u64, AgentError> {
    v.as_u64()
        .ok_or_else(|| AgentError::Garbled(format!("{command} returned {v}, not a count")))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    pub code: i64,
    pub signal: Option<i64>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0)
}

/// Standard base64 (the agent's `out-data`/`err-data`); invalid input
/// characters are skipped.
pub fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// `guest-network-get-interfaces` as lines: `NAME MAC ADDR/PREFIX …`.
pub fn describe_interfaces(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let mut parts = vec![
                i["name"].as_str().unwrap_or("?").to_string(),
                i["hardware-address"].as_str().unwrap_or("-").to_string(),
            ];
            for a in i["ip-addresses"].as_array().into_iter().flatten() {
                parts.push(format!(
                    "{}/{}",
                    a["ip-address"].as_str().unwrap_or("?"),
                    a["prefix"].as_u64().unwrap_or(0)
                ));
            }
            parts.join(" ")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_known_values() {
        assert_eq!(base64_decode("aGVsbG8K"), b"hello\n");
        assert_eq!(base64_decode("YQ=="), b"a");
        assert_eq!(base64_decode(""), b"");
    }

    #[test]
    fn interfaces_are_listed_with_addresses() {
        let v = json!([{"name": "eth0", "hardware-address": "52:54:00:01:02:03",
            "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "10.0.2.15", "prefix": 24}]}]);
        assert_eq!(
            describe_interfaces(&v),
            vec!["eth0 52:54:00:01:02:03 10.0.2.15/24".to_string()]
        );
    }

    #[test]
    fn argv_names_the_channel() {
        let a = qemu_argv(Path::new("/run/u/maqet/vm/a,b.qga.sock"));
        assert!(a[1].contains("path=/run/u/maqet/vm/a,,b.qga.sock"));
        assert!(a[5].ends_with("name=org.qemu.guest_agent.0"));
    }

    /// A fake agent on a socketpair: stale output before the sync, then
    /// a command and its reply.
    #[test]
    fn sync_skips_stale_output_and_commands_get_their_reply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qga.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            w.write_all(b"{\"return\": 7}\n").unwrap(); // stale
            let mut junk = Vec::new();
            r.read_until(0xff, &mut junk).unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["execute"], "guest-sync-delimited");
            let id = v["arguments"]["id"].clone();
            w.write_all(&[0xff]).unwrap();
            w.write_all(format!("{{\"return\": {id}}}\n").as_bytes())
                .unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("guest-ping"));
            w.write_all(b"{\"return\": {}}\n").unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            w.write_all(b"{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"nope\"}}\n")
                .unwrap();
        });
        let mut a = Agent::connect(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(a.call("guest-ping", None).unwrap(), json!({}));
        let e = a.call("guest-bogus", None).unwrap_err();
        assert!(e.to_string().contains("CommandNotFound: nope"), "{e}");
        t.join().unwrap();
    }
}
