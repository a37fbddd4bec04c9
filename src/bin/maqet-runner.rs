//! `maqet-runner NAME --data-dir DIR`: the main process of
//! `maqet-vm@NAME.service`. Started by systemd (via `maqet start`), never
//! by hand: it needs the listening socket systemd passes as fd 3.
//!
//! Its two arguments are read by hand rather than with clap: clap's parser
//! is the largest piece of code the runner would otherwise touch at start,
//! and every page of it stays resident for the VM's whole life (see
//! docs/performance.md, "Runner memory").

use std::ffi::OsString;
use std::path::PathBuf;

use maqet::paths::DataDir;
use maqet::vmname::VmName;

const USAGE: &str = "usage: maqet-runner NAME --data-dir DIR
       maqet-runner --relay NAME [--ready-socket PATH] -- PROGRAM [ARGS...]
       maqet-runner --companion-stopped NAME UNIT
Runs one maqet VM under systemd (started by `maqet start`, not by hand);
--relay runs one of the VM's helpers (swtpm, virtiofsd, passt) and logs its
output with the VM's journal fields (with --ready-socket it tells systemd
the helper is ready once PATH listens); --companion-stopped (a helper unit's ExecStopPost=)
tells the VM's runner when that helper failed.";

#[derive(Debug, PartialEq)]
enum Parsed {
    Run {
        name: String,
        data_dir: PathBuf,
    },
    Relay {
        name: String,
        ready_socket: Option<PathBuf>,
        program: OsString,
        args: Vec<OsString>,
    },
    CompanionStopped {
        name: String,
        unit: String,
    },
    Help,
    Version,
}

/// `--relay NAME [--ready-socket PATH] -- PROGRAM ARGS…` (the arguments
/// after PROGRAM are the helper's, whatever they look like).
fn parse_relay(mut args: impl Iterator<Item = OsString>) -> Result<Parsed, String> {
    let name = args
        .next()
        .and_then(|a| a.into_string().ok())
        .ok_or("--relay needs the VM name")?;
    let mut ready_socket = None;
    let mut next = args.next();
    if next.as_deref() == Some(std::ffi::OsStr::new("--ready-socket")) {
        let path = args.next().ok_or("--ready-socket needs a path")?;
        ready_socket = Some(PathBuf::from(path));
        next = args.next();
    }
    if next.as_deref() != Some(std::ffi::OsStr::new("--")) {
        return Err("--relay NAME must be followed by -- PROGRAM".into());
    }
    let program = args.next().ok_or("--relay: missing the program after --")?;
    Ok(Parsed::Relay {
        name,
        ready_socket,
        program,
        args: args.collect(),
    })
}

fn parse(mut args: impl Iterator<Item = OsString>) -> Result<Parsed, String> {
    let (mut name, mut data_dir) = (None, None);
    while let Some(a) = args.next() {
        let text = a.to_str().ok_or("arguments must be UTF-8")?.to_string();
        match text.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "--relay" if name.is_none() && data_dir.is_none() => return parse_relay(args),
            "--companion-stopped" if name.is_none() && data_dir.is_none() => {
                let mut next = || args.next().and_then(|a| a.into_string().ok());
                return match (next(), next(), next()) {
                    (Some(name), Some(unit), None) => Ok(Parsed::CompanionStopped { name, unit }),
                    _ => Err("--companion-stopped takes NAME UNIT".into()),
                };
            }
            "--data-dir" => {
                let d = args.next().ok_or("--data-dir needs a directory")?;
                data_dir = Some(PathBuf::from(d));
            }
            _ if text.starts_with("--data-dir=") => {
                data_dir = Some(PathBuf::from(&text["--data-dir=".len()..]));
            }
            _ if text.starts_with('-') => return Err(format!("unknown option {text}")),
            _ if name.is_none() => name = Some(text),
            _ => return Err(format!("unexpected argument {text}")),
        }
    }
    match (name, data_dir) {
        (Some(name), Some(data_dir)) => Ok(Parsed::Run { name, data_dir }),
        (None, _) => Err("missing the VM name".into()),
        (_, None) => Err("missing --data-dir DIR".into()),
    }
}

fn main() {
    let (name, data_dir) = match parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Run { name, data_dir }) => (name, data_dir),
        Ok(Parsed::Relay {
            name,
            ready_socket,
            program,
            args,
        }) => {
            let ident = std::path::Path::new(&program)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "maqet-relay".into());
            // The companion unit says whose VM it serves (see companion::tpm).
            let dir = std::env::var_os("MAQET_DATA_DIR").map(PathBuf::from);
            maqet::logging::init_journal(
                &name,
                dir.as_deref(),
                &ident,
                tracing::level_filters::LevelFilter::INFO,
            );
            std::process::exit(maqet::runner::relay::run(
                &program,
                &args,
                ready_socket.as_deref(),
            ));
        }
        Ok(Parsed::CompanionStopped { name, unit }) => {
            let dir = std::env::var_os("MAQET_DATA_DIR").map(PathBuf::from);
            maqet::logging::init_journal(
                &name,
                dir.as_deref(),
                "maqet-runner",
                tracing::level_filters::LevelFilter::INFO,
            );
            let code = match VmName::new(&name) {
                Ok(vm) => {
                    let dir = dir.and_then(|d| DataDir::resolve(Some(&d)).ok());
                    maqet::runner::companion::report_stop(&vm, &unit, dir.as_ref())
                }
                Err(e) => {
                    tracing::error!("{e}");
                    64
                }
            };
            std::process::exit(code);
        }
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return;
        }
        Ok(Parsed::Version) => {
            println!("maqet-runner {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        Err(e) => {
            eprintln!("maqet-runner: {e}\n{USAGE}");
            std::process::exit(64); // EX_USAGE
        }
    };
    let level = std::env::var("MAQET_LOG")
        .ok()
        .and_then(|s| maqet::logging::level_from_name(&s))
        .unwrap_or(tracing::level_filters::LevelFilter::INFO);
    maqet::logging::init_runner(&name, Some(&data_dir), level);
    let code = match (VmName::new(&name), DataDir::resolve(Some(&data_dir))) {
        (Ok(vm), Ok(dir)) => maqet::runner::main(vm, dir),
        (Err(e), _) => {
            tracing::error!("{e}");
            64
        }
        (_, Err(e)) => {
            tracing::error!("{e}");
            64
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Parsed, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn reads_what_the_unit_passes() {
        let want = Parsed::Run {
            name: "web".into(),
            data_dir: "/d".into(),
        };
        assert_eq!(p(&["web", "--data-dir", "/d"]), Ok(want));
        let want = Parsed::Run {
            name: "web".into(),
            data_dir: "/d".into(),
        };
        assert_eq!(p(&["--data-dir=/d", "web"]), Ok(want));
        assert_eq!(p(&["--version"]), Ok(Parsed::Version));
        assert_eq!(
            p(&["--companion-stopped", "web", "maqet-tpm@web.service"]),
            Ok(Parsed::CompanionStopped {
                name: "web".into(),
                unit: "maqet-tpm@web.service".into()
            })
        );
        assert!(p(&["--companion-stopped", "web"]).is_err());
        assert_eq!(
            p(&[
                "--relay",
                "web",
                "--ready-socket",
                "/r/net.sock",
                "--",
                "passt",
                "-f"
            ]),
            Ok(Parsed::Relay {
                name: "web".into(),
                ready_socket: Some("/r/net.sock".into()),
                program: "passt".into(),
                args: vec!["-f".into()],
            })
        );
        assert!(matches!(
            p(&["--relay", "web", "--", "swtpm"]),
            Ok(Parsed::Relay {
                ready_socket: None,
                ..
            })
        ));
        assert!(p(&["--relay", "web", "--ready-socket"]).is_err());
        assert!(p(&["--relay", "web", "--ready-socket", "/s", "passt"]).is_err());
        assert_eq!(p(&["web", "-h"]), Ok(Parsed::Help));
        for bad in [
            &["web"][..],
            &["--data-dir", "/d"],
            &["web", "--data-dir"],
            &["a", "b", "--data-dir", "/d"],
            &["web", "--bogus"],
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }
}
