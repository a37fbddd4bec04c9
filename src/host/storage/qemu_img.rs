//! A thin wrapper around the `qemu-img` tool: image facts come from
//! `qemu-img info --output=json` (never from its text output), and every
//! failure carries qemu-img's own message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::StorageError;
use maqet_base::programs::{find_in_path, is_executable};
use maqet_config::ImageFormat;

/// One image of `qemu-img info --output=json --backing-chain`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImageInfo {
    pub filename: String,
    pub format: String,
    pub virtual_size: u64,
    #[serde(default)]
    pub actual_size: Option<u64>,
    #[serde(default)]
    pub backing_filename: Option<String>,
    #[serde(default)]
    pub full_backing_filename: Option<String>,
    #[serde(default)]
    pub snapshots: Vec<SnapshotInfo>,
    /// qcow2's `data-file` (an external data file) lives in here.
    #[serde(default)]
    pub format_specific: Option<serde_json::Value>,
}

impl ImageInfo {
    /// Another file this image reads data from, as its header names it:
    /// a backing file or a qcow2 external data file.
    pub fn external_file(&self) -> Option<&str> {
        self.backing_filename
            .as_deref()
            .or_else(|| self.format_specific.as_ref()?["data"]["data-file"].as_str())
    }
}

/// An internal snapshot, as both `qemu-img info` and QMP `query-block`
/// describe it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotInfo {
    pub id: String,
    pub name: String,
    /// Bytes of saved RAM and device state; 0 for a disk-only snapshot.
    #[serde(default)]
    pub vm_state_size: u64,
    pub date_sec: i64,
    #[serde(default)]
    pub date_nsec: i64,
    /// Guest clock at the snapshot.
    #[serde(default)]
    pub vm_clock_sec: i64,
    #[serde(default)]
    pub vm_clock_nsec: i64,
}

impl SnapshotInfo {
    /// A snapshot with VM state was taken live and restores RAM too.
    pub fn is_live(&self) -> bool {
        self.vm_state_size > 0
    }
}

/// The `qemu-img snapshot` operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotOp {
    Create,
    Apply,
    Delete,
}

impl SnapshotOp {
    fn flag(self) -> &'static str {
        match self {
            SnapshotOp::Create => "-c",
            SnapshotOp::Apply => "-a",
            SnapshotOp::Delete => "-d",
        }
    }
}

/// What `qemu-img check` printed and how it exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutput {
    /// None when it was killed by a signal.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuImg {
    bin: PathBuf,
}

impl QemuImg {
    /// `MAQET_QEMU_IMG`, else `qemu-img` beside the VM's QEMU binary, else
    /// in `PATH`.
    pub fn find(qemu_binary: Option<&Path>) -> Result<QemuImg, StorageError> {
        if let Some(p) = std::env::var_os("MAQET_QEMU_IMG").filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            return if is_executable(&p) && p.is_file() {
                Ok(QemuImg { bin: p })
            } else {
                Err(StorageError::QemuImgMissing {
                    tried: format!("MAQET_QEMU_IMG={}", p.display()),
                })
            };
        }
        let sibling = qemu_binary.and_then(|b| Some(b.parent()?.join("qemu-img")));
        if let Some(s) = sibling.as_ref().filter(|s| s.is_file() && is_executable(s)) {
            return Ok(QemuImg { bin: s.clone() });
        }
        find_in_path("qemu-img")
            .map(|bin| QemuImg { bin })
            .ok_or_else(|| StorageError::QemuImgMissing {
                tried: match sibling {
                    Some(s) => format!("{} and PATH", s.display()),
                    None => "PATH".into(),
                },
            })
    }

    pub fn path(&self) -> &Path {
        &self.bin
    }

    fn run(&self, args: &[&std::ffi::OsStr], limit: Duration) -> Result<Vec<u8>, StorageError> {
        let shown = || {
            std::iter::once(self.bin.to_string_lossy())
                .chain(args.iter().map(|a| a.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).env("LC_ALL", "C");
        let out = output_within(cmd, limit, shown)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stderr = stderr
                .trim()
                .trim_start_matches("qemu-img: ")
                .replace("\nqemu-img: ", "; ");
            return Err(StorageError::QemuImg {
                command: shown(),
                stderr: if stderr.is_empty() {
                    format!("exit status {}", out.status)
                } else {
                    stderr
                },
            });
        }
        Ok(out.stdout)
    }

    /// The image and its backing chain, top first. `-U` (force-share) lets
    /// this read images a running QEMU holds.
    pub fn info(&self, path: &Path) -> Result<Vec<ImageInfo>, StorageError> {
        an_image(path)?;
        let out = self.run(
            &[
                "info".as_ref(),
                "-U".as_ref(),
                "--backing-chain".as_ref(),
                "--output=json".as_ref(),
                // A file name is never an option, whatever it starts with.
                "--".as_ref(),
                path.as_os_str(),
            ],
            INFO_LIMIT,
        )?;
        parse_info(&out).map_err(|message| StorageError::BadInfo {
            path: path.to_path_buf(),
            message,
        })
    }

    /// The image alone, not its backing chain (so an overlay whose backing
    /// file is gone still says which one it names). `-U` as for [`info`](Self::info).
    pub fn info_top(&self, path: &Path) -> Result<ImageInfo, StorageError> {
        an_image(path)?;
        let out = self.run(
            &[
                "info".as_ref(),
                "-U".as_ref(),
                "--output=json".as_ref(),
                "--".as_ref(),
                path.as_os_str(),
            ],
            INFO_LIMIT,
        )?;
        parse_info(&out)
            .and_then(|v| v.into_iter().next().ok_or_else(|| "no image".to_string()))
            .map_err(|message| StorageError::BadInfo {
                path: path.to_path_buf(),
                message,
            })
    }

    /// The image alone (its format probed, no backing chain followed).
    pub fn probe(&self, path: &Path) -> Result<ImageInfo, StorageError> {
        an_image(path)?;
        let out = self.run(
            &[
                "info".as_ref(),
                "--output=json".as_ref(),
                "--".as_ref(),
                path.as_os_str(),
            ],
            INFO_LIMIT,
        )?;
        parse_info(&out)
            .and_then(|mut v| v.pop().ok_or_else(|| "no image in the output".to_string()))
            .map_err(|message| StorageError::BadInfo {
                path: path.to_path_buf(),
                message,
            })
    }

    /// `qemu-img convert -f FROM -O qcow2 SRC DST`.
    pub fn convert_to_qcow2(&self, src: &Path, from: &str, dst: &Path) -> Result<(), StorageError> {
        self.convert(src, from, dst, "qcow2")
    }

    /// Creates an image. `size` in bytes (None: the backing file's size).
    /// A relative `backing` is relative to the new image's directory and is
    /// stored as written.
    pub fn create(
        &self,
        path: &Path,
        format: ImageFormat,
        size: Option<u64>,
        backing: Option<(&Path, ImageFormat)>,
    ) -> Result<(), StorageError> {
        let size_text = size.map(|s| s.to_string());
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            format.as_str().as_ref(),
        ];
        if let Some((b, bf)) = backing {
            args.extend([
                "-b".as_ref(),
                b.as_os_str(),
                "-F".as_ref(),
                bf.as_str().as_ref(),
            ]);
        }
        args.extend(["--".as_ref(), path.as_os_str()]);
        if let Some(s) = &size_text {
            args.push(s.as_ref());
        }
        self.run(&args, LONG_LIMIT).map(drop)
    }

    /// `qemu-img convert -f FROM_FORMAT -O TO_FORMAT FROM TO` (TO must not
    /// exist: the caller writes to a name of its own).
    pub fn convert(
        &self,
        from: &Path,
        from_format: &str,
        to: &Path,
        to_format: &str,
    ) -> Result<(), StorageError> {
        an_image(from)?;
        self.run(
            &[
                "convert".as_ref(),
                "-q".as_ref(),
                "-f".as_ref(),
                from_format.as_ref(),
                "-O".as_ref(),
                to_format.as_ref(),
                "--".as_ref(),
                from.as_os_str(),
                to.as_os_str(),
            ],
            LONG_LIMIT,
        )
        .map(drop)
    }

    /// `qemu-img check --output=json [-f FORMAT] [-U] FILE`, whatever its
    /// exit status (it tells corruption from leaks); an error only when
    /// qemu-img cannot be run. `force_share` (-U) reads an image a running
    /// QEMU holds, read only.
    pub fn check(
        &self,
        path: &Path,
        format: Option<&str>,
        force_share: bool,
    ) -> Result<CheckOutput, StorageError> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["check", "--output=json"]);
        if let Some(f) = format {
            cmd.args(["-f", f]);
        }
        if force_share {
            cmd.arg("-U");
        }
        an_image(path)?;
        cmd.arg("--").arg(path).env("LC_ALL", "C");
        let shown = || format!("{} check {}", self.bin.display(), path.display());
        let out = output_within(cmd, CHECK_LIMIT, shown)?;
        Ok(CheckOutput {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace("qemu-img: ", ""),
        })
    }

    /// `qemu-img snapshot -c|-a|-d TAG FILE` (needs the image unused).
    /// A lock conflict is [`StorageError::Locked`] (its holder unknown).
    pub fn snapshot(&self, op: SnapshotOp, tag: &str, path: &Path) -> Result<(), StorageError> {
        an_image(path)?;
        self.run(
            &[
                "snapshot".as_ref(),
                op.flag().as_ref(),
                tag.as_ref(),
                "--".as_ref(),
                path.as_os_str(),
            ],
            LONG_LIMIT,
        )
        .map(drop)
        .map_err(|e| match e {
            // qemu-img: "Failed to get "write" lock".
            StorageError::QemuImg { command, stderr } if stderr.contains("lock") => {
                StorageError::Locked {
                    command,
                    stderr,
                    path: path.to_path_buf(),
                    user: None,
                }
            }
            e => e,
        })
    }
}

/// Deadlines of qemu-img runs: `info` reads headers only; creating and
/// internal snapshots touch metadata (a conversion copies an NVRAM store); `check` reads every cluster of an
/// image that may be large. Past its deadline qemu-img is killed: a file
/// system that hangs (or a FIFO in a backing chain) must not hang maqet
/// and the VM lock it may hold.
const INFO_LIMIT: Duration = Duration::from_secs(60);
const LONG_LIMIT: Duration = Duration::from_secs(30 * 60);
const CHECK_LIMIT: Duration = Duration::from_secs(2 * 60 * 60);

/// Refuses what qemu-img would block on (a FIFO opens only once someone
/// writes to it) or should never read (a character device, a socket).
fn an_image(path: &Path) -> Result<(), StorageError> {
    match maqet_base::files::not_regular(path, true) {
        Some(e) => Err(StorageError::NotAnImage {
            path: path.to_path_buf(),
            kind: e.kind,
        }),
        None => Ok(()),
    }
}

/// Runs `cmd` to its end, stdin closed, for at most `limit`; then it is
/// killed and the run is a [`StorageError::QemuImgTimeout`]. The wait is
/// on a thread of its own, so neither a pipe nor a hung child can hold
/// the caller past the deadline.
fn output_within(
    mut cmd: Command,
    limit: Duration,
    shown: impl Fn() -> String,
) -> Result<Output, StorageError> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| StorageError::QemuImg {
            command: shown(),
            stderr: format!("cannot run it: {e}"),
        })?;
    // A pidfd names this process even after it was reaped, so the kill
    // below can never reach a process that got its pid since.
    let pid = rustix::process::Pid::from_child(&child);
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.map_err(|e| StorageError::QemuImg {
            command: shown(),
            stderr: format!("cannot read its output: {e}"),
        }),
        Err(_) => {
            // The waiting thread reaps it once it is dead.
            let kill = rustix::process::Signal::KILL;
            let _ = match &pidfd {
                Ok(fd) => rustix::process::pidfd_send_signal(fd, kill),
                Err(_) => rustix::process::kill_process(pid, kill),
            };
            Err(StorageError::QemuImgTimeout {
                command: shown(),
                limit,
            })
        }
    }
}

/// Parses `--backing-chain` output (a list) or a single image (an object).
pub(crate) fn parse_info(bytes: &[u8]) -> Result<Vec<ImageInfo>, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    match v {
        serde_json::Value::Array(_) => serde_json::from_value(v).map_err(|e| e.to_string()),
        other => serde_json::from_value(other)
            .map(|i| vec![i])
            .map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_refused_before_qemu_img_runs() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("disk.qcow2");
        maqet_base::files::mkfifo(&fifo).unwrap();
        // A qemu-img that would hang if it ran: the refusal comes first.
        let img = QemuImg {
            bin: PathBuf::from("/bin/sleep"),
        };
        for e in [
            img.info(&fifo).unwrap_err(),
            img.check(&fifo, Some("qcow2"), false).unwrap_err(),
            img.snapshot(SnapshotOp::Create, "s", &fifo).unwrap_err(),
            img.info(Path::new("/dev/null")).unwrap_err(),
        ] {
            assert!(matches!(e, StorageError::NotAnImage { .. }), "{e}");
            assert!(e.to_string().contains("not a disk image"), "{e}");
        }
    }

    #[test]
    fn a_run_past_its_deadline_is_killed_and_reported() {
        let mut cmd = Command::new("/bin/sleep");
        cmd.arg("600");
        let e = output_within(cmd, Duration::from_millis(200), || "sleep 600".into()).unwrap_err();
        assert!(matches!(e, StorageError::QemuImgTimeout { .. }), "{e}");
        let mut cmd = Command::new("/bin/echo");
        cmd.arg("hi");
        let out = output_within(cmd, Duration::from_secs(60), || "echo".into()).unwrap();
        assert_eq!(out.stdout, b"hi\n");
    }

    #[test]
    fn parses_info_with_chain_and_snapshots() {
        let text = br#"[
          {"virtual-size": 1073741824, "filename": "/d/o.qcow2", "cluster-size": 65536,
           "format": "qcow2", "actual-size": 200704, "backing-filename": "base.qcow2",
           "full-backing-filename": "/d/base.qcow2", "backing-filename-format": "qcow2",
           "snapshots": [{"icount": 0, "vm-clock-nsec": 16477967, "name": "s1",
             "date-sec": 1795632069, "date-nsec": 564845000, "vm-clock-sec": 0,
             "id": "1", "vm-state-size": 699361}],
           "dirty-flag": false},
          {"virtual-size": 1073741824, "filename": "/d/base.qcow2", "format": "qcow2",
           "actual-size": 196616, "dirty-flag": false}
        ]"#;
        let chain = parse_info(text).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0].backing_filename.as_deref(), Some("base.qcow2"));
        assert_eq!(
            chain[0].full_backing_filename.as_deref(),
            Some("/d/base.qcow2")
        );
        assert_eq!(chain[0].snapshots.len(), 1);
        assert!(chain[0].snapshots[0].is_live());
        assert_eq!(chain[0].snapshots[0].vm_clock_nsec, 16477967);
        assert!(chain[1].snapshots.is_empty());
        let single =
            parse_info(br#"{"virtual-size": 5, "filename": "r.img", "format": "raw"}"#).unwrap();
        assert_eq!(single[0].actual_size, None);
        assert!(parse_info(b"nonsense").is_err());
        assert_eq!(chain[0].external_file(), Some("base.qcow2"));
        let data_file = parse_info(
            br#"{"virtual-size": 5, "filename": "x", "format": "qcow2",
                 "format-specific": {"type": "qcow2", "data": {"data-file": "/etc/shadow"}}}"#,
        )
        .unwrap();
        assert_eq!(data_file[0].external_file(), Some("/etc/shadow"));
        assert_eq!(single[0].external_file(), None);
    }
}
