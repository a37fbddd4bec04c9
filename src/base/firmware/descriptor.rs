//! One QEMU firmware descriptor (docs/interop/firmware.json in QEMU): the
//! subset maqet needs to pick a UEFI flash image and its NVRAM template.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A parsed descriptor file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The file it was read from.
    pub path: PathBuf,
    pub interface_types: Vec<String>,
    pub targets: Vec<Target>,
    pub features: Vec<String>,
    /// None for mappings other than split flash (memory, kernel, stateless).
    pub flash: Option<Flash>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Target {
    pub architecture: String,
    /// Glob patterns of machine types (`pc-q35-*`).
    #[serde(default)]
    pub machines: Vec<String>,
}

/// A split flash mapping: read-only code plus a per-VM variable store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub executable: PathBuf,
    pub executable_format: String,
    pub nvram_template: PathBuf,
    pub nvram_format: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Raw {
    #[serde(default)]
    interface_types: Vec<String>,
    mapping: RawMapping,
    #[serde(default)]
    targets: Vec<Target>,
    #[serde(default)]
    features: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawMapping {
    device: String,
    #[serde(default)]
    mode: Option<String>,
    executable: Option<RawFile>,
    nvram_template: Option<RawFile>,
}

#[derive(Deserialize)]
struct RawFile {
    filename: PathBuf,
    #[serde(default = "raw_format")]
    format: String,
}

fn raw_format() -> String {
    "raw".into()
}

impl Descriptor {
    /// Parses the JSON text of `path`; the error is serde's, for the caller
    /// to report with the file name.
    pub fn parse(path: &Path, text: &str) -> Result<Descriptor, serde_json::Error> {
        let raw: Raw = serde_json::from_str(text)?;
        let m = raw.mapping;
        // Only split flash with a template gives a per-VM variable store.
        let split = m.device == "flash" && m.mode.as_deref().unwrap_or("split") == "split";
        let flash = match (split, m.executable, m.nvram_template) {
            (true, Some(e), Some(t)) => Some(Flash {
                executable: e.filename,
                executable_format: e.format,
                nvram_template: t.filename,
                nvram_format: t.format,
            }),
            _ => None,
        };
        Ok(Descriptor {
            path: path.to_path_buf(),
            interface_types: raw.interface_types,
            targets: raw.targets,
            features: raw.features,
            flash,
        })
    }

    pub fn has_feature(&self, f: &str) -> bool {
        self.features.iter().any(|x| x == f)
    }

    /// Whether one of its targets is `arch` with a machine glob matching
    /// `machine` (a canonical type name such as `pc-q35-7.2`).
    pub fn supports(&self, arch: &str, machine: &str) -> bool {
        self.targets
            .iter()
            .any(|t| t.architecture == arch && t.machines.iter().any(|g| glob(g, machine)))
    }
}

/// Shell-style glob with `*` and `?` only (what descriptors use).
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = r#"{
        "description": "UEFI firmware for x86_64",
        "interface-types": ["uefi"],
        "mapping": {"device": "flash",
            "executable": {"filename": "/usr/share/OVMF/OVMF_CODE_4M.fd", "format": "raw"},
            "nvram-template": {"filename": "/usr/share/OVMF/OVMF_VARS_4M.fd", "format": "raw"}},
        "targets": [{"architecture": "x86_64", "machines": ["pc-i440fx-*", "pc-q35-*"]}],
        "features": ["acpi-s3", "amd-sev", "verbose-dynamic"],
        "tags": []
    }"#;

    #[test]
    fn parses_split_flash() {
        let d = Descriptor::parse(Path::new("/x/60-edk2.json"), PLAIN).unwrap();
        assert_eq!(d.interface_types, vec!["uefi"]);
        let f = d.flash.clone().unwrap();
        assert_eq!(f.executable, Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd"));
        assert_eq!(
            f.nvram_template,
            Path::new("/usr/share/OVMF/OVMF_VARS_4M.fd")
        );
        assert!(d.has_feature("acpi-s3") && !d.has_feature("secure-boot"));
    }

    #[test]
    fn other_mappings_have_no_flash() {
        let mem = r#"{"interface-types":["uefi"],"mapping":{"device":"memory","filename":"/a.fd"},"targets":[]}"#;
        assert_eq!(Descriptor::parse(Path::new("a"), mem).unwrap().flash, None);
        let stateless = r#"{"interface-types":["uefi"],"mapping":{"device":"flash","mode":"stateless","executable":{"filename":"/a"}},"targets":[]}"#;
        assert_eq!(
            Descriptor::parse(Path::new("a"), stateless).unwrap().flash,
            None
        );
        assert!(Descriptor::parse(Path::new("a"), "{").is_err());
    }

    #[test]
    fn machine_globs() {
        let d = Descriptor::parse(Path::new("a"), PLAIN).unwrap();
        assert!(d.supports("x86_64", "pc-q35-7.2"));
        assert!(d.supports("x86_64", "pc-i440fx-8.0"));
        assert!(!d.supports("x86_64", "microvm"));
        assert!(!d.supports("aarch64", "pc-q35-7.2"));
        assert!(glob("*", ""));
        assert!(glob("pc-?35-*", "pc-q35-1"));
        assert!(!glob("pc-q35-*", "pc-q35"));
        assert!(glob("a*b*c", "axxbyyc"));
    }
}
