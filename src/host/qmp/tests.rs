//! Client tests against a scripted fake QEMU on the other end of a socketpair.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::broadcast::error::RecvError;

use super::*;

const GREETING: &str = r#"{"QMP":{"version":{"qemu":{"micro":0,"minor":2,"major":7},"package":"Debian 1:7.2"},"capabilities":["oob"]}}"#;
const SECOND: Duration = Duration::from_secs(1);
/// Generous bound for things that should happen promptly, so a loaded CI box never flakes.
const PROMPTLY: Duration = Duration::from_secs(5);

/// The QEMU side of the socketpair.
struct FakeQemu {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl FakeQemu {
    fn pair() -> (UnixStream, FakeQemu) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (r, w) = theirs.into_split();
        (
            ours,
            FakeQemu {
                reader: BufReader::new(r),
                writer: w,
            },
        )
    }

    async fn send_raw(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
    }

    async fn send(&mut self, v: Value) {
        self.send_raw(&v.to_string()).await;
    }

    /// The next command; `None` at EOF.
    async fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        let n = tokio::time::timeout(PROMPTLY, self.reader.read_line(&mut line))
            .await
            .expect("client sent nothing")
            .unwrap();
        (n > 0).then(|| serde_json::from_str(&line).expect("client sent bad JSON"))
    }

    /// Expects `command`, returns its id.
    async fn expect(&mut self, command: &str) -> Value {
        let msg = self.recv().await.expect("client hung up");
        assert_eq!(msg["execute"], command, "{msg}");
        msg["id"].clone()
    }

    async fn handshake(&mut self) {
        self.send_raw(GREETING).await;
        let msg = self.recv().await.unwrap();
        assert_eq!(msg["execute"], "qmp_capabilities");
        assert!(msg.get("arguments").is_none());
        self.send(json!({"return": {}, "id": msg["id"]})).await;
    }
}

async fn connected() -> (QmpClient, FakeQemu) {
    let (ours, mut qemu) = FakeQemu::pair();
    let (client, ()) = tokio::join!(QmpClient::connect(ours, SECOND), qemu.handshake());
    let (client, version) = client.unwrap();
    assert_eq!(
        version,
        QemuVersion {
            major: 7,
            minor: 2,
            micro: 0,
            package: "Debian 1:7.2".into()
        }
    );
    (client, qemu)
}

#[tokio::test]
async fn handshake_then_round_trip() {
    let (client, mut qemu) = connected().await;
    let server = async {
        let msg = qemu.recv().await.unwrap();
        assert_eq!(msg["execute"], "query-status");
        assert!(msg.get("arguments").is_none());
        qemu.send(json!({"return": {"status": "running", "running": true}, "id": msg["id"]}))
            .await;
        let msg = qemu.recv().await.unwrap();
        assert_eq!(msg["execute"], "human-monitor-command");
        assert_eq!(msg["arguments"], json!({"command-line": "info version"}));
        qemu.send(json!({"id": msg["id"], "return": "7.2.0\r\n"}))
            .await;
    };
    let client_side = async {
        let status = client.execute("query-status", None).await.unwrap();
        assert_eq!(status, json!({"status": "running", "running": true}));
        let hmp = client
            .execute(
                "human-monitor-command",
                Some(json!({"command-line": "info version"})),
            )
            .await
            .unwrap();
        assert_eq!(hmp, "7.2.0\r\n");
    };
    tokio::join!(server, client_side);
    assert!(!client.is_closed());
    assert_eq!(client.pending_len(), 0);
}

#[tokio::test]
async fn concurrent_calls_get_their_own_out_of_order_replies() {
    let (client, mut qemu) = connected().await;
    let mut events = client.subscribe();
    let server = async {
        let mut ids = Vec::new();
        for _ in 0..3 {
            let msg = qemu.recv().await.unwrap();
            ids.push((msg["id"].clone(), msg["execute"].clone()));
        }
        // All three ids differ.
        assert_ne!(ids[0].0, ids[1].0);
        assert_ne!(ids[1].0, ids[2].0);
        assert_ne!(ids[0].0, ids[2].0);
        // Answer in reverse order, with an event in between; each reply echoes the command.
        for (i, (id, cmd)) in ids.into_iter().rev().enumerate() {
            if i == 1 {
                qemu.send(json!({"event": "STOP", "data": {},
                    "timestamp": {"seconds": 1700000000, "microseconds": 5}}))
                    .await;
            }
            qemu.send(json!({"return": {"cmd": cmd}, "id": id})).await;
        }
    };
    // Clones share the one connection.
    let (c2, c3) = (client.clone(), client.clone());
    let (_, a, b, c) = tokio::join!(
        server,
        client.execute("cmd-a", None),
        c2.execute("cmd-b", None),
        c3.execute("cmd-c", Some(json!({"x": 1}))),
    );
    assert_eq!(a.unwrap(), json!({"cmd": "cmd-a"}));
    assert_eq!(b.unwrap(), json!({"cmd": "cmd-b"}));
    assert_eq!(c.unwrap(), json!({"cmd": "cmd-c"}));
    let event = events.recv().await.unwrap();
    assert_eq!(event.event, "STOP");
    assert_eq!(event.data, json!({}));
    assert_eq!(event.timestamp, Some((1_700_000_000, 5)));
}

#[tokio::test]
async fn error_reply_is_a_command_error() {
    let (client, mut qemu) = connected().await;
    let server = async {
        let id = qemu.expect("no-such-command").await;
        qemu.send(json!({"id": id, "error": {"class": "CommandNotFound",
            "desc": "The command no-such-command has not been found"}}))
            .await;
    };
    let (_, res) = tokio::join!(server, client.execute("no-such-command", None));
    match res {
        Err(QmpError::Command { class, desc }) => {
            assert_eq!(class, "CommandNotFound");
            assert!(desc.contains("no-such-command"));
        }
        other => panic!("{other:?}"),
    }
    // The connection is still usable.
    assert!(!client.is_closed());
}

#[tokio::test]
async fn close_fails_pending_and_future_calls() {
    let (client, mut qemu) = connected().await;
    let mut events = client.subscribe();
    let server = async move {
        qemu.expect("quit").await;
        qemu.expect("query-status").await;
        drop(qemu); // QEMU exits without answering
    };
    let (_, quit, status) = tokio::join!(
        server,
        tokio::time::timeout(PROMPTLY, client.execute("quit", None)),
        tokio::time::timeout(PROMPTLY, client.execute("query-status", None)),
    );
    assert!(matches!(quit.unwrap(), Err(QmpError::Disconnected)));
    assert!(matches!(status.unwrap(), Err(QmpError::Disconnected)));
    tokio::time::timeout(PROMPTLY, client.closed())
        .await
        .unwrap();
    assert!(client.is_closed());
    assert_eq!(client.pending_len(), 0);
    assert!(matches!(
        client.execute("query-status", None).await,
        Err(QmpError::Disconnected)
    ));
    // Event subscribers learn about the end too, including late ones.
    assert!(matches!(events.recv().await, Err(RecvError::Closed)));
    assert!(matches!(
        client.subscribe().recv().await,
        Err(RecvError::Closed)
    ));
}

#[tokio::test]
async fn timeout_forgets_the_call_and_ignores_the_late_reply() {
    let (client, mut qemu) = connected().await;
    let (res, id) = tokio::join!(
        client.execute_timeout("slow", None, Duration::from_millis(50)),
        qemu.expect("slow"),
    );
    assert!(matches!(res, Err(QmpError::Timeout(d)) if d == Duration::from_millis(50)));
    assert_eq!(client.pending_len(), 0);
    // The late reply is dropped; the next call still gets its own answer.
    qemu.send(json!({"return": "late", "id": id})).await;
    let server = async {
        let id = qemu.expect("next").await;
        qemu.send(json!({"return": "fresh", "id": id})).await;
    };
    let (_, res) = tokio::join!(server, client.execute("next", None));
    assert_eq!(res.unwrap(), "fresh");
}

#[tokio::test]
async fn cancelled_call_is_forgotten() {
    let (client, mut qemu) = connected().await;
    let call = client.execute("never-answered", None);
    tokio::select! {
        _ = call => panic!("no reply was sent"),
        _ = qemu.expect("never-answered") => {}
    }
    assert_eq!(client.pending_len(), 0);
}

#[tokio::test]
async fn large_reply_has_no_line_cap() {
    let (client, mut qemu) = connected().await;
    let big = "x".repeat(4 << 20);
    let server = async {
        let id = qemu.expect("query-qmp-schema").await;
        qemu.send(json!({"return": [{"name": big}], "id": id}))
            .await;
    };
    let (_, res) = tokio::join!(server, client.execute("query-qmp-schema", None));
    assert_eq!(res.unwrap()[0]["name"].as_str().unwrap().len(), 4 << 20);
}

#[tokio::test]
async fn malformed_reply_fails_its_caller_only() {
    let (client, mut qemu) = connected().await;
    let server = async {
        let id = qemu.expect("odd").await;
        qemu.send_raw("this is not json").await; // ignored
        qemu.send(json!({"id": id, "error": "not an object"})).await;
    };
    let (_, res) = tokio::join!(server, client.execute("odd", None));
    assert!(matches!(res, Err(QmpError::Protocol(_))), "{res:?}");
    assert!(!client.is_closed());
}

#[tokio::test]
async fn slow_subscriber_loses_old_events_only() {
    let (client, mut qemu) = connected().await;
    let mut events = client.subscribe();
    for i in 0..300 {
        qemu.send(json!({"event": "TICK", "data": {"i": i}})).await;
    }
    // A round trip guarantees every event above was dispatched.
    let server = async {
        let id = qemu.expect("sync").await;
        qemu.send(json!({"return": {}, "id": id})).await;
    };
    let (_, res) = tokio::join!(server, client.execute("sync", None));
    res.unwrap();
    assert!(matches!(events.recv().await, Err(RecvError::Lagged(44))));
    assert_eq!(events.recv().await.unwrap().data["i"], 44);
}

#[tokio::test]
async fn dropping_every_handle_closes_the_socket() {
    let (client, mut qemu) = connected().await;
    let clone = client.clone();
    drop(client);
    drop(clone);
    assert!(qemu.recv().await.is_none(), "expected EOF");
}

#[tokio::test]
async fn handshake_errors() {
    // Silence: timeout.
    let (ours, _qemu) = FakeQemu::pair();
    let res = QmpClient::connect(ours, Duration::from_millis(50)).await;
    assert!(matches!(res, Err(QmpError::Timeout(_))), "{res:?}");

    // Hang-up before the greeting.
    let (ours, qemu) = FakeQemu::pair();
    drop(qemu);
    let res = QmpClient::connect(ours, SECOND).await;
    assert!(matches!(res, Err(QmpError::Disconnected)), "{res:?}");

    // Something else than a greeting.
    let (ours, mut qemu) = FakeQemu::pair();
    qemu.send(json!({"return": {}})).await;
    let res = QmpClient::connect(ours, SECOND).await;
    assert!(matches!(res, Err(QmpError::Protocol(_))), "{res:?}");

    // Capabilities refused.
    let (ours, mut qemu) = FakeQemu::pair();
    let server = async {
        qemu.send_raw(GREETING).await;
        let id = qemu.expect("qmp_capabilities").await;
        qemu.send(json!({"id": id, "error": {"class": "GenericError", "desc": "nope"}}))
            .await;
    };
    let (_, res) = tokio::join!(server, QmpClient::connect(ours, SECOND));
    assert!(matches!(res, Err(QmpError::Command { .. })), "{res:?}");

    // Greeting, then no answer to qmp_capabilities: the timeout covers the whole handshake.
    let (ours, mut qemu) = FakeQemu::pair();
    qemu.send_raw(GREETING).await;
    let res = QmpClient::connect(ours, Duration::from_millis(50)).await;
    assert!(
        matches!(res, Err(QmpError::Timeout(d)) if d == Duration::from_millis(50)),
        "{res:?}"
    );
}

/// `getfd` needs the descriptor in the same message as the command: the
/// fake QEMU reads it with `recvmsg` and finds the file it names.
#[tokio::test]
async fn a_descriptor_travels_with_its_command() {
    use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    use std::io::{Read, Write};
    use std::mem::MaybeUninit;
    use std::os::fd::AsFd;

    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let ours = UnixStream::from_std(ours).unwrap();
    let qemu = std::thread::spawn(move || {
        let mut theirs = theirs;
        let reply = |id: &Value, theirs: &mut std::os::unix::net::UnixStream| {
            let line = format!("{}\n", json!({"return": {}, "id": id}));
            theirs.write_all(line.as_bytes()).unwrap();
        };
        theirs
            .write_all(format!("{GREETING}\n").as_bytes())
            .unwrap();
        // Capabilities: a plain line.
        let mut buf = vec![0u8; 4096];
        let n = theirs.read(&mut buf).unwrap();
        let caps: Value = serde_json::from_slice(&buf[..n]).unwrap();
        reply(&caps["id"], &mut theirs);
        // getfd: the line and its descriptor.
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let got = recvmsg(theirs.as_fd(), &mut iov, &mut control, RecvFlags::empty()).unwrap();
        let mut fds = Vec::new();
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(r) = msg {
                fds.extend(r);
            }
        }
        let cmd: Value = serde_json::from_slice(&buf[..got.bytes]).unwrap();
        reply(&cmd["id"], &mut theirs);
        (cmd, fds)
    });
    let (client, _) = QmpClient::connect(ours, PROMPTLY).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    std::fs::write(&path, b"the file").unwrap();
    let file = std::fs::File::open(&path).unwrap();
    client
        .execute_with_fd(
            "getfd",
            Some(json!({"fdname": "f"})),
            file.as_fd(),
            PROMPTLY,
        )
        .await
        .unwrap();
    let (cmd, fds) = qemu.join().unwrap();
    assert_eq!(cmd["execute"], "getfd");
    assert_eq!(cmd["arguments"]["fdname"], "f");
    assert_eq!(fds.len(), 1, "one descriptor came with the command");
    let mut passed = std::fs::File::from(fds.into_iter().next().unwrap());
    let mut text = String::new();
    passed.read_to_string(&mut text).unwrap();
    assert_eq!(text, "the file");
}
