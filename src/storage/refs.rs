//! Which files are in use: everything that reaches QEMU.
//!
//! A file counts as used when it is named on a QEMU command line — the
//! rendered argv of a defined VM (its `storage` and its `arguments` alike)
//! or the real argv of a running QEMU — or lies anywhere down the backing
//! chain of such a file. Files are compared by device and inode, so a
//! relative path, a symlink or a hard link to the same file all count.
//!
//! Finding paths in an argv errs on the side of "used": every `file=`,
//! `filename=`, `path=` value (also `*.filename=`, and inside JSON
//! `-blockdev {…}`), and every bare option value or positional argument
//! that names an existing file. A false "used" only keeps a file; a missed
//! one would delete a disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::identity::{stat_followed, FileIdentity};
use super::qemu_img::QemuImg;

/// Keys whose value is a host path, after the last `.` (`file.filename`).
const PATH_KEYS: &[&str] = &["file", "filename", "path"];

/// The host paths an argv may name, as written (relative ones included).
pub fn argv_paths(argv: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for arg in argv.iter().skip(1) {
        if arg.starts_with('{') {
            if let Ok(v) = serde_json::from_str::<Value>(arg) {
                json_paths(&v, &mut out);
            }
            continue;
        }
        if arg.starts_with('-') {
            continue;
        }
        for (i, part) in split_options(arg).into_iter().enumerate() {
            match part.split_once('=') {
                Some((k, v)) => {
                    let key = k.rsplit('.').next().unwrap_or(k);
                    if PATH_KEYS.contains(&key) && !v.is_empty() {
                        out.push(v.to_string());
                    }
                }
                // `-hda disk.img`, `-kernel /boot/x`, or a positional disk.
                None if i == 0 && !part.is_empty() => out.push(part),
                None => {}
            }
        }
    }
    out
}

/// Splits a QEMU option string at single commas (`,,` is a literal comma).
pub(crate) fn split_options(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                parts.last_mut().expect("never empty").push(',');
            } else {
                parts.push(String::new());
            }
        } else {
            parts.last_mut().expect("never empty").push(c);
        }
    }
    parts
}

fn json_paths(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v {
                    Value::String(s) if PATH_KEYS.contains(&k.as_str()) => out.push(s.clone()),
                    _ => json_paths(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| json_paths(v, out)),
        _ => {}
    }
}

/// Files in use, each with a sentence naming its user.
#[derive(Debug, Default)]
pub struct References {
    /// (dev, ino) → `VM 'x' uses it`.
    by_inode: HashMap<(u64, u64), String>,
    /// Existing referenced files, to follow their backing chains.
    files: Vec<(PathBuf, String)>,
}

impl References {
    /// Adds the paths of one QEMU command line. `cwd` resolves relative
    /// paths (a running process's working directory); without it they are
    /// skipped (a rendered config has its paths made absolute at load).
    pub fn add_argv(&mut self, argv: &[String], cwd: Option<&Path>, user: &str) {
        for p in argv_paths(argv) {
            let p = PathBuf::from(p);
            let p = match (p.is_absolute(), cwd) {
                (true, _) => p,
                (false, Some(cwd)) => cwd.join(p),
                (false, None) => continue,
            };
            self.add_path(&p, user);
        }
    }

    /// Adds one path (if it exists), e.g. a config's `backing_file`.
    pub fn add_path(&mut self, p: &Path, user: &str) {
        let Ok(id) = stat_followed(p) else { return };
        if self
            .by_inode
            .insert((id.dev, id.ino), user.to_string())
            .is_none()
            && p.is_file()
        {
            self.files.push((p.to_path_buf(), user.to_string()));
        }
    }

    /// Adds the whole backing chain of every referenced image (`qemu-img
    /// info --backing-chain -U`, which reads images a running QEMU holds).
    /// An image qemu-img cannot read has no chain to add.
    pub fn add_backing_chains(&mut self, img: &QemuImg) {
        let files = std::mem::take(&mut self.files);
        for (top, user) in &files {
            let Ok(chain) = img.info(top) else { continue };
            let mut below = top.clone();
            for layer in chain.iter().skip(1) {
                let mut p = PathBuf::from(&layer.filename);
                if p.is_relative() {
                    p = below.parent().unwrap_or(Path::new("/")).join(p);
                }
                if let Ok(id) = stat_followed(&p) {
                    self.by_inode.entry((id.dev, id.ino)).or_insert_with(|| {
                        format!("{user} as a backing file of {}", top.display())
                    });
                }
                below = p;
            }
        }
        self.files = files;
    }

    /// Who uses the file with this identity, if anyone.
    pub fn user_of(&self, id: &FileIdentity) -> Option<String> {
        self.by_inode.get(&(id.dev, id.ino)).cloned()
    }

    /// Who uses the file at `path` (following symlinks), if anyone.
    pub fn user_of_path(&self, path: &Path) -> Option<String> {
        stat_followed(path).ok().and_then(|id| self.user_of(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::identity::stat_path;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn finds_every_way_qemu_is_given_a_file() {
        let argv = s(&[
            "/usr/bin/qemu-system-x86_64",
            "-name",
            "vm",
            "-drive",
            "file=/d/a,,b.qcow2,if=virtio,format=qcow2",
            "-blockdev",
            "driver=qcow2,node-name=n,file.driver=file,file.filename=/d/bd.qcow2",
            "-blockdev",
            r#"{"driver":"qcow2","file":{"driver":"file","filename":"/d/json.qcow2"}}"#,
            "-hda",
            "/d/hda.img",
            "-cdrom",
            "rel.iso",
            "-virtfs",
            "local,path=/d/share,mount_tag=s,security_model=none",
            "-m",
            "64M",
        ]);
        let found = argv_paths(&argv);
        for want in [
            "/d/a,b.qcow2",
            "/d/bd.qcow2",
            "/d/json.qcow2",
            "/d/hda.img",
            "rel.iso",
            "/d/share",
        ] {
            assert!(found.iter().any(|f| f == want), "{want} not in {found:?}");
        }
        assert!(!found.iter().any(|f| f.contains("qemu-system")));
        assert!(!found
            .iter()
            .any(|f| f == "if=virtio" || f == "driver=qcow2"));
    }

    #[test]
    fn compares_by_inode_and_resolves_relative_paths_against_cwd() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("disk.img"), "").unwrap();
        std::os::unix::fs::symlink(d.join("disk.img"), d.join("link.img")).unwrap();
        std::fs::write(d.join("other.img"), "").unwrap();
        let mut r = References::default();
        r.add_argv(
            &s(&["qemu", "-drive", "file=link.img,if=none"]),
            Some(d),
            "running VM 'x' uses it",
        );
        // Relative without a working directory: not resolved against ours.
        r.add_argv(&s(&["qemu", "-hda", "other.img"]), None, "nobody");
        let disk = stat_path(&d.join("disk.img")).unwrap().identity;
        assert_eq!(r.user_of(&disk).as_deref(), Some("running VM 'x' uses it"));
        assert_eq!(r.user_of_path(&d.join("other.img")), None);
    }

    #[test]
    fn follows_backing_chains_all_the_way_down() {
        let Ok(img) = QemuImg::find(None) else {
            eprintln!("note: no qemu-img here; skipping");
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().canonicalize().unwrap();
        use crate::config::ImageFormat::Qcow2;
        img.create(&d.join("base.qcow2"), Qcow2, Some(1 << 20), None)
            .unwrap();
        img.create(
            &d.join("mid.qcow2"),
            Qcow2,
            None,
            Some((Path::new("base.qcow2"), Qcow2)),
        )
        .unwrap();
        img.create(
            &d.join("top.qcow2"),
            Qcow2,
            None,
            Some((Path::new("mid.qcow2"), Qcow2)),
        )
        .unwrap();
        let mut r = References::default();
        let top = d.join("top.qcow2");
        r.add_argv(
            &s(&["qemu", "-drive", &format!("file={}", top.display())]),
            None,
            "VM 'b' uses it",
        );
        assert_eq!(r.user_of_path(&d.join("base.qcow2")), None);
        r.add_backing_chains(&img);
        for layer in ["mid.qcow2", "base.qcow2"] {
            let who = r.user_of_path(&d.join(layer)).unwrap();
            assert!(
                who.starts_with("VM 'b' uses it as a backing file of"),
                "{who}"
            );
        }
    }
}
