//! `maqet storage verify`: every disk a VM's definition records — its
//! `storage:` images, the bases (backing files) they overlay, and the
//! images its raw `arguments`/`args` name — exists, is readable, and passes
//! `qemu-img check` where the format has one (qcow2). A raw image has no
//! metadata to check: existing and readable is all there is.
//!
//! A running VM's images are checked with `-U` (force-share, read only)
//! instead of failing on QEMU's lock; what QEMU has not yet written back
//! can then show up as leaks, which are warnings anyway.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::base::sha256_file;
use super::identity::stat_followed;
use super::qemu_img::{CheckOutput, QemuImg};
use super::refs::argv_paths;
use maqet_base::access::{allowed, Access};
use maqet_base::qemu_opts::split_unescaped;
use maqet_config::{StorageKind, VmConfig};

/// How one disk fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    /// A `storage:` image maqet creates at the next start: nothing to check yet.
    NotCreated,
    /// Usable, with something worth knowing (leaked clusters, an empty file).
    Warning,
    Missing,
    Unreadable,
    /// qemu-img found corruption, or cannot open the image as its format.
    Corrupt,
    /// A base whose sha256 is not the one the config names.
    Mismatch,
    /// An overlay whose real backing file is not the config's base (a
    /// `qemu-img rebase` or `commit` changed it).
    BaseMismatch,
    /// Half made: a VM whose making was interrupted, or a temporary file a
    /// killed maqet command left.
    Incomplete,
    /// The check itself could not be done (qemu-img missing or locked out).
    Error,
}

impl Status {
    /// Whether this disk makes `verify` fail.
    pub fn is_failure(self) -> bool {
        !matches!(self, Status::Ok | Status::NotCreated | Status::Warning)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NotCreated => "not created yet",
            Status::Warning => "warning",
            Status::Missing => "missing",
            Status::Unreadable => "unreadable",
            Status::Corrupt => "corrupt",
            Status::Mismatch => "sha256 mismatch",
            Status::BaseMismatch => "base mismatch",
            Status::Incomplete => "incomplete",
            Status::Error => "error",
        }
    }
}

/// Where the definition names the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A `storage:` entry.
    Storage,
    /// The `base:`/`backing_file:` of a `storage:` entry.
    Base,
    /// An image named in `arguments` or `args`.
    Arguments,
    /// A temporary file an interrupted maqet command left.
    Leftover,
    /// The stored definition itself (it no longer validates).
    Config,
}

/// The result for one disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskCheck {
    pub vm: String,
    /// The `storage:` name, `NAME (base)`, or `arguments[i]`.
    pub disk: String,
    pub role: Role,
    pub path: PathBuf,
    /// The format checked as (configured, or probed by qemu-img).
    pub format: Option<String>,
    /// Checked with `qemu-img check -U` because the VM is running.
    pub force_share: bool,
    pub status: Status,
    /// What is wrong, in qemu-img's words where it has some; or what was checked.
    pub message: String,
}

/// A status with its message and the format qemu-img reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: Status,
    pub message: String,
    pub format: Option<String>,
    /// qemu-img looked at the image (so `-U` mattered).
    pub qemu_img: bool,
}

impl Verdict {
    fn new(status: Status, message: impl Into<String>) -> Self {
        Verdict {
            status,
            message: message.into(),
            format: None,
            qemu_img: false,
        }
    }
}

/// Options whose value is a disk image (`-drive`, `-hda`, …).
const DISK_OPTIONS: &[&str] = &[
    "drive", "blockdev", "hda", "hdb", "hdc", "hdd", "cdrom", "fda", "fdb", "sd", "mtdblock",
];

/// One image from `arguments`/`args`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgumentDisk {
    pub label: String,
    pub path: PathBuf,
    /// `format=` (or a blockdev's format `driver=`); None: qemu-img probes.
    pub format: Option<String>,
    /// QEMU opens it read-only: a CD-ROM (`-cdrom`, `media=cdrom`),
    /// `readonly=on`/`read-only=on`, or `snapshot=on` (writes go to a
    /// temporary overlay).
    pub read_only: bool,
}

/// The images a VM's `arguments` and `args` name, relative paths resolved
/// against `qemu_cwd`, QEMU's working directory (paths `arguments` holds in
/// resolvable places were made absolute at load; `args` and nested values
/// go to QEMU as written).
pub fn argument_disks(cfg: &VmConfig, qemu_cwd: &Path) -> Vec<ArgumentDisk> {
    let mut out = Vec::new();
    let mut add = |label: String, option: &str, value: &str| {
        if !DISK_OPTIONS.contains(&option) {
            return;
        }
        let parts = split_unescaped(value);
        let key = |k: &str| {
            parts
                .iter()
                .find_map(|p| p.strip_prefix(k)?.strip_prefix('=').map(str::to_string))
        };
        let on = |k: &str| {
            key(k).is_some_and(|v| matches!(v.as_str(), "on" | "true" | "yes" | "y" | "1"))
        };
        let json: Option<Value> = value
            .starts_with('{')
            .then(|| serde_json::from_str(value).ok())
            .flatten();
        let cdrom = option == "cdrom" || key("media").as_deref() == Some("cdrom");
        let read_only = cdrom
            || on("readonly")
            || on("read-only")
            || on("snapshot")
            || json
                .as_ref()
                .and_then(|j| j.get("read-only"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
        let format = key("format")
            .or_else(|| key("driver").filter(|d| d == "qcow2" || d == "raw"))
            .or_else(|| {
                json.as_ref()
                    .and_then(|j| j.get("driver"))
                    .and_then(Value::as_str)
                    .filter(|d| *d == "qcow2" || *d == "raw")
                    .map(str::to_string)
            })
            .or_else(|| cdrom.then(|| "raw".to_string()));
        // `file=`/`filename=` values and a bare value are disks even when
        // missing (then they fail the check); any other value or JSON string
        // is one when it names a file (`if=virtio` is not `./virtio`).
        let named = parts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p.split_once('=') {
                Some((k, v)) => {
                    let k = k.rsplit('.').next().unwrap_or(k);
                    (matches!(k, "file" | "filename") && !v.is_empty() && !v.starts_with("json:"))
                        .then(|| (v.to_string(), true))
                }
                None => {
                    (i == 0 && !p.is_empty() && !value.starts_with('{')).then(|| (p.clone(), true))
                }
            });
        let argv = ["".to_string(), format!("-{option}"), value.to_string()];
        let others = argv_paths(&argv).into_iter().map(|p| (p, false));
        for (p, sure) in named.chain(others) {
            let path = maqet_config::normalize(&qemu_cwd.join(p));
            if (sure || path.is_file()) && !out.iter().any(|d: &ArgumentDisk| d.path == path) {
                out.push(ArgumentDisk {
                    label: label.clone(),
                    path,
                    format: format.clone(),
                    read_only,
                });
            }
        }
    };
    for a in &cfg.arguments {
        if let [opt, value] = a.argv.as_slice() {
            add(
                format!("arguments[{}]", a.index),
                opt.trim_start_matches('-'),
                value,
            );
        }
    }
    for pair in cfg.args.windows(2) {
        if let Some(opt) = pair[0].strip_prefix('-') {
            add("args".into(), opt.trim_start_matches('-'), &pair[1]);
        }
    }
    out
}

/// Checks every disk `cfg` records. `created` are the paths maqet
/// recorded as created for the VM (canonical): such a disk that is gone is
/// missing, not "not created yet". `running`: check with `-U`.
pub fn verify_vm(
    vm: &str,
    cfg: &VmConfig,
    disk_dir: &Path,
    qemu_cwd: &Path,
    created: &[PathBuf],
    running: bool,
) -> Vec<DiskCheck> {
    let found = QemuImg::find(Some(&cfg.binary)).map_err(|e| e.to_string());
    let img = found.as_ref();
    let mut out: Vec<DiskCheck> = Vec::new();
    let mut push = |disk: String, role: Role, path: PathBuf, format: Option<&str>, v: Verdict| {
        if out.iter().any(|c| c.path == path) {
            return;
        }
        out.push(DiskCheck {
            vm: vm.to_string(),
            disk,
            role,
            format: v.format.or(format.map(str::to_string)),
            force_share: running && v.qemu_img,
            path,
            status: v.status,
            message: v.message,
        });
    };
    for e in cfg.storage() {
        if e.kind == StorageKind::Virtfs {
            continue;
        }
        if let Some(base) = e.backing_path(disk_dir) {
            let format = e.backing_format.map(|f| f.as_str()).unwrap_or("qcow2");
            let v = match check_image(img, &base, Some(format), running) {
                v if v.status.is_failure() => v,
                v => match &e.base_sha256 {
                    Some(want) => check_digest(&base, want).unwrap_or(v),
                    None => v,
                },
            };
            push(
                format!("{} (base)", e.name),
                Role::Base,
                base,
                Some(format),
                v,
            );
        }
        let path = e.path(disk_dir);
        let format = e.format().map(|f| f.as_str());
        let recorded = created.contains(&maqet_config::normalize(&path))
            || std::fs::canonicalize(path.parent().unwrap_or(Path::new("/")))
                .ok()
                .and_then(|d| Some(d.join(path.file_name()?)))
                .is_some_and(|p| created.contains(&p));
        let v = if path.symlink_metadata().is_err() && !recorded && !running {
            Verdict::new(
                Status::NotCreated,
                "created at the next start (or now with `maqet storage create`)",
            )
        } else {
            let mut v = check_image(img, &path, format, running);
            if v.status == Status::Missing && recorded {
                v.message = "maqet created it, but it is gone".into();
            }
            v
        };
        // The backing file the overlay really has, which a `qemu-img
        // rebase` may have changed behind the config's back.
        let real_base = match (e.backing_path(disk_dir), img, v.status.is_failure()) {
            (Some(base), Ok(img), false) if path.exists() => real_backing(img, &path, &base),
            _ => None,
        };
        match real_base {
            Some((verdict, Some(actual))) => {
                let check = check_image(img, &actual, None, running);
                push(e.name.clone(), Role::Storage, path, format, verdict);
                push(
                    format!("{} (real base)", e.name),
                    Role::Base,
                    actual,
                    None,
                    check,
                );
            }
            Some((verdict, None)) => push(e.name.clone(), Role::Storage, path, format, verdict),
            None => push(e.name.clone(), Role::Storage, path, format, v),
        }
    }
    for d in argument_disks(cfg, qemu_cwd) {
        let v = check_image(img, &d.path, d.format.as_deref(), running);
        push(d.label, Role::Arguments, d.path, d.format.as_deref(), v);
    }
    out
}

/// When the overlay at `path` does not have `base` as its backing file: a
/// failing verdict, and the backing file it has instead (if any).
fn real_backing(img: &QemuImg, path: &Path, base: &Path) -> Option<(Verdict, Option<PathBuf>)> {
    let info = match img.info_top(path) {
        Ok(i) => i,
        Err(e) => return Some((Verdict::new(Status::Error, e.to_string()), None)),
    };
    let actual = info
        .full_backing_filename
        .or(info.backing_filename)
        .map(|b| {
            let b = PathBuf::from(b);
            if b.is_relative() {
                path.parent().unwrap_or(Path::new("/")).join(b)
            } else {
                b
            }
        });
    let same = |a: &Path| match (stat_followed(a), stat_followed(base)) {
        (Ok(x), Ok(y)) => x.matches(&y),
        _ => maqet_config::normalize(a) == maqet_config::normalize(base),
    };
    match actual {
        Some(a) if same(&a) => None,
        Some(a) => Some((
            Verdict::new(
                Status::BaseMismatch,
                format!(
                    "its backing file is {} (qemu-img info), not the config's base {}: a `qemu-img rebase` changed it; set the base to the file it has (`maqet apply`), or rebase it back",
                    a.display(),
                    base.display()
                ),
            ),
            Some(a),
        )),
        None => Some((
            Verdict::new(
                Status::BaseMismatch,
                format!(
                    "it has no backing file (qemu-img info), but the config's base is {}: it was made standalone (`qemu-img rebase -b ''`, `convert`); remove the base from the config (`maqet apply`)",
                    base.display()
                ),
            ),
            None,
        )),
    }
}

/// The temporary files interrupted maqet commands left in `dirs`, one
/// failing row each.
pub fn leftover_checks(vm: &str, dirs: &[PathBuf]) -> Vec<DiskCheck> {
    let mut out: Vec<DiskCheck> = Vec::new();
    for dir in dirs {
        for left in super::tmp::leftovers(dir) {
            if out.iter().any(|c| c.path == left.path) {
                continue;
            }
            out.push(DiskCheck {
                vm: vm.to_string(),
                disk: "(leftover)".into(),
                role: Role::Leftover,
                message: format!(
                    "half written by an interrupted maqet command (it was to become {}); `maqet doctor --fix` removes it, and so does the next command that makes that file",
                    left.target.display()
                ),
                path: left.path,
                format: None,
                force_share: false,
                status: Status::Incomplete,
            });
        }
    }
    out
}

/// A failed verdict when the digest differs (or cannot be read).
fn check_digest(path: &Path, want: &str) -> Option<Verdict> {
    match sha256_file(path) {
        Ok(got) if got == want => None,
        Ok(got) => Some(Verdict::new(
            Status::Mismatch,
            format!("sha256 is {got}, the config expects {want}"),
        )),
        Err(e) => Some(Verdict::new(
            Status::Unreadable,
            format!("cannot read it: {e}"),
        )),
    }
}

/// Exists, readable, and (for formats qemu-img can check) consistent.
pub fn check_image(
    img: Result<&QemuImg, &String>,
    path: &Path,
    format: Option<&str>,
    force_share: bool,
) -> Verdict {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Verdict::new(Status::Missing, "no such file")
        }
        Err(e) => return Verdict::new(Status::Unreadable, e.to_string()),
    };
    if meta.is_dir() {
        return Verdict::new(Status::Unreadable, "a directory, not a disk image");
    }
    if let Some(e) = maqet_base::files::not_regular(path, true) {
        // qemu-img would block opening a FIFO; a device is no image.
        return Verdict::new(Status::Unreadable, format!("{}, not a disk image", e.kind));
    }
    if !allowed(path, Access::READ_OK) {
        return Verdict::new(
            Status::Unreadable,
            "not readable by you (permission denied)",
        );
    }
    if format == Some("raw") {
        let mut v = if meta.len() == 0 && meta.is_file() {
            Verdict::new(Status::Warning, "raw, empty (0 bytes)")
        } else {
            Verdict::new(Status::Ok, format!("raw, {} bytes", meta.len()))
        };
        v.format = Some("raw".into());
        return v;
    }
    let img = match img {
        Ok(img) => img,
        Err(why) => return Verdict::new(Status::Error, why.clone()),
    };
    match img.check(path, format, force_share) {
        Ok(out) => classify(&out, format),
        Err(e) => Verdict::new(Status::Error, e.to_string()),
    }
}

/// Reads `qemu-img check`'s exit status and JSON: 0 clean, 2 corrupt, 3
/// leaks only, 63 a format without checks, 1 not checked (cannot open it:
/// a damaged header, or a lock).
pub fn classify(out: &CheckOutput, format: Option<&str>) -> Verdict {
    let json: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    let num = |k: &str| {
        json.as_ref()
            .and_then(|j| j.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let probed = json
        .as_ref()
        .and_then(|j| j.get("format"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let name = probed.clone().or(format.map(str::to_string));
    let shown = name.clone().unwrap_or_else(|| "image".into());
    let said = first_lines(&out.stderr);
    let mut v = match out.code {
        Some(0) => Verdict::new(Status::Ok, format!("{shown}, no errors")),
        Some(3) => Verdict::new(
            Status::Warning,
            format!(
                "{shown}, {} leaked clusters: wasted space, not damage (`qemu-img check -r leaks` with the VM stopped reclaims it)",
                num("leaks")
            ),
        ),
        Some(2) => Verdict::new(
            Status::Corrupt,
            format!(
                "qemu-img check found {} corruptions{}{}",
                num("corruptions"),
                if said.is_empty() { "" } else { ": " },
                said
            ),
        ),
        Some(63) => Verdict::new(
            Status::Ok,
            format!("{shown}, exists and is readable (the format has no consistency check)"),
        ),
        _ if said.contains("lock") => Verdict::new(
            Status::Error,
            format!("not checked: another process holds it ({said})"),
        ),
        Some(1) => Verdict::new(
            Status::Corrupt,
            if said.is_empty() {
                "qemu-img could not check it".to_string()
            } else {
                said
            },
        ),
        code => Verdict::new(
            Status::Error,
            format!(
                "qemu-img check ended with {}: {said}",
                code.map(|c| format!("exit status {c}"))
                    .unwrap_or_else(|| "a signal".into())
            ),
        ),
    };
    v.format = name;
    v.qemu_img = true;
    v
}

/// The first three lines of qemu-img's message, joined.
fn first_lines(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(3)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(code: i32, stdout: &str, stderr: &str) -> CheckOutput {
        CheckOutput {
            code: Some(code),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn classifies_qemu_img_check_results() {
        let clean = classify(
            &out(0, r#"{"check-errors": 0, "format": "qcow2"}"#, ""),
            Some("qcow2"),
        );
        assert_eq!(clean.status, Status::Ok);
        assert_eq!(clean.format.as_deref(), Some("qcow2"));
        let leaks = classify(
            &out(
                3,
                r#"{"leaks": 4, "format": "qcow2"}"#,
                "Leaked cluster 9 refcount=1 reference=0",
            ),
            Some("qcow2"),
        );
        assert_eq!(leaks.status, Status::Warning);
        assert!(!leaks.status.is_failure());
        assert!(
            leaks.message.contains("4 leaked clusters"),
            "{}",
            leaks.message
        );
        let corrupt = classify(
            &out(
                2,
                r#"{"corruptions": 2, "format": "qcow2"}"#,
                "ERROR cluster 5 refcount=0 reference=1",
            ),
            Some("qcow2"),
        );
        assert_eq!(corrupt.status, Status::Corrupt);
        assert!(corrupt.message.contains("2 corruptions: ERROR cluster 5"));
        // A header qemu-img cannot read: its own message is the reason.
        let header = classify(
            &out(
                1,
                "",
                "Could not open '/d/x.qcow2': Image is not in qcow2 format",
            ),
            Some("qcow2"),
        );
        assert_eq!(header.status, Status::Corrupt);
        assert!(header.message.contains("Image is not in qcow2 format"));
        // A lock is not damage.
        let locked = classify(
            &out(
                1,
                "",
                "Could not open '/d/x.qcow2': Failed to get shared \"write\" lock",
            ),
            Some("qcow2"),
        );
        assert_eq!(locked.status, Status::Error);
        assert!(locked.message.contains("another process holds it"));
        let probed = classify(
            &out(
                63,
                r#"{"format": "vmdk"}"#,
                "This image format does not support checks",
            ),
            None,
        );
        assert_eq!(probed.status, Status::Ok);
        assert_eq!(probed.format.as_deref(), Some("vmdk"));
        let killed = classify(
            &CheckOutput {
                code: None,
                stdout: vec![],
                stderr: String::new(),
            },
            None,
        );
        assert_eq!(killed.status, Status::Error);
        for s in [
            Status::Missing,
            Status::Unreadable,
            Status::Corrupt,
            Status::Mismatch,
            Status::Error,
        ] {
            assert!(s.is_failure(), "{s:?}");
        }
        assert!(!Status::NotCreated.is_failure());
    }

    #[test]
    fn missing_unreadable_and_raw_need_no_qemu_img() {
        let tmp = tempfile::tempdir().unwrap();
        let no_img = Err(&"qemu-img is not available".to_string());
        let v = check_image(no_img, &tmp.path().join("gone.qcow2"), Some("qcow2"), false);
        assert_eq!(v.status, Status::Missing);
        let v = check_image(no_img, tmp.path(), None, false);
        assert_eq!(v.status, Status::Unreadable);
        let raw = tmp.path().join("r.img");
        std::fs::write(&raw, vec![0u8; 4096]).unwrap();
        let v = check_image(no_img, &raw, Some("raw"), false);
        assert_eq!(
            (v.status, v.message.as_str()),
            (Status::Ok, "raw, 4096 bytes")
        );
        std::fs::write(&raw, b"").unwrap();
        assert_eq!(
            check_image(no_img, &raw, Some("raw"), false).status,
            Status::Warning
        );
        // qcow2 without qemu-img: the check could not be done.
        let q = tmp.path().join("q.qcow2");
        std::fs::write(&q, b"x").unwrap();
        assert_eq!(
            check_image(no_img, &q, Some("qcow2"), false).status,
            Status::Error
        );
    }

    #[test]
    fn a_base_with_another_digest_fails_and_an_uncreated_overlay_does_not() {
        let Ok(img) = QemuImg::find(None) else {
            eprintln!("note: no qemu-img here; skipping");
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().canonicalize().unwrap();
        img.create(
            &d.join("base.qcow2"),
            maqet_config::ImageFormat::Qcow2,
            Some(1 << 20),
            None,
        )
        .unwrap();
        let text = format!(
            "binary: /bin/sh\nstorage:\n  - {{name: root, base: base.qcow2, sha256: {}}}\n",
            "0".repeat(64)
        );
        let cfg = maqet_config::ConfigDocument::from_yaml_str(&text, "t.yaml", &d)
            .unwrap()
            .validate()
            .unwrap();
        let checks = verify_vm("vm", &cfg, &d.join("disks"), &d, &[], false);
        let got: Vec<(&str, Status)> = checks.iter().map(|c| (c.disk.as_str(), c.status)).collect();
        assert_eq!(
            got,
            [
                ("root (base)", Status::Mismatch),
                ("root", Status::NotCreated)
            ]
        );
        assert!(checks[0].message.contains(&"0".repeat(64)));
        // Recorded as created but gone: missing.
        let created = [d.join("disks/root.qcow2")];
        let checks = verify_vm("vm", &cfg, &d.join("disks"), &d, &created, false);
        assert_eq!(checks[1].status, Status::Missing);
        assert!(checks[1].message.contains("maqet created it"));
    }

    #[test]
    fn argument_disks_are_found_with_their_format() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let cwd = d.join("data");
        std::fs::create_dir_all(cwd.join("sub")).unwrap();
        std::fs::write(d.join("j.qcow2"), "").unwrap();
        std::fs::write(cwd.join("sub/rel.qcow2"), "").unwrap();
        let text = format!(
            "binary: /bin/sh\narguments:\n  - drive: \"file={0}/a.qcow2,format=qcow2,if=virtio\"\n  - cdrom: {0}/x.iso\n  - device: virtio-rng-pci\n  - drive: \"file={0}/c.img,media=cdrom\"\n  - drive: {{file: sub/rel.qcow2, if: virtio, readonly: \"on\"}}\nargs: [-hda, {0}/h.img, -drive, 'file=json:{{\"driver\":\"qcow2\",,\"file\":{{\"driver\":\"file\",,\"filename\":\"{0}/j.qcow2\"}}}}', -hdb, ../gone.img]\n",
            d.display()
        );
        let cfg = maqet_config::ConfigDocument::from_yaml_str(&text, "t.yaml", d)
            .unwrap()
            .validate()
            .unwrap();
        let found: Vec<(String, PathBuf, Option<String>, bool)> = argument_disks(&cfg, &cwd)
            .into_iter()
            .map(|a| (a.label, a.path, a.format, a.read_only))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "arguments[0]".into(),
                    d.join("a.qcow2"),
                    Some("qcow2".into()),
                    false
                ),
                (
                    "arguments[1]".into(),
                    d.join("x.iso"),
                    Some("raw".into()),
                    true
                ),
                (
                    "arguments[3]".into(),
                    d.join("c.img"),
                    Some("raw".into()),
                    true
                ),
                // Nested in a mapping: not resolved at load, so QEMU takes it
                // from its working directory.
                ("arguments[4]".into(), cwd.join("sub/rel.qcow2"), None, true),
                ("args".into(), d.join("h.img"), None, false),
                ("args".into(), d.join("j.qcow2"), None, false),
                ("args".into(), d.join("gone.img"), None, false),
            ]
        );
    }
}
