//! The wire between `maqet -H HOST` and the remote `maqet serve --stdio`:
//! newline-delimited JSON over ssh's stdin and stdout, like the runner's
//! protocol (`ipc::protocol`): versioned, typed requests, typed replies.
//!
//! 1. The client says [`Hello`] (its maqet version and the protocol
//!    versions it speaks); the server answers [`Greeting::Welcome`] with
//!    the version both use (the highest both speak), or
//!    [`Greeting::Refused`] naming its own range. The client may send its
//!    first request right behind the hello, without waiting (one round
//!    trip less); a server that refuses reads no further.
//! 2. Then requests ([`Request`]: an id and a [`Call`]), each answered by
//!    [`Reply`] lines with that id: `run` streams `output` lines and ends
//!    with `exit`; every other call ends with `done` (its typed result as
//!    JSON) or `failed` (the exit code and message `maqet` would have
//!    printed there, so the local CLI exits with the same code).
//!
//! The server writes nothing else on stdout; its logs go to stderr.

use serde::{Deserialize, Serialize};

/// The newest protocol this maqet speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The oldest protocol this maqet still speaks.
pub const OLDEST_PROTOCOL: u32 = 1;
/// Longest request line the server reads (an `add` carries YAML files).
pub const MAX_LINE: usize = 16 << 20;

/// The client's first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The client's maqet version (for messages).
    pub maqet: String,
    /// The newest protocol the client speaks.
    pub protocol: u32,
    /// The oldest protocol the client speaks.
    pub oldest: u32,
}

impl Hello {
    pub fn ours() -> Hello {
        Hello {
            maqet: env!("CARGO_PKG_VERSION").into(),
            protocol: PROTOCOL_VERSION,
            oldest: OLDEST_PROTOCOL,
        }
    }
}

/// The server's first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "greeting", rename_all = "snake_case")]
pub enum Greeting {
    Welcome {
        maqet: String,
        /// The version both sides use from now on.
        protocol: u32,
    },
    Refused {
        maqet: String,
        protocol: u32,
        oldest: u32,
    },
}

/// The versions two sides have in common do not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub theirs: (u32, u32),
    pub ours: (u32, u32),
}

/// The highest version both `a` and `b` (oldest, newest) speak.
pub fn negotiate(a: (u32, u32), b: (u32, u32)) -> Result<u32, Mismatch> {
    let v = a.1.min(b.1);
    match v >= a.0.max(b.0) {
        true => Ok(v),
        false => Err(Mismatch { theirs: a, ours: b }),
    }
}

/// The server's answer to `hello`.
pub fn greet(hello: &Hello) -> Greeting {
    let maqet = env!("CARGO_PKG_VERSION").to_string();
    match negotiate(
        (hello.oldest, hello.protocol),
        (OLDEST_PROTOCOL, PROTOCOL_VERSION),
    ) {
        Ok(protocol) => Greeting::Welcome { maqet, protocol },
        Err(_) => Greeting::Refused {
            maqet,
            protocol: PROTOCOL_VERSION,
            oldest: OLDEST_PROTOCOL,
        },
    }
}

/// A request: `{"id":N,"call":{"NAME":{…params}}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub id: u64,
    pub call: Call,
}

/// What a client can ask since protocol 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Call {
    /// `maqet ls`: `done` with `[StatusReport]`.
    List { state: Option<String> },
    /// `maqet status NAME`: `done` with a `StatusReport`.
    Status { name: String },
    /// `maqet qmp run NAME COMMAND [ARGS]`: `done` with QEMU's `return`.
    Qmp {
        name: String,
        command: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        arguments: Option<serde_json::Value>,
    },
    /// Where a running VM's socket is on the server (`qmp`: its QMP
    /// socket; `display`: its VNC or SPICE socket), for a forward:
    /// `done` with an [`Endpoint`].
    Endpoint { name: String, socket: SocketKind },
    /// Any other command: the server runs `maqet ARGV…` (its own binary)
    /// with `uploads` written to files first (see [`Upload`]) and streams
    /// its output; `exit` carries its exit code.
    Run {
        argv: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        uploads: Vec<Upload>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketKind {
    Qmp,
    Display,
}

/// A socket on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Absolute path of the Unix socket.
    pub path: String,
    /// `vnc` or `spice` for a display; `qmp` for QMP.
    pub protocol: String,
}

/// A local file sent along with `run`: the server writes `content` to a
/// new file in its data directory's `uploads/` and puts that file's path
/// into argv wherever argv holds `placeholder`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    pub placeholder: String,
    /// The local file's name (no directory), kept in the remote name.
    pub name: String,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A line the server sends after the greeting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Output of a `run` command, as it comes (lossless for UTF-8).
    Output {
        id: u64,
        stream: Stream,
        data: String,
    },
    /// A `run` command ended with this exit code.
    Exit { id: u64, code: i32 },
    /// A typed call's result.
    Done { id: u64, value: serde_json::Value },
    /// A call failed: the exit code and message `maqet` has for it.
    Failed { id: u64, code: i32, message: String },
}

impl Reply {
    pub fn id(&self) -> u64 {
        match self {
            Reply::Output { id, .. }
            | Reply::Exit { id, .. }
            | Reply::Done { id, .. }
            | Reply::Failed { id, .. } => *id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_meet_at_the_highest_both_speak() {
        assert_eq!(negotiate((1, 1), (1, 1)), Ok(1));
        assert_eq!(negotiate((1, 3), (2, 5)), Ok(3));
        assert_eq!(negotiate((2, 5), (1, 3)), Ok(3));
        assert_eq!(
            negotiate((4, 5), (1, 3)),
            Err(Mismatch {
                theirs: (4, 5),
                ours: (1, 3)
            })
        );
        assert!(negotiate((1, 1), (2, 2)).is_err());
        let ok = greet(&Hello::ours());
        assert_eq!(
            ok,
            Greeting::Welcome {
                maqet: env!("CARGO_PKG_VERSION").into(),
                protocol: PROTOCOL_VERSION
            }
        );
        let future = Hello {
            maqet: "9.0.0".into(),
            protocol: 12,
            oldest: PROTOCOL_VERSION + 1,
        };
        assert!(matches!(greet(&future), Greeting::Refused { .. }));
    }

    #[test]
    fn the_wire_forms_are_stable() {
        let cases: Vec<(Request, &str)> = vec![
            (
                Request {
                    id: 1,
                    call: Call::List { state: None },
                },
                r#"{"id":1,"call":{"list":{"state":null}}}"#,
            ),
            (
                Request {
                    id: 2,
                    call: Call::Status { name: "web".into() },
                },
                r#"{"id":2,"call":{"status":{"name":"web"}}}"#,
            ),
            (
                Request {
                    id: 6,
                    call: Call::Qmp {
                        name: "web".into(),
                        command: "query-status".into(),
                        arguments: None,
                    },
                },
                r#"{"id":6,"call":{"qmp":{"name":"web","command":"query-status"}}}"#,
            ),
            (
                Request {
                    id: 3,
                    call: Call::Endpoint {
                        name: "web".into(),
                        socket: SocketKind::Qmp,
                    },
                },
                r#"{"id":3,"call":{"endpoint":{"name":"web","socket":"qmp"}}}"#,
            ),
            (
                Request {
                    id: 4,
                    call: Call::Run {
                        argv: vec!["stop".into(), "web".into()],
                        uploads: vec![],
                    },
                },
                r#"{"id":4,"call":{"run":{"argv":["stop","web"]}}}"#,
            ),
            (
                Request {
                    id: 5,
                    call: Call::Run {
                        argv: vec!["add".into(), "@0".into()],
                        uploads: vec![Upload {
                            placeholder: "@0".into(),
                            name: "web.yaml".into(),
                            content: "name: web\n".into(),
                        }],
                    },
                },
                r#"{"id":5,"call":{"run":{"argv":["add","@0"],"uploads":[{"placeholder":"@0","name":"web.yaml","content":"name: web\n"}]}}}"#,
            ),
        ];
        for (req, wire) in cases {
            assert_eq!(serde_json::to_string(&req).unwrap(), wire);
            assert_eq!(serde_json::from_str::<Request>(wire).unwrap(), req);
        }
        let replies = [
            (
                Reply::Output {
                    id: 4,
                    stream: Stream::Stderr,
                    data: "x\n".into(),
                },
                r#"{"reply":"output","id":4,"stream":"stderr","data":"x\n"}"#,
            ),
            (
                Reply::Exit { id: 4, code: 3 },
                r#"{"reply":"exit","id":4,"code":3}"#,
            ),
            (
                Reply::Failed {
                    id: 2,
                    code: 3,
                    message: "no VM named 'x'".into(),
                },
                r#"{"reply":"failed","id":2,"code":3,"message":"no VM named 'x'"}"#,
            ),
        ];
        for (r, wire) in replies {
            assert_eq!(serde_json::to_string(&r).unwrap(), wire);
            assert_eq!(serde_json::from_str::<Reply>(wire).unwrap(), r);
        }
        let g = Greeting::Refused {
            maqet: "2.0.0".into(),
            protocol: 3,
            oldest: 2,
        };
        let wire = r#"{"greeting":"refused","maqet":"2.0.0","protocol":3,"oldest":2}"#;
        assert_eq!(serde_json::to_string(&g).unwrap(), wire);
        assert_eq!(serde_json::from_str::<Greeting>(wire).unwrap(), g);
    }

    #[test]
    fn unknown_calls_and_fields_are_refused() {
        for bad in [
            r#"{"id":1,"call":{"format_disk":{}}}"#,
            r#"{"id":1,"call":{"status":{"name":"a"}},"extra":1}"#,
            r#"{"id":1,"call":{"status":{"name":"a","x":1}}}"#,
            r#"{"call":{"status":{"name":"a"}}}"#,
            r#"{"id":1,"call":{"run":{"argv":"ls"}}}"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Hello>(r#"{"maqet":"1","protocol":1}"#).is_err());
    }
}
