//! Named connections: `$XDG_CONFIG_HOME/maqet/hosts.yaml`.
//!
//! ```yaml
//! lab:
//!   ssh: alice@lab.example   # [USER@]HOST[:PORT]
//!   port: 2222               # optional, instead of :PORT
//!   identity: ~/.ssh/lab     # optional: ssh -i
//!   data_dir: /srv/maqet     # optional: the remote maqet's --data-dir
//!   maqet: /opt/bin/maqet    # optional: the remote maqet (default: maqet in PATH)
//! ```
//!
//! Read with the config's YAML reader, so every error names file, line
//! and column. `maqet host add|rm` rewrite the file (comments are not
//! kept: the file is maqet's).

use std::path::{Path, PathBuf};

use crate::config::{ConfigError, Location};
use crate::config::{Node, Value};
use crate::files::{NewFile, NewFileError};

use super::destination::{Destination, DestinationError};

/// One named connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub destination: Destination,
    /// `ssh -i FILE` (`~/` expanded).
    pub identity: Option<PathBuf>,
    /// The remote maqet's data directory (a path on that host).
    pub data_dir: Option<String>,
    /// The remote maqet program (default `maqet`, found in the remote PATH).
    pub maqet: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// hosts.yaml is not a regular file, or the new one could not be put
    /// in its place.
    #[error("cannot write the hosts file: {0}")]
    NewFile(Box<NewFileError>),
    #[error("{0}")]
    Yaml(#[from] ConfigError),
    #[error("{location}: {message}")]
    Invalid { location: Location, message: String },
    #[error("{location}: ssh: {source}")]
    Destination {
        location: Location,
        source: DestinationError,
    },
    #[error("a host named '{name}' is already in {path}")]
    Exists { name: String, path: PathBuf },
    #[error("no host named '{name}' in {path}")]
    NotFound { name: String, path: PathBuf },
    #[error("'{name}' is not a host name: {why}")]
    BadName { name: String, why: &'static str },
    #[error("neither XDG_CONFIG_HOME nor HOME is set, so there is no hosts.yaml")]
    NoConfigHome,
}

/// The hosts file's place: `$XDG_CONFIG_HOME/maqet/hosts.yaml`.
pub fn hosts_path() -> Result<PathBuf, HostsError> {
    crate::paths::config_home()
        .map(|c| c.join("maqet").join("hosts.yaml"))
        .ok_or(HostsError::NoConfigHome)
}

/// The hosts of one file, in written order.
#[derive(Debug, Clone, Default)]
pub struct Hosts {
    pub path: PathBuf,
    pub hosts: Vec<Host>,
}

const KEYS: [&str; 5] = ["ssh", "port", "identity", "data_dir", "maqet"];

impl Hosts {
    /// Reads `path`; a missing file is no hosts.
    pub fn load(path: &Path) -> Result<Hosts, HostsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(HostsError::Read {
                    path: path.into(),
                    source,
                })
            }
        };
        Ok(Hosts {
            path: path.into(),
            hosts: parse(&text, &path.display().to_string())?,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn add(&mut self, host: Host) -> Result<(), HostsError> {
        check_name(&host.name)?;
        if self.get(&host.name).is_some() {
            return Err(HostsError::Exists {
                name: host.name,
                path: self.path.clone(),
            });
        }
        self.hosts.push(host);
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<Host, HostsError> {
        let i = self
            .hosts
            .iter()
            .position(|h| h.name == name)
            .ok_or_else(|| HostsError::NotFound {
                name: name.into(),
                path: self.path.clone(),
            })?;
        Ok(self.hosts.remove(i))
    }

    /// Writes the file whole, 0600, through [`NewFile`]: a fresh temporary
    /// file beside it (never one that exists, so no link is followed) moved
    /// over the old file only if that is a regular file.
    pub fn save(&self) -> Result<(), HostsError> {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let write = |e| HostsError::Write {
            path: self.path.clone(),
            source: e,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(write)?;
        }
        let file =
            NewFile::create(&self.path, true).map_err(|e| HostsError::NewFile(Box::new(e)))?;
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o600))
            .map_err(write)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(file.path())
            .map_err(write)?;
        f.write_all(render(&self.hosts).as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(write)?;
        file.commit().map_err(|e| HostsError::NewFile(Box::new(e)))
    }
}

/// A host name: what `-H NAME` and `host rm NAME` take. Never something
/// that could be read as a destination (no '@', ':', brackets).
pub fn check_name(name: &str) -> Result<(), HostsError> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.starts_with('-') {
        Some("it starts with '-'")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Some("use letters, digits, '.', '_' and '-'")
    } else {
        None
    };
    match why {
        Some(why) => Err(HostsError::BadName {
            name: name.into(),
            why,
        }),
        None => Ok(()),
    }
}

fn parse(text: &str, source: &str) -> Result<Vec<Host>, HostsError> {
    // Nothing but comments (what `host rm` of the last host leaves).
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(Vec::new());
    }
    let root = crate::config::parse_yaml_str(text, source)?;
    let mut out = Vec::new();
    for e in root.as_map().unwrap_or_default() {
        check_name(&e.key).map_err(|err| HostsError::Invalid {
            location: e.key_loc.clone(),
            message: err.to_string(),
        })?;
        out.push(host(&e.key, &e.value)?);
    }
    Ok(out)
}

fn invalid(loc: &Location, message: String) -> HostsError {
    HostsError::Invalid {
        location: loc.clone(),
        message,
    }
}

fn host(name: &str, node: &Node) -> Result<Host, HostsError> {
    let Some(map) = node.as_map() else {
        return Err(invalid(
            &node.loc,
            format!(
                "{name}: expected a mapping with `ssh: [USER@]HOST[:PORT]`, found {}",
                node.type_name()
            ),
        ));
    };
    for e in map {
        if !KEYS.contains(&e.key.as_str()) {
            return Err(invalid(
                &e.key_loc,
                format!("{name}.{}: unknown key (known: {})", e.key, KEYS.join(", ")),
            ));
        }
    }
    let text = |key: &str| -> Result<Option<(String, &Location)>, HostsError> {
        match node.get(key) {
            None => Ok(None),
            Some(n) => match &n.value {
                Value::Str(s) if !s.is_empty() => Ok(Some((s.clone(), &n.loc))),
                _ => Err(invalid(
                    &n.loc,
                    format!(
                        "{name}.{key}: expected a non-empty string, found {}",
                        n.type_name()
                    ),
                )),
            },
        }
    };
    let Some((ssh, ssh_loc)) = text("ssh")? else {
        return Err(invalid(
            &node.loc,
            format!("{name}: `ssh: [USER@]HOST[:PORT]` is missing"),
        ));
    };
    let mut destination = Destination::parse(&ssh).map_err(|source| HostsError::Destination {
        location: ssh_loc.clone(),
        source,
    })?;
    if let Some(p) = node.get("port") {
        let port = match p.value {
            Value::Int(i) if (1..=65535).contains(&i) => i as u16,
            _ => {
                return Err(invalid(
                    &p.loc,
                    format!("{name}.port: expected a port from 1 to 65535"),
                ))
            }
        };
        if destination.port.is_some_and(|q| q != port) {
            return Err(invalid(
                &p.loc,
                format!("{name}.port: {port} contradicts the port in `ssh: {ssh}`"),
            ));
        }
        destination.port = Some(port);
    }
    let identity = text("identity")?.map(|(s, _)| expand_home(&s));
    let data_dir = text("data_dir")?.map(|(s, _)| s);
    let maqet = match text("maqet")? {
        Some((m, loc)) if m.starts_with('-') => {
            return Err(invalid(
                loc,
                format!("{name}.maqet: may not start with '-'"),
            ))
        }
        m => m.map(|(s, _)| s),
    };
    Ok(Host {
        name: name.into(),
        destination,
        identity,
        data_dir,
        maqet,
    })
}

/// `~/x` → `$HOME/x` (ssh would do it for its own config, not for `-i`
/// given by a program).
fn expand_home(s: &str) -> PathBuf {
    match (s.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(s),
    }
}

/// The file's text: JSON strings are YAML's double-quoted scalars, so
/// every value is written quoted and read back exactly.
fn render(hosts: &[Host]) -> String {
    let q = |s: &str| serde_json::Value::String(s.into()).to_string();
    let mut out =
        String::from("# maqet's named connections (`maqet host add|rm` rewrite this file).\n");
    for h in hosts {
        out.push_str(&format!("{}:\n", h.name));
        let mut ssh = h.destination.clone();
        let port = ssh.port.take();
        out.push_str(&format!("  ssh: {}\n", q(&ssh.to_string())));
        if let Some(p) = port {
            out.push_str(&format!("  port: {p}\n"));
        }
        if let Some(i) = &h.identity {
            out.push_str(&format!("  identity: {}\n", q(&i.to_string_lossy())));
        }
        if let Some(d) = &h.data_dir {
            out.push_str(&format!("  data_dir: {}\n", q(d)));
        }
        if let Some(m) = &h.maqet {
            out.push_str(&format!("  maqet: {}\n", q(m)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, "/h.yaml").unwrap_err().to_string()
    }

    #[test]
    fn hosts_are_read_with_their_options() {
        let hosts = parse(
            "lab:\n  ssh: alice@lab.example\n  port: 2222\n  identity: /k/id\n  data_dir: /srv/maqet\n  maqet: /opt/bin/maqet\nlocal:\n  ssh: '[::1]:22'\n",
            "/h.yaml",
        )
        .unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].name, "lab");
        assert_eq!(hosts[0].destination.to_string(), "alice@lab.example:2222");
        assert_eq!(hosts[0].identity, Some(PathBuf::from("/k/id")));
        assert_eq!(hosts[0].data_dir.as_deref(), Some("/srv/maqet"));
        assert_eq!(hosts[0].maqet.as_deref(), Some("/opt/bin/maqet"));
        assert_eq!(hosts[1].destination.port, Some(22));
        assert!(parse("", "/h.yaml").unwrap().is_empty());
        assert!(parse("# nothing yet\n", "/h.yaml").unwrap().is_empty());
    }

    #[test]
    fn errors_name_file_line_and_column() {
        assert_eq!(
            err("lab:\n  ssh: alice@lab\n  prot: 22\n"),
            "/h.yaml:3:3: lab.prot: unknown key (known: ssh, port, identity, data_dir, maqet)"
        );
        assert_eq!(
            err("lab:\n  ssh: 'alice@lab:99999'\n"),
            "/h.yaml:2:8: ssh: 'alice@lab:99999': the port must be a number from 1 to 65535, not '99999'"
        );
        assert_eq!(
            err("lab:\n  port: 22\n"),
            "/h.yaml:2:3: lab: `ssh: [USER@]HOST[:PORT]` is missing"
        );
        assert_eq!(
            err("lab:\n  ssh: 'x:23'\n  port: 22\n"),
            "/h.yaml:3:9: lab.port: 22 contradicts the port in `ssh: x:23`"
        );
        assert_eq!(
            err("lab: alice@lab\n"),
            "/h.yaml:1:6: lab: expected a mapping with `ssh: [USER@]HOST[:PORT]`, found a string"
        );
        assert!(err("a@b:\n  ssh: x\n").starts_with("/h.yaml:1:1: 'a@b' is not a host name"));
        assert!(
            err("lab: [\n").starts_with("/h.yaml:"),
            "{}",
            err("lab: [\n")
        );
        assert_eq!(
            err("lab:\n  ssh: x\n  maqet: -oops\n"),
            "/h.yaml:3:10: lab.maqet: may not start with '-'"
        );
    }

    #[test]
    fn a_saved_file_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/hosts.yaml");
        let mut hosts = Hosts::load(&path).unwrap();
        assert!(hosts.hosts.is_empty());
        let host = Host {
            name: "lab".into(),
            destination: Destination::parse("alice@[::1]:2200").unwrap(),
            identity: Some("/k/my id".into()),
            data_dir: Some("/srv/\"x\"".into()),
            maqet: None,
        };
        hosts.add(host.clone()).unwrap();
        assert!(matches!(
            hosts.add(host.clone()),
            Err(HostsError::Exists { .. })
        ));
        hosts.save().unwrap();
        let back = Hosts::load(&path).unwrap();
        assert_eq!(back.hosts, vec![host]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut back = back;
        back.remove("lab").unwrap();
        assert!(matches!(
            back.remove("lab"),
            Err(HostsError::NotFound { .. })
        ));
    }

    #[test]
    fn saving_never_writes_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.yaml");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        // A link where the old code put its fixed temporary name is ignored.
        std::os::unix::fs::symlink(&victim, dir.path().join("hosts.yaml.tmp")).unwrap();
        let mut hosts = Hosts::load(&path).unwrap();
        hosts
            .add(Host {
                name: "lab".into(),
                destination: Destination::parse("lab").unwrap(),
                identity: None,
                data_dir: None,
                maqet: None,
            })
            .unwrap();
        hosts.save().unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        // hosts.yaml itself a link: refused, the target untouched.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let e = hosts.save().unwrap_err();
        assert!(matches!(e, HostsError::NewFile(_)), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".maqet-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
