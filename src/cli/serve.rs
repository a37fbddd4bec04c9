//! `maqet serve --stdio`: the remote end of `maqet -H` (docs/remote.md).
//!
//! ssh starts it; it reads the protocol of `remote::protocol` on stdin
//! and answers on stdout, one request at a time, until stdin ends. Typed
//! calls (`list`, `status`, `endpoint`) go to the same `Vms` calls the
//! local commands make, and their results travel as the same serde types;
//! `run` runs this maqet binary with the given arguments (so the remote
//! host's maqet renders and exits exactly as it would locally) and
//! streams its output. Errors travel as the exit code and message the
//! local `maqet` would have printed. Nothing but protocol lines is ever
//! written to stdout: logs go to stderr, which ssh carries to the client's
//! stderr.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::remote::protocol::{
    greet, Call, Endpoint, Greeting, Hello, Reply, Request, SocketKind, Stream, Upload, MAX_LINE,
};

use super::context::Ctx;
use super::exit::{code, CliError};

pub async fn run(ctx: &Ctx) -> Result<(), CliError> {
    let mut input = BufReader::new(tokio::io::stdin());
    let mut out = tokio::io::stdout();
    let Some(first) = read_line(&mut input).await? else {
        return Ok(());
    };
    let hello: Hello = serde_json::from_str(&first).map_err(|e| {
        CliError::usage(format!(
            "serve --stdio: the first line must be the protocol's hello: {e}"
        ))
    })?;
    let greeting = greet(&hello);
    send(&mut out, &greeting).await?;
    if let Greeting::Refused { .. } = greeting {
        return Err(CliError::usage(format!(
            "serve --stdio: maqet {} speaks protocol {} to {}, none of which this maqet speaks",
            hello.maqet, hello.oldest, hello.protocol
        )));
    }
    // Lines that arrived while a `run` streamed (a client may pipeline).
    let mut pending = std::collections::VecDeque::new();
    loop {
        let line = match pending.pop_front() {
            Some(l) => l,
            None => match read_line(&mut input).await? {
                Some(l) => l,
                None => break,
            },
        };
        let req: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                let reply = Reply::Failed {
                    id: 0,
                    code: code::USAGE,
                    message: format!("not a request of maqet's remote protocol: {e}"),
                };
                send(&mut out, &reply).await?;
                continue;
            }
        };
        let id = req.id;
        let reply = match req.call {
            Call::Run { argv, uploads } => {
                match run_command(ctx, id, argv, uploads, &mut input, &mut pending, &mut out)
                    .await?
                {
                    Some(reply) => reply,
                    // The client went away: nobody to answer.
                    None => return Ok(()),
                }
            }
            call => match typed(ctx, call).await {
                Ok(value) => Reply::Done { id, value },
                Err(e) => Reply::Failed {
                    id,
                    code: e.code,
                    message: e.message,
                },
            },
        };
        send(&mut out, &reply).await?;
    }
    Ok(())
}

/// One line of at most [`MAX_LINE`] bytes; `None` at end of input.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    input: &mut R,
) -> Result<Option<String>, CliError> {
    let mut buf = Vec::new();
    let n = input
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > MAX_LINE {
        return Err(CliError::usage(format!(
            "serve --stdio: a request line is longer than {MAX_LINE} bytes"
        )));
    }
    String::from_utf8(buf)
        .map(|s| Some(s.trim_end_matches('\n').to_string()))
        .map_err(|_| CliError::usage("serve --stdio: a request line is not UTF-8"))
}

async fn send<W: AsyncWrite + Unpin, T: serde::Serialize>(
    out: &mut W,
    v: &T,
) -> Result<(), CliError> {
    let mut line = serde_json::to_vec(v).expect("replies serialise");
    line.push(b'\n');
    out.write_all(&line).await?;
    Ok(out.flush().await?)
}

async fn typed(ctx: &Ctx, call: Call) -> Result<serde_json::Value, CliError> {
    let json = |v: Result<serde_json::Value, serde_json::Error>| {
        v.map_err(|e| CliError::failure(e.to_string()))
    };
    match call {
        Call::List { state } => {
            let filter = super::commands::show::state_filter(state.as_deref())?;
            json(serde_json::to_value(ctx.vms().await?.list(filter).await?))
        }
        Call::Status { name } => {
            let (vm, _) = ctx.vm(&name)?;
            json(serde_json::to_value(ctx.vms().await?.status(&vm).await?))
        }
        Call::Qmp {
            name,
            command,
            arguments,
        } => {
            let (vm, _) = ctx.vm(&name)?;
            json(Ok(ctx.vms().await?.qmp(&vm, &command, arguments).await?))
        }
        Call::Endpoint { name, socket } => {
            let (vm, _) = ctx.vm(&name)?;
            let end = match socket {
                SocketKind::Qmp => Endpoint {
                    path: path_text(&ctx.vms().await?.qmp_socket(&vm).await?)?,
                    protocol: "qmp".into(),
                },
                SocketKind::Display => {
                    let d = ctx.vms_if_session().await?.display(&vm).await?;
                    Endpoint {
                        path: path_text(&d.socket)?,
                        protocol: d.server.as_str().into(),
                    }
                }
            };
            json(serde_json::to_value(end))
        }
        Call::Run { .. } => Err(CliError::failure("run is not a typed call")),
    }
}

fn path_text(p: &Path) -> Result<String, CliError> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| CliError::failure(format!("{} is not UTF-8", p.display())))
}

/// Writes the uploads of one request into a new directory of their own
/// (`DATA_DIR/uploads/STAMP-PID/NAME`, 0700/0600) and puts their paths
/// into argv. They stay: `add` records its config files as the VM's
/// sources (a command that fails has them removed again).
fn place_uploads(
    data_dir: &Path,
    argv: &mut [String],
    uploads: &[Upload],
) -> Result<Option<PathBuf>, CliError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if uploads.is_empty() {
        return Ok(None);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = data_dir
        .join("uploads")
        .join(format!("{nanos}-{}", std::process::id()));
    let io = |p: &Path, e: std::io::Error| CliError::failure(format!("{}: {e}", p.display()));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| io(&dir, e))?;
    for u in uploads {
        let name = Path::new(&u.name)
            .file_name()
            .filter(|n| !u.name.contains('/') && *n != "..")
            .ok_or_else(|| {
                CliError::usage(format!("upload name '{}' is not a file name", u.name))
            })?;
        let path: PathBuf = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        std::io::Write::write_all(&mut f, u.content.as_bytes()).map_err(|e| io(&path, e))?;
        let text = path_text(&path)?;
        for a in argv.iter_mut().filter(|a| **a == u.placeholder) {
            a.clone_from(&text);
        }
    }
    Ok(Some(dir))
}

/// Runs `maqet ARGV` (this binary, this data directory) and streams its
/// output. `None`: the client hung up (the command is killed then).
async fn run_command<W: AsyncWrite + Unpin>(
    ctx: &Ctx,
    id: u64,
    mut argv: Vec<String>,
    uploads: Vec<Upload>,
    input: &mut BufReader<tokio::io::Stdin>,
    pending: &mut std::collections::VecDeque<String>,
    out: &mut W,
) -> Result<Option<Reply>, CliError> {
    let uploaded = match place_uploads(ctx.data_dir.path(), &mut argv, &uploads) {
        Ok(dir) => dir,
        Err(e) => {
            return Ok(Some(Reply::Failed {
                id,
                code: e.code,
                message: e.message,
            }))
        }
    };
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args(&argv)
        .env("MAQET_DATA_DIR", ctx.data_dir.path())
        .env_remove("MAQET_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut so = child.stdout.take().expect("piped");
    let mut se = child.stderr.take().expect("piped");
    let (mut bo, mut be) = ([0u8; 8192], [0u8; 8192]);
    let (mut co, mut ce) = (Utf8Carry::default(), Utf8Carry::default());
    let (mut open_o, mut open_e) = (true, true);
    let mut next = Vec::new();
    while open_o || open_e {
        tokio::select! {
            n = so.read(&mut bo), if open_o => {
                let n = n.unwrap_or(0);
                open_o = n > 0;
                let data = co.take(&bo[..n], n == 0);
                if !data.is_empty() {
                    send(out, &Reply::Output { id, stream: Stream::Stdout, data }).await?;
                }
            }
            n = se.read(&mut be), if open_e => {
                let n = n.unwrap_or(0);
                open_e = n > 0;
                let data = ce.take(&be[..n], n == 0);
                if !data.is_empty() {
                    send(out, &Reply::Output { id, stream: Stream::Stderr, data }).await?;
                }
            }
            // The client is gone when its input ends (ssh closed): stop
            // the command rather than let it run for no one.
            n = input.read_until(b'\n', &mut next) => {
                if matches!(n, Ok(0) | Err(_)) {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    return Ok(None);
                }
                if next.ends_with(b"\n") {
                    let line = String::from_utf8_lossy(&next).trim_end().to_string();
                    pending.push_back(line);
                    next.clear();
                }
            }
        }
    }
    let status = child.wait().await?;
    if let Some(dir) = uploaded.filter(|_| !status.success()) {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(Some(Reply::Exit {
        id,
        code: exit_code(&status),
    }))
}

/// A child's exit code as a shell reports it (128 + signal when killed).
fn exit_code(s: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code()
        .or_else(|| s.signal().map(|n| 128 + n))
        .unwrap_or(code::FAILURE)
}

/// Output bytes as text without splitting a UTF-8 character between two
/// chunks; bytes that are not UTF-8 become U+FFFD.
#[derive(Default)]
struct Utf8Carry(Vec<u8>);

impl Utf8Carry {
    fn take(&mut self, more: &[u8], end: bool) -> String {
        self.0.extend_from_slice(more);
        let keep = match std::str::from_utf8(&self.0) {
            Ok(_) => 0,
            // An incomplete character at the end waits for the next chunk.
            Err(e) if e.error_len().is_none() && !end => self.0.len() - e.valid_up_to(),
            Err(_) => 0,
        };
        let rest = self.0.split_off(self.0.len() - keep);
        let text = String::from_utf8_lossy(&self.0).into_owned();
        self.0 = rest;
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_split_between_chunks_arrive_whole() {
        let mut c = Utf8Carry::default();
        let bytes = "é€".as_bytes();
        assert_eq!(c.take(&bytes[..1], false), "");
        assert_eq!(c.take(&bytes[1..3], false), "é");
        assert_eq!(c.take(&bytes[3..], false), "€");
        assert_eq!(c.take(b"\xff ok", false), "\u{fffd} ok");
        assert_eq!(c.take(&bytes[..1], true), "\u{fffd}");
    }

    #[test]
    fn uploads_get_a_directory_of_their_own_and_replace_their_placeholder() {
        let dir = tempfile::tempdir().unwrap();
        let mut argv: Vec<String> = ["add", "@0", "--vm-config", "@1"]
            .map(String::from)
            .to_vec();
        let up = |p: &str, n: &str, c: &str| Upload {
            placeholder: p.into(),
            name: n.into(),
            content: c.into(),
        };
        place_uploads(
            dir.path(),
            &mut argv,
            &[
                up("@0", "web.yaml", "name: web\n"),
                up("@1", "more.yaml", "cpu: 2\n"),
            ],
        )
        .unwrap();
        let a = PathBuf::from(&argv[1]);
        assert!(a.starts_with(dir.path().join("uploads")));
        assert_eq!(a.file_name().unwrap(), "web.yaml");
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "name: web\n");
        assert_eq!(PathBuf::from(&argv[3]).parent(), a.parent());
        for bad in ["../x", "a/b", "..", ""] {
            let mut argv = vec!["@0".to_string()];
            let e = place_uploads(dir.path(), &mut argv, &[up("@0", bad, "")]).unwrap_err();
            assert_eq!(e.code, code::USAGE, "{bad}");
        }
    }
}
