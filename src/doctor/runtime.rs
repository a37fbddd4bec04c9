//! Leftovers in the runtime root (`$XDG_RUNTIME_DIR/maqet/vm`): a VM's
//! directory, or an older layout's socket or port plan beside it, that no
//! live unit owns. systemd removes a VM's directory when the VM ends, so
//! one left behind means a crash of the manager, a start refused before
//! its unit existed, or a file made by hand.
//!
//! A file that belongs to a live VM is never reported, whatever it is:
//! the advice for it ("stop what listens") would stop that VM. In the old
//! layout a name can be two VMs' (`a.qga.sock` is VM `a`'s agent socket and
//! VM `a.qga`'s control socket): it is left alone while either runs.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::{Finding, Severity};
use crate::paths;
use crate::systemd::Systemd;
use crate::vmname::VmName;

/// Which VMs an old-layout file beside the directories may belong to.
fn owners_of_beside_file(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for suffix in [".qga.sock", ".ports.json", ".sock", ".qmp"] {
        if let Some(vm) = name.strip_suffix(suffix) {
            out.push(vm.to_string());
        }
    }
    out.retain(|v| VmName::new(v).is_ok());
    out
}

/// What one entry of the runtime root is.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    /// A VM's own directory.
    Dir(String),
    /// An old-layout file, of one of these VMs.
    Beside(Vec<String>),
    /// Not maqet's naming at all.
    Foreign,
}

fn classify(name: &str, is_dir: bool) -> Entry {
    if is_dir {
        return match VmName::new(name) {
            Ok(_) => Entry::Dir(name.to_string()),
            Err(_) => Entry::Foreign,
        };
    }
    match owners_of_beside_file(name) {
        v if v.is_empty() => Entry::Foreign,
        v => Entry::Beside(v),
    }
}

async fn vm_is_live(sd: &Systemd, live: &HashSet<String>, vm: &str) -> bool {
    if live.contains(vm) {
        return true;
    }
    let Ok(name) = VmName::new(vm) else {
        return false;
    };
    for unit in [name.service_unit(), name.socket_unit()] {
        let up = sd
            .unit_status(&unit)
            .await
            .ok()
            .flatten()
            .is_some_and(|s| !matches!(s.active_state.as_str(), "inactive" | "failed"));
        if up {
            return true;
        }
    }
    false
}

/// A stale file: what listens on it, if it is a socket.
enum Stale {
    /// Safe to remove: not a socket, or a socket nothing listens on.
    Dead,
    /// A process listens although no unit of the VM is live.
    Listened,
    /// Gone meanwhile.
    Gone,
}

fn probe(path: &Path) -> Stale {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Stale::Gone;
    };
    if !meta.file_type().is_socket() {
        return Stale::Dead;
    }
    match UnixStream::connect(path) {
        Ok(_) => Stale::Listened,
        Err(e) if e.kind() == ErrorKind::NotFound => Stale::Gone,
        Err(_) => Stale::Dead,
    }
}

fn listened(path: &Path, vm: &str) -> Finding {
    Finding::new(
        "sockets",
        Severity::Warning,
        format!(
            "something listens on {} although VM '{vm}' does not run: not a process maqet started",
            path.display()
        ),
    )
    .hint(format!(
        "find it with `ss -xlp | grep {}` and stop it if you do not know it",
        path.display()
    ))
}

/// Removes `paths` (re-checking right before that no unit of `vms` came up)
/// and, for a VM directory, the directory once empty.
async fn fix_up(
    sd: &Systemd,
    live: &HashSet<String>,
    vms: &[String],
    paths: &[PathBuf],
    dir: Option<&Path>,
) -> Result<String, String> {
    for vm in vms {
        if vm_is_live(sd, live, vm).await {
            return Err(format!("VM '{vm}' started meanwhile"));
        }
    }
    let mut removed = Vec::new();
    for p in paths {
        match std::fs::remove_file(p) {
            Ok(()) => removed.push(p.display().to_string()),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", p.display())),
        }
    }
    if let Some(d) = dir {
        if std::fs::remove_dir(d).is_ok() {
            removed.push(d.display().to_string());
        }
    }
    Ok(format!("removed {}", removed.join(", ")))
}

/// How old a VM's directory must be before it is judged: a start writes
/// its port plan there shortly before it creates the unit, so a younger
/// one may be a start under way (of any data directory).
const SETTLE: std::time::Duration = std::time::Duration::from_secs(60);

fn recently_changed(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age < SETTLE)
}

/// A VM directory without a live VM: its known files, and whether anything
/// in it is not maqet's or still listened on.
async fn check_dir(
    sd: &Systemd,
    live: &HashSet<String>,
    vm: &str,
    dir: &Path,
    fix: bool,
    f: &mut Vec<Finding>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut stale = Vec::new();
    let mut foreign = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !paths::is_runtime_file(&name) {
            foreign.push(e.path());
            continue;
        }
        match probe(&e.path()) {
            Stale::Dead => stale.push(e.path()),
            Stale::Listened => f.push(listened(&e.path(), vm)),
            Stale::Gone => {}
        }
    }
    for p in &foreign {
        f.push(
            Finding::new(
                "sockets",
                Severity::Warning,
                format!(
                    "{} is in VM '{vm}''s runtime directory but maqet did not make it",
                    p.display()
                ),
            )
            .hint(format!(
                "remove it if you do not know what it is: rm -r {}",
                p.display()
            )),
        );
    }
    if stale.is_empty() && !foreign.is_empty() {
        return;
    }
    let names: Vec<String> = stale
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let what = if names.is_empty() {
        String::new()
    } else {
        format!(" ({})", names.join(", "))
    };
    let mut finding = Finding::new(
        "sockets",
        Severity::Warning,
        format!(
            "stale runtime directory {}{what}: VM '{vm}' does not run and nothing listens",
            dir.display()
        ),
    )
    .hint(format!("rm -r {} (or `maqet doctor --fix`)", dir.display()))
    .fixable();
    if fix {
        match fix_up(sd, live, &[vm.to_string()], &stale, Some(dir)).await {
            Ok(done) => finding.fixed = Some(done),
            Err(why) => finding.message.push_str(&format!(" (not removed: {why})")),
        }
    }
    f.push(finding);
}

/// Runtime files and directories that no live unit owns.
pub async fn check(sd: &Systemd, live: &HashSet<String>, fix: bool, f: &mut Vec<Finding>) {
    let Ok(root) = paths::runtime_root() else {
        return; // reported by the session check
    };
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            f.push(Finding::ok(
                "sockets",
                format!("no runtime directory {} yet", root.display()),
            ));
            return;
        }
        Err(e) => {
            f.push(Finding::new(
                "sockets",
                Severity::Warning,
                format!("cannot read {}: {e}", root.display()),
            ));
            return;
        }
    };
    let before = f.len();
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        match classify(&name, is_dir) {
            Entry::Dir(vm) => {
                if !recently_changed(&path) && !vm_is_live(sd, live, &vm).await {
                    check_dir(sd, live, &vm, &path, fix, f).await;
                }
            }
            Entry::Beside(vms) => {
                let mut any_live = false;
                for vm in &vms {
                    any_live |= vm_is_live(sd, live, vm).await;
                }
                if any_live {
                    continue;
                }
                let vm = &vms[0];
                match probe(&path) {
                    Stale::Gone => {}
                    Stale::Listened => f.push(listened(&path, vm)),
                    Stale::Dead => {
                        let mut finding = Finding::new(
                            "sockets",
                            Severity::Warning,
                            format!(
                                "stale file {} (of VM '{}', which does not run; nothing listens)",
                                path.display(),
                                vms.join("' or '")
                            ),
                        )
                        .hint(format!("rm {} (or `maqet doctor --fix`)", path.display()))
                        .fixable();
                        if fix {
                            match fix_up(sd, live, &vms, std::slice::from_ref(&path), None).await {
                                Ok(done) => finding.fixed = Some(done),
                                Err(why) => {
                                    finding.message.push_str(&format!(" (not removed: {why})"))
                                }
                            }
                        }
                        f.push(finding);
                    }
                }
            }
            Entry::Foreign => f.push(
                Finding::new(
                    "sockets",
                    Severity::Warning,
                    format!("{} is not something maqet makes", path.display()),
                )
                .hint(format!(
                    "remove it if you do not know what it is: rm -r {}",
                    path.display()
                )),
            ),
        }
    }
    if f.len() == before {
        f.push(Finding::ok(
            "sockets",
            format!("no stale runtime files in {}", root.display()),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_told_apart_and_ambiguous_old_names_have_every_owner() {
        assert_eq!(classify("web", true), Entry::Dir("web".into()));
        assert_eq!(classify(".hidden", true), Entry::Foreign);
        assert_eq!(
            classify("web.sock", false),
            Entry::Beside(vec!["web".into()])
        );
        assert_eq!(
            classify("web.qmp", false),
            Entry::Beside(vec!["web".into()])
        );
        assert_eq!(
            classify("web.ports.json", false),
            Entry::Beside(vec!["web".into()])
        );
        // VM `a`'s agent socket, or VM `a.qga`'s control socket.
        assert_eq!(
            classify("a.qga.sock", false),
            Entry::Beside(vec!["a".into(), "a.qga".into()])
        );
        assert_eq!(classify("notes.txt", false), Entry::Foreign);
    }
}
