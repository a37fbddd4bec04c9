//! `maqet launch [IMAGE]`: from nothing to a reachable VM. This part pulls
//! the image (if the cache lacks it) and defines an ordinary VM from the
//! catalog's defaults, the command line and cloud-init (the image's user
//! with your keys, the VM's name as host name); the front end then starts
//! it and waits for ssh ([`super::Vms::wait_ready`]). The definition is
//! plain YAML afterwards: `maqet config NAME` shows what `add` accepts.

use std::path::Path;

use serde_json::{json, Map, Value as Json};

use maqet_base::paths::DataDir;
use maqet_base::vmname::VmName;
use maqet_config::{parse_size, ConfigDocument};
use maqet_host::image::ImageError;

use super::define::{insert, record_cache_user};
use super::images::{is_location, pull_image, Images, PulledImage};
use super::{Notice, Notify, VmError};

/// The image `launch` takes when none is named.
pub const DEFAULT_IMAGE: &str = "debian-13";
/// The label of the values `launch` writes (where errors point).
const LABEL: &str = "maqet launch";
/// Used where the catalog gives no default.
const MEMORY: &str = "2G";
const CPUS: u32 = 2;
const DISK: &str = "20G";

#[derive(Debug, Clone, Default)]
pub struct LaunchRequest {
    /// A catalog name, URL or path; [`DEFAULT_IMAGE`] when empty.
    pub image: Option<String>,
    pub name: Option<VmName>,
    pub cpus: Option<u32>,
    pub memory: Option<String>,
    pub disk: Option<String>,
    /// `HOST:GUEST[/udp]` forwards besides ssh.
    pub ports: Vec<String>,
    /// `(KEY, YAML VALUE)` set last, as `apply --set` does.
    pub set: Vec<(String, String)>,
}

/// A VM `launch` defined.
#[derive(Debug, Clone)]
pub struct Launched {
    pub vm: VmName,
    /// The name was made up (none was given).
    pub named_by_maqet: bool,
    pub image: PulledImage,
    /// The guest user `maqet ssh` logs in as.
    pub user: String,
}

/// Pulls the image and defines the VM (nothing is started).
pub fn define_launch(
    data_dir: &DataDir,
    images: &Images,
    req: &LaunchRequest,
    notify: Notify,
) -> Result<Launched, VmError> {
    if maqet_host::image::host_arch() != "x86_64" {
        return Err(ImageError::LaunchArch(maqet_host::image::host_arch().into()).into());
    }
    let reference = req.image.as_deref().unwrap_or(DEFAULT_IMAGE);
    // A given name is checked before anything is downloaded.
    let given = req.name.clone();
    if let Some(vm) = &given {
        if super::record(data_dir, vm).is_ok() {
            return Err(VmError::Exists {
                vm: vm.clone(),
                from_files: false,
            });
        }
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let _cache = images.cache.shared()?;
    let pulled = pull_image(images, reference, &cwd)?;
    let (vm, named_by_maqet) = match given {
        Some(v) => (v, false),
        None => (made_up_name(data_dir, reference)?, true),
    };
    let defaults = pulled.resolved.defaults();
    let user = match &defaults.user {
        Some(u) => u.clone(),
        None => maqet_host::cloudinit::invoking_user()
            .map(|(n, _)| n)
            .map_err(crate::provision::ProvisionError::from)?,
    };
    let disk_size = disk_size(
        &pulled,
        req.disk.as_deref().or(defaults.disk.as_deref()),
        notify,
    )?;
    let mut root = Map::new();
    root.insert(
        "memory".into(),
        json!(req
            .memory
            .clone()
            .or(defaults.memory.clone())
            .unwrap_or(MEMORY.into())),
    );
    root.insert(
        "cpu".into(),
        json!(req.cpus.or(defaults.cpu).unwrap_or(CPUS)),
    );
    // KVM where this user may use it; QEMU's TCG otherwise (slow).
    let kvm = maqet_base::access::allowed(
        Path::new("/dev/kvm"),
        maqet_base::access::Access::READ_OK | maqet_base::access::Access::WRITE_OK,
    );
    if kvm {
        root.insert("enable_kvm".into(), json!(true));
    } else {
        notify(Notice::NoKvm);
    }
    root.insert("console".into(), json!(true));
    let mut disk = Map::new();
    disk.insert("name".into(), json!("root"));
    disk.insert("base".into(), json!(pulled.disk.path));
    disk.insert("sha256".into(), json!(pulled.disk.entry.blob_hex()));
    if pulled.disk.entry.format == "raw" {
        disk.insert("backing_format".into(), json!("raw"));
    }
    disk.insert("size".into(), json!(disk_size));
    disk.insert("interface".into(), json!("virtio"));
    root.insert("storage".into(), Json::Array(vec![Json::Object(disk)]));
    root.insert("cloud_init".into(), json!({ "user": user }));
    root.insert("guest_agent".into(), json!(true));
    if !req.ports.is_empty() {
        root.insert("ports".into(), json!(req.ports));
    }
    // `max`: every CPU feature KVM passes through or TCG emulates (images
    // built for x86-64-v2 and later need more than QEMU's default model).
    let mut arguments = vec![json!({ "cpu": "max" })];
    if let Some(k) = &pulled.kernel {
        arguments.push(json!({ "kernel": k.path }));
        if let Some(i) = &pulled.initrd {
            arguments.push(json!({ "initrd": i.path }));
        }
        if let Some(c) = &pulled.resolved.image.cmdline {
            arguments.push(json!({ "append": c }));
        }
    }
    root.insert("arguments".into(), Json::Array(arguments));
    let mut doc = ConfigDocument::from_json(&Json::Object(root), LABEL)?;
    for (k, v) in &req.set {
        doc.set_path(k, v)?;
    }
    let config = doc.validate_all().map_err(VmError::Invalid)?;
    let defined = insert(data_dir, &doc, &config, vm, false, notify)?;
    record_cache_user(Some(images), &doc, data_dir);
    Ok(Launched {
        vm: defined.vm,
        named_by_maqet,
        image: pulled,
        user,
    })
}

/// The disk size: as asked, but never smaller than the image itself.
fn disk_size(pulled: &PulledImage, asked: Option<&str>, notify: Notify) -> Result<String, VmError> {
    let asked = asked.unwrap_or(DISK);
    let bytes = parse_size(asked).map_err(|e| maqet_config::ConfigError::Invalid {
        location: maqet_config::Location::label("--disk"),
        message: e.to_string(),
    })?;
    match pulled.disk.entry.virtual_size {
        Some(v) if v > bytes => {
            notify(Notice::Warning {
                message: format!(
                    "the image's disk is {} bytes, more than {asked}: the VM's disk gets the image's size",
                    v
                ),
            });
            Ok(v.to_string())
        }
        _ => Ok(asked.to_string()),
    }
}

/// `IMAGE-XXXX` (four hex digits) that no VM of the data directory has.
fn made_up_name(data_dir: &DataDir, reference: &str) -> Result<VmName, VmError> {
    let stem = if is_location(reference) {
        let file = reference.rsplit('/').next().unwrap_or("");
        file.split('.').next().unwrap_or("").to_string()
    } else {
        reference.to_string()
    };
    let stem: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let stem = stem.trim_matches(|c| c == '-' || c == '.');
    let stem = if stem.is_empty() { "vm" } else { stem };
    let taken = super::names(data_dir)?;
    let mut seed = std::process::id() as u64 ^ maqet_base::time::now_unix() ^ nanos();
    for _ in 0..64 {
        // xorshift: only distinctness matters here.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let name = VmName::new(&format!("{stem}-{:04x}", seed & 0xffff))?;
        if !taken.contains(&name) {
            return Ok(name);
        }
    }
    Err(VmError::Exists {
        vm: VmName::new(stem)?,
        from_files: false,
    })
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0)
}
