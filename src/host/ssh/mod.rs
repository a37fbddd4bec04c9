//! `maqet ssh` (issue 11): the ssh command line for a VM — its forwarded
//! port on 127.0.0.1, the guest user, the private keys whose public halves
//! went into the seed, and a per-VM known_hosts file under the data
//! directory. The host key is learned on first connect
//! (`StrictHostKeyChecking=accept-new`) under a per-VM alias, so a port that
//! changes between starts does not look like a new host, while a changed key
//! for the same VM is still refused.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

pub mod session;

/// `DATA_DIR/ssh/VM.known_hosts`.
pub fn known_hosts_path(data_dir: &Path, vm: &str) -> PathBuf {
    data_dir.join("ssh").join(format!("{vm}.known_hosts"))
}

/// Private keys next to the given `.pub` files (`id_ed25519.pub` →
/// `id_ed25519`), where they exist.
pub fn identities(pub_files: &[PathBuf]) -> Vec<PathBuf> {
    pub_files
        .iter()
        .filter_map(|p| {
            let s = p.to_str()?.strip_suffix(".pub")?;
            let private = PathBuf::from(s);
            private.is_file().then_some(private)
        })
        .collect()
}

/// What `ssh` gets, after the program name.
pub struct SshTarget<'a> {
    pub vm: &'a str,
    pub user: &'a str,
    pub port: u16,
    pub identities: &'a [PathBuf],
    pub known_hosts: &'a Path,
}

/// The argv (without `ssh` itself); `command` runs remotely when not empty.
pub fn argv(t: &SshTarget, command: &[String]) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["-p".into(), t.port.to_string().into()];
    let mut opt = |s: String| {
        a.push("-o".into());
        a.push(s.into());
    };
    opt(format!("HostKeyAlias=maqet-{}", t.vm));
    let mut kh = OsString::from("UserKnownHostsFile=");
    kh.push(t.known_hosts.as_os_str());
    opt("StrictHostKeyChecking=accept-new".into());
    opt("GlobalKnownHostsFile=/dev/null".into());
    // "Permanently added … to the list of known hosts" is noise here.
    opt("LogLevel=ERROR".into());
    a.push("-o".into());
    a.push(kh);
    for i in t.identities {
        a.push("-i".into());
        a.push(i.as_os_str().to_owned());
    }
    // `--` ends ssh's options: OpenSSH reads options after the destination
    // too (`ssh host -oProxyCommand=…`), so without it a remote command
    // word — or a user name — starting with '-' would be one.
    a.push("--".into());
    a.push(format!("{}@{}", t.user, crate::ports::HOST_ADDR).into());
    a.extend(command.iter().map(OsString::from));
    a
}

/// Why `user` cannot be the login name on ssh's command line: one that
/// starts with '-' would be read as an option (`-oProxyCommand=…` runs a
/// command on this host), and blanks or control characters are never part
/// of a user name.
pub fn check_user(user: &str) -> Result<(), &'static str> {
    if user.is_empty() {
        return Err("it is empty");
    }
    if user.starts_with('-') {
        return Err("it starts with '-', which ssh would read as an option");
    }
    if user.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("it contains a blank or a control character");
    }
    Ok(())
}

/// Waits until something speaking SSH answers on 127.0.0.1:`port` (QEMU's
/// user network accepts the TCP connection before the guest's sshd runs,
/// so the banner is what counts). False after `timeout`.
pub async fn wait_for_banner(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from((crate::ports::HOST_ADDR, port));
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let probe = async {
            let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.ok()?;
            (&buf == b"SSH-").then_some(())
        };
        if let Ok(Some(())) = tokio::time::timeout(left.min(PROBE_TIMEOUT), probe).await {
            return true;
        }
        // The guest is booting; poll again shortly.
        tokio::time::sleep(PROBE_PAUSE.min(deadline.saturating_duration_since(Instant::now())))
            .await;
    }
}

/// How long one probe waits for the banner before giving up on it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
const PROBE_PAUSE: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_has_port_alias_known_hosts_and_command() {
        let ids = vec![PathBuf::from("/h/.ssh/id_ed25519")];
        let t = SshTarget {
            vm: "web",
            user: "alice",
            port: 40022,
            identities: &ids,
            known_hosts: Path::new("/d/ssh/web.known_hosts"),
        };
        let a: Vec<String> = argv(&t, &["uname".into(), "-r".into()])
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        let joined = a.join(" ");
        assert!(joined.starts_with("-p 40022 "), "{joined}");
        assert!(joined.contains("-o HostKeyAlias=maqet-web"));
        assert!(joined.contains("-o UserKnownHostsFile=/d/ssh/web.known_hosts"));
        assert!(joined.contains("-o StrictHostKeyChecking=accept-new"));
        assert!(joined.contains("-i /h/.ssh/id_ed25519"));
        assert!(joined.ends_with(" -- alice@127.0.0.1 uname -r"), "{joined}");
        // Words of the remote command stay the remote command's.
        let a = argv(&t, &["-oProxyCommand=touch /tmp/x".into()]);
        let dash = a.iter().position(|w| w == "--").unwrap();
        assert_eq!(a[dash + 1], "alice@127.0.0.1");
        assert_eq!(a[dash + 2], "-oProxyCommand=touch /tmp/x");
    }

    #[test]
    fn user_names_that_ssh_would_read_as_options_are_refused() {
        for bad in ["-oProxyCommand=touch /tmp/x", "-l", "", "a b", "a\nb"] {
            assert!(check_user(bad).is_err(), "{bad:?}");
        }
        for ok in ["debian", "alice.b", "svc-1", "DOMAIN\\bob"] {
            assert!(check_user(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn identities_are_the_existing_private_halves() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.pub");
        let b = d.path().join("b.pub");
        std::fs::write(&a, "x").unwrap();
        std::fs::write(&b, "x").unwrap();
        std::fs::write(d.path().join("a"), "k").unwrap();
        assert_eq!(identities(&[a, b]), vec![d.path().join("a")]);
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_banner_after_silent_and_closed_connections_is_ready() {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            // Like QEMU's user network before the guest's sshd: a silent
            // connection, then one closed at once; then sshd.
            let (silent, _) = l.accept().unwrap();
            let (closed, _) = l.accept().unwrap();
            drop(closed);
            let (mut sshd, _) = l.accept().unwrap();
            sshd.write_all(b"SSH-2.0-test\r\n").unwrap();
            drop(silent);
        });
        assert!(block_on(wait_for_banner(port, Duration::from_secs(20))));
        server.join().unwrap();
    }

    #[test]
    fn no_banner_means_not_ready() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        assert!(!block_on(wait_for_banner(port, Duration::from_millis(300))));
    }
}
