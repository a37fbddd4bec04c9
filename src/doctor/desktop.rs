//! The optional desktop pieces: UEFI firmware (by QEMU descriptor), swtpm
//! and a display viewer. Missing ones are `info` — only VMs that ask for
//! them need them (their configs are refused then, see `config`).

use super::{Finding, Severity};
use crate::display::{self, DisplayServer};
use crate::firmware;
use crate::programs;

pub fn check(f: &mut Vec<Finding>) {
    f.push(match firmware::select("x86_64", "q35", false) {
        Ok(fw) => {
            let sb = firmware::select("x86_64", "q35", true).is_ok();
            Finding::ok(
                "firmware",
                format!(
                    "UEFI firmware {} (descriptor {}){}",
                    fw.flash.executable.display(),
                    fw.descriptor.display(),
                    if sb {
                        "; Secure Boot with enrolled keys available"
                    } else {
                        "; no Secure Boot build"
                    }
                ),
            )
        }
        Err(e) => Finding::new(
            "firmware",
            Severity::Info,
            format!("`firmware: uefi` is unavailable: {e}"),
        )
        .hint(format!("install {}", firmware::OVMF_PACKAGES)),
    });
    f.push(match programs::find_swtpm() {
        Ok(p) => Finding::ok("swtpm", format!("swtpm {} (for `tpm: true`)", p.display())),
        Err(e) => Finding::new(
            "swtpm",
            Severity::Info,
            format!("`tpm: true` is unavailable: {e}"),
        )
        .hint(format!("install {}", programs::SWTPM_PACKAGES)),
    });
    let found: Vec<String> = [DisplayServer::Vnc, DisplayServer::Spice]
        .into_iter()
        .filter_map(|s| {
            display::find_viewer(s)
                .map(|(v, p)| format!("{} for {} ({})", v.program, s.as_str(), p.display()))
        })
        .collect();
    f.push(if found.is_empty() {
        Finding::new(
            "viewer",
            Severity::Info,
            "no display viewer for `maqet display` is installed (displays are still reachable through their sockets)",
        )
        .hint(display::install_hint(None))
    } else {
        Finding::ok("viewer", found.join("; "))
    });
}
