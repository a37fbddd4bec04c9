//! `maqet host ls|add|rm`: the named connections of hosts.yaml that
//! `maqet -H NAME` uses (docs/remote.md).

use crate::cli::args::{HostAddArgs, HostCommand};
use crate::cli::exit::{code, CliError};
use crate::cli::output::{print_json, render_table};
use crate::remote::hosts::{hosts_path, Host, Hosts, HostsError};
use crate::remote::Destination;

impl From<HostsError> for CliError {
    fn from(e: HostsError) -> Self {
        let c = match &e {
            HostsError::Exists { .. } => code::CONFLICT,
            HostsError::NotFound { .. } => code::NO_SUCH_VM,
            HostsError::BadName { .. } | HostsError::NoConfigHome => code::USAGE,
            HostsError::Yaml(_) | HostsError::Invalid { .. } | HostsError::Destination { .. } => {
                code::INVALID_CONFIG
            }
            HostsError::Read { .. } | HostsError::Write { .. } | HostsError::NewFile(_) => {
                code::FAILURE
            }
        };
        CliError::new(c, e.to_string())
    }
}

pub fn run(c: HostCommand) -> Result<(), CliError> {
    let mut hosts = Hosts::load(&hosts_path()?)?;
    match c {
        HostCommand::Ls(a) => {
            if a.json {
                let v: Vec<_> = hosts
                    .hosts
                    .iter()
                    .map(|h| {
                        serde_json::json!({
                            "name": h.name,
                            "ssh": h.destination.to_string(),
                            "identity": h.identity,
                            "data_dir": h.data_dir,
                            "maqet": h.maqet,
                        })
                    })
                    .collect();
                print_json(&v);
            } else if hosts.hosts.is_empty() {
                eprintln!(
                    "no hosts in {}; add one with `maqet host add NAME [USER@]HOST[:PORT]`",
                    hosts.path.display()
                );
            } else {
                let dash = |s: Option<String>| s.unwrap_or_else(|| "-".into());
                let rows: Vec<Vec<String>> = hosts
                    .hosts
                    .iter()
                    .map(|h| {
                        vec![
                            h.name.clone(),
                            h.destination.to_string(),
                            dash(h.identity.as_ref().map(|p| p.display().to_string())),
                            dash(h.data_dir.clone()),
                            dash(h.maqet.clone()),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    render_table(&["NAME", "SSH", "IDENTITY", "DATA DIR", "MAQET"], &rows)
                );
            }
        }
        HostCommand::Add(a) => {
            hosts.add(host(&a)?)?;
            hosts.save()?;
            eprintln!("added host '{}' to {}", a.alias, hosts.path.display());
        }
        HostCommand::Rm(a) => {
            hosts.remove(&a.host)?;
            hosts.save()?;
            eprintln!("removed host '{}' from {}", a.host, hosts.path.display());
        }
    }
    Ok(())
}

fn host(a: &HostAddArgs) -> Result<Host, CliError> {
    let mut destination =
        Destination::parse(&a.destination).map_err(|e| CliError::usage(e.to_string()))?;
    if let Some(p) = a.port {
        if destination.port.is_some_and(|q| q != p) {
            return Err(CliError::usage(format!(
                "--port {p} contradicts the port in {}",
                a.destination
            )));
        }
        destination.port = Some(p);
    }
    if a.maqet.as_deref().is_some_and(|m| m.starts_with('-')) {
        return Err(CliError::usage("--maqet may not start with '-'"));
    }
    let identity = match &a.identity {
        Some(i) => Some(std::path::absolute(i)?),
        None => None,
    };
    Ok(Host {
        name: a.alias.clone(),
        destination,
        identity,
        data_dir: a.remote_data_dir.clone(),
        maqet: a.maqet.clone(),
    })
}

/// `maqet __complete-hosts`: the host names, one per line (nothing on any
/// error, so a TAB press stays quiet).
pub fn complete() -> Result<(), CliError> {
    if let Ok(hosts) = hosts_path().and_then(|p| Hosts::load(&p)) {
        for h in hosts.hosts {
            println!("{}", h.name);
        }
    }
    Ok(())
}
