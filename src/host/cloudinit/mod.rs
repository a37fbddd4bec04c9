//! cloud-init NoCloud seeds (issue 11): what goes into `user-data`,
//! `meta-data` and `network-config`, a stable instance-id per VM, and
//! rewriting the seed volume only when its content changed.
//!
//! Layout: `DATA_DIR/cloud-init/VM/` holds `cidata.img` (the VFAT volume
//! QEMU gets read-only over virtio-blk), `cidata.sha256` (the content hash
//! it was written from) and `instance-id` (made once, so cloud-init runs
//! its once-per-instance modules once, not on every boot; a clone is a
//! new VM and gets its own).

mod vfat;

use maqet_config::is_public_key;
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::storage::identity::{stat_path, FileIdentity};
use crate::storage::tmp::TempFile;
use maqet_config::CloudInit;

#[derive(Debug, thiserror::Error)]
pub enum CloudInitError {
    #[error("cloud_init: no SSH public key to give the guest: {home}/.ssh has no *.pub file; create one (ssh-keygen -t ed25519) or list keys under cloud_init.ssh_authorized_keys")]
    NoKeys { home: String },
    #[error("cloud_init: cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cloud_init: {} holds no SSH public key", path.display())]
    NotAKey { path: PathBuf },
    #[error(
        "cloud_init: cannot find out who you are (no user name for uid {0}); set cloud_init.user"
    )]
    NoUser(u32),
    #[error("cloud_init: cannot write the seed in {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `DATA_DIR/cloud-init/VM`: the VM's seed directory.
pub fn seed_dir(data_dir: &Path, vm: &str) -> PathBuf {
    data_dir.join("cloud-init").join(vm)
}

/// The seed volume the runner attaches (read-only, virtio-blk).
pub fn seed_image(data_dir: &Path, vm: &str) -> PathBuf {
    seed_dir(data_dir, vm).join("cidata.img")
}

/// The invoking user's name and home directory.
pub fn invoking_user() -> Result<(String, PathBuf), CloudInitError> {
    let uid = rustix::process::getuid().as_raw();
    let account = maqet_base::account::lookup(uid).ok_or(CloudInitError::NoUser(uid))?;
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or(account.home);
    Ok((account.name, home))
}

/// The guest user maqet creates (and `maqet ssh` logs in as).
pub fn guest_user(ci: &CloudInit) -> Result<String, CloudInitError> {
    match &ci.user {
        Some(u) => Ok(u.clone()),
        None => invoking_user().map(|(n, _)| n),
    }
}

/// The `.pub` files the keys come from (the configured ones that are
/// paths, or every `~/.ssh/*.pub`), sorted.
pub fn key_files(ci: &CloudInit) -> Result<Vec<PathBuf>, CloudInitError> {
    if let Some(keys) = &ci.ssh_authorized_keys {
        return Ok(keys
            .iter()
            .filter(|k| !is_public_key(k))
            .map(PathBuf::from)
            .collect());
    }
    let (_, home) = invoking_user()?;
    let ssh = home.join(".ssh");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&ssh)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "pub") && p.is_file())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    if out.is_empty() {
        return Err(CloudInitError::NoKeys {
            home: home.display().to_string(),
        });
    }
    Ok(out)
}

/// Largest `.pub` file read (one holds a few keys of a few hundred bytes).
const MAX_KEY_FILE: u64 = 1 << 20;
/// Largest `user_data_file` (the seed is a small VFAT volume).
const MAX_USER_DATA: u64 = 16 << 20;

/// Every authorized key line, inline ones first, then those of
/// [`key_files`].
pub fn authorized_keys(ci: &CloudInit) -> Result<Vec<String>, CloudInitError> {
    let mut keys: Vec<String> = ci
        .ssh_authorized_keys
        .iter()
        .flatten()
        .filter(|k| is_public_key(k))
        .map(|k| k.trim().to_string())
        .collect();
    for path in key_files(ci)? {
        // Never blocking on a FIFO: this runs at every start, autostart too.
        let text = maqet_base::files::read_regular(&path, MAX_KEY_FILE).map_err(|source| {
            CloudInitError::Read {
                what: "the SSH public key",
                path: path.clone(),
                source,
            }
        })?;
        let found: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| is_public_key(l))
            .map(str::to_string)
            .collect();
        if found.is_empty() {
            return Err(CloudInitError::NotAKey { path });
        }
        keys.extend(found);
    }
    Ok(keys)
}

/// The seed's files, in the order they are hashed and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedFiles {
    pub user_data: String,
    pub meta_data: String,
    pub network_config: Option<String>,
}

impl SeedFiles {
    /// What decides whether the volume must be rewritten.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (name, body) in self.named() {
            h.update(name.as_bytes());
            h.update([0]);
            h.update((body.len() as u64).to_le_bytes());
            h.update(body);
        }
        hex(&h.finalize())
    }

    fn named(&self) -> Vec<(&str, &[u8])> {
        let mut v = vec![
            ("user-data", self.user_data.as_bytes()),
            ("meta-data", self.meta_data.as_bytes()),
        ];
        if let Some(n) = &self.network_config {
            v.push(("network-config", n.as_bytes()));
        }
        v
    }
}

/// A YAML double-quoted scalar.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Builds the seed's files from the config and resolved inputs.
pub fn seed_files(
    ci: &CloudInit,
    user: &str,
    keys: &[String],
    hostname: &str,
    instance_id: &str,
    user_data_file: Option<&str>,
) -> SeedFiles {
    let mut meta = format!("instance-id: {instance_id}\nlocal-hostname: {hostname}\n");
    if !keys.is_empty() {
        meta.push_str("public-keys:\n");
        for k in keys {
            meta.push_str(&format!("  - {}\n", quoted(k)));
        }
    }
    if let Some(extra) = &ci.meta_data {
        meta.push_str(extra);
        if !extra.ends_with('\n') {
            meta.push('\n');
        }
    }
    let user_data = match (&ci.user_data, user_data_file) {
        (Some(u), _) => u.clone(),
        (None, Some(f)) => f.to_string(),
        (None, None) => {
            // `manage_etc_hosts`: the host name resolves (sudo warned
            // "unable to resolve host" without it). The image's default
            // user only when asked for: it would get the keys through
            // meta-data and the distribution's passwordless sudo.
            let default = if ci.default_user { "  - default\n" } else { "" };
            let mut u = format!(
                "#cloud-config\nhostname: {hostname}\nmanage_etc_hosts: true\nusers:\n{default}  - name: {user}\n    \
                 shell: /bin/bash\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    lock_passwd: true\n"
            );
            if !keys.is_empty() {
                u.push_str("    ssh_authorized_keys:\n");
                for k in keys {
                    u.push_str(&format!("      - {}\n", quoted(k)));
                }
            }
            u.push_str(&share_mounts(&ci.share_mounts));
            u
        }
    };
    SeedFiles {
        user_data,
        meta_data: meta,
        network_config: ci.network_config.clone(),
    }
}

/// `bootcmd` lines that mount each virtiofs share at its guest path on
/// every boot. Not cloud-init's `mounts:`: it takes a device name that is
/// not a path for one under /dev and drops the entry when that does not
/// exist (a virtiofs tag is no device). Tags and guest paths are checked
/// at `add` to hold nothing a single-quoted shell word cannot.
fn share_mounts(mounts: &[(String, PathBuf)]) -> String {
    if mounts.is_empty() {
        return String::new();
    }
    let mut out = String::from("bootcmd:\n");
    for (tag, dir) in mounts {
        let dir = dir.display();
        let line = format!(
            "mkdir -p '{dir}' && {{ mountpoint -q '{dir}' || mount -t virtiofs '{tag}' '{dir}'; }}"
        );
        out.push_str(&format!("  - {}\n", quoted(&line)));
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file or directory [`ensure_seed`] made (a new inode): the caller
/// records it as created by maqet, so `rm --delete-storage` removes it by
/// the same rules as a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedFile {
    pub path: PathBuf,
    pub directory: bool,
    pub identity: FileIdentity,
}

/// The VM's instance-id, made (randomly) on first use and kept. A file of
/// another run's making (`owned` says no: a VM of the same name removed
/// without `--delete-storage`) keeps its id but is written anew, so it is
/// this VM's.
fn instance_id(
    dir: &Path,
    owned: &dyn Fn(&Path) -> bool,
    made: &mut Vec<SeedFile>,
) -> Result<String, CloudInitError> {
    let path = dir.join("instance-id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim();
        if !s.is_empty() {
            if !owned(&path) {
                made.push(write_file(&path, s.as_bytes())?);
            }
            return Ok(s.to_string());
        }
    }
    let mut raw = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(|source| CloudInitError::Write {
            path: path.clone(),
            source,
        })?;
    let id = format!("iid-maqet-{}", hex(&raw));
    made.push(write_file(&path, id.as_bytes())?);
    Ok(id)
}

/// Writes `path` whole through a temporary file (storage/tmp.rs) renamed
/// over it, so a killed run never leaves half a file under its name.
fn write_file(path: &Path, bytes: &[u8]) -> Result<SeedFile, CloudInitError> {
    write_with(path, |f| std::io::Write::write_all(f, bytes))
}

fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<SeedFile, CloudInitError> {
    let err = |source| CloudInitError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut t = TempFile::create(path).map_err(err)?;
    fill(t.file()).map_err(err)?;
    let identity = t.replace().map_err(err)?;
    Ok(SeedFile {
        path: path.to_path_buf(),
        directory: false,
        identity,
    })
}

/// What [`ensure_seed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedOutcome {
    pub image: PathBuf,
    /// False when the volume already held this content.
    pub written: bool,
    /// What it made, in order (the directory before its files).
    pub made: Vec<SeedFile>,
}

/// Makes `DATA_DIR/cloud-init/VM/cidata.img` hold the seed for `ci`,
/// rewriting it only when its content changed — or when `owned` says the
/// file there is not this VM's creation (left by an earlier VM of the
/// name): then it is written anew and becomes this VM's.
pub fn ensure_seed(
    data_dir: &Path,
    vm: &str,
    ci: &CloudInit,
    owned: &dyn Fn(&Path) -> bool,
) -> Result<SeedOutcome, CloudInitError> {
    let dir = seed_dir(data_dir, vm);
    let mut made = Vec::new();
    let dir_err = |source| CloudInitError::Write {
        path: dir.clone(),
        source,
    };
    if !dir.is_dir() {
        if let Some(all) = dir.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(all)
                .map_err(dir_err)?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => made.push(SeedFile {
                path: dir.clone(),
                directory: true,
                identity: stat_path(&dir).map_err(dir_err)?.identity,
            }),
            // Made meanwhile by a concurrent start of the VM: not ours.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(dir_err(e)),
        }
    }
    let user = guest_user(ci)?;
    let keys = authorized_keys(ci)?;
    let file_text =
        match &ci.user_data_file {
            Some(p) => Some(maqet_base::files::read_regular(p, MAX_USER_DATA).map_err(
                |source| CloudInitError::Read {
                    what: "user_data_file",
                    path: p.clone(),
                    source,
                },
            )?),
            None => None,
        };
    let hostname = ci.hostname.clone().unwrap_or_else(|| hostname_of(vm));
    let files = seed_files(
        ci,
        &user,
        &keys,
        &hostname,
        &instance_id(&dir, owned, &mut made)?,
        file_text.as_deref(),
    );
    let digest = files.digest();
    let image = dir.join("cidata.img");
    let stamp = dir.join("cidata.sha256");
    let unchanged = image.is_file()
        && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == digest)
        && owned(&image)
        && owned(&stamp);
    if unchanged {
        return Ok(SeedOutcome {
            image,
            written: false,
            made,
        });
    }
    made.push(write_with(&image, |f| {
        vfat::write_volume(f, &files.named())
    })?);
    made.push(write_file(&stamp, digest.as_bytes())?);
    Ok(SeedOutcome {
        image,
        written: true,
        made,
    })
}

/// A VM name as a host name: characters a host name cannot hold become `-`.
pub fn hostname_of(vm: &str) -> String {
    let s: String = vm
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    s.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample me@host";

    fn ci(keys: &[&str]) -> CloudInit {
        CloudInit {
            ssh_authorized_keys: Some(keys.iter().map(|s| s.to_string()).collect()),
            user: Some("alice".into()),
            ..Default::default()
        }
    }

    #[test]
    fn keys_and_paths_are_told_apart() {
        assert!(is_public_key(KEY));
        assert!(!is_public_key("/home/a/.ssh/id.pub"));
        assert!(!is_public_key("ssh-only-no-space"));
    }

    #[test]
    fn default_user_data_creates_the_user_with_keys() {
        let f = seed_files(&ci(&[KEY]), "alice", &[KEY.into()], "vm1", "iid-1", None);
        assert!(f.user_data.starts_with("#cloud-config\n"));
        assert!(f.user_data.contains("  - name: alice\n"));
        assert!(f.user_data.contains(&format!("      - \"{KEY}\"\n")));
        // The host name resolves (sudo's "unable to resolve host").
        assert!(f.user_data.contains("\nmanage_etc_hosts: true\n"));
        // One account, yours: the image's default user only when asked.
        assert!(!f.user_data.contains("  - default\n"), "{}", f.user_data);
        let mut c = ci(&[KEY]);
        c.default_user = true;
        let f = seed_files(&c, "alice", &[KEY.into()], "vm1", "iid-1", None);
        assert!(f
            .user_data
            .contains("users:\n  - default\n  - name: alice\n"));
        assert!(f.meta_data.contains("instance-id: iid-1\n"));
        assert!(f.meta_data.contains("local-hostname: vm1\n"));
        assert_eq!(f.network_config, None);
    }

    #[test]
    fn shares_are_mounted_on_every_boot() {
        let mut c = ci(&[KEY]);
        c.share_mounts = vec![("src".into(), "/home/alice/src".into())];
        let f = seed_files(&c, "alice", &[KEY.into()], "vm1", "iid-1", None);
        assert!(
            f.user_data.ends_with("bootcmd:\n  - \"mkdir -p '/home/alice/src' && { mountpoint -q '/home/alice/src' || mount -t virtiofs 'src' '/home/alice/src'; }\"\n"),
            "{}",
            f.user_data
        );
        c.share_mounts.clear();
        let f = seed_files(&c, "alice", &[KEY.into()], "vm1", "iid-1", None);
        assert!(!f.user_data.contains("bootcmd"));
    }

    #[test]
    fn explicit_user_data_is_used_as_written() {
        let mut c = ci(&[KEY]);
        c.user_data = Some("#cloud-config\nruncmd: [true]\n".into());
        c.meta_data = Some("foo: bar".into());
        let f = seed_files(&c, "alice", &[KEY.into()], "h", "iid-1", None);
        assert_eq!(f.user_data, "#cloud-config\nruncmd: [true]\n");
        assert!(f.meta_data.ends_with("foo: bar\n"));
        // The keys still reach the distribution's default user.
        assert!(f.meta_data.contains("public-keys:\n"));
    }

    #[test]
    fn digest_follows_content() {
        let a = seed_files(&ci(&[KEY]), "alice", &[KEY.into()], "h", "iid-1", None);
        let mut b = a.clone();
        assert_eq!(a.digest(), b.digest());
        b.network_config = Some("version: 2\n".into());
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn seed_is_rewritten_only_when_changed_and_keeps_its_instance_id() {
        let d = tempfile::tempdir().unwrap();
        let mut c = ci(&[KEY]);
        let mine = std::cell::RefCell::new(Vec::<PathBuf>::new());
        let owned = |p: &Path| mine.borrow().iter().any(|m| m == p);
        let first = ensure_seed(d.path(), "vm", &c, &owned).unwrap();
        assert!(first.written);
        let dir = seed_dir(d.path(), "vm");
        let made: Vec<(PathBuf, bool)> = first
            .made
            .iter()
            .map(|f| (f.path.clone(), f.directory))
            .collect();
        assert_eq!(
            made,
            [
                (dir.clone(), true),
                (dir.join("instance-id"), false),
                (dir.join("cidata.img"), false),
                (dir.join("cidata.sha256"), false),
            ]
        );
        mine.borrow_mut()
            .extend(first.made.iter().map(|f| f.path.clone()));
        let id = std::fs::read_to_string(dir.join("instance-id")).unwrap();
        assert!(id.starts_with("iid-maqet-"), "{id}");
        let again = ensure_seed(d.path(), "vm", &c, &owned).unwrap();
        assert!(!again.written && again.made.is_empty(), "{again:?}");
        c.hostname = Some("other".into());
        let changed = ensure_seed(d.path(), "vm", &c, &owned).unwrap();
        assert!(changed.written);
        assert_eq!(changed.made.len(), 2, "{changed:?}");
        let id2 = std::fs::read_to_string(dir.join("instance-id")).unwrap();
        assert_eq!(id, id2);
        // Another VM (a clone) gets another instance-id.
        ensure_seed(d.path(), "vm2", &c, &owned).unwrap();
        let id3 = std::fs::read_to_string(seed_dir(d.path(), "vm2").join("instance-id")).unwrap();
        assert_ne!(id, id3);
        // Files left by an earlier VM of the name: the same id, written
        // anew (new inodes) so they become this VM's; no temporary file left.
        let before = stat_path(&dir.join("instance-id")).unwrap().identity;
        let adopted = ensure_seed(d.path(), "vm", &c, &|_| false).unwrap();
        assert!(adopted.written);
        assert_eq!(adopted.made.len(), 3, "{adopted:?}");
        assert_eq!(
            std::fs::read_to_string(dir.join("instance-id")).unwrap(),
            id
        );
        assert!(!before.matches(&stat_path(&dir.join("instance-id")).unwrap().identity));
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn key_file_without_key_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.pub");
        std::fs::write(&p, "not a key\n").unwrap();
        let c = ci(&[p.to_str().unwrap()]);
        assert!(matches!(
            authorized_keys(&c),
            Err(CloudInitError::NotAKey { .. })
        ));
    }

    #[test]
    fn host_names_from_vm_names() {
        assert_eq!(hostname_of("web_1"), "web-1");
        assert_eq!(hostname_of("a.b"), "a-b");
    }
}
