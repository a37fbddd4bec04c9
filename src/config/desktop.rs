//! `firmware`, `secure_boot`, `tpm` and the socket displays (`display: vnc`
//! / `spice`): validated here, host lookups included (firmware descriptors,
//! swtpm), so a VM that cannot start on this host is refused at `add` with
//! the key's location, and again at `start` if the host changed.

use std::path::PathBuf;

use super::error::Location;
use super::node::Node;
use super::schema::{Section, VmConfig};
use super::validate::{found, Validator};
use maqet_base::display::DisplayServer;
use maqet_base::firmware::Firmware;

/// What the desktop keys resolved to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desktop {
    /// UEFI firmware picked by descriptor; None for `firmware: bios`.
    pub firmware: Option<Firmware>,
    pub tpm: Option<Tpm>,
    /// A socket display server; None when `display` is anything else.
    pub display: Option<DisplayServer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tpm {
    pub swtpm: PathBuf,
    /// `tpm-crb` or `tpm-tis`.
    pub device: &'static str,
}

/// The keys as written, collected while walking the mapping.
#[derive(Debug, Default)]
pub(crate) struct DesktopKeys {
    pub uefi: Option<(bool, Location)>,
    pub secure_boot: Option<(bool, Location)>,
    pub tpm: Option<(bool, Location)>,
}

impl DesktopKeys {
    /// Handles one of `firmware`, `secure_boot`, `tpm`.
    pub fn read(&mut self, v: &mut Validator, key: &str, node: &Node) {
        let loc = node.loc.clone();
        match key {
            "firmware" => match node.as_str() {
                Some("uefi") => self.uefi = Some((true, loc)),
                Some("bios") => self.uefi = Some((false, loc)),
                _ => v.error(
                    &loc,
                    format!("firmware: expected 'bios' or 'uefi', {}", found(node)),
                ),
            },
            "secure_boot" => {
                if let Some(b) = v.boolean(node, key) {
                    self.secure_boot = Some((b, loc));
                }
            }
            _ => {
                if let Some(b) = v.boolean(node, key) {
                    self.tpm = Some((b, loc));
                }
            }
        }
    }
}

/// Explicit firmware options written by hand (the original's way).
fn explicit_firmware(cfg: &VmConfig) -> Option<String> {
    let from_arguments = cfg.arguments.iter().find(|a| {
        a.option == "bios"
            || a.option == "pflash"
            || (a.option == "drive" && a.argv.get(1).is_some_and(|v| v.contains("if=pflash")))
    });
    if let Some(a) = from_arguments {
        return Some(format!("arguments[{}] '{}'", a.index, a.argv.join(" ")));
    }
    let mut prev = "";
    for a in &cfg.args {
        if matches!(a.as_str(), "-bios" | "-pflash")
            || (prev == "-drive" && a.contains("if=pflash"))
        {
            return Some(format!("args '{a}'"));
        }
        prev = a;
    }
    None
}

pub(crate) fn resolve(v: &mut Validator, cfg: &mut VmConfig, keys: &DesktopKeys) {
    let machine = super::machine::machine_type(cfg);
    let machine_name = machine.clone().unwrap_or_else(|| "(unknown)".into());
    let uefi = keys.uefi.as_ref().filter(|(u, _)| *u);
    if let Some((true, loc)) = &keys.secure_boot {
        let q35 = maqet_base::firmware::canonical_machine(&machine_name).starts_with("pc-q35-");
        if uefi.is_none() {
            v.error(loc, "secure_boot: needs 'firmware: uefi'");
        } else if !q35 {
            v.error(
                loc,
                format!("secure_boot: needs the q35 machine (Secure Boot firmware requires SMM), but the machine is '{machine_name}'; add '- machine: q35' to arguments"),
            );
        }
    }
    if let Some((_, loc)) = uefi {
        if let Some(what) = explicit_firmware(cfg) {
            v.error(
                loc,
                format!("firmware: uefi: the config also loads firmware itself ({what}); remove one of them"),
            );
        } else {
            let arch = maqet_base::firmware::arch_of_binary(&cfg.binary);
            let sb = keys.secure_boot.as_ref().is_some_and(|(b, _)| *b);
            match maqet_base::firmware::select(&arch, &machine_name, sb) {
                Ok(fw) => cfg.desktop.firmware = Some(fw),
                Err(e) => v.error(loc, format!("firmware: uefi: {e}")),
            }
        }
    }
    if let Some((true, loc)) = &keys.tpm {
        match maqet_base::programs::find_swtpm() {
            Ok(swtpm) => {
                cfg.desktop.tpm = Some(Tpm {
                    swtpm,
                    device: super::tpm::device_for_machine(machine.as_deref()),
                })
            }
            Err(e) => v.error(loc, format!("tpm: {e}")),
        }
    }
    // Only when `display` is what reaches QEMU (an `arguments` display
    // item overrides it).
    if cfg.order.contains(&Section::Display) {
        cfg.desktop.display = cfg.display.as_deref().and_then(DisplayServer::from_config);
    } else if !names_a_display(cfg) {
        // QEMU's own default would be a GTK window — which a service has no
        // session for — or, without GUI modules, a VNC server on TCP
        // 127.0.0.1:5900 with no password, open to every local user. A
        // config that chose nothing gets the private socket instead.
        cfg.desktop.display = Some(DisplayServer::Vnc);
        cfg.order.push(Section::Display);
    }
}

/// Why a top-level `display:` value (passed to QEMU as `-display VALUE`)
/// would make QEMU listen on TCP, or None. Only what the user writes in
/// `arguments` or `args` may open TCP (docs/config.md): `display: vnc`
/// already means the VM's private Unix socket, so a TCP spelling of it is
/// refused rather than silently served on every address without a
/// password. QEMU's parser takes `vnc` as a prefix (`vnc=DISPLAY`), and a
/// D-Bus display may be given a D-Bus address, which can be TCP.
pub(crate) fn tcp_display(value: &str) -> Option<String> {
    let socket_hint = "`display: vnc` serves it on the VM's own Unix socket (`maqet display`); a TCP display is only what you write in `arguments` yourself (e.g. `- vnc: \"127.0.0.1:47,password=on\"`)";
    if let Some(rest) = value.strip_prefix("vnc") {
        let spec = rest.strip_prefix('=');
        return match spec {
            None if rest.is_empty() => None,
            Some(s) if s.starts_with("unix:") || s == "none" => None,
            _ => Some(format!(
                "'{value}' would have QEMU serve VNC on TCP, on every address and without a password; {socket_hint}"
            )),
        };
    }
    let (kind, opts) = value.split_once(',').unwrap_or((value, ""));
    if kind == "dbus" {
        let tcp = opts.split(',').any(|o| {
            o.strip_prefix("addr=")
                .is_some_and(|a| a.split(';').any(|part| !part.starts_with("unix:")))
        });
        if tcp {
            return Some(format!(
                "'{value}' gives QEMU's D-Bus display an address that is not a Unix socket; only what you write in `arguments` may listen on the network"
            ));
        }
    }
    None
}

/// QEMU options that choose how (or whether) the screen is shown.
const DISPLAY_OPTIONS: [&str; 6] = ["display", "nographic", "vnc", "spice", "curses", "sdl"];

/// Whether anything in the config reaches QEMU as a display choice:
/// `display:`, an `arguments` item or an `args` string.
fn names_a_display(cfg: &VmConfig) -> bool {
    cfg.display.is_some()
        || cfg
            .arguments
            .iter()
            .any(|a| DISPLAY_OPTIONS.contains(&a.option.as_str()))
        || cfg.args.iter().any(|a| {
            a.strip_prefix("--")
                .or_else(|| a.strip_prefix('-'))
                .is_some_and(|o| DISPLAY_OPTIONS.contains(&o))
        })
}
