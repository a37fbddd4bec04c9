//! Disk interfaces versus the machine type: refuse at `add`/`apply` what
//! QEMU would refuse at start ("machine type does not support if=ide",
//! "No 'PCI' bus found for device 'virtio-blk-pci'").
//!
//! Only x86 machine families whose buses are known are checked (verified
//! against QEMU 7.2): `pc`/`pc-i440fx-*` (PCI, 4 IDE drives), `q35`/
//! `pc-q35-*` (PCI, 6 IDE drives on the ICH9 AHCI), `isapc` (no PCI, 4
//! IDE), `microvm` (no IDE; PCI only with `pcie=on`) and `none`. Any other
//! machine, or a non-x86 binary without a machine, is left to QEMU.

use super::error::Location;
use super::schema::{Interface, StorageKind, VmConfig};
use super::validate::Validator;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Machine {
    /// The type as written (`q35`, `pc-i440fx-7.2`).
    name: String,
    pci: bool,
    ide_slots: usize,
    /// Where it was set; None for the binary's default machine.
    origin: Option<String>,
}

impl Machine {
    fn describe(&self) -> String {
        match &self.origin {
            Some(o) => format!("machine '{}' ({o})", self.name),
            None => format!(
                "the default machine '{}' (no machine option given)",
                self.name
            ),
        }
    }
}

/// The machine's capabilities from its type name; None = unknown family.
fn family(name: &str, options: &[&str]) -> Option<(bool, usize)> {
    let pcie_on = options
        .iter()
        .any(|o| matches!(*o, "pcie=on" | "pcie=yes" | "pcie=true" | "pcie"));
    match name {
        "q35" => Some((true, 6)),
        n if n.starts_with("pc-q35-") => Some((true, 6)),
        "pc" => Some((true, 4)),
        n if n.starts_with("pc-") => Some((true, 4)),
        "isapc" => Some((false, 4)),
        "microvm" => Some((pcie_on, 0)),
        "none" => Some((false, 0)),
        _ => None,
    }
}

/// Splits a `-machine` value into its type and the other options.
fn parse_machine_value(value: &str) -> Option<(String, Vec<&str>)> {
    let mut name = None;
    let mut rest = Vec::new();
    for (i, part) in maqet_base::qemu_opts::split(value).into_iter().enumerate() {
        if let Some(t) = part.strip_prefix("type=") {
            name = Some(t.to_string());
        } else if i == 0 && !part.contains('=') {
            name = Some(part.to_string());
        } else {
            rest.push(part);
        }
    }
    name.filter(|n| !n.is_empty()).map(|n| (n, rest))
}

/// The machine type name the config asks for (`arguments` item or
/// `args`), else the x86 binaries' default `pc`; None when unknown.
pub(crate) fn machine_type(cfg: &VmConfig) -> Option<String> {
    match machine_written(cfg) {
        Some((value, _)) => parse_machine_value(&value).map(|(name, _)| name),
        None => machine_of(cfg).map(|m| m.name),
    }
}

/// The machine the config asks for (`arguments` item or `args`), else the
/// binary's default.
fn machine_of(cfg: &VmConfig) -> Option<Machine> {
    match machine_written(cfg) {
        Some((value, origin)) => {
            let (name, options) = parse_machine_value(&value)?;
            let (pci, ide_slots) = family(&name, &options)?;
            Some(Machine {
                name,
                pci,
                ide_slots,
                origin: Some(origin),
            })
        }
        None => {
            let bin = cfg.binary.file_name()?.to_string_lossy();
            if bin.ends_with("x86_64") || bin.ends_with("i386") {
                Some(Machine {
                    name: "pc".into(),
                    pci: true,
                    ide_slots: 4,
                    origin: None,
                })
            } else {
                None
            }
        }
    }
}

/// The `-machine` value written in the config, and where.
fn machine_written(cfg: &VmConfig) -> Option<(String, String)> {
    let mut found: Option<(String, String)> = None;
    for a in &cfg.arguments {
        if (a.option == "machine" || a.option == "M") && a.argv.len() == 2 {
            found = Some((
                a.argv[1].clone(),
                format!("arguments[{}] at {}", a.index, a.location),
            ));
            break;
        }
    }
    if found.is_none() {
        let mut it = cfg.args.iter();
        while let Some(arg) = it.next() {
            if let Some(v) = arg.strip_prefix("-machine=") {
                found = Some((v.to_string(), "args".into()));
                break;
            }
            if matches!(arg.as_str(), "-machine" | "--machine" | "-M") {
                if let Some(v) = it.next() {
                    found = Some((v.clone(), "args".into()));
                }
                break;
            }
        }
    }
    found
}

/// IDE drives that `arguments` adds: `-drive` without `if=` (IDE is the
/// x86 default) or with `if=ide`, and `-cdrom`/`-hda`…`-hdd`.
fn ide_drives_in_arguments(cfg: &VmConfig) -> Vec<(usize, Location)> {
    let mut out = Vec::new();
    for a in &cfg.arguments {
        let is_ide = match a.option.as_str() {
            "cdrom" | "hda" | "hdb" | "hdc" | "hdd" => true,
            "drive" => {
                let value = a.argv.get(1).map(String::as_str).unwrap_or("");
                match maqet_base::qemu_opts::split(value)
                    .into_iter()
                    .find_map(|p| p.strip_prefix("if="))
                {
                    None => true,
                    Some(i) => i == "ide",
                }
            }
            _ => false,
        };
        if is_ide {
            out.push((a.index, a.location.clone()));
        }
    }
    out
}

/// Reports disks and shares the machine cannot attach.
pub(crate) fn check_interfaces(v: &mut Validator, cfg: &VmConfig) {
    let Some(m) = machine_of(cfg) else { return };
    let mut ide_used = ide_drives_in_arguments(cfg).len();
    for e in &cfg.storage {
        let i = e.index;
        if e.kind == StorageKind::Virtfs {
            if !m.pci {
                v.error(
                    &e.location,
                    format!(
                        "storage[{i}] (virtfs '{}'): a 9p share needs a PCI bus (virtio-9p-pci), which {} does not have",
                        e.name,
                        m.describe()
                    ),
                );
            }
            continue;
        }
        match e.interface {
            Interface::Virtio | Interface::Sata | Interface::Scsi if !m.pci => {
                let device = match e.interface {
                    Interface::Virtio => "virtio-blk-pci",
                    Interface::Sata => "an AHCI controller",
                    _ => "virtio-scsi-pci",
                };
                v.error(
                    &e.location,
                    format!(
                        "storage[{i}].interface: '{}' needs a PCI bus ({device}), which {} does not have; {}",
                        e.interface.as_str(),
                        m.describe(),
                        if m.ide_slots > 0 { "use interface: ide" } else { "use another machine type" }
                    ),
                );
            }
            Interface::Ide => {
                ide_used += 1;
                if ide_used > m.ide_slots {
                    let why = if m.ide_slots == 0 {
                        format!("{} has no IDE controller", m.describe())
                    } else {
                        format!(
                            "{} has {} IDE slots and this is IDE drive {ide_used} (counting -drive/-cdrom items of arguments)",
                            m.describe(),
                            m.ide_slots
                        )
                    };
                    let hint = if m.pci {
                        "; use interface: virtio or sata"
                    } else {
                        ""
                    };
                    v.error(
                        &e.location,
                        format!("storage[{i}].interface: 'ide': {why}{hint}"),
                    );
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_values() {
        assert_eq!(
            parse_machine_value("q35,accel=tcg"),
            Some(("q35".into(), vec!["accel=tcg"]))
        );
        assert_eq!(
            parse_machine_value("accel=kvm,type=microvm"),
            Some(("microvm".into(), vec!["accel=kvm"]))
        );
        assert_eq!(parse_machine_value("accel=kvm"), None);
    }

    #[test]
    fn families() {
        assert_eq!(family("pc", &[]), Some((true, 4)));
        assert_eq!(family("pc-i440fx-7.2", &[]), Some((true, 4)));
        assert_eq!(family("pc-q35-7.2", &[]), Some((true, 6)));
        assert_eq!(family("q35", &[]), Some((true, 6)));
        assert_eq!(family("isapc", &[]), Some((false, 4)));
        assert_eq!(family("microvm", &[]), Some((false, 0)));
        assert_eq!(family("microvm", &["pcie=on"]), Some((true, 0)));
        assert_eq!(family("virt", &[]), None);
    }
}
