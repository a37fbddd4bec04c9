//! Path handling: resolving the paths a config file names against that
//! file's directory (before merging, so each file's relative paths keep
//! meaning what they meant in that file), plus the disk-location policy.

use std::path::{Component, Path, PathBuf};

use super::node::{Node, Value};

/// `arguments` keys whose whole string value is a host file.
const WHOLE_VALUE_KEYS: &[&str] = &["kernel", "initrd", "bios", "pflash", "dtb", "rom"];
/// Prefixes inside option strings after which a host path follows.
const PATH_PREFIXES: &[&str] = &["file=", "path=", "unix:", "socket="];
/// `incoming` takes a migration URI; only these schemes name a host path
/// (`tcp:`, `exec:`, `defer`, … are left alone; the original broke them).
const INCOMING_PREFIXES: &[&str] = &["unix:", "file:"];

/// Resolves, in place, the relative paths of one freshly loaded file (2.5):
/// `storage[].file`/`path`, path-valued `arguments` (not `loadvm`, not
/// nested mappings, not string items), and `binary` when it is a relative
/// path with a `/` (the runner's working directory is not the user's, so a
/// relative binary could otherwise never be found; bare names are looked up
/// in `PATH` at validation). `backing_file` is not touched: it is relative to
/// its overlay.
pub(crate) fn resolve_relative_paths(root: &mut Node, dir: &Path) {
    let Value::Map(entries) = &mut root.value else {
        return;
    };
    for entry in entries.iter_mut() {
        match entry.key.as_str() {
            "binary" => {
                if let Value::Str(s) = &mut entry.value.value {
                    if s.contains('/') {
                        resolve_whole(s, dir);
                    }
                }
            }
            "storage" => {
                if let Value::Seq(items) = &mut entry.value.value {
                    for item in items {
                        resolve_storage_entry(item, dir);
                    }
                }
            }
            "arguments" => {
                if let Value::Seq(items) = &mut entry.value.value {
                    for item in items {
                        resolve_argument(item, dir);
                    }
                }
            }
            // hook: issue 11
            "cloud_init" => resolve_cloud_init(&mut entry.value, dir),
            // issue 19: `~/` and relative share directories
            "shares" => {
                if let Value::Seq(items) = &mut entry.value.value {
                    for item in items {
                        resolve_share(item, dir);
                    }
                }
            }
            _ => {}
        }
    }
}

fn resolve_storage_entry(item: &mut Node, dir: &Path) {
    if let Value::Map(fields) = &mut item.value {
        for f in fields.iter_mut() {
            if f.key == "file" || f.key == "path" || f.key == "base" {
                if let Value::Str(s) = &mut f.value.value {
                    // `base: image:NAME` names a catalog image, not a file.
                    if !(f.key == "base" && s.starts_with(super::IMAGE_PREFIX)) {
                        resolve_whole(s, dir);
                    }
                }
            }
        }
    }
}

/// A share's host directory, in either form (`HOST:TAG[:ro]` or `host:`):
/// `~/` is the home directory, a relative path is relative to the file.
fn resolve_share(item: &mut Node, dir: &Path) {
    let resolve = |host: &str| {
        let mut h = super::shares::expand_home(host).unwrap_or_else(|| host.to_string());
        resolve_whole(&mut h, dir);
        h
    };
    match &mut item.value {
        Value::Str(s) => {
            if let Some((host, tag, ro)) = super::shares::split_short(s) {
                let mode = match ro {
                    Some(true) => ":ro",
                    Some(false) => ":rw",
                    None => "",
                };
                *s = format!("{}:{tag}{mode}", resolve(host));
            }
        }
        Value::Map(fields) => {
            for f in fields.iter_mut() {
                if let ("host", Value::Str(s)) = (f.key.as_str(), &mut f.value.value) {
                    *s = resolve(s);
                }
            }
        }
        _ => {}
    }
}

/// `cloud_init.user_data_file` and the key-file items of
/// `cloud_init.ssh_authorized_keys` (anything that is not a key itself).
fn resolve_cloud_init(node: &mut Node, dir: &Path) {
    let Value::Map(fields) = &mut node.value else {
        return;
    };
    for f in fields.iter_mut() {
        match (f.key.as_str(), &mut f.value.value) {
            ("user_data_file", Value::Str(s)) => resolve_whole(s, dir),
            ("ssh_authorized_keys", Value::Seq(items)) => {
                for item in items {
                    if let Value::Str(s) = &mut item.value {
                        if !super::guest::is_public_key(s) {
                            resolve_whole(s, dir);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn resolve_argument(item: &mut Node, dir: &Path) {
    let Value::Map(entries) = &mut item.value else {
        return; // string items go to QEMU as written
    };
    for (i, e) in entries.iter_mut().enumerate() {
        let key = e.key.trim_start_matches('-');
        // The first entry's value is (part of) the option string itself, so
        // a resolved path is written there with its commas escaped. Values
        // of the other keys are escaped whole when rendered (`k=v`), and
        // `incoming` takes a URI, not an option string.
        let mut quoting = if i == 0 {
            Quoting::OptionText
        } else {
            Quoting::Plain
        };
        let prefixes = match key {
            // A snapshot tag and the kernel command line, not paths.
            "loadvm" | "append" => continue,
            "incoming" => {
                quoting = Quoting::Plain;
                INCOMING_PREFIXES
            }
            k if WHOLE_VALUE_KEYS.contains(&k) => {
                if let Value::Str(s) = &mut e.value.value {
                    resolve_whole(s, dir);
                }
                continue;
            }
            _ => PATH_PREFIXES,
        };
        match &mut e.value.value {
            Value::Str(s) => resolve_prefixed(s, dir, prefixes, quoting),
            // A list value is the same option text split at its commas
            // (`drive: [file=./x.img, if=virtio]`), so it gets the same rule.
            Value::Seq(list) => {
                for n in list {
                    if let Value::Str(s) = &mut n.value {
                        resolve_prefixed(s, dir, prefixes, quoting);
                    }
                }
            }
            _ => {}
        }
    }
}

/// How a resolved path is written back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quoting {
    /// Inside QEMU option text: split at single commas, `,,` is a comma.
    OptionText,
    /// A plain value (escaped later, or not an option string at all).
    Plain,
}

/// Replaces a relative path with `dir/path`, normalized.
fn resolve_whole(s: &mut String, dir: &Path) {
    if !s.is_empty() && !Path::new(s.as_str()).is_absolute() {
        *s = normalize(&dir.join(s.as_str()))
            .to_string_lossy()
            .into_owned();
    }
}

/// In each comma-separated element that starts with one of `prefixes`,
/// resolves the path after the prefix. In option text the path is read
/// and written with QEMU's comma escaping, so a config directory whose
/// name holds a comma cannot split the option.
fn resolve_prefixed(s: &mut String, dir: &Path, prefixes: &[&str], quoting: Quoting) {
    let parts: Vec<&str> = match quoting {
        Quoting::OptionText => maqet_base::qemu_opts::split(s),
        Quoting::Plain => s.split(',').collect(),
    };
    let parts: Vec<String> = parts
        .into_iter()
        .map(|part| {
            for p in prefixes {
                if let Some(rest) = part.strip_prefix(p) {
                    if quoting == Quoting::Plain {
                        let mut path = rest.to_string();
                        resolve_whole(&mut path, dir);
                        return format!("{p}{path}");
                    }
                    let mut path = rest.replace(",,", ",");
                    if Path::new(&path).is_absolute() {
                        return part.to_string();
                    }
                    resolve_whole(&mut path, dir);
                    return format!("{p}{}", maqet_base::qemu_opts::escape(&path));
                }
            }
            part.to_string()
        })
        .collect();
    *s = parts.join(",");
}

/// The path with symlinks resolved, or its lexical form ([`normalize`])
/// when it does not exist: how recorded files and data directories are
/// compared.
pub fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| normalize(p))
}

/// Lexical normalization: drops `.` and folds `..` (like Python's
/// `os.path.normpath`), so `./x` renders as `<dir>/x`.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                // `/..` is `/`; a relative path keeps leading `..`.
                if !out.pop() && !out.has_root() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Directories disk images may not live in (2.4); `/dev/shm` is allowed.
const SYSTEM_DIRS: &[&str] = &[
    "/etc", "/sys", "/proc", "/dev", "/boot", "/root", "/var", "/usr", "/bin", "/sbin", "/lib",
    "/lib64",
];

/// The system directory `path` lies in, if any. Symlinks in the existing
/// part of the path are followed, so a link into `/etc` does not slip past.
pub fn system_dir_of(path: &Path) -> Option<&'static str> {
    let lexical = normalize(path);
    let real = canonical_prefix(&lexical);
    for p in [&lexical, &real] {
        if p.starts_with("/dev/shm") {
            continue;
        }
        if let Some(d) = SYSTEM_DIRS.iter().find(|d| p.starts_with(d)) {
            return Some(d);
        }
    }
    None
}

/// Canonicalizes the longest existing ancestor of `p` and re-appends the rest.
fn canonical_prefix(p: &Path) -> PathBuf {
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            for r in rest.iter().rev() {
                out.push(r);
            }
            return out;
        }
        match (
            existing.file_name().map(|f| f.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::load::parse_str;
    use super::*;

    fn resolved(yaml: &str) -> serde_json::Value {
        let mut n = parse_str(yaml, "t.yaml").unwrap();
        resolve_relative_paths(&mut n, Path::new("/cfg/dir"));
        n.to_json()
    }

    #[test]
    fn storage_paths_resolve() {
        let j = resolved(
            "storage:\n  - {file: images/a.qcow2, backing_file: base.qcow2}\n  - {file: /abs/b.img}\n  - {type: virtfs, path: ./share}\n",
        );
        assert_eq!(j["storage"][0]["file"], "/cfg/dir/images/a.qcow2");
        assert_eq!(j["storage"][0]["backing_file"], "base.qcow2");
        assert_eq!(j["storage"][1]["file"], "/abs/b.img");
        assert_eq!(j["storage"][2]["path"], "/cfg/dir/share");
    }

    #[test]
    fn argument_paths_resolve() {
        let j = resolved(concat!(
            "arguments:\n",
            "  - kernel: ./vmlinuz\n",
            "  - initrd: /boot/initrd\n",
            "  - chardev: socket,id=ser0,path=./devbox-serial.sock,server=on,wait=off\n",
            "  - vnc: unix:./vnc.sock\n",
            "  - drive: \"file=../x.iso,media=cdrom\"\n",
            "  - loadvm: snap1\n",
            "  - incoming: tcp:0:4444\n",
            "  - {incoming: defer}\n",
            "  - {incoming: unix:./mig.sock}\n",
            "  - drive: {file: ./nested}\n",
            "  - \"-drive file=./str\"\n",
            "  - drive: [file=./list.img, if=virtio]\n",
            "  - append: console=ttyS0 root=/dev/vda file=x\n",
        ));
        let a = &j["arguments"];
        assert_eq!(a[0]["kernel"], "/cfg/dir/vmlinuz");
        assert_eq!(a[1]["initrd"], "/boot/initrd");
        assert_eq!(
            a[2]["chardev"],
            "socket,id=ser0,path=/cfg/dir/devbox-serial.sock,server=on,wait=off"
        );
        assert_eq!(a[3]["vnc"], "unix:/cfg/dir/vnc.sock");
        assert_eq!(a[4]["drive"], "file=/cfg/x.iso,media=cdrom");
        assert_eq!(a[5]["loadvm"], "snap1");
        assert_eq!(a[6]["incoming"], "tcp:0:4444");
        assert_eq!(a[7]["incoming"], "defer");
        assert_eq!(a[8]["incoming"], "unix:/cfg/dir/mig.sock");
        assert_eq!(a[9]["drive"]["file"], "./nested");
        assert_eq!(a[10], "-drive file=./str");
        assert_eq!(a[11]["drive"][0], "file=/cfg/dir/list.img");
        // No comma: only a value that *starts* with a prefix is a path.
        assert_eq!(a[12]["append"], "console=ttyS0 root=/dev/vda file=x");
    }

    #[test]
    fn binary_resolution() {
        assert_eq!(resolved("binary: ./qemu\n")["binary"], "/cfg/dir/qemu");
        assert_eq!(
            resolved("binary: qemu-system-x86_64\n")["binary"],
            "qemu-system-x86_64"
        );
    }

    #[test]
    fn args_are_never_resolved() {
        let j = resolved("args: [-kernel, ./vmlinuz, file=./x]\n");
        assert_eq!(j["args"][1], "./vmlinuz");
        assert_eq!(j["args"][2], "file=./x");
    }

    #[test]
    fn normalize_folds_dots() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/../a")), PathBuf::from("/a"));
    }

    #[test]
    fn system_dirs() {
        assert_eq!(system_dir_of(Path::new("/etc/x.qcow2")), Some("/etc"));
        assert_eq!(system_dir_of(Path::new("/var/lib/maqet/x")), Some("/var"));
        assert_eq!(system_dir_of(Path::new("/dev/sda")), Some("/dev"));
        assert_eq!(system_dir_of(Path::new("/dev/shm/x.img")), None);
        assert_eq!(
            system_dir_of(Path::new("/home/u/../../etc/x")),
            Some("/etc")
        );
        assert_eq!(system_dir_of(Path::new("/etcetera/x")), None);
        assert_eq!(system_dir_of(Path::new("/root/x")), Some("/root"));
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        assert_eq!(system_dir_of(&link.join("new/disk.qcow2")), Some("/etc"));
        assert_eq!(system_dir_of(&dir.path().join("disk.qcow2")), None);
    }
}
