//! The image cache: its size, entries nothing verified
//! (`--insecure-skip-verify`), unfinished downloads, and VMs whose base
//! image has gone from it (a cleared `~/.cache`).

use super::store::DefinedVm;
use super::{Finding, Severity};
use crate::image::Cache;

pub fn check(vms: &[DefinedVm], f: &mut Vec<Finding>) {
    let Ok(cache) = Cache::from_env() else {
        f.push(Finding::new(
            "images",
            Severity::Info,
            "no image cache: neither XDG_CACHE_HOME nor HOME is set",
        ));
        return;
    };
    let root = cache.root();
    let entries: Vec<_> = cache
        .url_dirs()
        .into_iter()
        .filter_map(|(_, e)| e)
        .collect();
    let unverified: Vec<&str> = entries
        .iter()
        .filter(|e| e.verified.is_none())
        .map(|e| e.url.as_str())
        .collect();
    let partial = cache
        .url_dirs()
        .iter()
        .filter(|(d, _)| d.join("data.partial").exists())
        .count();
    let mut message = format!(
        "{} image file(s), {:.1} MiB in {}",
        cache.blobs().len(),
        cache.size() as f64 / f64::from(1u32 << 20),
        root.display()
    );
    if !unverified.is_empty() {
        message.push_str(&format!(
            "; {} unverified: {}",
            unverified.len(),
            unverified.join(", ")
        ));
    }
    if partial > 0 {
        message.push_str(&format!("; {partial} unfinished download(s)"));
    }
    f.push(if unverified.is_empty() {
        Finding::ok("images", message)
    } else {
        Finding::new("images", Severity::Warning, message).hint(
            "these were pulled with --insecure-skip-verify: `maqet image rm URL`, then pull them with --digest or --checksums",
        )
    });
    // A base in the cache that is gone: the VM's disk cannot be opened.
    for vm in vms {
        for (disk, base) in &vm.bases {
            if base.starts_with(root) && !base.exists() {
                f.push(
                    Finding::new(
                        "images",
                        Severity::Error,
                        format!(
                            "VM '{}': disk '{disk}' is based on {}, which is no longer in the image cache",
                            vm.name,
                            base.display()
                        ),
                    )
                    .hint("the cache was cleared: pull the image again (`maqet image pull`); the VM's disk needs exactly those bytes (their sha256 is in `maqet config`)"),
                );
            }
        }
    }
}
