//! The database and the VM definitions it holds.

use super::{Finding, Severity};
use crate::config::{ConfigDocument, VmConfig};
use crate::paths::DataDir;
use crate::state::Store;

/// A defined VM as the other checks need it.
#[derive(Debug)]
pub struct DefinedVm {
    pub name: String,
    pub autostart: bool,
    /// The stored config, validated now; the error text otherwise.
    pub config: Result<VmConfig, String>,
    /// What is unfinished about it (an interrupted clone), if anything.
    pub incomplete: Option<String>,
    /// `(disk, base)` of each disk with a `base:` as stored (absolute),
    /// known even when the config no longer validates.
    pub bases: Vec<(String, std::path::PathBuf)>,
}

/// Integrity of maqet.db and validity of every stored config; returns the
/// defined VMs (empty when there is no readable database).
pub fn check(data_dir: &DataDir, f: &mut Vec<Finding>) -> Vec<DefinedVm> {
    let db = data_dir.db_path();
    let store = match Store::open_read_only(&db) {
        Ok(Some(s)) => s,
        Ok(None) => {
            f.push(Finding::new(
                "database",
                Severity::Info,
                format!("no database yet at {} (no VM defined here)", db.display()),
            ));
            return Vec::new();
        }
        Err(e) => {
            f.push(
                Finding::new("database", Severity::Error, e.to_string())
                    .hint("check the file's owner and mode (0600, yours); restore it from a backup if it is damaged"),
            );
            return Vec::new();
        }
    };
    match store.integrity_check() {
        Ok(problems) if problems.is_empty() => f.push(Finding::ok(
            "database",
            format!(
                "{} passes SQLite's integrity and foreign-key checks",
                db.display()
            ),
        )),
        Ok(problems) => f.push(
            Finding::new(
                "database",
                Severity::Error,
                format!("{} is damaged: {}", db.display(), problems.join("; ")),
            )
            .hint(format!(
                "restore it from a backup, or dump what is readable: sqlite3 {} .dump",
                db.display()
            )),
        ),
        Err(e) => f.push(Finding::new("database", Severity::Error, e.to_string())),
    }
    let records = match store.list_vms() {
        Ok(r) => r,
        Err(e) => {
            f.push(Finding::new("database", Severity::Error, e.to_string()));
            return Vec::new();
        }
    };
    let vms: Vec<DefinedVm> = records
        .into_iter()
        .map(|r| DefinedVm {
            bases: r.config["storage"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| {
                    let base = d["base"].as_str()?;
                    Some((d["name"].as_str().unwrap_or("?").to_string(), base.into()))
                })
                .collect(),
            config: ConfigDocument::from_stored(&r.config)
                .and_then(|d| d.validate())
                .map_err(|e| e.to_string()),
            name: r.name,
            autostart: r.autostart,
            incomplete: r.incomplete,
        })
        .collect();
    let mut bad = 0;
    for vm in &vms {
        if let Err(e) = &vm.config {
            bad += 1;
            f.push(
                Finding::new(
                    "config",
                    Severity::Error,
                    format!("VM '{}': the stored config no longer validates, so it cannot start: {e}", vm.name),
                )
                .hint(format!(
                    "fix what the message names (e.g. install the QEMU binary), or redefine it: maqet rm {0} && maqet add FILE",
                    vm.name
                )),
            );
        }
    }
    if bad == 0 && !vms.is_empty() {
        f.push(Finding::ok(
            "config",
            format!("{} VM configs validate", vms.len()),
        ));
    }
    vms
}
