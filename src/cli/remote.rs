//! `maqet -H HOST …`: the command on another machine (docs/remote.md).
//!
//! The transport is the system's ssh, the far end `maqet serve --stdio`
//! (`cli/serve.rs`), the wire `remote::protocol`. How each command
//! crosses:
//! - `ls` (one host or several, concurrently, with a HOST column),
//!   `status` and `qmp run` are typed calls whose results (`StatusReport`s,
//!   QEMU's `return`) this side renders with the local renderers;
//! - `console`, `ssh`, and the commands that ask on a terminal (`rm --all`
//!   without --yes, `start --fresh` without --yes) run as `ssh -t HOST
//!   maqet …` after the handshake, so the remote maqet owns the terminal
//!   (detach keys, raw mode) and ssh returns its exit code;
//! - `qmp socket` and `display` learn the remote socket through the
//!   protocol and forward it to a local socket over the shared ssh
//!   connection (`ssh -O forward -L LOCAL:REMOTE`);
//! - everything else is `run`: the remote maqet runs the same command
//!   line and this side relays its output and exits with its exit code.
//!   `add`/`apply` send their config files' content (and `--copy` files)
//!   along.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use futures_util::future::join_all;

use crate::remote::hosts::{hosts_path, Hosts};
use crate::remote::protocol::{Call, Endpoint, SocketKind, Stream, Upload};
use crate::remote::{Connection, Destination, RemoteError, Transport};
use crate::vm::view::StatusReport;

use super::args::{Cli, Command, LsArgs, QmpCommand};
use super::exit::{code, worst, CliError};

impl From<RemoteError> for CliError {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::Failed { code, message } => CliError::new(code, message),
            e => CliError::failure(e.to_string()),
        }
    }
}

/// The command line as given, without what only this side reads.
#[derive(Debug, Default, PartialEq, Eq)]
struct Forwarded {
    /// What the remote maqet gets.
    argv: Vec<String>,
    /// `--data-dir`: the remote data directory.
    data_dir: Option<String>,
}

/// Takes `-H/--host`, `--all-hosts`, `--copy` and `--data-dir` out of
/// argv (clap has read them already); everything after `--` stays.
fn forwarded(args: &[String]) -> Forwarded {
    let mut f = Forwarded::default();
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let a = a.as_str();
        if a == "--" {
            f.argv.push(a.into());
            f.argv.extend(it.by_ref().cloned());
            break;
        }
        let mut value_of = |flag: &str| -> Option<Option<String>> {
            if a == flag {
                return Some(it.next().cloned());
            }
            a.strip_prefix(flag)
                .and_then(|r| r.strip_prefix('='))
                .map(|v| Some(v.to_string()))
        };
        if value_of("--host").is_some() || value_of("--copy").is_some() {
            continue;
        }
        if let Some(v) = value_of("--data-dir") {
            f.data_dir = v;
            continue;
        }
        if a == "--all-hosts" {
            continue;
        }
        // Short options, possibly bundled: -H X, -HX, -vH X, -vvHX.
        if let Some(shorts) = a.strip_prefix('-').filter(|s| !s.starts_with('-')) {
            let vs = shorts.len() - shorts.trim_start_matches('v').len();
            if let Some(value) = shorts[vs..].strip_prefix('H') {
                if vs > 0 {
                    f.argv.push(format!("-{}", &shorts[..vs]));
                }
                if value.is_empty() {
                    it.next();
                }
                continue;
            }
        }
        f.argv.push(a.into());
    }
    f
}

/// Where `-H` values and `--all-hosts` point.
fn transports(cli: &Cli, data_dir: Option<&str>) -> Result<Vec<Transport>, CliError> {
    // Errors worded and coded as for `maqet host` (commands/host.rs).
    let path = hosts_path()?;
    let hosts = Hosts::load(&path)?;
    let control = crate::remote::ssh::control_dir();
    let mut out = Vec::new();
    if cli.all_hosts {
        if hosts.hosts.is_empty() {
            return Err(CliError::usage(format!(
                "--all-hosts: {} names no hosts; add one with `maqet host add NAME [USER@]HOST[:PORT]`",
                path.display()
            )));
        }
        out.extend(
            hosts
                .hosts
                .iter()
                .map(|h| Transport::of_host(h, control.clone())),
        );
    }
    for v in &cli.host {
        let t = match hosts.get(v) {
            Some(h) => Transport::of_host(h, control.clone()),
            None => {
                let d = Destination::parse(v).map_err(|e| {
                    CliError::usage(format!(
                        "-H {e} (and no host of that name in {})",
                        path.display()
                    ))
                })?;
                Transport::of_destination(d, control.clone())
            }
        };
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if let Some(d) = data_dir {
        for t in &mut out {
            t.data_dir = Some(d.to_string());
        }
    }
    Ok(out)
}

/// Runs `cli` on the hosts it names.
pub fn run(cli: &Cli, rt: &tokio::runtime::Runtime) -> Result<(), CliError> {
    let raw: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| {
            a.into_string()
                .map_err(|a| CliError::usage(format!("{a:?}: with -H, arguments must be UTF-8")))
        })
        .collect::<Result<_, _>>()?;
    let fwd = forwarded(&raw);
    let targets = transports(cli, fwd.data_dir.as_deref())?;
    if let Command::Ls(a) = &cli.command {
        return rt.block_on(ls(targets, a));
    }
    let [t] = <[Transport; 1]>::try_from(targets).map_err(|t| {
        CliError::usage(format!(
            "only `ls` runs on several hosts at once ({} hosts given)",
            t.len()
        ))
    })?;
    let needs_terminal = match &cli.command {
        Command::Console(a) => !a.dump,
        Command::Ssh(_) => true,
        Command::Rm(a) => a.all && !a.yes,
        Command::Start(a) => a.fresh && !a.yes,
        _ => false,
    };
    rt.block_on(async {
        let mut conn = Connection::open(t).await?;
        match &cli.command {
            Command::Status(a) => {
                let r: StatusReport = conn
                    .call(Call::Status {
                        name: a.name.clone(),
                    })
                    .await?;
                conn.close().await;
                super::commands::show::print_status(&r, a.json);
                Ok(())
            }
            Command::Qmp(QmpCommand::Run(q)) => {
                let arguments = super::commands::qmp::arguments(q.arguments.as_deref())?;
                let v: serde_json::Value = conn
                    .call(Call::Qmp {
                        name: q.name.clone(),
                        command: q.command.clone(),
                        arguments,
                    })
                    .await?;
                conn.close().await;
                super::output::print_json(&v);
                Ok(())
            }
            Command::Qmp(QmpCommand::Socket(v)) => {
                let (local, _) = forward(conn, &v.name, SocketKind::Qmp).await?;
                println!("{}", local.display());
                Ok(())
            }
            Command::Display(a) => {
                let (local, end) = forward(conn, &a.name, SocketKind::Display).await?;
                display(&a.name, &local, &end, a.print)
            }
            _ if needs_terminal => {
                // Reachable, and a maqet that speaks our protocol, before
                // the terminal is handed over.
                conn.ready().await?;
                let t = conn.transport.clone();
                conn.close().await;
                passthrough(&t, &fwd.argv)
            }
            command => {
                let (argv, uploads) = with_uploads(command, &cli.copy, fwd.argv)?;
                let code = conn.run(argv, uploads, &mut relay).await?;
                conn.close().await;
                match code {
                    code::OK => Ok(()),
                    // The remote maqet has said why, on stderr.
                    c => Err(CliError::new(c, "")),
                }
            }
        }
    })
}

/// The remote command's output, written as it comes.
fn relay(stream: Stream, data: &str) {
    match stream {
        Stream::Stdout => {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(data.as_bytes());
            let _ = o.flush();
        }
        Stream::Stderr => {
            let _ = std::io::stderr().write_all(data.as_bytes());
        }
    }
}

/// `add`/`apply`'s config files and `--copy` files, read here and sent
/// along; in argv each file becomes a placeholder the server replaces
/// with the uploaded file's path.
fn with_uploads(
    command: &Command,
    copies: &[PathBuf],
    mut argv: Vec<String>,
) -> Result<(Vec<String>, Vec<Upload>), CliError> {
    let files: Vec<&PathBuf> = match command {
        Command::Add(a) => a.files.iter().chain(&a.vm_config).collect(),
        Command::Apply(a) => a.files.iter().chain(&a.vm_config).collect(),
        _ => Vec::new(),
    };
    let mut uploads = Vec::new();
    for (i, file) in files
        .iter()
        .chain(copies.iter().collect::<Vec<_>>().iter())
        .enumerate()
    {
        let placeholder = format!("\u{0}maqet-upload-{i}");
        let content =
            std::fs::read(file).map_err(|e| CliError::usage(format!("{}: {e}", file.display())))?;
        let content = String::from_utf8(content).map_err(|_| {
            CliError::usage(format!(
                "{}: not UTF-8 text; -H sends configs and other text files (copy disk images with scp or rsync)",
                file.display()
            ))
        })?;
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| CliError::usage(format!("{}: not a file name", file.display())))?;
        // The file's first occurrence as an argument (config files only:
        // a --copy file is not an argument of the command).
        if i < files.len() {
            let text = file.to_string_lossy();
            if let Some(slot) = argv.iter_mut().find(|a| **a == text) {
                slot.clone_from(&placeholder);
            }
        }
        uploads.push(Upload {
            placeholder,
            name: name.into(),
            content,
        });
    }
    Ok((argv, uploads))
}

/// `ssh [-t] HOST maqet ARGV…` with this terminal: its exit code is ours.
fn passthrough(t: &Transport, argv: &[String]) -> Result<(), CliError> {
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let mut words = Vec::new();
    if let Some(d) = &t.data_dir {
        words.extend(["--data-dir".to_string(), d.clone()]);
    }
    words.extend(argv.iter().cloned());
    let status = std::process::Command::new("ssh")
        .args(t.command_argv(tty, &words))
        .status()
        .map_err(|e| CliError::failure(format!("cannot run ssh: {e}")))?;
    use std::os::unix::process::ExitStatusExt;
    match status.code().or_else(|| status.signal().map(|s| 128 + s)) {
        Some(code::OK) => Ok(()),
        Some(c) => Err(CliError::new(c, "")),
        None => Err(CliError::failure("ssh ended without a status")),
    }
}

/// A local socket, forwarded by the shared ssh connection to VM `name`'s
/// socket on the host: `$XDG_RUNTIME_DIR/maqet/remote/CONN/NAME/KIND.sock`.
async fn forward(
    mut conn: Connection,
    name: &str,
    kind: SocketKind,
) -> Result<(PathBuf, Endpoint), CliError> {
    let end: Endpoint = conn
        .call(Call::Endpoint {
            name: name.into(),
            socket: kind,
        })
        .await?;
    let t = conn.transport.clone();
    let Some(master) = t.control_path() else {
        return Err(CliError::new(
            code::NO_SESSION,
            "forwarding a socket needs a shared ssh connection, whose socket lives in XDG_RUNTIME_DIR, which is not set",
        ));
    };
    let conn_id = master.file_name().map(OsString::from).unwrap_or_default();
    let runtime = crate::paths::runtime_root()?;
    let dir = runtime
        .parent()
        .unwrap_or(&runtime)
        .join("remote")
        .join(conn_id)
        .join(crate::vmname::VmName::new(name)?.as_str());
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| CliError::failure(format!("{}: {e}", dir.display())))?;
    }
    let local = dir.join(format!("{}.sock", end.protocol));
    let out = tokio::process::Command::new("ssh")
        .args(t.forward_argv(&local, &end.path))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| CliError::failure(format!("cannot run ssh: {e}")))?;
    conn.close().await;
    if !out.status.success() {
        return Err(CliError::failure(format!(
            "{}: cannot forward {} to {}: {}",
            t.label,
            local.display(),
            end.path,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok((local, end))
}

/// `display` on a forwarded socket: its URI, or a local viewer on it.
fn display(name: &str, local: &Path, end: &Endpoint, print: bool) -> Result<(), CliError> {
    use crate::display::DisplayServer;
    let server = match end.protocol.as_str() {
        "spice" => DisplayServer::Spice,
        _ => DisplayServer::Vnc,
    };
    if print {
        println!("{}", server.uri(local));
        return Ok(());
    }
    let Some((viewer, program)) = crate::display::find_viewer(server) else {
        return Err(CliError::failure(format!(
            "no {} viewer is installed: {} — or connect any viewer to {} (`maqet -H … display {name} --print`)",
            server.as_str().to_uppercase(),
            crate::display::install_hint(Some(server)),
            local.display()
        )));
    };
    let argv = viewer.argv(&program, server, local);
    let status = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .map_err(|e| CliError::failure(format!("cannot run {}: {e}", program.display())))?;
    match status.code() {
        Some(0) => Ok(()),
        c => Err(CliError::new(c.unwrap_or(code::FAILURE), "")),
    }
}

/// `ls` on every host at once: rows as they are, a host that fails named
/// on stderr (the others still listed), the exit code the worst.
async fn ls(targets: Vec<Transport>, a: &LsArgs) -> Result<(), CliError> {
    super::commands::show::state_filter(a.state.as_deref())?;
    let several = targets.len() > 1;
    let asks = targets.into_iter().map(|t| async move {
        let label = t.label.clone();
        let r = async {
            let mut c = Connection::open(t).await?;
            let rows: Vec<StatusReport> = c
                .call(Call::List {
                    state: a.state.clone(),
                })
                .await?;
            c.close().await;
            Ok::<_, RemoteError>(rows)
        }
        .await;
        (label, r)
    });
    let mut rows = Vec::new();
    let mut codes = Vec::new();
    for (label, r) in join_all(asks).await {
        match r {
            Ok(list) => rows.extend(
                list.into_iter()
                    .map(|r| (several.then(|| label.clone()), r)),
            ),
            Err(e) => {
                let e = CliError::from(e);
                match several {
                    // Transport errors name the host already.
                    true if e.message.contains(&label) => eprintln!("maqet: {}", e.message),
                    true => eprintln!("maqet: {label}: {}", e.message),
                    false => return Err(e),
                }
                codes.push(e.code);
            }
        }
    }
    super::commands::show::print_ls(&rows, a);
    match codes.len() {
        0 => Ok(()),
        n => Err(CliError::new(
            worst(codes),
            format!("{n} of the hosts could not be listed"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(args: &[&str]) -> Forwarded {
        forwarded(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn host_options_stay_here_and_the_rest_goes() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(f(&["-H", "lab", "ls"]).argv, v(&["ls"]));
        assert_eq!(f(&["-Hlab", "status", "web"]).argv, v(&["status", "web"]));
        assert_eq!(
            f(&["--host=a@b:2", "--host", "c", "ls", "--json"]).argv,
            v(&["ls", "--json"])
        );
        assert_eq!(
            f(&["-vH", "lab", "start", "web"]).argv,
            v(&["-v", "start", "web"])
        );
        assert_eq!(f(&["-vvHlab", "ls"]).argv, v(&["-vv", "ls"]));
        assert_eq!(f(&["--all-hosts", "ls"]).argv, v(&["ls"]));
        assert_eq!(
            f(&["-H", "lab", "add", "web.yaml", "--copy", "k.pub", "--copy=x"]).argv,
            v(&["add", "web.yaml"])
        );
        let d = f(&["--data-dir", "/srv/m", "-H", "lab", "ls"]);
        assert_eq!(
            (d.argv, d.data_dir.as_deref()),
            (v(&["ls"]), Some("/srv/m"))
        );
        assert_eq!(f(&["--data-dir=/x", "ls"]).data_dir.as_deref(), Some("/x"));
        // After `--` everything is the guest's.
        assert_eq!(
            f(&["-H", "lab", "ssh", "web", "--", "-H", "x", "--host", "y"]).argv,
            v(&["ssh", "web", "--", "-H", "x", "--host", "y"])
        );
        // Other short options pass untouched.
        assert_eq!(
            f(&["logs", "-n", "5", "web"]).argv,
            v(&["logs", "-n", "5", "web"])
        );
    }

    #[test]
    fn remote_refusals_keep_their_exit_code_and_words() {
        let e = CliError::from(RemoteError::Failed {
            code: code::NO_SUCH_VM,
            message: "no VM named 'x' in /d".into(),
        });
        assert_eq!(
            (e.code, e.message.as_str()),
            (code::NO_SUCH_VM, "no VM named 'x' in /d")
        );
        let e = CliError::from(RemoteError::Unreachable {
            host: "lab".into(),
            reason: "ssh: connect to host lab port 22: Connection refused".into(),
        });
        assert_eq!(e.code, code::FAILURE);
        assert_eq!(
            e.message,
            "cannot reach lab: ssh: connect to host lab port 22: Connection refused"
        );
        let e = CliError::from(RemoteError::NoMaqet {
            host: "lab".into(),
            program: "maqet".into(),
        });
        assert!(e
            .message
            .contains("install maqet there (or set `maqet:` in hosts.yaml)"));
    }
}
