//! Which files are in use: everything that reaches QEMU, and every file a
//! process of the user has open.
//!
//! A file counts as used when it is named on a QEMU command line — the
//! rendered argv of a defined VM (its `storage` and its `arguments` alike)
//! or the real argv of a running QEMU — or lies anywhere down the backing
//! chain of such a file, or is open in a process of this user
//! (`/proc/PID/fd`: a disk hot-plugged into a running VM, a QEMU started by
//! hand). Files are compared by device and inode, so a relative path, a
//! symlink or a hard link to the same file all count. (The image locks a
//! process of another user holds are probed where a file is deleted:
//! storage/locks.rs.)
//!
//! Finding paths in an argv errs on the side of "used": every value of an
//! option string (`file=`, `filename=`, `path=`, any other key, a bare
//! value), every string inside JSON (`-blockdev {…}`, `file=json:{…}`, also
//! when its commas were not doubled), resolved against QEMU's working
//! directory when relative, counts when it names an existing file. A false
//! "used" only keeps a file; a missed one would delete a disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::identity::{stat_followed, stat_followed_found, FileIdentity};
use super::qemu_img::QemuImg;

/// The host paths an argv may name, as written (relative ones included).
pub fn argv_paths(argv: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for arg in argv.iter().skip(1) {
        if arg.starts_with('{') {
            json_text_paths(arg, &mut out);
            continue;
        }
        // An option's name (`-drive`); its value is the next element.
        if arg.starts_with('-') {
            continue;
        }
        option_paths(arg, &mut out);
    }
    out
}

/// Every value of a QEMU option string (`k=v,k=v`, or a bare value), and
/// the strings of a `json:` value.
fn option_paths(arg: &str, out: &mut Vec<String>) {
    for part in maqet_base::qemu_opts::split_unescaped(arg) {
        let value = part.split_once('=').map_or(part.as_str(), |(_, v)| v);
        if value.is_empty() {
            continue;
        }
        match value.strip_prefix("json:") {
            Some(json) => json_text_paths(json, out),
            None => out.push(value.to_string()),
        }
    }
    // `file=json:{…}` with its commas not doubled was cut apart above;
    // read it whole as well.
    if let Some(at) = arg.find("json:") {
        json_text_paths(&arg[at + "json:".len()..], out);
    }
}

/// The strings of a JSON text (nested `json:` strings too); when it does not
/// parse, every double-quoted literal in it.
fn json_text_paths(text: &str, out: &mut Vec<String>) {
    let parsed = serde_json::from_str::<Value>(text)
        .or_else(|_| serde_json::from_str::<Value>(&text.replace(",,", ",")));
    match parsed {
        Ok(v) => json_strings(&v, out),
        Err(_) => {
            let mut rest = text;
            while let Some(open) = rest.find('"') {
                let after = &rest[open + 1..];
                let Some(close) = after.find('"') else { break };
                if close > 0 {
                    out.push(after[..close].to_string());
                }
                rest = &after[close + 1..];
            }
        }
    }
}

fn json_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => match s.strip_prefix("json:") {
            Some(inner) => json_text_paths(inner, out),
            None => out.push(s.clone()),
        },
        Value::Object(m) => m.values().for_each(|v| json_strings(v, out)),
        Value::Array(a) => a.iter().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

/// How a file is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Opened as it is (a disk, an ISO, a kernel).
    Direct,
    /// Read through another image: a base, anywhere down a backing chain.
    /// Writing it changes what every overlay on it reads.
    Backing,
}

/// Files in use, each with the sentences naming its users.
#[derive(Debug, Default)]
pub struct References {
    /// (dev, ino) → `VM 'x' uses it`, … (each user once).
    by_inode: HashMap<(u64, u64), Vec<(String, Role)>>,
    /// Existing referenced files, to follow their backing chains.
    files: Vec<(PathBuf, String)>,
}

impl References {
    fn note(&mut self, id: &FileIdentity, user: &str, role: Role) -> bool {
        let users = self.by_inode.entry((id.dev, id.ino)).or_default();
        if users.iter().any(|(u, _)| u == user) {
            return false;
        }
        users.push((user.to_string(), role));
        true
    }

    /// Adds the paths of one QEMU command line. `cwd` is QEMU's working
    /// directory, against which it resolves relative paths (a running
    /// process's own, or the one a defined VM's unit gets); without it
    /// relative paths are skipped.
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

    /// Adds one path (if it exists) a VM opens as it is.
    pub fn add_path(&mut self, p: &Path, user: &str) {
        let Ok(id) = stat_followed(p) else { return };
        if self.note(&id, user, Role::Direct) && p.is_file() {
            self.files.push((p.to_path_buf(), user.to_string()));
        }
    }

    /// Adds a config's `base:`/`backing_file` (if it exists): the image an
    /// overlay reads (also before the overlay exists).
    pub fn add_base(&mut self, p: &Path, user: &str) {
        let Ok(id) = stat_followed(p) else { return };
        if self.note(&id, user, Role::Backing) && p.is_file() {
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
                    self.note(
                        &id,
                        &format!("{user} as a backing file of {}", top.display()),
                        Role::Backing,
                    );
                }
                below = p;
            }
        }
        self.files = files;
    }

    /// Adds every regular file and directory a process of this user has
    /// open (`/proc/PID/fd`), this process and `skip` excepted. `name` gives the
    /// sentence for a process maqet knows (a VM's QEMU); others are named
    /// by PID and command. Processes whose descriptors the kernel does not
    /// show (another user's, or ones that made themselves non-dumpable) are
    /// not seen here.
    ///
    /// A process maqet does not know counts only if a second look finds it
    /// still holding the file: a child caught between its fork and its
    /// exec shows its parent's descriptors for a moment (close-on-exec ones
    /// included), which is no use of the file.
    pub fn add_open_files(&mut self, name: &dyn Fn(u32) -> Option<String>, skip: &[u32]) {
        let first: Vec<_> = open_files()
            .into_iter()
            .filter(|(p, _)| !skip.contains(p))
            .collect();
        // The second look reads only the fds of the processes in question.
        let mut again: HashMap<u32, Vec<FileIdentity>> = HashMap::new();
        for (pid, id) in first {
            let user = match name(pid) {
                Some(known) => known,
                None => {
                    if !again
                        .entry(pid)
                        .or_insert_with(|| files_of(pid))
                        .contains(&id)
                    {
                        continue;
                    }
                    let comm =
                        std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    format!("process {pid} ({}) has it open", comm.trim())
                }
            };
            self.note(&id, &user, Role::Direct);
        }
    }

    /// Who uses the file with this identity, if anyone (every user, `; `
    /// between them).
    pub fn user_of(&self, id: &FileIdentity) -> Option<String> {
        self.by_inode
            .get(&(id.dev, id.ino))
            .filter(|u| !u.is_empty())
            .map(|u| {
                u.iter()
                    .map(|(s, _)| s.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
    }

    /// Who reads the file at `path` as a base or backing file, one
    /// sentence each: writing it would change what they read.
    pub fn backing_users_of_path(&self, path: &Path) -> Vec<String> {
        self.users_with(path, Some(Role::Backing))
    }

    fn users_with(&self, path: &Path, role: Option<Role>) -> Vec<String> {
        let Ok(id) = stat_followed(path) else {
            return Vec::new();
        };
        self.by_inode
            .get(&(id.dev, id.ino))
            .into_iter()
            .flatten()
            .filter(|(_, r)| role.is_none_or(|want| *r == want))
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Who uses the file at `path` (following symlinks), if anyone.
    pub fn user_of_path(&self, path: &Path) -> Option<String> {
        stat_followed(path).ok().and_then(|id| self.user_of(&id))
    }

    /// Each user of the file at `path`, one sentence each.
    pub fn users_of_path(&self, path: &Path) -> Vec<String> {
        self.users_with(path, None)
    }
}

/// The regular files and directories open in the processes this one may
/// inspect (its own user's), by PID; this process is left out.
pub fn open_files() -> Vec<(u32, FileIdentity)> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        out.extend(files_of(pid).into_iter().map(|id| (pid, id)));
    }
    out
}

/// The regular files and directories process `pid` has open (none when
/// its descriptors cannot be read: gone, another user's, non-dumpable).
fn files_of(pid: u32) -> Vec<FileIdentity> {
    use rustix::fs::FileType;
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| stat_followed_found(&fd.path()).ok())
        .filter(|f| matches!(f.file_type, FileType::RegularFile | FileType::Directory))
        .map(|f| f.identity)
        .collect()
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
    fn json_filenames_and_every_option_value_count() {
        // QEMU's own syntax (commas doubled), the same without doubling
        // (refused by QEMU, but still read), and a nested `json:` string.
        let argv = s(&[
            "qemu",
            "-drive",
            r#"file=json:{"driver":"qcow2",,"file":{"driver":"file",,"filename":"/d/j1.qcow2"}},if=virtio"#,
            "-drive",
            r#"file=json:{"driver":"qcow2","file":{"driver":"file","filename":"/d/j2.qcow2"}}"#,
            "-blockdev",
            r#"{"driver":"qcow2","file":"json:{\"driver\":\"file\",\"filename\":\"/d/j3.qcow2\"}","backing":"/d/j4.qcow2"}"#,
            "-device",
            "virtio-blk-pci,drive=d0,id=x,serial=../rel/name.img",
            "-drive",
            "file=../../rel.qcow2,if=none",
        ]);
        let found = argv_paths(&argv);
        for want in [
            "/d/j1.qcow2",
            "/d/j2.qcow2",
            "/d/j3.qcow2",
            "/d/j4.qcow2",
            "../rel/name.img",
            "../../rel.qcow2",
        ] {
            assert!(found.iter().any(|f| f == want), "{want} not in {found:?}");
        }
    }

    #[test]
    fn every_user_of_a_file_is_named_once() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("disk.img"), "").unwrap();
        let mut r = References::default();
        let argv = s(&["qemu", "-hda", "disk.img"]);
        r.add_argv(&argv, Some(d), "VM 'a' uses it");
        r.add_argv(&argv, Some(d), "VM 'a' uses it");
        r.add_base(
            &d.join("disk.img"),
            "VM 'b' uses it as the base of its disk 'root'",
        );
        assert_eq!(
            r.user_of_path(&d.join("disk.img")).as_deref(),
            Some("VM 'a' uses it; VM 'b' uses it as the base of its disk 'root'")
        );
        assert_eq!(r.users_of_path(&d.join("disk.img")).len(), 2);
        assert_eq!(
            r.backing_users_of_path(&d.join("disk.img")),
            ["VM 'b' uses it as the base of its disk 'root'"]
        );
    }

    #[test]
    fn files_open_in_another_process_count() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("held.img");
        std::fs::write(&f, "").unwrap();
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("exec 7<\"$0\"; read x")
            .arg(&f)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let id = stat_path(&f).unwrap().identity;
        // Wait until the shell has opened it (no fixed sleep).
        let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !open_files().iter().any(|(p, i)| *p == pid && *i == id) {
            assert!(std::time::Instant::now() < end, "the child never opened it");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut r = References::default();
        r.add_open_files(
            &|p| (p == pid).then(|| "the test's child has it".to_string()),
            &[],
        );
        assert_eq!(r.user_of(&id).as_deref(), Some("the test's child has it"));
        let mut r = References::default();
        r.add_open_files(&|_| None, &[]);
        assert!(r
            .user_of(&id)
            .is_some_and(|u| u.starts_with(&format!("process {pid} (sh)"))));
        let mut r = References::default();
        r.add_open_files(&|_| None, &[pid]);
        assert_eq!(r.user_of(&id), None);
        drop(child.stdin.take());
        child.wait().unwrap();
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
        use maqet_config::ImageFormat::Qcow2;
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
