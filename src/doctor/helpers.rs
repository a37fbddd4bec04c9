//! The helpers of `shares:` (virtiofsd, and the user namespaces its
//! sandbox needs) and of `network: passt`. Missing ones are `info`: only
//! VMs that ask for them need them (their configs are refused then).

use super::{Finding, Severity};
use crate::companion::virtiofs;
use crate::programs;

pub fn check(f: &mut Vec<Finding>) {
    f.push(match programs::find_virtiofsd() {
        Ok(p) => Finding::ok(
            "virtiofsd",
            format!("virtiofsd {} (for `shares:`)", p.display()),
        ),
        Err(e) => Finding::new(
            "virtiofsd",
            Severity::Info,
            format!("`shares:` are unavailable: {e}"),
        )
        .hint(format!(
            "install the package {} (Debian 13, Fedora), or `cargo install --locked virtiofsd` (Debian 12; needs libseccomp-dev libcap-ng-dev) into a directory on the user manager's PATH",
            programs::VIRTIOFSD_PACKAGE
        )),
    });
    f.push(if virtiofs::user_namespaces_work() {
        Finding::ok(
            "userns",
            "user namespaces work: virtiofsd sandboxes itself (--sandbox namespace)",
        )
    } else {
        Finding::new(
            "userns",
            Severity::Info,
            "this user cannot use user namespaces: virtiofsd runs without a sandbox (--sandbox none), with only your own rights",
        )
        .hint("allow unprivileged user namespaces (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone, or Ubuntu's kernel.apparmor_restrict_unprivileged_userns) to sandbox it")
    });
    f.push(match programs::find_passt() {
        Ok(p) => Finding::ok(
            "passt",
            format!("passt {} (for `network: passt`)", p.display()),
        ),
        Err(e) => Finding::new(
            "passt",
            Severity::Info,
            format!("`network: passt` is unavailable: {e}"),
        )
        .hint(format!("install the package {}", programs::PASST_PACKAGE)),
    });
}
