//! The image catalog: one YAML file per image, `NAME.yaml`. The package's
//! files (`PREFIX/share/maqet/images/`, beside the binary's `bin/`) come
//! with maqet; the user's `$XDG_CONFIG_HOME/maqet/images.d/NAME.yaml` adds
//! images or replaces the package's file of the same name as a whole.
//! `MAQET_IMAGES_DIRS` (colon-separated) replaces the package directory.
//!
//! ```yaml
//! description: Debian 12 (bookworm), generic cloud image
//! arch:
//!   x86_64:
//!     location: https://…/debian-12-genericcloud-amd64.qcow2
//!     checksums: https://…/SHA512SUMS        # or: digest: sha512:…
//!     kernel: {location: …, digest: sha256:…}  # optional, with initrd and cmdline
//!     initrd: {location: …, digest: sha256:…}
//!     cmdline: "root=/dev/vda console=ttyS0"
//! defaults: {memory: 2G, cpu: 2, disk: 20G, user: debian}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use maqet_base::suggest;
use maqet_config::{ConfigError, Location as Loc, Node, Value};

use super::digest::Digest;
use super::location::Location;
use super::ImageError;

/// How a download is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// A pinned digest.
    Digest(Digest),
    /// The file's line in a published checksum file.
    Checksums(Location),
    /// Nothing given: refused unless the user skips verification.
    Nothing,
}

/// One file to download and how to verify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub location: Location,
    pub verify: Verify,
}

/// An image for one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchImage {
    pub disk: Source,
    /// For images without a boot loader: QEMU boots this kernel directly.
    pub kernel: Option<Source>,
    pub initrd: Option<Source>,
    pub cmdline: Option<String>,
}

/// What `maqet launch` defines a VM of this image with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Defaults {
    pub memory: Option<String>,
    pub cpu: Option<u32>,
    pub disk: Option<String>,
    /// The guest user cloud-init sets up with your keys.
    pub user: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `$XDG_CONFIG_HOME/maqet/images.d`.
    User,
    /// Installed with maqet.
    Package,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub name: String,
    pub description: String,
    pub file: PathBuf,
    pub origin: Origin,
    pub arch: BTreeMap<String, ArchImage>,
    pub defaults: Defaults,
}

impl CatalogEntry {
    /// The image for `arch` (the host's, as `uname -m` says it).
    pub fn for_arch(&self, arch: &str) -> Result<&ArchImage, ImageError> {
        self.arch.get(arch).ok_or_else(|| ImageError::NoArch {
            name: self.name.clone(),
            arch: arch.to_string(),
            file: self.file.clone(),
            has: self.arch.keys().cloned().collect(),
        })
    }
}

/// Architectures an entry may list (`uname -m` names).
const ARCHES: &[&str] = &["x86_64", "aarch64", "riscv64", "ppc64le", "s390x", "armv7l"];
const TOP_KEYS: &[&str] = &["description", "arch", "defaults"];
const IMAGE_KEYS: &[&str] = &[
    "location",
    "digest",
    "checksums",
    "kernel",
    "initrd",
    "cmdline",
];
const FILE_KEYS: &[&str] = &["location", "digest", "checksums"];
const DEFAULT_KEYS: &[&str] = &["memory", "cpu", "disk", "user"];

/// The catalog's directories, highest precedence first.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub dirs: Vec<(PathBuf, Origin)>,
}

impl Catalog {
    /// The user's directory, then the package's (or `MAQET_IMAGES_DIRS`).
    pub fn from_env() -> Catalog {
        let mut dirs = Vec::new();
        if let Some(cfg) = maqet_base::paths::config_home() {
            dirs.push((cfg.join("maqet/images.d"), Origin::User));
        }
        match std::env::var_os("MAQET_IMAGES_DIRS") {
            Some(list) => {
                for d in std::env::split_paths(&list).filter(|d| d.is_absolute()) {
                    dirs.push((d, Origin::Package));
                }
            }
            None => {
                if let Some(d) = package_dir() {
                    dirs.push((d, Origin::Package));
                }
            }
        }
        Catalog { dirs }
    }

    /// Entry `name`, from the first directory that has `NAME.yaml`.
    pub fn get(&self, name: &str) -> Result<CatalogEntry, ImageError> {
        if !valid_name(name) {
            return Err(ImageError::BadName(name.to_string()));
        }
        for (dir, origin) in &self.dirs {
            let file = dir.join(format!("{name}.yaml"));
            if file.is_file() {
                return load_entry(&file, name, *origin);
            }
        }
        let names = self.names();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        Err(ImageError::NotInCatalog {
            name: name.to_string(),
            hint: suggest::hint(name, &refs),
            dirs: self.dirs.iter().map(|(d, _)| d.clone()).collect(),
        })
    }

    /// Every name, sorted; a user's file hides the package's of its name.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .dirs
            .iter()
            .flat_map(|(d, _)| std::fs::read_dir(d).into_iter().flatten().flatten())
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".yaml")
                    .filter(|s| valid_name(s))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Every entry (a broken file as its error).
    pub fn list(&self) -> Vec<Result<CatalogEntry, ImageError>> {
        self.names().iter().map(|n| self.get(n)).collect()
    }
}

/// `PREFIX/share/maqet/images` of the running `maqet` (`PREFIX/bin/maqet`).
fn package_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let prefix = exe.parent()?.parent()?;
    Some(prefix.join("share/maqet/images"))
}

/// Catalog names are file names: letters, digits, `.`, `_`, `-`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Reads and checks one catalog file.
pub fn load_entry(file: &Path, name: &str, origin: Origin) -> Result<CatalogEntry, ImageError> {
    let source = file.display().to_string();
    let root = maqet_config::load_yaml_file(file, &source)?;
    let dir = file.parent().unwrap_or(Path::new("/"));
    let mut c = Checker {
        errors: Vec::new(),
        dir,
    };
    let entry = c.entry(&root, name, file, origin);
    match (entry, c.errors.is_empty()) {
        (Some(e), true) => Ok(e),
        _ => Err(ImageError::Catalog(c.errors)),
    }
}

struct Checker<'a> {
    errors: Vec<ConfigError>,
    dir: &'a Path,
}

impl Checker<'_> {
    fn error(&mut self, loc: &Loc, message: String) {
        self.errors.push(ConfigError::Invalid {
            location: loc.clone(),
            message,
        });
    }

    /// The entries of a mapping, unknown keys reported.
    fn map<'n>(
        &mut self,
        node: &'n Node,
        key: &str,
        known: &[&str],
    ) -> Option<&'n [maqet_config::Entry]> {
        let Some(m) = node.as_map() else {
            self.error(
                &node.loc,
                format!("{key}: expected a mapping, found {}", node.type_name()),
            );
            return None;
        };
        for e in m {
            if !known.contains(&e.key.as_str()) {
                let path = if key.is_empty() {
                    e.key.clone()
                } else {
                    format!("{key}.{}", e.key)
                };
                self.error(
                    &e.key_loc,
                    format!("unknown key '{path}'{}", suggest::hint(&e.key, known)),
                );
            }
        }
        Some(m)
    }

    fn string(&mut self, node: &Node, key: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::Int(_) | Value::Float(_) => node.scalar_text(),
            _ => {
                self.error(
                    &node.loc,
                    format!("{key}: expected text, found {}", node.type_name()),
                );
                None
            }
        }
    }

    fn entry(
        &mut self,
        root: &Node,
        name: &str,
        file: &Path,
        origin: Origin,
    ) -> Option<CatalogEntry> {
        let m = self.map(root, "", TOP_KEYS)?;
        let get = |k: &str| m.iter().find(|e| e.key == k).map(|e| &e.value);
        let description = get("description")
            .and_then(|n| self.string(n, "description"))
            .unwrap_or_default();
        let mut arch = BTreeMap::new();
        match get("arch") {
            None => self.error(
                &root.loc,
                "arch: missing; list the image per architecture (arch: {x86_64: {location: …}})"
                    .into(),
            ),
            Some(a) => {
                let entries = match a.as_map() {
                    Some(m) => m,
                    None => {
                        self.error(
                            &a.loc,
                            format!(
                                "arch: expected a mapping of architectures, found {}",
                                a.type_name()
                            ),
                        );
                        &[]
                    }
                };
                for e in entries {
                    if !ARCHES.contains(&e.key.as_str()) {
                        let hint = match e.key.as_str() {
                            "amd64" | "x64" => " (write x86_64)".to_string(),
                            "arm64" => " (write aarch64)".to_string(),
                            k => suggest::hint(k, ARCHES),
                        };
                        self.error(
                            &e.key_loc,
                            format!(
                                "arch.{}: unknown architecture{hint}; known: {}",
                                e.key,
                                ARCHES.join(", ")
                            ),
                        );
                        continue;
                    }
                    if let Some(img) = self.image(&e.value, &format!("arch.{}", e.key)) {
                        arch.insert(e.key.clone(), img);
                    }
                }
            }
        }
        let defaults = get("defaults")
            .map(|d| self.defaults(d))
            .unwrap_or_default();
        Some(CatalogEntry {
            name: name.to_string(),
            description,
            file: file.to_path_buf(),
            origin,
            arch,
            defaults,
        })
    }

    fn image(&mut self, node: &Node, key: &str) -> Option<ArchImage> {
        let m = self.map(node, key, IMAGE_KEYS)?;
        // Checked on even when the disk is wrong, so every mistake shows.
        let disk = self.source(node, m, key);
        let get = |k: &str| m.iter().find(|e| e.key == k).map(|e| &e.value);
        let file = |k: &str, this: &mut Self| {
            get(k).and_then(|n| {
                let key = format!("{key}.{k}");
                let fm = this.map(n, &key, FILE_KEYS)?;
                this.source(n, fm, &key)
            })
        };
        let kernel = file("kernel", self);
        let initrd = file("initrd", self);
        let cmdline = get("cmdline").and_then(|n| self.string(n, &format!("{key}.cmdline")));
        if kernel.is_none() {
            for k in ["initrd", "cmdline"] {
                if let Some(e) = m.iter().find(|e| e.key == k) {
                    self.error(&e.key_loc, format!("{key}.{k}: given without a kernel"));
                }
            }
        }
        Some(ArchImage {
            disk: disk?,
            kernel,
            initrd,
            cmdline,
        })
    }

    /// `location` with `digest` or `checksums` from a mapping.
    fn source(&mut self, node: &Node, m: &[maqet_config::Entry], key: &str) -> Option<Source> {
        let get = |k: &str| m.iter().find(|e| e.key == k).map(|e| &e.value);
        let Some(loc_node) = get("location") else {
            self.error(&node.loc, format!("{key}.location: missing"));
            return None;
        };
        let text = self.string(loc_node, &format!("{key}.location"))?;
        let location = match Location::parse(&text, self.dir) {
            Ok(l) => l,
            Err(e) => {
                self.error(&loc_node.loc, format!("{key}.location: {e}"));
                return None;
            }
        };
        let verify = match (get("digest"), get("checksums")) {
            (Some(d), Some(_)) => {
                self.error(
                    &d.loc,
                    format!("{key}.digest: give digest or checksums, not both"),
                );
                return None;
            }
            (Some(d), None) => {
                let text = self.string(d, &format!("{key}.digest"))?;
                match text.parse::<Digest>() {
                    Ok(d) => Verify::Digest(d),
                    Err(e) => {
                        self.error(&d.loc, format!("{key}.digest: {e}"));
                        return None;
                    }
                }
            }
            (None, Some(c)) => {
                let text = self.string(c, &format!("{key}.checksums"))?;
                match Location::parse(&text, self.dir) {
                    // Fetched over the same scheme as the image: an http
                    // checksum file would not vouch for an https image.
                    Ok(l) if l.scheme() != location.scheme() => {
                        self.error(
                            &c.loc,
                            format!(
                                "{key}.checksums: fetched over {}, but the image over {}; both must use the same scheme",
                                l.scheme(),
                                location.scheme()
                            ),
                        );
                        return None;
                    }
                    Ok(l) => Verify::Checksums(l),
                    Err(e) => {
                        self.error(&c.loc, format!("{key}.checksums: {e}"));
                        return None;
                    }
                }
            }
            (None, None) => Verify::Nothing,
        };
        Some(Source { location, verify })
    }

    fn defaults(&mut self, node: &Node) -> Defaults {
        let mut d = Defaults::default();
        let Some(m) = self.map(node, "defaults", DEFAULT_KEYS) else {
            return d;
        };
        for e in m {
            let key = format!("defaults.{}", e.key);
            match e.key.as_str() {
                "memory" => {
                    if let Some(s) = self.string(&e.value, &key) {
                        match maqet_config::parse_memory(&s) {
                            Ok(_) => d.memory = Some(s),
                            Err(err) => self.error(&e.value.loc, format!("{key}: {err}")),
                        }
                    }
                }
                "disk" => {
                    if let Some(s) = self.string(&e.value, &key) {
                        match maqet_config::parse_size(&s) {
                            Ok(_) => d.disk = Some(s),
                            Err(err) => self.error(&e.value.loc, format!("{key}: {err}")),
                        }
                    }
                }
                "cpu" => match &e.value.value {
                    Value::Int(n) if (1..=255).contains(n) => d.cpu = Some(*n as u32),
                    _ => self.error(
                        &e.value.loc,
                        format!("{key}: expected a number of CPUs from 1 to 255"),
                    ),
                },
                "user" => d.user = self.string(&e.value, &key),
                _ => {}
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(format!("{name}.yaml"));
        std::fs::write(&p, text).unwrap();
        p
    }

    const GOOD: &str = "description: Test\narch:\n  x86_64:\n    location: https://h.example/d/x.qcow2\n    checksums: https://h.example/d/SHA256SUMS\n    kernel: {location: vmlinuz, digest: \"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"}\n    initrd: {location: ./initrd.gz}\n    cmdline: console=ttyS0\ndefaults: {memory: 1G, cpu: 2, disk: 10G, user: tester}\n";

    #[test]
    fn an_entry_is_read_with_its_sources() {
        let d = tempfile::tempdir().unwrap();
        let f = write(d.path(), "t", GOOD);
        let e = load_entry(&f, "t", Origin::User).unwrap();
        let img = e.for_arch("x86_64").unwrap();
        assert_eq!(img.disk.location.scheme(), "https");
        assert!(matches!(img.disk.verify, Verify::Checksums(_)));
        let k = img.kernel.as_ref().unwrap();
        assert_eq!(k.location, Location::File(d.path().join("vmlinuz")));
        assert!(matches!(k.verify, Verify::Digest(_)));
        assert_eq!(img.initrd.as_ref().unwrap().verify, Verify::Nothing);
        assert_eq!(img.cmdline.as_deref(), Some("console=ttyS0"));
        assert_eq!(e.defaults.cpu, Some(2));
        assert_eq!(e.defaults.user.as_deref(), Some("tester"));
        let err = e.for_arch("aarch64").unwrap_err().to_string();
        assert!(err.contains("aarch64") && err.contains("x86_64"), "{err}");
    }

    #[test]
    fn mistakes_are_reported_with_their_place() {
        let d = tempfile::tempdir().unwrap();
        let f = write(
            d.path(),
            "bad",
            "descripton: x\narch:\n  amd64: {location: https://h/x}\n  x86_64:\n    location: https://h/x.img\n    checksums: http://h/SHA256SUMS\n    cmdline: quiet\ndefaults: {cpu: 0}\n",
        );
        let err = load_entry(&f, "bad", Origin::User).unwrap_err().to_string();
        for want in [
            "bad.yaml:1:1: unknown key 'descripton' (did you mean 'description'?)",
            "bad.yaml:3:3: arch.amd64: unknown architecture (write x86_64)",
            "arch.x86_64.checksums: fetched over http, but the image over https",
            "arch.x86_64.cmdline: given without a kernel",
            "defaults.cpu: expected a number of CPUs from 1 to 255",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
    }

    #[test]
    fn the_users_file_hides_the_packages_and_names_are_listed() {
        let user = tempfile::tempdir().unwrap();
        let pkg = tempfile::tempdir().unwrap();
        write(pkg.path(), "t", GOOD);
        write(pkg.path(), "other", GOOD);
        write(user.path(), "t", &GOOD.replace("Test", "Mine"));
        let c = Catalog {
            dirs: vec![
                (user.path().to_path_buf(), Origin::User),
                (pkg.path().to_path_buf(), Origin::Package),
            ],
        };
        assert_eq!(c.names(), ["other", "t"]);
        let t = c.get("t").unwrap();
        assert_eq!((t.description.as_str(), t.origin), ("Mine", Origin::User));
        let err = c.get("tt").unwrap_err().to_string();
        assert!(err.contains("did you mean 't'"), "{err}");
        assert!(matches!(c.get("../x"), Err(ImageError::BadName(_))));
    }

    /// The catalog shipped with maqet: every file parses, lists x86_64
    /// over https, and is verified by a checksum file or a digest.
    #[test]
    fn the_shipped_catalog_is_valid() {
        // This crate is src/host of the repository; the catalog is its images/.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images");
        let c = Catalog {
            dirs: vec![(dir, Origin::Package)],
        };
        let names = c.names();
        for want in [
            "debian-12",
            "debian-13",
            "ubuntu-24.04",
            "fedora-44",
            "alpine-3.23",
            "archlinux",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        for e in c.list() {
            let e = e.unwrap();
            let img = e.for_arch("x86_64").unwrap();
            assert_eq!(img.disk.location.scheme(), "https", "{}", e.name);
            assert_ne!(img.disk.verify, Verify::Nothing, "{}", e.name);
            assert!(!e.description.is_empty(), "{}", e.name);
            assert!(e.defaults.user.is_some(), "{}", e.name);
        }
    }
}
