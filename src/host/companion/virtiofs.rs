//! virtiofs shares: per share, `maqet-fs@NAME-TAG.socket` (the vhost-user
//! socket, 0600, in the VM's runtime directory, bound by systemd before
//! anything runs) and `maqet-fs@NAME-TAG.service` (virtiofsd, handed that
//! socket as fd 3 with `--fd=3`), the same shape as the TPM's pair.
//!
//! virtiofsd runs as the user. With user namespaces it sandboxes itself in
//! one (`--sandbox namespace`: its own mount namespace with the shared
//! directory as `/`); where the kernel refuses them it runs without a
//! sandbox (`--sandbox none`) — `chroot` needs root. Either way files the
//! guest creates belong to the user on the host: an unprivileged virtiofsd
//! cannot take on other owners.

use std::path::Path;

use zbus::zvariant::Value;

use super::{common_service_props, Companions};
use maqet_base::vmname::VmName;
use maqet_config::Share;

/// virtiofsd's `--sandbox` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sandbox {
    /// A user + mount namespace whose root is the shared directory.
    Namespace,
    /// No isolation beyond running as the user (no user namespaces here).
    None,
}

impl Sandbox {
    pub fn as_str(self) -> &'static str {
        match self {
            Sandbox::Namespace => "namespace",
            Sandbox::None => "none",
        }
    }

    /// `namespace` where this host lets the user make a user namespace and
    /// act as root in it, else `none`.
    pub fn for_this_host() -> Sandbox {
        if user_namespaces_work() {
            Sandbox::Namespace
        } else {
            tracing::warn!("user namespaces are not available to this user: virtiofsd runs without a sandbox (--sandbox none); see docs/troubleshooting.md");
            Sandbox::None
        }
    }
}

/// Whether an unprivileged process may create a user namespace *and* use
/// the capabilities it has there (mount namespace, a mount propagation
/// change) — what virtiofsd's namespace sandbox does. The kernel may
/// refuse the namespace (`user.max_user_namespaces=0`, Debian's
/// `kernel.unprivileged_userns_clone=0`), or grant it without capabilities
/// (Ubuntu 24.04's AppArmor restriction): both read as "no".
pub fn user_namespaces_work() -> bool {
    // SAFETY: the child only makes raw system calls (unshare, mount,
    // _exit), which are async-signal-safe, so forking a multi-threaded
    // process is sound; the parent reaps exactly that child.
    unsafe {
        match libc::fork() {
            -1 => false,
            0 => {
                let ok = libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) == 0
                    && libc::mount(
                        c"none".as_ptr(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) == 0;
                libc::_exit(if ok { 0 } else { 1 })
            }
            pid => {
                let mut status = 0;
                loop {
                    let r = libc::waitpid(pid, &mut status, 0);
                    if r == pid {
                        break;
                    }
                    if r == -1 && *libc::__errno_location() != libc::EINTR {
                        return false;
                    }
                }
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
            }
        }
    }
}

pub fn service_unit(vm: &VmName, tag: &str) -> String {
    maqet_base::units::fs_service(vm.as_str(), tag)
}

pub fn socket_unit(vm: &VmName, tag: &str) -> String {
    maqet_base::units::fs_socket(vm.as_str(), tag)
}

/// One share as its virtiofsd serves it.
#[derive(Debug, Clone, Copy)]
pub struct Serve<'a> {
    pub virtiofsd: &'a Path,
    pub share: &'a Share,
    /// Its position in `shares:` (names its socket).
    pub index: usize,
    pub sandbox: Sandbox,
}

/// virtiofsd's arguments for one share, on the socket systemd passes as fd 3.
pub fn virtiofsd_args(s: &Serve<'_>) -> Vec<String> {
    let mut args = vec![
        "--fd=3".to_string(),
        format!("--shared-dir={}", s.share.host.display()),
        format!("--sandbox={}", s.sandbox.as_str()),
    ];
    if s.share.readonly {
        args.push("--readonly".into());
    }
    args
}

/// The socket + service pair of one share of `vm`.
pub fn units(
    vm: &VmName,
    s: &Serve<'_>,
    runner: &Path,
    runtime_dir: &Path,
    data_dir: &Path,
) -> Companions {
    let tag = &s.share.tag;
    let service = service_unit(vm, tag);
    let socket = socket_unit(vm, tag);
    let mut sp = common_service_props(
        vm,
        format!(
            "maqet VM {} share {tag} (virtiofsd, {})",
            vm.as_str(),
            s.share.host.display()
        ),
    );
    sp.extend([
        // Active once the relay is exec'd; virtiofsd's presence is checked
        // before the start, and if it fails to run the relay exits 127.
        ("Type", Value::from("exec".to_string())),
        (
            "ExecStart",
            super::relayed(runner, vm, &[], s.virtiofsd, virtiofsd_args(s)),
        ),
        ("Wants", Value::from(vec![socket.clone()])),
        ("After", Value::from(vec![socket.clone()])),
    ]);
    sp.extend(super::helper_props(
        vm,
        &service,
        "virtiofsd",
        runner,
        data_dir,
    ));
    let kp = super::socket_props(
        format!("maqet VM {} share {tag} (vhost-user socket)", vm.as_str()),
        &maqet_base::paths::share_socket(runtime_dir, s.index),
        &service,
    );
    Companions::socket_activated(socket, kp, service, sp)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::systemd::properties::prop as get;

    #[test]
    fn a_share_is_a_socket_activated_virtiofsd_bound_to_its_vm() {
        let vm = VmName::new("web-1").unwrap();
        let share = Share {
            host: "/home/u/src".into(),
            tag: "src".into(),
            readonly: true,
            guest: None,
            location: Default::default(),
        };
        let c = units(
            &vm,
            &Serve {
                virtiofsd: Path::new("/usr/libexec/virtiofsd"),
                share: &share,
                index: 2,
                sandbox: Sandbox::Namespace,
            },
            Path::new("/usr/bin/maqet-runner"),
            Path::new("/run/u/maqet/vm/web-1"),
            Path::new("/d"),
        );
        assert_eq!(
            c.names(),
            vec!["maqet-fs@web-1-src.socket", "maqet-fs@web-1-src.service"]
        );
        let sock = &c.units[0].props;
        assert_eq!(get(sock, "SocketMode"), &Value::from(0o600u32));
        assert!(format!("{:?}", get(sock, "Listen")).contains("/run/u/maqet/vm/web-1/fs2.sock"));
        assert_eq!(
            get(sock, "BindsTo"),
            &Value::from(vec!["maqet-fs@web-1-src.service".to_string()])
        );
        let svc = &c.units[1].props;
        assert_eq!(
            get(svc, "BindsTo"),
            &Value::from(vec!["maqet-vm@web-1.service".to_string()])
        );
        let exec = format!("{:?}", get(svc, "ExecStart"));
        assert!(
            exec.contains(r#"Str("--relay"), Str("web-1"), Str("--"), Str("/usr/libexec/virtiofsd"), Str("--fd=3"), Str("--shared-dir=/home/u/src"), Str("--sandbox=namespace"), Str("--readonly")"#),
            "{exec}"
        );
        // No --tag: QEMU 7.1–8.0 crash on the feature it enables.
        assert!(!exec.contains("--tag"), "{exec}");
        let post = format!("{:?}", get(svc, "ExecStopPost"));
        assert!(
            post.contains(
                r#"Str("--companion-stopped"), Str("web-1"), Str("maqet-fs@web-1-src.service")"#
            ),
            "{post}"
        );
        assert_eq!(
            get(svc, "SyslogIdentifier"),
            &Value::from("virtiofsd".to_string())
        );
    }
}
