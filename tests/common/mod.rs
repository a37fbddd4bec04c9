//! Shared harness of the integration tests: they drive the real `maqet`
//! binaries against the real `systemd --user` manager of the session they
//! run in (see tests/run.sh, which sets one up and runs them as its user).

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod remote;

pub const QEMU: &str = "/usr/bin/qemu-system-x86_64";

/// The config of a small headless VM (TCG, no devices), `extra` appended:
/// what `World::vm_yaml` and `RemoteWorld::vm_yaml` write.
pub fn small_vm_yaml(name: &str, extra: &str) -> String {
    format!(
        "name: {name}\nbinary: {QEMU}\nmemory: 64M\narguments:\n  - accel: tcg\n  - display: none\n  - nodefaults\n{extra}"
    )
}

/// Directory holding `maqet` and `maqet-runner`: `MAQET_BIN_DIR`, else
/// cargo's build directory of these tests.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("MAQET_BIN_DIR") {
        Some(d) => d.into(),
        None => Path::new(env!("CARGO_BIN_EXE_maqet"))
            .parent()
            .unwrap()
            .to_path_buf(),
    }
}

/// One test's world: its own data directory and VM-name prefix, so tests
/// run in parallel against one user manager without meeting.
pub struct World {
    pub dir: tempfile::TempDir,
    pub tag: String,
}

impl World {
    pub fn new(tag: &str) -> World {
        let dir = tempfile::Builder::new()
            .prefix(&format!("maqet-it-{tag}-"))
            .tempdir()
            .expect("tempdir");
        World {
            dir,
            tag: format!("it-{}-{}", tag, std::process::id()),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A VM name unique to this test run.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{}", self.tag, suffix)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin_dir().join("maqet"));
        c.env("MAQET_DATA_DIR", self.data_dir())
            .env_remove("MAQET_RUNNER");
        c
    }

    pub fn maqet(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run maqet")
    }

    /// Runs maqet and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.maqet(args);
        assert!(
            o.status.success(),
            "maqet {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs maqet, asserts the exit code, returns stderr.
    pub fn fails(&self, code: i32, args: &[&str]) -> String {
        let o = self.maqet(args);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(
            o.status.code(),
            Some(code),
            "maqet {args:?}: expected exit {code}\nstdout: {}\nstderr: {stderr}",
            String::from_utf8_lossy(&o.stdout)
        );
        stderr
    }

    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(file);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A small headless VM (TCG, no devices) — enough for QMP and lifecycle.
    pub fn vm_yaml(&self, name: &str, extra: &str) -> PathBuf {
        self.write(&format!("{name}.yaml"), &small_vm_yaml(name, extra))
    }

    /// Adds a VM from `vm_yaml`; returns its name.
    pub fn add_vm(&self, suffix: &str, extra: &str) -> String {
        let name = self.name(suffix);
        let f = self.vm_yaml(&name, extra);
        self.ok(&["add", f.to_str().unwrap()]);
        name
    }

    pub fn status(&self, name: &str) -> Value {
        serde_json::from_str(&self.ok(&["status", name, "--json"])).expect("status JSON")
    }

    pub fn state(&self, name: &str) -> String {
        self.status(name)["state"].as_str().unwrap().to_string()
    }

    /// Polls `maqet status` until `state`; panics with the last status after `within`.
    pub fn wait_state(&self, name: &str, state: &str, within: Duration) -> Value {
        let end = Instant::now() + within;
        loop {
            let s = self.status(name);
            if s["state"] == state {
                return s;
            }
            assert!(
                Instant::now() < end,
                "{name} never reached {state}; last status: {s:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for World {
    /// Never leave a VM behind, even when a test fails.
    fn drop(&mut self) {
        let Ok(store) = std::fs::read_dir(self.dir.path()) else {
            return;
        };
        drop(store);
        if let Ok(out) = self.cmd().args(["ls", "--json"]).output() {
            if let Ok(Value::Array(vms)) = serde_json::from_slice::<Value>(&out.stdout) {
                for vm in vms {
                    if let Some(n) = vm["name"].as_str() {
                        let _ = self.cmd().args(["rm", "--force", n]).output();
                    }
                }
            }
        }
    }
}

/// `systemctl --user show UNIT -p PROP --value`.
pub fn unit_prop(unit: &str, prop: &str) -> String {
    let o = Command::new("systemctl")
        .args(["--user", "show", unit, "-p", prop, "--value"])
        .output()
        .expect("systemctl");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The VM's control socket, in its runtime directory.
pub fn socket_path(name: &str) -> PathBuf {
    runtime_dir(name).join("control.sock")
}

/// Where a VM started by maqet before the per-VM runtime directory had its
/// control socket: beside the directories.
pub fn legacy_socket_path(name: &str) -> PathBuf {
    let rt = std::env::var("XDG_RUNTIME_DIR").expect("XDG_RUNTIME_DIR");
    Path::new(&rt).join("maqet/vm").join(format!("{name}.sock"))
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// PIDs of QEMU processes started for VM `name` (by its `-name` argument).
pub fn qemu_pids(name: &str) -> Vec<u64> {
    let mut pids = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_qemu = args
            .first()
            .is_some_and(|a| a.ends_with(b"qemu-system-x86_64"));
        let named = args
            .windows(2)
            .any(|w| w[0] == b"-name" && w[1] == name.as_bytes());
        if is_qemu && named && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The unit's journal as JSON records.
pub fn journal_json(unit: &str) -> Vec<Value> {
    let o = Command::new("journalctl")
        .args(["--user", "-u", unit, "-o", "json", "--no-pager"])
        .output()
        .expect("journalctl");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `kill SIG PID` (e.g. `-9`, `-STOP`), asserting it was delivered.
pub fn send_signal(pid: u64, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// The VM's runtime directory, `$XDG_RUNTIME_DIR/maqet/vm/VM`.
pub fn runtime_dir(vm: &str) -> PathBuf {
    let rt = std::env::var("XDG_RUNTIME_DIR").expect("XDG_RUNTIME_DIR");
    Path::new(&rt).join("maqet/vm").join(vm)
}

/// A file's permission bits.
pub fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Socket inodes the process holds open.
pub fn socket_inodes(pid: u64) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return vec![];
    };
    rd.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_string_lossy()
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .map(str::to_string)
        })
        .collect()
}

/// Inodes of every TCP socket on the host (`/proc/net/tcp`, `tcp6`).
pub fn tcp_inodes() -> Vec<String> {
    let mut out = vec![];
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines().skip(1) {
            if let Some(inode) = line.split_whitespace().nth(9) {
                out.push(inode.to_string());
            }
        }
    }
    out
}

/// No process of `pids` has a TCP socket.
pub fn assert_no_tcp(pids: &[u64]) {
    let tcp = tcp_inodes();
    for pid in pids {
        let mine = socket_inodes(*pid);
        assert!(!mine.is_empty(), "pid {pid} has no sockets at all");
        let bad: Vec<&String> = mine.iter().filter(|i| tcp.contains(i)).collect();
        assert!(bad.is_empty(), "pid {pid} holds TCP sockets {bad:?}");
    }
}

/// A path as the `&str` an argument list takes (test paths are UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The default disk directory of VM `vm` in the world's data directory.
pub fn disks_of(w: &World, vm: &str) -> PathBuf {
    w.data_dir().join("disks").join(vm)
}

/// Runs qemu-img, which must succeed.
pub fn qemu_img(args: &[&str]) {
    let o = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

// ---------------------------------------------------------------- the small filesystem

/// Exclusive use of the test user's tiny tmpfs (tests/session/small-fs.sh),
/// with a fresh work directory on it. Dropping it empties the filesystem
/// again and releases the lock, which every full-disk test takes.
pub struct SmallFs {
    root: PathBuf,
    pub work: PathBuf,
    _lock: std::fs::File,
}

impl SmallFs {
    pub fn take(tag: &str) -> SmallFs {
        use std::os::fd::AsRawFd;
        let root = PathBuf::from(
            std::env::var_os("MAQET_SMALL_FS").unwrap_or("/var/tmp/maqet-it-smallfs".into()),
        );
        let lock = std::fs::File::create(root.join(".lock")).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; the full-disk tests need the test user's small tmpfs there: \
                 run `tests/session/user-session.sh up` as root (see tests/session/small-fs.sh)",
                root.display()
            )
        });
        // SAFETY: a valid open descriptor; flock blocks until the other test releases it.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        let work = root.join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir(&work).unwrap();
        SmallFs {
            root,
            work,
            _lock: lock,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.work.join("data")
    }

    pub fn fill_path(&self) -> PathBuf {
        self.root.join("fill")
    }

    /// Writes zeros until the filesystem refuses with ENOSPC: not one byte is left.
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.fill_path()).unwrap();
        let chunk = vec![0u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", self.fill_path().display()),
            }
        }
        // Page-granular: small writes may still fit in a last partial page.
        while f.write(&[0u8]).is_ok_and(|n| n == 1) {}
    }

    pub fn unfill(&self) {
        let _ = std::fs::remove_file(self.fill_path());
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        self.unfill();
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

// ---------------------------------------------------------------- the test guest

/// A file of the test guest tests/run.sh built (its kernel or initramfs),
/// named by the environment variable `var`; it must exist.
pub fn guest_file(var: &str) -> String {
    let p = std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests through tests/run.sh, which builds the test guest")
    });
    assert!(Path::new(&p).is_file(), "{var}={p} does not exist");
    p
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `maqet console VM --no-tty --replay` used as a shell of the test guest.
pub struct Console {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    /// Commands run so far: each gets markers of its own.
    calls: u32,
}

impl Console {
    pub fn attach(w: &World, vm: &str) -> Console {
        use std::io::Read;
        use std::process::Stdio;
        let mut child = w
            .cmd()
            .args(["console", vm, "--no-tty", "--replay"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("maqet console");
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut r, o) = (child.stdout.take().unwrap(), out.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                o.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let stdin = child.stdin.take().unwrap();
        Console {
            child,
            stdin,
            out,
            calls: 0,
        }
    }

    /// Everything the console printed so far, without carriage returns.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).replace('\r', "")
    }

    pub fn wait_for(&self, needle: &str, within: Duration) -> String {
        let end = Instant::now() + within;
        loop {
            let s = self.text();
            if s.contains(needle) {
                return s;
            }
            assert!(
                Instant::now() < end,
                "no {needle:?} within {within:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `cmd` in the guest shell and returns its output, found between
    /// markers the shell computes (so the echoed command line never
    /// matches); waits up to `within` for it.
    pub fn run_within(&mut self, within: Duration, cmd: &str) -> String {
        use std::io::Write;
        self.calls += 1;
        let n = 500_000 + self.calls * 1000 + std::process::id() % 1000;
        writeln!(
            self.stdin,
            "echo \"<$(({n}+1))>\"; {cmd}; echo \"</$(({n}+1))>\""
        )
        .unwrap();
        self.stdin.flush().unwrap();
        let (start, end) = (format!("<{}>", n + 1), format!("</{}>", n + 1));
        let out = self.wait_for(&end, within);
        let after = &out[out.rfind(&start).unwrap() + start.len()..];
        after[..after.find(&end).unwrap()].to_string()
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
