//! Images (issue 18) against a web server the tests start on 127.0.0.1
//! (tests/image_server.py: Range, a switch to refuse it, a throttle, a
//! CONNECT proxy, request statistics) — never the internet: verified
//! pulls and what happens when they fail or are interrupted, the progress
//! shown on a terminal and off it, the cache, the test guest as a catalog
//! entry (disk + kernel + initrd + cmdline) that `maqet launch` takes to a
//! working `maqet ssh`, and `prune` keeping what VMs use.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SERVER: &str = include_str!("image_server.py");

/// The test web server, stopped when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(w: &World, root: &Path) -> Server {
        Self::start_with(w, root, None)
    }

    /// `tls`: (certificate, key) to serve HTTPS with.
    fn start_with(w: &World, root: &Path, tls: Option<(&Path, &Path)>) -> Server {
        let script = w.dir.path().join("image_server.py");
        std::fs::write(&script, SERVER).unwrap();
        let mut cmd = Command::new("python3");
        if let Some((cert, key)) = tls {
            cmd.env(
                "IMAGE_SERVER_TLS",
                format!("{}:{}", cert.display(), key.display()),
            );
        }
        let mut child = cmd
            .arg(&script)
            .arg(root)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server prints its port");
        Server { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// A plain HTTP/1.0 GET of the server's own endpoints.
    fn get(&self, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: t\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.split_once("\r\n\r\n").unwrap().1.to_string()
    }

    fn control(&self, query: &str) {
        assert_eq!(self.get(&format!("/_control?{query}")), "ok");
    }

    /// The requests for `path` so far.
    fn requests(&self, path: &str) -> Vec<Value> {
        let v: Value = serde_json::from_str(&self.get("/_stats")).unwrap();
        v["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["path"] == path)
            .cloned()
            .collect()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sha256(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&o.stdout)[..64].to_string()
}

/// A test's world with its own cache, catalog, home and web root.
struct Images {
    w: World,
    srv: PathBuf,
}

impl Images {
    fn new(tag: &str) -> Images {
        let w = World::new(tag);
        let srv = w.dir.path().join("srv");
        for d in ["srv", "cache", "config/maqet/images.d", "home/.ssh", "pkg"] {
            std::fs::create_dir_all(w.dir.path().join(d)).unwrap();
        }
        Images { w, srv }
    }

    fn cache(&self) -> PathBuf {
        self.w.dir.path().join("cache/maqet/images")
    }

    fn cmd(&self) -> Command {
        let mut c = self.w.cmd();
        let d = self.w.dir.path();
        c.env("XDG_CACHE_HOME", d.join("cache"))
            .env("XDG_CONFIG_HOME", d.join("config"))
            .env("HOME", d.join("home"))
            .env("MAQET_IMAGES_DIRS", d.join("pkg"))
            .env("NO_COLOR", "1");
        for v in [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
            "no_proxy",
            "NO_PROXY",
        ] {
            c.env_remove(v);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run maqet")
    }

    fn ok(&self, args: &[&str]) -> Output {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "maqet {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    fn fails(&self, code: i32, args: &[&str]) -> String {
        let o = self.run(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(code), "maqet {args:?}:\n{err}");
        err
    }

    /// A file of `mib` MiB of varied bytes in the web root, and its sha256.
    fn file(&self, name: &str, mib: usize) -> (PathBuf, String) {
        let p = self.srv.join(name);
        let mut data = Vec::with_capacity(mib << 20);
        // Another size is other content, not a longer run of the same.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ ((name.len() as u64) << 32 | mib as u64);
        while data.len() < mib << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        std::fs::write(&p, &data).unwrap();
        let d = sha256(&p);
        (p, d)
    }

    /// `SHA256SUMS` for the named files of the web root.
    fn sums(&self, names: &[&str]) {
        let text: String = names
            .iter()
            .map(|n| format!("{}  {n}\n", sha256(&self.srv.join(n))))
            .collect();
        std::fs::write(self.srv.join("SHA256SUMS"), text).unwrap();
    }

    /// The test guest in the web root (an empty qcow2 as its disk, the
    /// kernel and the initramfs), and as catalog entry `testguest`.
    fn test_guest(&self, s: &Server) {
        let q = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(self.srv.join("disk.qcow2"))
            .arg("32M")
            .status()
            .unwrap();
        assert!(q.success());
        for (var, name) in [
            ("MAQET_GUEST_KERNEL", "vmlinuz"),
            ("MAQET_GUEST_INITRD", "initrd.gz"),
        ] {
            let from = std::env::var(var).unwrap_or_else(|_| {
                panic!("{var} is not set: run the tests through tests/run.sh, which builds the test guest")
            });
            std::fs::copy(from, self.srv.join(name)).unwrap();
        }
        self.sums(&["disk.qcow2", "vmlinuz", "initrd.gz"]);
        let sums = s.url("SHA256SUMS");
        let entry = format!(
            "description: maqet test guest\narch:\n  x86_64:\n    location: {}\n    checksums: {sums}\n\
             \x20   kernel: {{location: {}, checksums: {sums}}}\n    initrd: {{location: {}, checksums: {sums}}}\n\
             \x20   cmdline: \"console=ttyS0 quiet\"\ndefaults: {{memory: 256M, cpu: 1, disk: 64M, user: tester}}\n",
            s.url("disk.qcow2"),
            s.url("vmlinuz"),
            s.url("initrd.gz"),
        );
        std::fs::write(
            self.w
                .dir
                .path()
                .join("config/maqet/images.d/testguest.yaml"),
            entry,
        )
        .unwrap();
    }

    fn blobs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.cache().join("blobs/sha256"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Every `data.partial` in the cache.
    fn partials(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.cache().join("by-url-sha256"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path().join("data.partial"))
                    .filter(|p| p.exists())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn entries(&self) -> usize {
        std::fs::read_dir(self.cache().join("by-url-sha256"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().join("entry.json").exists())
                    .count()
            })
            .unwrap_or(0)
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_catalog_image_is_verified_cached_and_served_from_the_cache_when_the_server_is_gone() {
    let t = Images::new("imgcat");
    let mut s = Server::start(&t.w, &t.srv);
    t.test_guest(&s);
    let o = t.ok(&["image", "pull", "testguest"]);
    let said = stderr(&o);
    // Disk, kernel and initrd, each checked against the checksum file.
    assert_eq!(said.matches("verified sha256:").count(), 3, "{said}");
    assert_eq!(t.blobs().len(), 3);
    let ls: Value = serde_json::from_slice(&t.ok(&["image", "ls", "--json"]).stdout).unwrap();
    let images = ls["images"].as_array().unwrap();
    assert_eq!(images.len(), 3, "{ls:#}");
    assert!(images.iter().all(|i| i["status"] == "verified"), "{ls:#}");
    assert!(images
        .iter()
        .any(|i| i["names"] == serde_json::json!(["testguest"])));
    // The blobs are named by their content and read-only.
    let disk = t.srv.join("disk.qcow2");
    let blob = t.cache().join("blobs/sha256").join(sha256(&disk));
    assert_eq!(std::fs::read(&blob).unwrap(), std::fs::read(&disk).unwrap());
    assert_eq!(mode(&blob), 0o444);
    // Upstream gone: a second pull uses the verified copy and says why.
    s.stop();
    let o = t.ok(&["image", "pull", "testguest"]);
    let said = stderr(&o);
    assert!(said.contains("could not read"), "{said}");
    assert!(said.contains("using the cached copy"), "{said}");
    let catalog = String::from_utf8_lossy(&t.ok(&["image", "catalog"]).stdout).into_owned();
    assert!(
        catalog.contains("testguest") && catalog.contains("user"),
        "{catalog}"
    );
}

#[test]
fn progress_is_a_bar_on_a_terminal_lines_in_a_pipe_and_json_with_json() {
    let t = Images::new("imgprog");
    let s = Server::start(&t.w, &t.srv);
    let (_, d) = t.file("big.img", 24);
    s.control("rate=8000000");
    // Not a terminal: plain lines, no carriage returns or escape codes.
    let o = t.ok(&[
        "image",
        "pull",
        &s.url("big.img"),
        "--digest",
        &format!("sha256:{d}"),
    ]);
    let said = stderr(&o);
    assert!(
        said.contains(&format!("downloading {} (24.0M)", s.url("big.img"))),
        "{said}"
    );
    assert!(said.contains("big.img: 24.0M of 24.0M (100%)"), "{said}");
    assert!(!said.contains('\r') && !said.contains('\x1b'), "{said:?}");
    // JSON lines on stdout: the events, then the result.
    std::fs::remove_dir_all(t.cache()).unwrap();
    let o = t.ok(&[
        "image",
        "pull",
        &s.url("big.img"),
        "--digest",
        &format!("sha256:{d}"),
        "--json",
    ]);
    let lines: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(lines
        .iter()
        .any(|l| l["event"] == "progress" && l["total"] == 24 << 20));
    assert!(lines.iter().any(|l| l["event"] == "verified"));
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "pulled", "{last:#}");
    assert_eq!(last["files"][0]["sha256"], d);
    // A terminal (script(1)): a bar redrawn in place, with rate and time left.
    std::fs::remove_dir_all(t.cache()).unwrap();
    let cmd = format!(
        "{} image pull {} --digest sha256:{d}",
        bin_dir().join("maqet").display(),
        s.url("big.img")
    );
    let o = t.cmd_env(Command::new("script").args(["-qec", &cmd, "/dev/null"]));
    assert!(o.status.success(), "{o:?}");
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(shown.contains("big.img ["), "{shown:?}");
    assert!(shown.contains("\r") || shown.contains("\x1b["), "{shown:?}");
    assert!(
        shown.contains("MiB/s") && shown.contains("left"),
        "{shown:?}"
    );
    assert!(shown.contains("verified sha256:"), "{shown:?}");
}

impl Images {
    /// Runs `c` (e.g. script(1) around maqet) with this world's environment.
    fn cmd_env(&self, c: &mut Command) -> Output {
        let d = self.w.dir.path();
        c.env("MAQET_DATA_DIR", self.w.data_dir())
            .env("XDG_CACHE_HOME", d.join("cache"))
            .env("XDG_CONFIG_HOME", d.join("config"))
            .env("HOME", d.join("home"))
            .env("MAQET_IMAGES_DIRS", d.join("pkg"))
            .env("TERM", "xterm")
            .env_remove("MAQET_RUNNER")
            .output()
            .unwrap()
    }
}

/// Starts a pull in the background and kills it (SIGKILL) once its
/// partial download holds at least `bytes`.
fn kill_halfway(t: &Images, url: &str, digest: &str, bytes: u64) {
    let mut child = t
        .cmd()
        .args(["image", "pull", url, "--digest", digest])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let have = t
            .partials()
            .first()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        if have >= bytes {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pull ended before it was killed"
        );
        assert!(
            Instant::now() < end,
            "the download never reached {bytes} bytes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Nothing that passes for complete.
    assert!(t.blobs().is_empty());
    assert_eq!(t.entries(), 0);
}

#[test]
fn a_killed_pull_resumes_with_range_and_the_result_is_byte_identical() {
    let t = Images::new("imgresume");
    let s = Server::start(&t.w, &t.srv);
    let (src, d) = t.file("r.img", 40);
    s.control("rate=5000000");
    kill_halfway(&t, &s.url("r.img"), &format!("sha256:{d}"), 8 << 20);
    s.control("rate=0");
    let o = t.ok(&[
        "image",
        "pull",
        &s.url("r.img"),
        "--digest",
        &format!("sha256:{d}"),
    ]);
    assert!(stderr(&o).contains("resuming"), "{}", stderr(&o));
    let reqs = s.requests("/r.img");
    let resumed: Vec<&Value> = reqs.iter().filter(|r| r["status"] == 206).collect();
    assert_eq!(resumed.len(), 1, "{reqs:?}");
    let from: u64 = resumed[0]["range"]
        .as_str()
        .unwrap()
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(from >= 8 << 20, "{reqs:?}");
    let blob = t.cache().join("blobs/sha256").join(&d);
    assert_eq!(std::fs::read(&blob).unwrap(), std::fs::read(&src).unwrap());
    assert!(t.partials().is_empty());
}

#[test]
fn a_server_without_range_support_makes_the_download_start_over_cleanly() {
    let t = Images::new("imgnorange");
    let s = Server::start(&t.w, &t.srv);
    let (src, d) = t.file("n.img", 32);
    s.control("rate=5000000");
    kill_halfway(&t, &s.url("n.img"), &format!("sha256:{d}"), 6 << 20);
    s.control("rate=0&no_range=1");
    let o = t.ok(&[
        "image",
        "pull",
        &s.url("n.img"),
        "--digest",
        &format!("sha256:{d}"),
    ]);
    let said = stderr(&o);
    assert!(said.contains("starting over"), "{said}");
    let reqs = s.requests("/n.img");
    assert!(reqs.iter().all(|r| r["status"] == 200), "{reqs:?}");
    assert!(
        reqs.last().unwrap()["range"].is_string(),
        "asked for the rest: {reqs:?}"
    );
    let blob = t.cache().join("blobs/sha256").join(&d);
    assert_eq!(std::fs::read(&blob).unwrap(), std::fs::read(&src).unwrap());
}

#[test]
fn two_pulls_at_once_download_once() {
    let t = Images::new("imgconc");
    let s = Server::start(&t.w, &t.srv);
    let (_, d) = t.file("c.img", 24);
    t.sums(&["c.img"]);
    s.control("rate=8000000");
    let spawn = || {
        t.cmd()
            .args(["image", "pull", &s.url("c.img")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success(), "{a:?}\n{b:?}");
    let gets = s.requests("/c.img");
    assert_eq!(gets.len(), 1, "one download: {gets:?}");
    let said = format!("{}{}", stderr(&a), stderr(&b));
    assert!(
        said.contains("another maqet is pulling it; waiting"),
        "{said}"
    );
    assert!(said.contains("using the cached copy"), "{said}");
    assert_eq!(t.blobs(), [t.cache().join("blobs/sha256").join(&d)]);
}

#[test]
fn a_wrong_digest_is_refused_with_both_digests_and_nothing_kept() {
    let t = Images::new("imgbad");
    let s = Server::start(&t.w, &t.srv);
    let (_, d) = t.file("w.img", 2);
    let wrong = "0".repeat(64);
    let err = t.fails(
        1,
        &[
            "image",
            "pull",
            &s.url("w.img"),
            "--digest",
            &format!("sha256:{wrong}"),
        ],
    );
    assert!(err.contains(&format!("expected sha256:{wrong}")), "{err}");
    assert!(err.contains(&format!("got sha256:{d}")), "{err}");
    assert!(t.blobs().is_empty() && t.partials().is_empty() && t.entries() == 0);
    // A checksum file that lists another digest: the same.
    std::fs::write(t.srv.join("SHA256SUMS"), format!("{wrong}  w.img\n")).unwrap();
    let err = t.fails(1, &["image", "pull", &s.url("w.img")]);
    assert!(err.contains("digest mismatch") && err.contains(&d), "{err}");
    assert!(t.blobs().is_empty() && t.partials().is_empty());
    // 404 names the URL.
    let missing = s.url("nope.qcow2");
    let err = t.fails(
        1,
        &[
            "image",
            "pull",
            &missing,
            "--digest",
            &format!("sha256:{d}"),
        ],
    );
    assert!(
        err.contains(&format!("{missing}: not found (HTTP 404)")),
        "{err}"
    );
}

#[test]
fn an_unverifiable_image_needs_the_flag_and_is_listed_as_unverified() {
    let t = Images::new("imgunver");
    let s = Server::start(&t.w, &t.srv);
    t.file("u.img", 1);
    let err = t.fails(1, &["image", "pull", &s.url("u.img")]);
    assert!(err.contains("cannot be verified"), "{err}");
    assert!(
        err.contains(&s.url("SHA256SUMS")),
        "it says what it tried: {err}"
    );
    assert!(err.contains("--insecure-skip-verify"), "{err}");
    assert!(t.blobs().is_empty());
    let o = t.ok(&["image", "pull", &s.url("u.img"), "--insecure-skip-verify"]);
    assert!(stderr(&o).contains("NOT verified"), "{}", stderr(&o));
    let ls = String::from_utf8_lossy(&t.ok(&["image", "ls"]).stdout).into_owned();
    assert!(ls.contains("UNVERIFIED"), "{ls}");
    let doctor: Value = serde_json::from_slice(&t.run(&["doctor", "--json"]).stdout).unwrap();
    let finding = doctor["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "images")
        .cloned()
        .unwrap_or_default();
    assert!(
        finding["message"]
            .as_str()
            .unwrap_or("")
            .contains("1 unverified"),
        "{doctor:#}"
    );
}

#[test]
fn the_proxy_variables_are_used_and_no_proxy_goes_direct() {
    let t = Images::new("imgproxy");
    let s = Server::start(&t.w, &t.srv);
    let (_, d) = t.file("p.img", 1);
    // A host that does not resolve: reachable only through the proxy.
    let url = format!("http://image.invalid:{}/p.img", s.port);
    let proxy = format!("http://127.0.0.1:{}", s.port);
    let o = t
        .cmd()
        .args(["image", "pull", &url, "--digest", &format!("sha256:{d}")])
        .env("HTTP_PROXY", &proxy)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let connects: Vec<Value> = serde_json::from_str::<Value>(&s.get("/_stats")).unwrap()
        ["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "CONNECT")
        .cloned()
        .collect();
    assert_eq!(connects.len(), 1, "{connects:?}");
    assert_eq!(connects[0]["path"], format!("image.invalid:{}", s.port));
    // NO_PROXY: direct, so the name must resolve, and does not.
    std::fs::remove_dir_all(t.cache()).unwrap();
    let o = t
        .cmd()
        .args(["image", "pull", &url, "--digest", &format!("sha256:{d}")])
        .env("HTTP_PROXY", &proxy)
        .env("NO_PROXY", "localhost,.invalid")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stderr(&o).contains("cannot resolve host name 'image.invalid'"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_compressed_image_is_verified_as_published_and_stored_decompressed() {
    let t = Images::new("imgxz");
    let s = Server::start(&t.w, &t.srv);
    let q = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(t.srv.join("d.qcow2"))
        .arg("16M")
        .status()
        .unwrap();
    assert!(q.success());
    let plain = sha256(&t.srv.join("d.qcow2"));
    assert!(Command::new("xz")
        .arg("-k")
        .arg(t.srv.join("d.qcow2"))
        .status()
        .unwrap()
        .success());
    t.sums(&["d.qcow2.xz"]);
    let o = t.ok(&["image", "pull", &s.url("d.qcow2.xz")]);
    assert!(stderr(&o).contains("decompressing (xz)"), "{}", stderr(&o));
    assert_eq!(t.blobs(), [t.cache().join("blobs/sha256").join(&plain)]);
}

#[test]
fn a_base_image_ref_is_resolved_at_add_and_kept_when_the_catalog_moves_on() {
    let t = Images::new("imgadd");
    let s = Server::start(&t.w, &t.srv);
    t.test_guest(&s);
    let name = t.w.name("add");
    let yaml = t.w.write(
        "vm.yaml",
        &format!(
            "name: {name}\nbinary: {QEMU}\nmemory: 64M\narguments:\n  - accel: tcg\n  - display: none\n\
             storage:\n  - name: root\n    base: image:testguest\n    size: 64M\n"
        ),
    );
    t.ok(&["add", yaml.to_str().unwrap()]);
    let first = sha256(&t.srv.join("disk.qcow2"));
    let cfg = String::from_utf8_lossy(&t.ok(&["config", &name]).stdout).into_owned();
    let blob = t.cache().join("blobs/sha256").join(&first);
    assert!(cfg.contains(&format!("base: {}", blob.display())), "{cfg}");
    assert!(cfg.contains(&format!("sha256: {first}")), "{cfg}");
    assert!(
        cfg.contains("kernel:") && cfg.contains("initrd:"),
        "the image's kernel boots it:\n{cfg}"
    );
    // `maqet config` gives YAML that `add` takes.
    let again = t.w.write("again.yaml", &cfg);
    t.ok(&["add", "--name", &t.w.name("copy"), again.to_str().unwrap()]);
    // The catalog moves on: a new disk upstream. The VM keeps its bytes…
    let q = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(t.srv.join("disk.qcow2"))
        .arg("48M")
        .status()
        .unwrap();
    assert!(q.success());
    t.sums(&["disk.qcow2", "vmlinuz", "initrd.gz"]);
    let second = sha256(&t.srv.join("disk.qcow2"));
    assert_ne!(first, second);
    t.ok(&["image", "pull", "testguest"]);
    let cfg = String::from_utf8_lossy(&t.ok(&["config", &name]).stdout).into_owned();
    assert!(cfg.contains(&format!("sha256: {first}")), "{cfg}");
    assert!(blob.exists(), "the old bytes stay while a VM uses them");
    // …until apply moves it explicitly.
    t.ok(&["apply", &name, "--set", "storage.0.base=image:testguest"]);
    let cfg = String::from_utf8_lossy(&t.ok(&["config", &name]).stdout).into_owned();
    assert!(cfg.contains(&format!("sha256: {second}")), "{cfg}");
    // The cache cleared under the VM: doctor says which VM lost its base.
    std::fs::remove_file(t.cache().join("blobs/sha256").join(&second)).unwrap();
    let doctor: Value = serde_json::from_slice(&t.run(&["doctor", "--json"]).stdout).unwrap();
    let lost = doctor["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "images" && f["severity"] == "error")
        .unwrap_or_else(|| panic!("no finding about the lost base: {doctor:#}"));
    assert!(
        lost["message"]
            .as_str()
            .unwrap()
            .contains(&format!("VM '{name}'")),
        "{lost:#}"
    );
    // A misspelt name: a did-you-mean, exit 3, nothing defined.
    let bad = t.w.write(
        "bad.yaml",
        &format!(
            "name: {}\nstorage:\n  - name: root\n    base: image:testgest\n",
            t.w.name("bad")
        ),
    );
    let err = t.fails(3, &["add", bad.to_str().unwrap()]);
    assert!(err.contains("did you mean 'testguest'"), "{err}");
    assert!(err.contains("bad.yaml:4:11: image:testgest"), "{err}");
}

#[test]
fn launch_reaches_ssh_in_one_command_and_prune_keeps_what_vms_use() {
    let t = Images::new("imglaunch");
    let s = Server::start(&t.w, &t.srv);
    t.test_guest(&s);
    let key = t.w.dir.path().join("home/.ssh/id_ed25519");
    let k = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(k.success());
    let name = t.w.name("l");
    let web = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let port = format!("{web}:80");
    let o = t.ok(&[
        "launch",
        "testguest",
        "--name",
        &name,
        "--memory",
        "300M",
        "--disk",
        "80M",
        "--port",
        &port,
        "--set",
        "enable_kvm=false",
        "--timeout",
        "300",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), name);
    let said = stderr(&o);
    assert!(said.contains(&format!("maqet ssh {name}")), "{said}");
    // Reachable, as the image's user, with the VM's host name.
    let o = t.ok(&["ssh", &name, "--", "id", "-un;", "hostname"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("tester\n{name}\n")
    );
    // Readiness for scripts: the agent, and cloud-init's result through it.
    let o = t.ok(&["wait", &name, "--for", "cloud-init", "--timeout", "120"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("cloud-init done") && out.contains("guest agent"),
        "{out}"
    );
    t.ok(&["wait", &name, "--for", "agent", "--timeout", "60"]);
    // An ordinary VM: its YAML is what `add` takes, with the flags in it.
    let cfg = String::from_utf8_lossy(&t.ok(&["config", &name]).stdout).into_owned();
    for want in [
        "memory: 300M",
        "size: 80M",
        "user: tester",
        "guest_agent: true",
        &format!("{web}:80"),
    ] {
        assert!(cfg.contains(want), "{want:?} not in:\n{cfg}");
    }
    let copy = t.w.write("copy.yaml", &cfg);
    t.ok(&["add", "--name", &t.w.name("copy"), copy.to_str().unwrap()]);
    // Prune: the VMs' disk, kernel and initrd stay; an image nobody uses goes.
    let (_, d) = t.file("spare.img", 1);
    t.ok(&[
        "image",
        "pull",
        &s.url("spare.img"),
        "--digest",
        &format!("sha256:{d}"),
    ]);
    assert_eq!(t.blobs().len(), 4);
    let o = t.ok(&["image", "prune"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!(
            "removed {}",
            t.cache().join("blobs/sha256").join(&d).display()
        )),
        "{out}"
    );
    assert_eq!(t.blobs().len(), 3, "{out}");
    assert!(out.contains("kept") && out.contains(&name), "{out}");
    // `image rm` of what a VM uses is refused, naming it.
    let err = t.fails(5, &["image", "rm", "testguest"]);
    assert!(err.contains("in use") && err.contains(&name), "{err}");
    t.ok(&["rm", "--force", "--delete-storage", &name]);
    t.ok(&["rm", &t.w.name("copy")]);
    t.ok(&["image", "prune"]);
    assert!(t.blobs().is_empty());
}

#[test]
fn a_resumed_download_of_a_changed_file_is_downloaded_again_from_the_start() {
    let t = Images::new("imgchanged");
    let s = Server::start(&t.w, &t.srv);
    let (_, _) = t.file("v.img", 24);
    s.control("rate=5000000");
    let old = sha256(&t.srv.join("v.img"));
    kill_halfway(&t, &s.url("v.img"), &format!("sha256:{old}"), 6 << 20);
    // A new version under the same URL, from a server that serves the
    // rest of it to the old partial file (it does not check If-Range).
    let (src, new) = t.file("v.img", 25);
    s.control("rate=0&ignore_if_range=1");
    let o = t.ok(&[
        "image",
        "pull",
        &s.url("v.img"),
        "--digest",
        &format!("sha256:{new}"),
    ]);
    let said = stderr(&o);
    assert!(said.contains("resuming"), "{said}");
    assert!(
        said.contains("the resumed download did not verify"),
        "{said}"
    );
    let blob = t.cache().join("blobs/sha256").join(&new);
    assert_eq!(std::fs::read(&blob).unwrap(), std::fs::read(&src).unwrap());
    assert_eq!(t.blobs().len(), 1);
}

#[test]
fn a_full_disk_names_the_directory_and_keeps_no_partial_download() {
    let t = Images::new("imgfull");
    let s = Server::start(&t.w, &t.srv);
    let (_, d) = t.file("f.img", 4);
    let small = SmallFs::take("imgfull");
    let o = t
        .cmd()
        .args([
            "image",
            "pull",
            &s.url("f.img"),
            "--digest",
            &format!("sha256:{d}"),
        ])
        .env("XDG_CACHE_HOME", &small.work)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no space left on the device of"), "{err}");
    assert!(
        err.contains(&small.work.join("maqet/images").display().to_string()),
        "{err}"
    );
    let left: Vec<PathBuf> = walk(&small.work)
        .into_iter()
        .filter(|p| p.is_file())
        .filter(|p| {
            p.file_name().is_some_and(|n| n == "data.partial")
                || p.starts_with(small.work.join("maqet/images/blobs"))
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = vec![p.to_path_buf()];
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(o.status.success(), "openssl {args:?}: {}", stderr(&o));
}

#[test]
fn https_is_checked_against_the_system_certificates() {
    let t = Images::new("imgtls");
    let pki = t.w.dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    // A CA of the test's own and a server certificate for 127.0.0.1.
    openssl(
        &pki,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=maqet test CA",
        ],
    );
    openssl(
        &pki,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        pki.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        &pki,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    let s = Server::start_with(
        &t.w,
        &t.srv,
        Some((&pki.join("srv.pem"), &pki.join("srv.key"))),
    );
    let (_, d) = t.file("t.img", 1);
    let url = format!("https://127.0.0.1:{}/t.img", s.port);
    let digest = format!("sha256:{d}");
    // Not signed by a CA the system trusts: refused at once, not retried.
    let o = t
        .cmd()
        .args(["image", "pull", &url, "--digest", &digest])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{url}: TLS failed")), "{err}");
    assert!(
        !err.contains("attempt"),
        "a TLS failure is not retried: {err}"
    );
    // With its CA as the system's (SSL_CERT_FILE), the download works.
    let o = t
        .cmd()
        .args(["image", "pull", &url, "--digest", &digest])
        .env("SSL_CERT_FILE", pki.join("ca.pem"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(t.blobs(), [t.cache().join("blobs/sha256").join(&d)]);
}

#[test]
fn a_local_raw_image_is_verified_beside_itself_and_converted_when_asked() {
    let t = Images::new("imgqcow2");
    let raw = t.srv.join("disk.raw");
    let q = Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw"])
        .arg(&raw)
        .arg("8M")
        .status()
        .unwrap();
    assert!(q.success());
    // Air-gapped: a path, and the SHA256SUMS beside it.
    t.sums(&["disk.raw"]);
    let o = t.ok(&["image", "pull", raw.to_str().unwrap(), "--qcow2", "--json"]);
    let last: Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    let f = &last["files"][0];
    assert_eq!(f["format"], "qcow2", "{last:#}");
    assert_eq!(
        f["verified"]["by"],
        format!("file://{}", t.srv.join("SHA256SUMS").display())
    );
    let blob = PathBuf::from(f["file"].as_str().unwrap());
    let head = std::fs::read(&blob).unwrap();
    assert_eq!(&head[..4], b"QFI\xfb", "a qcow2 file");
    assert_eq!(
        sha256(&blob),
        f["sha256"].as_str().unwrap(),
        "named by its own content"
    );
    // Without --qcow2 a raw image is kept raw.
    std::fs::remove_dir_all(t.cache()).unwrap();
    let o = t.ok(&["image", "pull", raw.to_str().unwrap(), "--json"]);
    let last: Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["files"][0]["format"], "raw");
}
