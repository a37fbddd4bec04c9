//! Property test of the IPC request path: random, mutated and hostile
//! request lines go through the server's parse + dispatch step with a fake
//! dispatcher that runs the runner's real parameter checks. Deterministic
//! (fixed seed, bounded count and time); it asserts that nothing panics,
//! every line gets exactly one well-formed reply, and invalid lines get an
//! error of the right kind.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::dispatch::check_qmp;
use maqet_host::ipc::protocol::{Call, ConsoleParams, ErrorBody, ErrorKind, Response};
use maqet_host::ipc::server::{handle_line, Answer, BoxFuture, ConsoleStream, Dispatch, Handled};

/// Valid requests for every method (each answered with a result).
const VALID: &[&str] = &[
    r#"{"id":1,"method":"status"}"#,
    r#"{"id":2,"method":"qmp","params":{"execute":"query-status"}}"#,
    r#"{"id":3,"method":"qmp","params":{"execute":"migrate","arguments":{"uri":"tcp:127.0.0.1:4"}}}"#,
    r#"{"id":4,"method":"stop","params":{"timeout":5,"force":false}}"#,
    r#"{"id":5,"method":"stop"}"#,
    r#"{"id":6,"method":"console","params":{"replay":true,"follow":false}}"#,
    r#"{"id":18446744073709551615,"method":"stop","params":{"timeout":86400}}"#,
    r#"{"id":7,"method":"qmp","params":{"execute":"netdev_add","arguments":{"type":"user","id":"n"}}}"#,
    r#"{"id":8,"method":"qmp","params":{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"d","file":{"driver":"file","filename":"/tmp/maqet-fuzz-none.qcow2"}}}}"#,
    r#"{"id":9,"method":"qmp","params":{"execute":"screendump","arguments":{"filename":"/tmp/maqet-fuzz-none.ppm"}}}"#,
    r#"{"id":10,"method":"suspend"}"#,
    r#"{"id":11,"method":"suspend","params":{}}"#,
];

/// Pieces a mutation splices in: JSON syntax and extreme numbers.
const PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    ":",
    "\\",
    "null",
    "true",
    "1e400",
    "-1",
    "1e20",
    "-0",
    "18446744073709551616",
    "NaN",
    "Infinity",
    "0x10",
    "\u{0}",
    "\u{feff}",
    "é",
    "\"params\":",
    "\"timeout\":",
    "\"id\":",
    "\"method\":\"stop\"",
    "\"execute\":\"migrate\"",
    "\"type\":\"vde\"",
    "\"type\":\"tap\"",
    "\"driver\":\"ssh\"",
    "cmd://",
    "json:",
    "rbd:",
    " no",
    "/dev/null",
    "\"filename\":\"/dev/null\"",
    "\"execute\":\"screendump\"",
];

/// Requests that must be refused with `kind`, whatever the fake answers.
fn hostile() -> Vec<(String, ErrorKind)> {
    let bad = ErrorKind::BadRequest;
    let mut v: Vec<(String, ErrorKind)> = Vec::new();
    for t in [
        "1e20",
        "-1",
        "-0.5",
        "86400.001",
        "1e308",
        "18446744073709551616",
        "-9223372036854775809",
        "\"NaN\"",
        "\"inf\"",
        "\"30\"",
        "[]",
        "{}",
        "true",
    ] {
        v.push((
            format!(r#"{{"id":1,"method":"stop","params":{{"timeout":{t}}}}}"#),
            bad,
        ));
    }
    for id in [
        "-1",
        "1.5",
        "18446744073709551616",
        "1e400",
        "\"1\"",
        "null",
        "[]",
    ] {
        v.push((format!(r#"{{"id":{id},"method":"status"}}"#), bad));
    }
    for p in ["{\"now\":true}", "[]", "\"x\"", "1"] {
        v.push((
            format!(r#"{{"id":1,"method":"suspend","params":{p}}}"#),
            bad,
        ));
    }
    for m in ["qmp", "stop", "console"] {
        for p in [
            "\"x\"",
            "[1]",
            "7",
            "true",
            "{\"force\":\"yes\",\"replay\":1,\"execute\":5}",
        ] {
            v.push((format!(r#"{{"id":1,"method":"{m}","params":{p}}}"#), bad));
        }
    }
    for bad_qmp in [
        r#"{"execute":"Query Status"}"#,
        r#"{"execute":"query-status","arguments":[1]}"#,
        r#"{"execute":"query-status","arguments":"x"}"#,
        r#"{"arguments":{}}"#,
    ] {
        v.push((
            format!(r#"{{"id":1,"method":"qmp","params":{bad_qmp}}}"#),
            bad,
        ));
    }
    for policy in [
        r#"{"execute":"human-monitor-command","arguments":{"command-line":"info"}}"#,
        r#"{"execute":"migrate","arguments":{"uri":"exec:true"}}"#,
        r#"{"execute":"migrate-incoming","arguments":{"channels":[{"channel-type":"main","addr":{"transport":"exec","args":["true"]}}]}}"#,
        r#"{"execute":"netdev_add","arguments":{"type":"tap","id":"n","script":"/bin/sh"}}"#,
        // The issue's example and its relatives.
        r#"{"execute":"netdev_add","arguments":{"type":"vde","id":"v","sock":"cmd://sh -c \"id > /tmp/f\""}}"#,
        r#"{"execute":"netdev_add","arguments":{"type":"tap","id":"n","script":" no","downscript":"no"}}"#,
        r#"{"execute":"netdev_add","arguments":{"type":"user","id":"u","guestfwd":[{"str":"tcp:10.0.2.100:1-mon:stdio"}]}}"#,
        r#"{"execute":"blockdev-add","arguments":{"driver":"ssh","node-name":"s","server":{"host":"h"},"path":"/x"}}"#,
        r#"{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"r","file":"json:{\"driver\":\"rbd\"}"}}"#,
        r#"{"execute":"drive-mirror","arguments":{"device":"d","target":"gluster://h/v/i","sync":"full"}}"#,
        // Special files QEMU would open in its main loop.
        r#"{"execute":"screendump","arguments":{"filename":"/dev/null"}}"#,
        r#"{"execute":"screendump","arguments":{"filename":"/"}}"#,
        r#"{"execute":"dump-guest-memory","arguments":{"paging":false,"protocol":"file:/dev/zero"}}"#,
    ] {
        v.push((
            format!(r#"{{"id":1,"method":"qmp","params":{policy}}}"#),
            ErrorKind::Policy,
        ));
    }
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    for n in [129, 1000, 100_000] {
        v.push((
            format!(
                r#"{{"id":1,"method":"qmp","params":{{"execute":"x","arguments":{{"a":{}}}}}}}"#,
                deep(n)
            ),
            bad,
        ));
        v.push((deep(n), bad));
    }
    v.push((
        format!(r#"{{"id":1,"method":"{}"}}"#, "m".repeat(1 << 19)),
        bad,
    ));
    // Wrong-typed fields holding long strings: serde quotes them in errors.
    let long = "s".repeat(1 << 19);
    v.push((format!(r#"{{"id":"{long}","method":"status"}}"#), bad));
    for params in [
        format!(r#"{{"timeout":"{long}"}}"#),
        format!(r#"{{"replay":"{long}"}}"#),
        format!(r#"{{"execute":["{long}"]}}"#),
    ] {
        for m in ["stop", "console", "qmp"] {
            v.push((
                format!(r#"{{"id":1,"method":"{m}","params":{params}}}"#),
                bad,
            ));
        }
    }
    for junk in [
        "",
        "\n",
        "nonsense",
        "{",
        "[]",
        "null",
        "{\"id\":1}",
        "{\"method\":\"status\"}",
    ] {
        v.push((junk.to_string(), bad));
    }
    v
}

/// The runner's parameter checks behind a dispatcher that needs no QEMU.
struct Fake;

impl Dispatch for Fake {
    fn call(&self, call: Call) -> BoxFuture<Result<Answer, ErrorBody>> {
        let r = match call {
            Call::Status | Call::Stop(_) | Call::Suspend => Ok(()),
            Call::Qmp(p) => check_qmp(&p, false),
            other => Err(ErrorBody::new(
                ErrorKind::Internal,
                format!("routed {}", other.method()),
            )),
        };
        Box::pin(async move { r.map(|()| Answer::from(json!({"ok": true}))) })
    }
    fn subscribe(&self) -> broadcast::Receiver<Value> {
        broadcast::channel(1).1
    }
    fn console(&self, _: ConsoleParams) -> Result<ConsoleStream, ErrorBody> {
        Ok(ConsoleStream {
            replay: Vec::new(),
            output: None,
            input: mpsc::channel(1).0,
        })
    }
}

/// xorshift64*: a fixed seed gives the same run every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, line: &str) -> Vec<u8> {
    let mut b = line.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(b.len() + 1);
        match rng.below(5) {
            0 if !b.is_empty() => {
                let i = at.min(b.len() - 1);
                b[i] ^= 1 << rng.below(8);
            }
            1 => {
                let end = (at + rng.below(8)).min(b.len());
                b.drain(at..end);
            }
            2 => b.truncate(at),
            3 => {
                let other = VALID[rng.below(VALID.len())].as_bytes();
                let from = rng.below(other.len());
                b.splice(at..at, other[from..].iter().copied());
            }
            _ => {
                let p = PIECES[rng.below(PIECES.len())].as_bytes();
                b.splice(at..at, p.iter().copied());
            }
        }
    }
    b
}

/// The one reply a line gets; streams count as a result.
async fn reply(line: &str) -> Response {
    match handle_line(line, &Fake).await {
        Handled::Reply(r, _) => r,
        Handled::Events(id) | Handled::Console(id, _) => Response::result(id, json!({})),
    }
}

fn well_formed(line: &str, r: &Response) {
    assert!(
        r.result.is_some() != r.error.is_some() && r.event.is_none(),
        "{line:?} → {r:?}"
    );
    let text = serde_json::to_string(r).unwrap();
    let back: Response = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, r);
}

#[tokio::test]
async fn valid_requests_are_answered() {
    for line in VALID {
        let r = reply(line).await;
        well_formed(line, &r);
        assert!(r.error.is_none(), "{line} → {r:?}");
    }
}

#[tokio::test]
async fn hostile_requests_get_errors_of_their_kind() {
    for (line, kind) in hostile() {
        let r = reply(&line).await;
        well_formed(&line, &r);
        let short: String = line.chars().take(120).collect();
        let e = r.error.unwrap_or_else(|| panic!("{short} was accepted"));
        assert_eq!(e.kind, kind, "{short}: {}", e.message);
        assert!(
            e.message.len() < 1000,
            "{short}: echoed {} bytes",
            e.message.len()
        );
    }
}

#[tokio::test]
async fn mutated_requests_never_panic_and_unparseable_ones_are_bad_requests() {
    let mut rng = Rng(0x6d61_7165_745f_6970);
    let start = Instant::now();
    let (mut errors, mut answered) = (0, 0);
    for i in 0..20_000 {
        // Bounded in time as well, for slow debug builds on a busy machine.
        if start.elapsed() > Duration::from_secs(20) {
            assert!(i > 1000, "only {i} iterations ran");
            break;
        }
        let base = VALID[rng.below(VALID.len())];
        let bytes = mutate(&mut rng, base);
        let line = String::from_utf8_lossy(&bytes).into_owned();
        let r = reply(&line).await;
        well_formed(&line, &r);
        if serde_json::from_str::<Value>(line.trim_end()).is_err() {
            let e = r
                .error
                .as_ref()
                .unwrap_or_else(|| panic!("unparseable {line:?} accepted"));
            assert_eq!((e.kind, r.id), (ErrorKind::BadRequest, 0), "{line:?}");
        }
        if let Some(e) = &r.error {
            assert!(
                matches!(e.kind, ErrorKind::BadRequest | ErrorKind::Policy),
                "{line:?}: {e:?}"
            );
            errors += 1;
        } else {
            answered += 1;
        }
    }
    // The mutations reach both sides of the parser.
    assert!(
        errors > 100 && answered > 100,
        "{errors} errors, {answered} answered"
    );
}
