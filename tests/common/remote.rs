//! The "remote host" of the `maqet -H` tests: a second user (`maqet-remote`)
//! with a user manager of its own, reached through a real sshd on a loopback
//! port (tests/session/sshd.sh, brought up by `user-session.sh up` as root).
//! tests/run.sh passes where it listens as `MAQET_TEST_SSH_HOST`,
//! `MAQET_TEST_SSH_PORT` and `MAQET_TEST_REMOTE_USER`.
//!
//! The test user's `~/.ssh` holds the key that sshd accepts and the sshd's
//! host key in `known_hosts`, so plain `ssh` works with host key checking on,
//! exactly as `maqet -H` will run it. [`Remote::run`] checks results on the
//! far side independently of maqet; [`RemoteWorld`] gives a test its own
//! data directory and VM-name prefix there and removes both when dropped.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::bin_dir;

/// One login on the test sshd: a user at its host and port.
#[derive(Clone, Debug)]
pub struct Remote {
    pub host: String,
    pub port: u16,
    pub user: String,
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the remote-host tests need the loopback sshd and the remote \
             user that `tests/session/user-session.sh up` sets up as root; run them through \
             tests/run.sh (`make test` as root), or by hand after \
             `eval \"$(tests/session/user-session.sh env)\"`"
        )
    })
}

impl Remote {
    /// The remote user (`maqet-remote@127.0.0.1:PORT`).
    pub fn from_env() -> Remote {
        let port = required_env("MAQET_TEST_SSH_PORT");
        Remote {
            host: required_env("MAQET_TEST_SSH_HOST"),
            port: port
                .parse()
                .unwrap_or_else(|_| panic!("MAQET_TEST_SSH_PORT={port} is not a port")),
            user: required_env("MAQET_TEST_REMOTE_USER"),
        }
    }

    /// The test user itself through the same sshd, by the name `localhost`
    /// (its host key is known under both names): for a test that wants the
    /// far side to be the same user as the near one.
    pub fn test_user() -> Remote {
        let me = Command::new("id").arg("-un").output().expect("id -un");
        assert!(me.status.success(), "id -un failed");
        Remote {
            host: "localhost".into(),
            user: String::from_utf8_lossy(&me.stdout).trim().to_string(),
            ..Remote::from_env()
        }
    }

    /// `USER@HOST:PORT`, what `maqet -H` takes.
    pub fn destination(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    /// `ssh` to this login, ready for the remote command's words: the test
    /// user's own ssh configuration (key, known_hosts, host key checking),
    /// plus BatchMode so a missing key or unknown host fails instead of
    /// prompting.
    pub fn ssh(&self) -> Command {
        self.ssh_with(&[])
    }

    /// `ssh` as [`Remote::ssh`] with the further ssh options `extra`
    /// (e.g. `["-o", "UserKnownHostsFile=..."]`).
    pub fn ssh_with(&self, extra: &[&str]) -> Command {
        let mut c = Command::new("ssh");
        c.args(["-p", &self.port.to_string()])
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            .args(extra)
            .arg("--")
            .arg(format!("{}@{}", self.user, self.host))
            .stdin(Stdio::null());
        c
    }

    /// Runs the shell command line `script` as the remote user.
    pub fn run(&self, script: &str) -> Output {
        self.ssh().arg(script).output().expect("run ssh")
    }

    /// Runs `argv` (each word quoted for the remote shell) as the remote user.
    pub fn run_argv(&self, argv: &[&str]) -> Output {
        self.run(&shell_words(argv))
    }

    /// Runs `script` with `input` on its stdin.
    pub fn run_with_input(&self, script: &str, input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .ssh()
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ssh");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().expect("wait for ssh")
    }

    /// Runs `script`, asserts success, returns stdout.
    pub fn ok(&self, script: &str) -> String {
        let o = self.run(script);
        assert_ok(&format!("ssh {} {script}", self.destination()), &o)
    }

    /// `systemctl --user show UNIT -p PROP --value` of the remote user's manager.
    pub fn unit_prop(&self, unit: &str, prop: &str) -> String {
        self.ok(&shell_words(&[
            "systemctl",
            "--user",
            "show",
            unit,
            "-p",
            prop,
            "--value",
        ]))
        .trim()
        .to_string()
    }

    /// Stops every maqet unit (VMs and companions) whose instance name starts
    /// with `prefix` in the remote user's manager and forgets failed ones.
    pub fn stop_units(&self, prefix: &str) {
        let pattern = format!("maqet-*@{prefix}*");
        let _ = self.run_argv(&["systemctl", "--user", "stop", &pattern]);
        let _ = self.run_argv(&["systemctl", "--user", "reset-failed", &pattern]);
    }
}

/// Asserts `o` succeeded (naming `what` and its output if not); returns stdout.
fn assert_ok(what: &str, o: &Output) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `word` quoted for a POSIX shell.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// `argv` as one shell command line.
pub fn shell_words(argv: &[&str]) -> String {
    argv.iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One test's world on the remote side: a directory of the remote user's
/// (with the data directory in it) and a VM-name prefix, so tests run in
/// parallel against the one remote manager without meeting.
pub struct RemoteWorld {
    pub remote: Remote,
    /// The remote directory (mktemp -d as the remote user).
    pub dir: String,
    pub tag: String,
}

impl RemoteWorld {
    pub fn new(tag: &str) -> RemoteWorld {
        let remote = Remote::from_env();
        let dir = remote
            .ok(&format!(
                "mktemp -d -t {}",
                shell_quote(&format!("maqet-it-remote-{tag}-XXXXXXXX"))
            ))
            .trim()
            .to_string();
        assert!(dir.starts_with('/'), "mktemp gave {dir:?}");
        RemoteWorld {
            remote,
            dir,
            tag: format!("it-{}-{}", tag, std::process::id()),
        }
    }

    /// The remote maqet's data directory.
    pub fn data_dir(&self) -> String {
        format!("{}/data", self.dir)
    }

    /// A VM name unique to this test run.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{}", self.tag, suffix)
    }

    /// The staged `maqet` (tests/run.sh makes its directory world-readable,
    /// so the remote user runs the same binary; `maqet-runner` is beside it).
    pub fn maqet_path() -> String {
        bin_dir().join("maqet").to_str().unwrap().to_string()
    }

    /// The remote command line that runs the staged maqet with `args` on this
    /// world's data directory.
    pub fn maqet_command(&self, args: &[&str]) -> String {
        let data = format!("MAQET_DATA_DIR={}", self.data_dir());
        let path = Self::maqet_path();
        let mut argv = vec!["env", "-u", "MAQET_RUNNER", data.as_str(), path.as_str()];
        argv.extend_from_slice(args);
        shell_words(&argv)
    }

    /// Runs maqet as the remote user directly over ssh (not through `-H`):
    /// an independent look at the far side.
    pub fn maqet(&self, args: &[&str]) -> Output {
        self.remote.run(&self.maqet_command(args))
    }

    /// Runs the remote maqet and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.maqet(args);
        assert_ok(&format!("remote maqet {args:?}"), &o)
    }

    /// Writes `text` to `file` in the remote directory; returns its path.
    pub fn write(&self, file: &str, text: &str) -> String {
        let path = format!("{}/{file}", self.dir);
        let o = self
            .remote
            .run_with_input(&format!("cat > {}", shell_quote(&path)), text.as_bytes());
        assert_ok(&format!("writing {path} remotely"), &o);
        path
    }

    /// The small headless VM of `World::vm_yaml`, written on the remote side.
    pub fn vm_yaml(&self, name: &str, extra: &str) -> String {
        self.write(&format!("{name}.yaml"), &super::small_vm_yaml(name, extra))
    }

    /// Adds a VM from `vm_yaml` with the remote maqet; returns its name.
    pub fn add_vm(&self, suffix: &str, extra: &str) -> String {
        let name = self.name(suffix);
        let f = self.vm_yaml(&name, extra);
        self.ok(&["add", &f]);
        name
    }

    /// `maqet status NAME --json` on the remote side.
    pub fn status(&self, name: &str) -> Value {
        serde_json::from_str(&self.ok(&["status", name, "--json"])).expect("status JSON")
    }
}

impl Drop for RemoteWorld {
    /// Never leave a remote VM or directory behind, even when a test fails.
    fn drop(&mut self) {
        if let Ok(Value::Array(vms)) =
            serde_json::from_slice::<Value>(&self.maqet(&["ls", "--json"]).stdout)
        {
            for vm in vms {
                if let Some(n) = vm["name"].as_str() {
                    let _ = self.maqet(&["rm", "--force", n]);
                }
            }
        }
        // Whatever `rm` left (or a test started by other means).
        self.remote.stop_units(&self.tag);
        let _ = self.remote.run_argv(&["rm", "-rf", "--", &self.dir]);
    }
}
