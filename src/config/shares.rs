//! `shares:` — host directories the guest mounts over virtiofs, each served
//! by its own virtiofsd (a companion unit, `maqet_host::companion::virtiofs`).
//! Checked at `add`: the directory exists and is one, tags are unique
//! (also against 9p `virtfs` mount tags) and fit the unit name, virtiofsd
//! is installed, and nothing else in the config sets up guest memory
//! (virtiofs needs maqet's shared memory backend).

use std::path::{Path, PathBuf};

use super::error::Location;
use super::node::{Node, Value};
use super::schema::VmConfig;
use super::validate::{found, Validator};
use maqet_base::suggest;

/// virtio-fs's tag field is 36 bytes.
pub const MAX_TAG_LEN: usize = 36;

/// QEMU's RAM when nothing sets it (x86 machines): the shared backend must
/// have exactly the guest's size.
pub const QEMU_DEFAULT_MEMORY: u64 = 128 << 20;

const SHARE_KEYS: &[&str] = &["host", "tag", "readonly", "guest"];

/// One `shares:` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The host directory (absolute).
    pub host: PathBuf,
    /// What the guest mounts: `mount -t virtiofs TAG DIR`.
    pub tag: String,
    pub readonly: bool,
    /// Where cloud-init mounts it in the guest (maqet's own user-data).
    pub guest: Option<PathBuf>,
    pub location: Location,
}

/// `shares:` resolved: the items, and the virtiofsd that serves them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shares {
    pub list: Vec<Share>,
    /// Found at validation (None without shares).
    pub virtiofsd: Option<PathBuf>,
}

impl Shares {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Expands a leading `~` or `~/` to the home directory (only the caller's
/// own; `~user` is left alone and then refused as relative).
pub(crate) fn expand_home(s: &str) -> Option<String> {
    let rest = if s == "~" { "" } else { s.strip_prefix("~/")? };
    let home = PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?);
    let path = if rest.is_empty() {
        home
    } else {
        home.join(rest)
    };
    Some(path.to_string_lossy().into_owned())
}

/// `HOST:TAG` or `HOST:TAG:ro|rw` → (host, tag, readonly). Host paths may
/// hold ':'; tags may not, so the tag is the last part.
pub(crate) fn split_short(s: &str) -> Option<(&str, &str, Option<bool>)> {
    let (rest, readonly) = match s.rsplit_once(':') {
        Some((r, "ro")) => (r, Some(true)),
        Some((r, "rw")) => (r, Some(false)),
        _ => (s, None),
    };
    let (host, tag) = rest.rsplit_once(':')?;
    Some((host, tag, readonly))
}

/// Why `tag` cannot be a share's tag, or None. It is the instance of the
/// unit `maqet-fs@VM-TAG`, so no '-' (the last one separates the VM's name,
/// which may hold '-', from the tag) and nothing systemd would escape.
pub fn tag_problem(tag: &str) -> Option<String> {
    if tag.is_empty() || tag.len() > MAX_TAG_LEN {
        return Some(format!(
            "a tag is 1 to {MAX_TAG_LEN} bytes (virtio-fs's limit)"
        ));
    }
    if tag.starts_with('.')
        || !tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    {
        return Some(
            "a tag is letters, digits, '_' and '.', not starting with '.' (no '-': it names the unit maqet-fs@VM-TAG)".into(),
        );
    }
    None
}

pub(crate) fn validate(v: &mut Validator, node: &Node) -> Vec<Share> {
    let Some(items) = node.as_seq() else {
        v.error(
            &node.loc,
            format!(
                "shares: expected a list such as ['~/src:src'] or [{{host: ~/src, tag: src}}], {}",
                found(node)
            ),
        );
        return Vec::new();
    };
    if items.len() > maqet_base::paths::MAX_SHARES {
        v.error(
            &node.loc,
            format!(
                "shares: at most {} shares per VM, found {}",
                maqet_base::paths::MAX_SHARES,
                items.len()
            ),
        );
        return Vec::new();
    }
    let mut out: Vec<Share> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = format!("shares[{i}]");
        let Some(share) = item_share(v, item, &key) else {
            continue;
        };
        if let Some(o) = out.iter().find(|o| o.tag == share.tag) {
            v.error(
                &item.loc,
                format!(
                    "{key}: tag '{}' is already the tag of the share of {} ({}); every share needs its own tag",
                    share.tag,
                    o.host.display(),
                    o.location
                ),
            );
            continue;
        }
        out.push(share);
    }
    out
}

fn item_share(v: &mut Validator, item: &Node, key: &str) -> Option<Share> {
    let (host, tag, readonly, guest, tag_loc) = match &item.value {
        Value::Str(s) => {
            let Some((host, tag, ro)) = split_short(s) else {
                v.error(
                    &item.loc,
                    format!("{key}: '{s}' is not HOST:TAG or HOST:TAG:ro (e.g. '~/src:src')"),
                );
                return None;
            };
            let host = expand_home(host).unwrap_or_else(|| host.to_string());
            (
                (host, item.loc.clone()),
                tag.to_string(),
                ro.unwrap_or(false),
                None,
                item.loc.clone(),
            )
        }
        Value::Map(entries) => {
            let (mut host, mut tag, mut readonly, mut guest) = (None, None, false, None);
            let mut tag_loc = item.loc.clone();
            for e in entries {
                let k = format!("{key}.{}", e.key);
                let n = &e.value;
                match e.key.as_str() {
                    "host" => {
                        host = v
                            .string(n, &k)
                            .map(|s| (expand_home(&s).unwrap_or(s), n.loc.clone()))
                    }
                    "tag" => {
                        tag = v.text(n, &k);
                        tag_loc = n.loc.clone();
                    }
                    "readonly" => readonly = v.boolean(n, &k).unwrap_or(false),
                    "guest" => guest = v.string(n, &k).and_then(|s| guest_path(v, n, &k, &s)),
                    other => v.error(
                        &e.key_loc,
                        format!("unknown key '{k}'{}", suggest::hint(other, SHARE_KEYS)),
                    ),
                }
            }
            let Some(host) = host else {
                v.error(
                    &item.loc,
                    format!("{key}: a share needs 'host' (the directory to share)"),
                );
                return None;
            };
            let Some(tag) = tag else {
                v.error(
                    &item.loc,
                    format!("{key}: a share needs 'tag' (the name the guest mounts it by)"),
                );
                return None;
            };
            (host, tag, readonly, guest, tag_loc)
        }
        _ => {
            v.error(
                &item.loc,
                format!(
                    "{key}: expected 'HOST:TAG' or a mapping with host and tag, {}",
                    found(item)
                ),
            );
            return None;
        }
    };
    if let Some(p) = tag_problem(&tag) {
        v.error(&tag_loc, format!("{key}: tag '{tag}': {p}"));
        return None;
    }
    let (host, host_loc) = host;
    let path = PathBuf::from(&host);
    if !path.is_absolute() {
        v.error(
            &host_loc,
            format!("{key}: '{host}' must be an absolute path or start with ~/ (paths in a config file are resolved against its directory)"),
        );
        return None;
    }
    let path = super::paths::normalize(&path);
    match std::fs::metadata(&path) {
        Err(e) => {
            v.error(
                &host_loc,
                format!(
                    "{key}: {}: {e}; a share's directory must exist (create it first)",
                    path.display()
                ),
            );
            return None;
        }
        Ok(m) if !m.is_dir() => {
            v.error(
                &host_loc,
                format!("{key}: {} is not a directory; a share is a directory (a file goes to the guest as a disk under storage:)", path.display()),
            );
            return None;
        }
        Ok(_) if !maqet_base::programs::is_readable(&path) => {
            v.error(
                &host_loc,
                format!("{key}: {} is not readable by you", path.display()),
            );
            return None;
        }
        Ok(_) => {}
    }
    Some(Share {
        host: path,
        tag,
        readonly,
        guest,
        location: item.loc.clone(),
    })
}

/// A guest mount point goes into a shell line of the cloud-init seed:
/// absolute, and none of the characters that would need quoting there.
fn guest_path(v: &mut Validator, n: &Node, key: &str, s: &str) -> Option<PathBuf> {
    let ok = s.starts_with('/')
        && s.len() <= 4096
        && !s
            .chars()
            .any(|c| c.is_control() || matches!(c, '\'' | '"' | '\\' | '`' | '$'));
    if !ok {
        v.error(
            &n.loc,
            format!("{key}: '{s}' is not an absolute guest path without quotes, '\\', '`', '$' or control characters"),
        );
        return None;
    }
    Some(super::paths::normalize(Path::new(s)))
}

/// What else in the config sets up guest memory, which the shared backend
/// virtiofs needs would clash with (QEMU would refuse or the guest would
/// get memory virtiofsd cannot map).
fn memory_setup(cfg: &VmConfig) -> Option<String> {
    for a in &cfg.arguments {
        let value = a.argv.get(1).map(String::as_str).unwrap_or("");
        let clash = match a.option.as_str() {
            "numa" | "mem-path" | "mem-prealloc" => true,
            "object" => value.starts_with("memory-backend"),
            "machine" => value.contains("memory-backend="),
            _ => false,
        };
        if clash {
            return Some(format!("arguments[{}] '{}'", a.index, a.argv.join(" ")));
        }
    }
    let mut prev = "";
    for a in &cfg.args {
        let opt = a.trim_start_matches('-');
        let is_opt = a.starts_with('-');
        if (is_opt && matches!(opt, "numa" | "mem-path" | "mem-prealloc" | "m"))
            || ((prev == "-object" || prev == "--object") && a.starts_with("memory-backend"))
            || a.contains("memory-backend=")
        {
            return Some(format!("args '{a}'"));
        }
        prev = a;
    }
    None
}

/// Checks that need the whole config: the memory setup, 9p tag clashes,
/// and virtiofsd on this host.
pub(crate) fn resolve(v: &mut Validator, cfg: &mut VmConfig, loc: Option<&Location>) {
    let Some(loc) = loc else { return };
    if cfg.shares.list.is_empty() {
        return;
    }
    if let Some(what) = memory_setup(cfg) {
        v.error(
            loc,
            format!("shares: virtiofs needs the guest's memory in maqet's shared memory backend, but the config sets up memory itself ({what}); give the size with `memory:` and remove that option"),
        );
    }
    for s in &cfg.shares.list {
        let clash = cfg
            .storage
            .iter()
            .filter_map(|e| e.virtfs.as_ref().map(|f| (e.index, f)))
            .find(|(_, f)| f.mount_tag == s.tag);
        if let Some((i, _)) = clash {
            v.error(
                &s.location,
                format!("shares: tag '{}' is also the mount_tag of the 9p share storage[{i}]; give each share its own tag", s.tag),
            );
        }
    }
    let mounts: Vec<(String, PathBuf)> = cfg
        .shares
        .list
        .iter()
        .filter_map(|s| s.guest.clone().map(|g| (s.tag.clone(), g)))
        .collect();
    if let Some(ci) = &mut cfg.guest.cloud_init {
        let own_user_data = ci.user_data.is_some() || ci.user_data_file.is_some();
        if own_user_data && !mounts.is_empty() {
            v.warn(
                loc,
                "shares: the guest: paths are mounted by maqet's own user-data, but cloud_init gives its own (user_data/user_data_file, used as written); mount them there (mount -t virtiofs TAG DIR)",
            );
        }
        ci.share_mounts = mounts;
    } else if let Some(s) = cfg.shares.list.iter().find(|s| s.guest.is_some()) {
        v.warn(
            &s.location,
            "shares: 'guest:' is where cloud-init mounts the share, and this VM has no cloud_init; mount it in the guest yourself (mount -t virtiofs TAG DIR)",
        );
    }
    match maqet_base::programs::find_virtiofsd() {
        Ok(p) => cfg.shares.virtiofsd = Some(p),
        Err(e) => v.error(loc, format!("shares: {e}")),
    }
}

/// The size of the shared memory backend: exactly the guest's RAM.
pub fn memory_size(cfg: &VmConfig) -> u64 {
    cfg.memory_bytes.unwrap_or(QEMU_DEFAULT_MEMORY)
}

/// QEMU's side of the shares: the guest's RAM in a shared memfd (virtiofsd
/// maps the guest's buffers), then one vhost-user-fs device per share on
/// its socket. No `--tag` for virtiofsd: the device carries the tag.
pub fn qemu_args(shares: &[Share], memory: u64, runtime_dir: &Path) -> Vec<String> {
    if shares.is_empty() {
        return Vec::new();
    }
    let mut argv = vec![
        "-object".to_string(),
        format!("memory-backend-memfd,id=maqet-mem,size={memory},share=on"),
        "-machine".to_string(),
        "memory-backend=maqet-mem".to_string(),
    ];
    for (i, s) in shares.iter().enumerate() {
        let socket = maqet_base::paths::share_socket(runtime_dir, i);
        argv.extend([
            "-chardev".to_string(),
            format!(
                "socket,id=maqet-fs{i},path={}",
                maqet_base::qemu_opts::escape(&socket.to_string_lossy())
            ),
            "-device".to_string(),
            format!("vhost-user-fs-pci,chardev=maqet-fs{i},tag={}", s.tag),
        ]);
    }
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_form() {
        assert_eq!(split_short("/a:src"), Some(("/a", "src", None)));
        assert_eq!(
            split_short("/a:b:src:ro"),
            Some(("/a:b", "src", Some(true)))
        );
        assert_eq!(split_short("/a:src:rw"), Some(("/a", "src", Some(false))));
        assert_eq!(split_short("/a"), None);
    }

    #[test]
    fn tags() {
        assert!(tag_problem("src").is_none());
        assert!(tag_problem("my_src.2").is_none());
        assert!(tag_problem("my-src").unwrap().contains("no '-'"));
        assert!(tag_problem("").is_some());
        assert!(tag_problem(&"x".repeat(37)).unwrap().contains("36"));
        assert!(tag_problem(".x").is_some());
    }

    #[test]
    fn home() {
        let home = std::env::var("HOME").unwrap();
        assert_eq!(expand_home("~/src").unwrap(), format!("{home}/src"));
        assert_eq!(expand_home("~").unwrap(), home);
        assert_eq!(expand_home("~bob/x"), None);
        assert_eq!(expand_home("/x"), None);
    }

    #[test]
    fn qemu_side() {
        let s = |tag: &str| Share {
            host: "/h".into(),
            tag: tag.into(),
            readonly: false,
            guest: None,
            location: Location::default(),
        };
        assert!(qemu_args(&[], 1, Path::new("/r")).is_empty());
        let a = qemu_args(&[s("a"), s("b")], 256 << 20, Path::new("/r,x"));
        assert_eq!(
            a,
            vec![
                "-object",
                "memory-backend-memfd,id=maqet-mem,size=268435456,share=on",
                "-machine",
                "memory-backend=maqet-mem",
                "-chardev",
                "socket,id=maqet-fs0,path=/r,,x/fs0.sock",
                "-device",
                "vhost-user-fs-pci,chardev=maqet-fs0,tag=a",
                "-chardev",
                "socket,id=maqet-fs1,path=/r,,x/fs1.sock",
                "-device",
                "vhost-user-fs-pci,chardev=maqet-fs1,tag=b",
            ]
        );
    }
}
