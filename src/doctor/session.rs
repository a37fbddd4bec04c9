//! The user session: runtime directory, session bus, user manager,
//! lingering.

use std::path::Path;

use super::{command_output, Finding, Severity};
use crate::systemd::Systemd;

/// Connects to the user manager; the connection is reused by later checks.
pub async fn check(f: &mut Vec<Finding>) -> Option<Systemd> {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none_or(|v| v.is_empty()) {
        f.push(
            Finding::new(
                "session",
                Severity::Error,
                "XDG_RUNTIME_DIR is not set: there is no user session to run VMs in",
            )
            .hint("log in through a session manager (or ssh), or set XDG_RUNTIME_DIR=/run/user/$(id -u)"),
        );
    }
    match Systemd::connect_user().await {
        Ok(sd) => {
            let version = sd
                .manager_version()
                .await
                .unwrap_or_else(|e| format!("version unknown: {e}"));
            f.push(Finding::ok(
                "session",
                format!(
                    "systemd --user manager reachable over the session bus (systemd {version})"
                ),
            ));
            Some(sd)
        }
        Err(e) => {
            f.push(
                Finding::new("session", Severity::Error, e.to_string()).hint(
                    "check `systemctl --user status`; with lingering enabled the manager runs without a login",
                ),
            );
            None
        }
    }
}

/// The login name, as logind and the linger directory know it.
fn user_name() -> Option<String> {
    crate::account::lookup(rustix::process::getuid().as_raw())
        .map(|a| a.name)
        .or_else(|| std::env::var("USER").ok())
}

/// Lingering keeps the user manager — and so every VM — alive after the
/// last session of the user ends.
pub async fn linger() -> Finding {
    let Some(user) = user_name() else {
        return Finding::new(
            "linger",
            Severity::Warning,
            "cannot tell who you are (no passwd entry)",
        );
    };
    let enable = format!("loginctl enable-linger {user}");
    let on = Finding::ok(
        "linger",
        format!("lingering is enabled for {user}: VMs keep running after logout"),
    );
    let off = |how: &str| {
        Finding::new(
            "linger",
            Severity::Warning,
            format!("lingering is off for {user}: systemd stops every VM when your last session ends ({how})"),
        )
        .hint(format!("`{enable}` keeps your user manager and VMs running without a login"))
    };
    match command_output("loginctl", &["show-user", &user, "-p", "Linger", "--value"]).await {
        Ok(out) if out.trim() == "yes" => on,
        Ok(out) if out.trim() == "no" => off("logind says Linger=no"),
        // No logind to ask (or no session of ours it knows): the marker
        // file is what logind reads at boot.
        _ => {
            let marker = Path::new("/var/lib/systemd/linger").join(&user);
            if marker.exists() {
                on
            } else {
                off(&format!(
                    "logind did not answer and {} does not exist",
                    marker.display()
                ))
            }
        }
    }
}
