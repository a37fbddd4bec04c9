//! UEFI firmware by QEMU firmware descriptor, the way libvirt and
//! systemd-vmspawn pick it: never a hard-coded path.
//!
//! Descriptors are read from `$XDG_CONFIG_HOME/qemu/firmware`,
//! `/etc/qemu/firmware` and `/usr/share/qemu/firmware` (in that order of
//! precedence). A file name in an earlier directory hides the same name in
//! later ones (an empty file just hides it); all remaining files are tried
//! in file-name order (`40-…` before `60-…`), the first that matches wins.
//! `MAQET_FIRMWARE_DIRS` (colon-separated) replaces the three directories,
//! e.g. to test with a firmware of one's own, or with none.

mod descriptor;
pub mod nvram;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use descriptor::{glob, Descriptor, Flash};

/// Environment variable replacing the descriptor search path.
pub const DIRS_ENV: &str = "MAQET_FIRMWARE_DIRS";

/// The package that provides UEFI firmware for x86 guests, for hints.
pub const OVMF_PACKAGES: &str = "ovmf (Debian, Ubuntu), edk2-ovmf (Fedora, Arch)";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FirmwareError {
    #[error("no UEFI firmware{} for {arch} machine '{machine}' among the QEMU firmware descriptors in {}; install {OVMF_PACKAGES}{}", if *.secure_boot { " with Secure Boot and enrolled keys" } else { "" }, .searched, .skipped)]
    NotFound {
        arch: String,
        machine: String,
        secure_boot: bool,
        searched: String,
        /// Why candidates were passed over, for the message ("" or "; …").
        skipped: String,
    },
}

/// The firmware picked for a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    pub descriptor: PathBuf,
    pub flash: Flash,
    pub secure_boot: bool,
    /// The firmware needs `-machine smm=on` (secure boot builds).
    pub requires_smm: bool,
}

/// The directories searched, in precedence order.
pub fn search_dirs() -> Vec<PathBuf> {
    if let Some(v) = std::env::var_os(DIRS_ENV) {
        return std::env::split_paths(&v)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
    }
    let mut dirs: Vec<PathBuf> = crate::paths::config_home()
        .map(|c| c.join("qemu/firmware"))
        .into_iter()
        .collect();
    dirs.push("/etc/qemu/firmware".into());
    dirs.push("/usr/share/qemu/firmware".into());
    dirs
}

/// Descriptor files after same-name overriding, in file-name order.
fn descriptor_files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") && !by_name.contains_key(&name) {
                by_name.insert(name, e.path());
            }
        }
    }
    by_name.into_values().collect()
}

/// The canonical machine type a descriptor's globs are written against:
/// `q35` and `pc` are aliases of the newest `pc-q35-*`/`pc-i440fx-*`.
pub fn canonical_machine(machine: &str) -> String {
    match machine {
        "q35" => "pc-q35-latest".into(),
        "pc" => "pc-i440fx-latest".into(),
        m => m.into(),
    }
}

/// QEMU's architecture name from its binary (`qemu-system-x86_64`).
pub fn arch_of_binary(binary: &Path) -> String {
    binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .and_then(|n| n.strip_prefix("qemu-system-").map(str::to_string))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Picks the first matching UEFI firmware from `dirs`.
pub fn select_in(
    dirs: &[PathBuf],
    arch: &str,
    machine: &str,
    secure_boot: bool,
) -> Result<Firmware, FirmwareError> {
    let canonical = canonical_machine(machine);
    let is_q35 = canonical.starts_with("pc-q35-");
    let mut skipped = Vec::new();
    for path in descriptor_files(dirs) {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if text.trim().is_empty() {
            continue; // a mask
        }
        let d = match Descriptor::parse(&path, &text) {
            Ok(d) => d,
            Err(e) => {
                skipped.push(format!(
                    "{} is not a valid descriptor ({e})",
                    path.display()
                ));
                continue;
            }
        };
        let Some(flash) = d.flash.clone() else {
            continue;
        };
        if !d.interface_types.iter().any(|t| t == "uefi") || !d.supports(arch, &canonical) {
            continue;
        }
        let has_sb = d.has_feature("secure-boot");
        let requires_smm = d.has_feature("requires-smm");
        if secure_boot != has_sb
            || (secure_boot && !d.has_feature("enrolled-keys"))
            || (requires_smm && !is_q35)
        {
            continue;
        }
        // Confidential-computing builds are not general-purpose firmware.
        if d.features
            .iter()
            .any(|f| f == "amd-sev-es" || f == "intel-tdx")
        {
            continue;
        }
        if !flash.executable.is_file() || !flash.nvram_template.is_file() {
            skipped.push(format!(
                "{} names files that do not exist ({}, {})",
                path.display(),
                flash.executable.display(),
                flash.nvram_template.display()
            ));
            continue;
        }
        return Ok(Firmware {
            descriptor: path,
            flash,
            secure_boot,
            requires_smm,
        });
    }
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(FirmwareError::NotFound {
        arch: arch.into(),
        machine: machine.into(),
        secure_boot,
        searched: if searched.is_empty() {
            format!("no directory ({DIRS_ENV} is empty)")
        } else {
            searched.join(", ")
        },
        skipped: if skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped: {}", skipped.join("; "))
        },
    })
}

/// [`select_in`] over [`search_dirs`].
pub fn select(arch: &str, machine: &str, secure_boot: bool) -> Result<Firmware, FirmwareError> {
    select_in(&search_dirs(), arch, machine, secure_boot)
}

impl Firmware {
    /// QEMU arguments for this firmware with `vars` (in `vars_format`) as
    /// the VM's NVRAM.
    pub fn qemu_args(&self, vars: &Path, vars_format: &str) -> Vec<String> {
        let esc = |p: &Path| p.to_string_lossy().replace(',', ",,");
        let mut a = vec![
            "-drive".to_string(),
            format!(
                "if=pflash,unit=0,format={},readonly=on,file={}",
                self.flash.executable_format,
                esc(&self.flash.executable)
            ),
            "-drive".to_string(),
            format!("if=pflash,unit=1,format={vars_format},file={}", esc(vars)),
        ];
        if self.requires_smm || self.secure_boot {
            // -machine options merge with the config's own -machine.
            a.extend(["-machine".to_string(), "smm=on".to_string()]);
        }
        if self.secure_boot {
            // Only SMM code may write the variable store (OVMF's contract).
            a.extend([
                "-global".to_string(),
                "driver=cfi.pflash01,property=secure,value=on".to_string(),
            ]);
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, features: &str, code: &Path, vars: &Path) {
        let text = format!(
            r#"{{"interface-types":["uefi"],"mapping":{{"device":"flash","executable":{{"filename":"{}","format":"raw"}},"nvram-template":{{"filename":"{}","format":"raw"}}}},"targets":[{{"architecture":"x86_64","machines":["pc-q35-*"{}]}}],"features":[{features}]}}"#,
            code.display(),
            vars.display(),
            if features.contains("requires-smm") {
                ""
            } else {
                r#","pc-i440fx-*""#
            }
        );
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn picks_by_features_priority_and_override() {
        let t = tempfile::tempdir().unwrap();
        let (sys, user) = (t.path().join("sys"), t.path().join("user"));
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::create_dir_all(&user).unwrap();
        let (code, vars) = (t.path().join("CODE.fd"), t.path().join("VARS.fd"));
        std::fs::write(&code, b"c").unwrap();
        std::fs::write(&vars, b"v").unwrap();
        write(
            &sys,
            "40-secure-enrolled.json",
            r#""secure-boot","enrolled-keys","requires-smm""#,
            &code,
            &vars,
        );
        write(
            &sys,
            "50-secure.json",
            r#""secure-boot","requires-smm""#,
            &code,
            &vars,
        );
        write(&sys, "60-plain.json", r#""acpi-s3""#, &code, &vars);
        let dirs = vec![user.clone(), sys.clone()];

        let plain = select_in(&dirs, "x86_64", "q35", false).unwrap();
        assert!(plain.descriptor.ends_with("60-plain.json"));
        assert!(!plain
            .qemu_args(Path::new("/v"), "qcow2")
            .iter()
            .any(|a| a == "smm=on"));
        let sb = select_in(&dirs, "x86_64", "pc-q35-7.2", true).unwrap();
        assert!(sb.descriptor.ends_with("40-secure-enrolled.json"));
        let args = sb.qemu_args(Path::new("/d/v,x.fd"), "raw");
        assert!(args.contains(&"smm=on".to_string()));
        assert!(args
            .iter()
            .any(|a| a == "if=pflash,unit=1,format=raw,file=/d/v,,x.fd"));
        // Secure boot firmware needs SMM, which only q35 has.
        assert!(matches!(
            select_in(&dirs, "x86_64", "pc", true),
            Err(FirmwareError::NotFound { .. })
        ));
        assert!(select_in(&dirs, "x86_64", "pc", false).is_ok());
        assert!(select_in(&dirs, "aarch64", "virt", false).is_err());

        // An empty same-name file in a preferred directory masks it.
        std::fs::write(user.join("60-plain.json"), "").unwrap();
        assert!(select_in(&dirs, "x86_64", "q35", false).is_err());
        // A lower-numbered user file wins over the system's.
        write(&user, "10-mine.json", "", &code, &vars);
        let mine = select_in(&dirs, "x86_64", "q35", false).unwrap();
        assert!(mine.descriptor.starts_with(&user));
    }

    #[test]
    fn missing_files_and_no_dirs_are_explained() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "60.json",
            "",
            Path::new("/nonexistent/C.fd"),
            Path::new("/nonexistent/V.fd"),
        );
        let e = select_in(&[t.path().to_path_buf()], "x86_64", "q35", false).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("do not exist") && msg.contains("install ovmf"),
            "{msg}"
        );
        let e = select_in(&[], "x86_64", "q35", false).unwrap_err();
        assert!(e.to_string().contains(DIRS_ENV));
    }

    #[test]
    fn arch_and_machine_names() {
        assert_eq!(
            arch_of_binary(Path::new("/usr/bin/qemu-system-x86_64")),
            "x86_64"
        );
        assert_eq!(canonical_machine("q35"), "pc-q35-latest");
        assert_eq!(canonical_machine("pc-q35-7.2"), "pc-q35-7.2");
    }
}
