//! Validation of `storage` entries (2.4) into [`StorageEntry`] values.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::argv::kv_parts;
use super::error::Location;
use super::node::{Entry, Node, Value};
use super::paths;
use super::schema::{
    ImageFormat, Interface, SecurityModel, StorageEntry, StorageKind, Virtfs, DEFAULT_DISK_SIZE,
};
use super::size::parse_size;
use super::validate::{found, Validator};
use maqet_base::suggest;

/// The keys of a disk image entry; `maqet storage attach SPEC` takes the
/// same ones.
pub(super) const DISK_ENTRY_FIELDS: &[&str] = &[
    "name",
    "type",
    "file",
    "size",
    "interface",
    "backing_file",
    "backing_format",
    "base",
    "sha256",
    "readonly",
];
/// The keys only a virtfs entry takes.
const VIRTFS_ONLY_FIELDS: &[&str] = &["path", "options"];
/// Fields that only mean something for disk images.
const DISK_FIELDS: &[&str] = &[
    "file",
    "size",
    "interface",
    "backing_file",
    "backing_format",
    "base",
    "sha256",
];
/// virtfs settings that belong under `options:`.
const VIRTFS_OPTIONS: &[&str] = &["mount_tag", "security_model", "readonly", "id"];
const INTERFACES: &str = "ide, none, sata, scsi, virtio";
const SECURITY_MODELS: &str = "mapped-file, mapped-xattr, none, passthrough";
/// Ports of the AHCI controller maqet adds for `interface: sata`.
const AHCI_PORTS: usize = 6;

/// Validates the `storage` list; errors go to `v`.
pub(crate) fn validate_storage(v: &mut Validator, node: &Node) -> Vec<StorageEntry> {
    let Some(items) = node.as_seq() else {
        v.error(
            &node.loc,
            format!(
                "storage: expected a list of entries (start each with '- '), {}",
                found(node)
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut names: HashMap<String, (usize, Location)> = HashMap::new();
    let mut sata = 0usize;
    for (i, item) in items.iter().enumerate() {
        let Some(entry) = validate_entry(v, i, item) else {
            continue;
        };
        if let Some((first, loc)) = names.get(&entry.name) {
            v.error(
                &name_loc(item),
                format!(
                    "storage[{i}].name: duplicate storage name '{}' (first used by storage[{first}] at {loc}); names must be unique",
                    entry.name
                ),
            );
        } else {
            names.insert(entry.name.clone(), (i, name_loc(item)));
        }
        if entry.interface == Interface::Sata && entry.virtfs.is_none() {
            sata += 1;
            if sata > AHCI_PORTS {
                v.error(
                    &item.loc,
                    format!("storage[{i}].interface: at most {AHCI_PORTS} sata disks fit on one AHCI controller; use virtio or scsi for the others"),
                );
            }
        }
        out.push(entry);
    }
    out
}

fn name_loc(item: &Node) -> Location {
    item.get("name")
        .map(|n| n.loc.clone())
        .unwrap_or_else(|| item.loc.clone())
}

fn field<'a>(fields: &'a [Entry], key: &str) -> Option<&'a Node> {
    fields
        .iter()
        .find(|e| e.key == key)
        .map(|e| &e.value)
        .filter(|n| !n.is_null())
}

fn validate_entry(v: &mut Validator, i: usize, item: &Node) -> Option<StorageEntry> {
    let Some(fields) = item.as_map() else {
        v.error(
            &item.loc,
            format!(
                "storage[{i}]: expected a mapping such as '{{name: hdd, size: 10G}}', {}",
                found(item)
            ),
        );
        return None;
    };
    let errors_before = v.errors.len();
    let kind = match field(fields, "type") {
        None => StorageKind::Qcow2,
        Some(n) => match v.string(n, &format!("storage[{i}].type"))?.as_str() {
            "qcow2" => StorageKind::Qcow2,
            "raw" => StorageKind::Raw,
            "virtfs" => StorageKind::Virtfs,
            other => {
                v.error(
                    &n.loc,
                    format!("storage[{i}].type: unknown type '{other}' (supported: qcow2, raw, virtfs; attach a CD-ROM through arguments, e.g. - drive: \"file=x.iso,media=cdrom\")"),
                );
                return None;
            }
        },
    };
    for e in fields {
        let k = e.key.as_str();
        // A disk's `readonly` is its own; a share's belongs under `options:`.
        if VIRTFS_OPTIONS.contains(&k) && !(k == "readonly" && kind != StorageKind::Virtfs) {
            // The original silently ignored a top-level mount_tag.
            v.error(
                &e.key_loc,
                format!("storage[{i}]: '{k}' belongs under 'options:' of a virtfs entry (options: {{{k}: …}})"),
            );
        } else if !DISK_ENTRY_FIELDS.contains(&k) && !VIRTFS_ONLY_FIELDS.contains(&k) {
            v.error(
                &e.key_loc,
                format!(
                    "storage[{i}]: unknown field '{k}'{}",
                    suggest::hint(k, &[DISK_ENTRY_FIELDS, VIRTFS_ONLY_FIELDS].concat())
                ),
            );
        } else if kind == StorageKind::Virtfs && DISK_FIELDS.contains(&k) {
            v.error(
                &e.key_loc,
                format!("storage[{i}].{k}: not used by virtfs entries (they share the directory given in 'path')"),
            );
        } else if kind != StorageKind::Virtfs && VIRTFS_ONLY_FIELDS.contains(&k) {
            let hint = if k == "path" {
                "a disk image takes its location from 'file'"
            } else {
                "options are for virtfs entries"
            };
            v.error(
                &e.key_loc,
                format!("storage[{i}].{k}: only virtfs entries have '{k}'; {hint}"),
            );
        }
    }
    let name = match field(fields, "name") {
        None => format!("storage{i}"),
        Some(n) => {
            let s = v.text(n, &format!("storage[{i}].name"))?;
            if s.is_empty()
                || s.len() > 64
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                v.error(
                    &n.loc,
                    format!("storage[{i}].name: '{s}' must be 1 to 64 letters, digits, '.', '_' or '-' (it names the disk file and the QEMU drive)"),
                );
            }
            s
        }
    };
    let mut entry = StorageEntry {
        index: i,
        name,
        kind,
        file: None,
        size: None,
        size_text: None,
        interface: Interface::Virtio,
        backing_file: None,
        backing_format: None,
        base_sha256: None,
        readonly: false,
        virtfs: None,
        location: item.loc.clone(),
    };
    if kind == StorageKind::Virtfs {
        entry.virtfs = validate_virtfs(v, i, fields, item, &entry.name);
    } else {
        validate_disk(v, i, fields, &mut entry);
    }
    (v.errors.len() == errors_before).then_some(entry)
}

/// An absolute path value (relative ones were resolved at load; one that
/// is still relative came from a label such as a flag).
fn abs_path(v: &mut Validator, n: &Node, key: &str) -> Option<PathBuf> {
    let s = v.string(n, key)?;
    if s.is_empty() {
        v.error(&n.loc, format!("{key}: must not be empty"));
        return None;
    }
    let p = PathBuf::from(&s);
    if !p.is_absolute() {
        v.error(
            &n.loc,
            format!("{key}: '{s}' must be an absolute path here (only paths written in a config file are resolved against its directory)"),
        );
        return None;
    }
    Some(paths::normalize(&p))
}

fn validate_disk(v: &mut Validator, i: usize, fields: &[Entry], entry: &mut StorageEntry) {
    if let Some(n) = field(fields, "readonly") {
        entry.readonly = v
            .boolean(n, &format!("storage[{i}].readonly"))
            .unwrap_or(false);
    }
    if let Some(n) = field(fields, "file") {
        let key = format!("storage[{i}].file");
        if let Some(p) = abs_path(v, n, &key) {
            if let Some(dir) = paths::system_dir_of(&p) {
                v.error(
                    &n.loc,
                    format!("{key}: {} is in the system directory {dir}; keep disk images under your home or maqet's data directory", p.display()),
                );
            } else if let Some(e) = maqet_base::files::not_regular(&p, true) {
                // QEMU and qemu-img would block opening a FIFO or read a device.
                v.error(
                    &n.loc,
                    format!(
                        "{key}: {} is {}, not a disk image (a regular file or a block device)",
                        p.display(),
                        e.kind
                    ),
                );
            }
            entry.file = Some(p);
        }
    }
    if let Some(n) = field(fields, "interface") {
        let key = format!("storage[{i}].interface");
        if let Some(s) = v.string(n, &key) {
            entry.interface = match s.as_str() {
                "virtio" => Interface::Virtio,
                "ide" => Interface::Ide,
                "sata" => Interface::Sata,
                "scsi" => Interface::Scsi,
                "none" => Interface::None,
                other => {
                    v.error(
                        &n.loc,
                        format!("{key}: invalid interface '{other}' (valid: {INTERFACES})"),
                    );
                    Interface::Virtio
                }
            };
        }
    }
    if let Some(n) = field(fields, "size") {
        let key = format!("storage[{i}].size");
        let text = match &n.value {
            Value::Int(_) | Value::Str(_) => n.scalar_text(),
            _ => v.string(n, &key),
        };
        if let Some(t) = text {
            match parse_size(&t) {
                Ok(0) => v.error(&n.loc, format!("{key}: must be greater than zero")),
                Ok(b) => {
                    entry.size = Some(b);
                    entry.size_text = Some(t);
                }
                Err(err) => v.error(&n.loc, format!("{key}: {err}")),
            }
        }
    }
    // `base:` (issue 11) is a backing file resolved against the config
    // file's directory like `file:`, so an overlay always finds it.
    let base = field(fields, "base");
    if let (Some(n), Some(_)) = (base, field(fields, "backing_file")) {
        v.error(
            &n.loc,
            format!("storage[{i}].base: give base or backing_file, not both"),
        );
    }
    let backing = base.or_else(|| field(fields, "backing_file"));
    if let Some(n) = field(fields, "sha256") {
        let key = format!("storage[{i}].sha256");
        if base.is_none() {
            v.error(&n.loc, format!("{key}: given without a base"));
        } else if let Some(s) = v.string(n, &key) {
            let lower = s.to_ascii_lowercase();
            let hex = lower.strip_prefix("sha256:").unwrap_or(&lower).to_string();
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                entry.base_sha256 = Some(hex);
            } else {
                v.error(
                    &n.loc,
                    format!(
                        "{key}: expected 64 hexadecimal digits (as sha256sum prints), found '{s}'"
                    ),
                );
            }
        }
    }
    if let Some(n) = field(fields, "backing_format") {
        let key = format!("storage[{i}].backing_format");
        if backing.is_none() {
            v.error(
                &n.loc,
                format!("{key}: given without a base or backing_file"),
            );
        } else if let Some(s) = v.string(n, &key) {
            entry.backing_format = match s.as_str() {
                "qcow2" => Some(ImageFormat::Qcow2),
                "raw" => Some(ImageFormat::Raw),
                other => {
                    v.error(
                        &n.loc,
                        format!("{key}: invalid format '{other}' (valid: qcow2, raw)"),
                    );
                    None
                }
            };
        }
    }
    // Errors name the key the user wrote.
    let written = if base.is_some() {
        "base"
    } else {
        "backing_file"
    };
    match backing {
        Some(n) if n.as_str().is_some_and(|s| s.starts_with(super::IMAGE_PREFIX)) => v.error(
            &n.loc,
            format!(
                "storage[{i}].base: '{}' names a catalog image, which `maqet add`, `apply` and `launch` resolve to a file; here a file path is needed",
                n.as_str().unwrap_or_default()
            ),
        ),
        Some(n) => validate_backing(v, i, written, n, entry),
        None => {
            if entry.size.is_none() {
                entry.size = parse_size(DEFAULT_DISK_SIZE).ok();
                entry.size_text = Some(DEFAULT_DISK_SIZE.to_string());
            }
        }
    }
}

/// A backing file is checked only when the overlay still has to be
/// created: an existing overlay already records its backing file.
fn validate_backing(
    v: &mut Validator,
    i: usize,
    written: &str,
    n: &Node,
    entry: &mut StorageEntry,
) {
    let key = format!("storage[{i}].{written}");
    if entry.kind != StorageKind::Qcow2 {
        v.error(
            &n.loc,
            format!("{key}: only qcow2 images can have a backing file"),
        );
        return;
    }
    let Some(s) = v.string(n, &key) else { return };
    if s.is_empty() {
        v.error(&n.loc, format!("{key}: must not be empty"));
        return;
    }
    entry.backing_file = Some(PathBuf::from(&s));
    entry.backing_format.get_or_insert(ImageFormat::Qcow2);
    let overlay_exists = entry.file.as_ref().is_some_and(|f| f.exists());
    if overlay_exists {
        return;
    }
    if entry.file.is_none() && !Path::new(&s).is_absolute() {
        v.error(
            &n.loc,
            format!("{key}: '{s}' is relative to the overlay's directory, but this entry has no 'file:'; add 'file:' or make the backing path absolute"),
        );
        return;
    }
    let Some(path) = entry.backing_path(Path::new("/")) else {
        return;
    };
    match std::fs::metadata(&path) {
        Err(_) => v.error(
            &n.loc,
            format!("{key}: {} does not exist (a relative backing file is relative to the overlay's directory)", path.display()),
        ),
        Ok(m) if !m.is_file() => v.error(
            &n.loc,
            format!("{key}: {} is not a regular file", path.display()),
        ),
        Ok(_) if !maqet_base::programs::is_readable(&path) => v.error(
            &n.loc,
            format!("{key}: {} is not readable by you", path.display()),
        ),
        Ok(_) => {}
    }
}

fn validate_virtfs(
    v: &mut Validator,
    i: usize,
    fields: &[Entry],
    item: &Node,
    name: &str,
) -> Option<Virtfs> {
    let key = format!("storage[{i}].path");
    let Some(path_node) = field(fields, "path") else {
        v.error(
            &item.loc,
            format!("storage[{i}]: a virtfs entry needs 'path' (the host directory to share)"),
        );
        return None;
    };
    let path = abs_path(v, path_node, &key)?;
    let mut fs = Virtfs {
        path,
        mount_tag: name.to_string(),
        security_model: SecurityModel::Passthrough,
        id: name.to_string(),
        readonly: false,
        extra: Vec::new(),
    };
    if let Some(opts) = field(fields, "options") {
        let Some(entries) = opts.as_map() else {
            v.error(
                &opts.loc,
                format!(
                    "storage[{i}].options: expected a mapping such as {{mount_tag: share}}, {}",
                    found(opts)
                ),
            );
            return None;
        };
        let mut extra = Vec::new();
        for e in entries {
            let key = format!("storage[{i}].options.{}", e.key);
            let n = &e.value;
            match e.key.as_str() {
                "mount_tag" => fs.mount_tag = v.text(n, &key).unwrap_or_default(),
                "id" => fs.id = v.text(n, &key).unwrap_or_default(),
                "readonly" => fs.readonly = v.boolean(n, &key).unwrap_or(false),
                "security_model" => {
                    if let Some(s) = v.string(n, &key) {
                        fs.security_model = match s.as_str() {
                            "passthrough" => SecurityModel::Passthrough,
                            "mapped-xattr" => SecurityModel::MappedXattr,
                            "mapped-file" => SecurityModel::MappedFile,
                            "none" => SecurityModel::None,
                            other => {
                                v.error(
                                    &n.loc,
                                    format!("{key}: invalid security_model '{other}' (valid: {SECURITY_MODELS})"),
                                );
                                SecurityModel::Passthrough
                            }
                        }
                    }
                }
                // maqet sets the driver and the directory; QEMU would take
                // the last of two `path=` (the share would move).
                "path" | "local" | "fsdriver" => v.error(
                    &e.key_loc,
                    format!("{key}: set by maqet (a 'local' share of the entry's 'path')"),
                ),
                _ => extra.push(e.clone()),
            }
        }
        match kv_parts(&extra, "", "") {
            Ok(parts) => fs.extra = parts,
            Err(r) => v.error(
                &r.loc,
                format!("storage[{i}].options{}: {}", r.path, r.message),
            ),
        }
        for (what, value) in [("mount_tag", &fs.mount_tag), ("id", &fs.id)] {
            if value.is_empty() || value.contains(',') {
                v.error(
                    &opts.loc,
                    format!("storage[{i}].options.{what}: must be non-empty and contain no comma"),
                );
            }
        }
    }
    match std::fs::metadata(&fs.path) {
        // Created at start when missing.
        Err(_) => {}
        Ok(m) if !m.is_dir() => v.error(
            &path_node.loc,
            format!("{key}: {} is not a directory", fs.path.display()),
        ),
        Ok(_) if !maqet_base::programs::is_readable(&fs.path) => v.error(
            &path_node.loc,
            format!("{key}: {} is not readable by you", fs.path.display()),
        ),
        Ok(_) => {}
    }
    Some(fs)
}
