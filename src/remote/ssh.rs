//! The transport: the system's `ssh`, so its config, agent, known_hosts
//! and ControlMaster apply, and maqet handles no password or key itself.
//!
//! Every connection to one destination shares a master connection
//! (`ControlMaster=auto`, a socket under `$XDG_RUNTIME_DIR/maqet/ssh/`,
//! `ControlPersist`), so a command after the first costs one round trip
//! instead of a key exchange. Host keys are checked as the user's ssh
//! configuration says: no `StrictHostKeyChecking` is ever set here.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::destination::Destination;
use super::hosts::Host;

/// How long an idle master connection stays (seconds).
pub const CONTROL_PERSIST_SECS: u32 = 600;

/// How to reach one remote maqet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    /// What errors call the host: its name in hosts.yaml, or the
    /// destination as given.
    pub label: String,
    pub destination: Destination,
    pub identity: Option<PathBuf>,
    /// The remote maqet program.
    pub maqet: String,
    /// The remote maqet's `--data-dir`, from hosts.yaml.
    pub data_dir: Option<String>,
    /// Where the master connections' sockets are (`None`: no sharing).
    pub control_dir: Option<PathBuf>,
}

impl Transport {
    pub fn of_host(h: &Host, control_dir: Option<PathBuf>) -> Transport {
        Transport {
            label: h.name.clone(),
            destination: h.destination.clone(),
            identity: h.identity.clone(),
            maqet: h.maqet.clone().unwrap_or_else(|| "maqet".into()),
            data_dir: h.data_dir.clone(),
            control_dir,
        }
    }

    pub fn of_destination(d: Destination, control_dir: Option<PathBuf>) -> Transport {
        Transport {
            label: d.to_string(),
            destination: d,
            identity: None,
            maqet: "maqet".into(),
            data_dir: None,
            control_dir,
        }
    }

    /// The master connection's socket: short (a socket path has at most
    /// 107 bytes) and distinct per user, host, port and identity.
    pub fn control_path(&self) -> Option<PathBuf> {
        let dir = self.control_dir.as_ref()?;
        let mut h = Sha256::new();
        h.update(self.destination.to_string().as_bytes());
        h.update([0]);
        if let Some(i) = &self.identity {
            h.update(i.as_os_str().as_encoded_bytes());
        }
        let hex: String = h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Some(dir.join(hex))
    }

    /// Options every ssh run for this destination gets, before the target.
    fn options(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut opt = |s: String| {
            a.push("-o".into());
            a.push(s.into());
        };
        if let Some(cp) = self.control_path() {
            opt("ControlMaster=auto".into());
            opt(format!("ControlPath={}", cp.display()));
            opt(format!("ControlPersist={CONTROL_PERSIST_SECS}"));
        }
        // A forwarded socket replaces a stale file of an earlier forward
        // (the master applies it, so every run must carry it).
        opt("StreamLocalBindUnlink=yes".into());
        if let Some(p) = self.destination.port {
            a.push("-p".into());
            a.push(p.to_string().into());
        }
        if let Some(i) = &self.identity {
            a.push("-i".into());
            a.push(i.clone().into_os_string());
        }
        a
    }

    /// `ssh … -T -o BatchMode=yes -E LOG -- TARGET 'MAQET' [--data-dir
    /// 'DIR'] serve --stdio`:
    /// the protocol channel. BatchMode: nobody can answer a prompt on it.
    /// `-E`: ssh's own messages go to LOG, so "cannot reach" can quote
    /// them while the remote maqet's stderr still reaches ours.
    pub fn protocol_argv(&self, log: &Path) -> Vec<OsString> {
        let mut a = self.options();
        for s in ["-T", "-o", "BatchMode=yes", "-E"] {
            a.push(s.into());
        }
        a.push(log.as_os_str().into());
        a.push("--".into());
        a.push(self.destination.ssh_target().into());
        let mut words = vec![shell_quote(&self.maqet)];
        if let Some(d) = &self.data_dir {
            words.extend(["--data-dir".into(), shell_quote(d)]);
        }
        words.extend(["serve".into(), "--stdio".into()]);
        a.push(words.join(" ").into());
        a
    }

    /// `ssh … [-t|-T] -- TARGET 'MAQET' [--data-dir DIR] ARGS…`: a
    /// command whose terminal is the user's (console, ssh into the guest).
    /// ssh returns its exit code.
    pub fn command_argv(&self, tty: bool, args: &[String]) -> Vec<OsString> {
        let mut a = self.options();
        a.push(if tty { "-t" } else { "-T" }.into());
        // Not "Shared connection to HOST closed." after every console.
        a.push("-o".into());
        a.push("LogLevel=ERROR".into());
        a.push("--".into());
        a.push(self.destination.ssh_target().into());
        let mut words = vec![shell_quote(&self.maqet)];
        words.extend(args.iter().map(|s| shell_quote(s)));
        a.push(words.join(" ").into());
        a
    }

    /// `ssh … -O forward -L LOCAL:REMOTE -- TARGET`: a local socket that
    /// the master connection forwards to a remote one, for as long as the
    /// master lives.
    pub fn forward_argv(&self, local: &Path, remote: &str) -> Vec<OsString> {
        let mut a = self.options();
        a.push("-O".into());
        a.push("forward".into());
        a.push("-L".into());
        a.push(format!("{}:{remote}", local.display()).into());
        a.push("--".into());
        a.push(self.destination.ssh_target().into());
        a
    }
}

/// One word for a POSIX shell: single-quoted unless plainly safe.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    match safe {
        true => s.to_string(),
        false => format!("'{}'", s.replace('\'', r"'\''")),
    }
}

/// `$XDG_RUNTIME_DIR/maqet/ssh`, made 0700 (the sockets in it are the
/// user's open connections); `None` without a runtime directory.
pub fn control_dir() -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = crate::paths::ssh_root().ok()?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .ok()?;
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    Some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(a: &[OsString]) -> Vec<String> {
        a.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    fn lab() -> Transport {
        let h = Host {
            name: "lab".into(),
            destination: Destination::parse("alice@lab:2222").unwrap(),
            identity: Some("/k/id".into()),
            data_dir: Some("/srv/data dir".into()),
            maqet: Some("/opt/my maqet".into()),
        };
        Transport::of_host(&h, Some("/run/user/1/maqet/ssh".into()))
    }

    #[test]
    fn the_protocol_channel_is_batch_mode_over_a_shared_master() {
        let t = lab();
        let cp = t.control_path().unwrap();
        assert!(cp.starts_with("/run/user/1/maqet/ssh"));
        assert_eq!(cp.file_name().unwrap().len(), 16);
        let a = words(&t.protocol_argv(Path::new("/tmp/log")));
        assert_eq!(
            a,
            [
                "-o",
                "ControlMaster=auto",
                "-o",
                &format!("ControlPath={}", cp.display()),
                "-o",
                "ControlPersist=600",
                "-o",
                "StreamLocalBindUnlink=yes",
                "-p",
                "2222",
                "-i",
                "/k/id",
                "-T",
                "-o",
                "BatchMode=yes",
                "-E",
                "/tmp/log",
                "--",
                "alice@lab",
                "'/opt/my maqet' --data-dir '/srv/data dir' serve --stdio",
            ]
        );
        assert!(!a.iter().any(|w| w.contains("StrictHostKeyChecking")));
    }

    #[test]
    fn masters_differ_by_destination_and_identity() {
        let a = lab();
        let mut b = lab();
        b.identity = Some("/k/other".into());
        let mut c = lab();
        c.destination.port = Some(22);
        assert_ne!(a.control_path(), b.control_path());
        assert_ne!(a.control_path(), c.control_path());
        let d = Transport::of_destination(Destination::parse("lab").unwrap(), None);
        assert_eq!(d.control_path(), None);
        assert!(!words(&d.protocol_argv(Path::new("/l")))
            .iter()
            .any(|w| w.starts_with("Control")));
    }

    #[test]
    fn remote_words_are_quoted_for_the_remote_shell() {
        assert_eq!(shell_quote("maqet"), "maqet");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("$(id)"), "'$(id)'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let a = words(&lab().command_argv(true, &["console".into(), "web;rm -rf ~".into()]));
        let n = a.len();
        assert_eq!(
            a[n - 6..n - 1],
            ["-t", "-o", "LogLevel=ERROR", "--", "alice@lab"]
        );
        assert_eq!(a[n - 1], "'/opt/my maqet' console 'web;rm -rf ~'");
        let f = words(&lab().forward_argv(Path::new("/l/q.sock"), "/r/qmp.sock"));
        assert!(f.windows(2).any(|w| w == ["-O", "forward"]));
        assert!(f.windows(2).any(|w| w == ["-L", "/l/q.sock:/r/qmp.sock"]));
    }
}
