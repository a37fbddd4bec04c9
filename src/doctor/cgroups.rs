//! Whether systemd can enforce the VMs' `resources:` and account their
//! usage: that needs cgroup v2 controllers delegated to the user manager.

use std::collections::BTreeSet;
use std::path::Path;

use super::store::DefinedVm;
use super::{Finding, Severity};
use crate::systemd::Systemd;

const ROOT: &str = "/sys/fs/cgroup";

/// The controllers each `resources` key needs.
fn needed(vms: &[DefinedVm]) -> BTreeSet<&'static str> {
    let mut need = BTreeSet::new();
    for c in vms.iter().filter_map(|v| v.config.as_ref().ok()) {
        let r = &c.resources;
        if r.memory_max.is_some() {
            need.insert("memory");
        }
        if r.cpu_quota_percent.is_some() || r.cpu_weight.is_some() {
            need.insert("cpu");
        }
        if r.io_weight.is_some() {
            need.insert("io");
        }
        if r.tasks_max.is_some() {
            need.insert("pids");
        }
    }
    need
}

pub async fn check(sd: &Systemd, vms: &[DefinedVm]) -> Finding {
    let need = needed(vms);
    // Limits only matter once a VM sets one.
    let severity = if need.is_empty() {
        Severity::Info
    } else {
        Severity::Warning
    };
    let hint = "see \"Resource control\" in docs/systemd.md";
    if !Path::new(ROOT).join("cgroup.controllers").exists() {
        return Finding::new(
            "cgroups",
            severity,
            "cgroup v1 or hybrid hierarchy: the user manager has no resource controllers, so \
             `resources:` limits are accepted but not enforced, and usage is read from /proc",
        )
        .hint(format!(
            "boot with the unified hierarchy (systemd.unified_cgroup_hierarchy=1) to enforce limits; {hint}"
        ));
    }
    let cgroup = match sd.manager_cgroup().await {
        Ok(c) => c,
        Err(e) => return Finding::new("cgroups", Severity::Warning, e.to_string()),
    };
    let file = Path::new(ROOT)
        .join(cgroup.trim_start_matches('/'))
        .join("cgroup.controllers");
    let have: BTreeSet<String> = match std::fs::read_to_string(&file) {
        Ok(t) => t.split_whitespace().map(str::to_string).collect(),
        Err(e) => {
            return Finding::new(
                "cgroups",
                Severity::Warning,
                format!("cannot read {}: {e}", file.display()),
            )
        }
    };
    let missing: Vec<&str> = ["memory", "pids", "cpu", "io"]
        .into_iter()
        .filter(|c| !have.contains(*c))
        .collect();
    if missing.is_empty() {
        return Finding::ok(
            "cgroups",
            "the user manager has the memory, pids, cpu and io controllers: limits are enforced",
        );
    }
    let used_missing: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|c| need.contains(c))
        .collect();
    Finding::new(
        "cgroups",
        if used_missing.is_empty() {
            Severity::Info
        } else {
            Severity::Warning
        },
        format!(
            "controllers not delegated to the user manager: {}{}",
            missing.join(" "),
            if used_missing.is_empty() {
                String::new()
            } else {
                format!(
                    "; VM limits that need {} are not enforced",
                    used_missing.join(", ")
                )
            }
        ),
    )
    .hint(format!(
        "as root: systemctl edit user@.service, add [Service] Delegate=cpu cpuset io memory pids, then log in again; {hint}"
    ))
}
