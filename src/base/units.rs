//! What the runner and the CLI agree on, in one place: unit names, the fd
//! numbers QEMU finds its sockets at, and the runner's exit statuses. Both
//! binaries import these; nothing here imports anything of maqet's.

/// Every VM's units are `maqet-vm@NAME.service` and `maqet-vm@NAME.socket`.
pub const UNIT_PREFIX: &str = "maqet-vm@";
/// Pattern of every VM service unit, for `ListUnitsByPatterns`.
pub const SERVICE_PATTERN: &str = "maqet-vm@*.service";
/// Pattern of every VM socket unit.
pub const SOCKET_PATTERN: &str = "maqet-vm@*.socket";

/// Pattern of every VM unit (files included), for `ListUnitFilesByPatterns`.
pub const UNIT_PATTERN: &str = "maqet-vm@*";

/// The user unit that runs `maqet autostart` at login (units/).
pub const AUTOSTART_UNIT: &str = "maqet-autostart.service";

/// A VM's TPM companion: `maqet-tpm@NAME.service` and `.socket`.
pub const TPM_PREFIX: &str = "maqet-tpm@";

/// `maqet-tpm@NAME.service`
pub fn tpm_service(vm: &str) -> String {
    format!("{TPM_PREFIX}{vm}.service")
}

/// `maqet-tpm@NAME.socket`
pub fn tpm_socket(vm: &str) -> String {
    format!("{TPM_PREFIX}{vm}.socket")
}

/// A VM-to-VM network segment's switch: `maqet-switch@SEGMENT.service`,
/// shared by every VM of the user on that segment.
pub const SWITCH_PREFIX: &str = "maqet-switch@";
/// Pattern of every segment switch unit.
pub const SWITCH_PATTERN: &str = "maqet-switch@*.service";

/// `maqet-switch@SEGMENT.service`
pub fn switch_service(segment: &str) -> String {
    format!("{SWITCH_PREFIX}{segment}.service")
}

/// The segment name in `maqet-switch@SEGMENT.service`.
pub fn switch_segment(unit: &str) -> Option<&str> {
    unit.strip_prefix(SWITCH_PREFIX)?.strip_suffix(".service")
}

/// A VM's virtiofs shares: `maqet-fs@NAME-TAG.service` and `.socket`, one
/// pair per share. Tags have no '-' (config/shares.rs), so the last '-'
/// of the instance separates the VM's name from the tag.
pub const FS_PREFIX: &str = "maqet-fs@";

/// `maqet-fs@NAME-TAG.service`
pub fn fs_service(vm: &str, tag: &str) -> String {
    format!("{FS_PREFIX}{vm}-{tag}.service")
}

/// `maqet-fs@NAME-TAG.socket`
pub fn fs_socket(vm: &str, tag: &str) -> String {
    format!("{FS_PREFIX}{vm}-{tag}.socket")
}

/// A VM's passt network: `maqet-net@NAME.service` (passt binds its own
/// socket, so there is no socket unit).
pub const NET_PREFIX: &str = "maqet-net@";

/// `maqet-net@NAME.service`
pub fn net_service(vm: &str) -> String {
    format!("{NET_PREFIX}{vm}.service")
}

/// Patterns of every companion unit of `vm` (for status listings). The
/// share pattern also matches VM `NAME-x`'s shares: filter the listing
/// with [`is_companion_of`].
pub fn companion_patterns(vm: &str) -> Vec<String> {
    vec![
        format!("{TPM_PREFIX}{vm}.*"),
        format!("{FS_PREFIX}{vm}-*"),
        format!("{NET_PREFIX}{vm}.*"),
    ]
}

/// Whether `unit` is one of `vm`'s companions (not another VM's whose
/// name begins like it).
pub fn is_companion_of(unit: &str, vm: &str) -> bool {
    let instance = |prefix: &str| {
        unit.strip_prefix(prefix).and_then(|r| {
            r.strip_suffix(".service")
                .or_else(|| r.strip_suffix(".socket"))
        })
    };
    if let Some(i) = instance(FS_PREFIX) {
        return i.rsplit_once('-').is_some_and(|(name, _)| name == vm);
    }
    instance(TPM_PREFIX).or_else(|| instance(NET_PREFIX)) == Some(vm)
}

/// Why a VM cannot go on when its companion `unit` failed (for the cause
/// in its journal and status).
pub fn why_companion_is_needed(unit: &str) -> &'static str {
    if unit.starts_with(FS_PREFIX) {
        "QEMU's vhost-user-fs device does not reconnect, so the guest has lost the share"
    } else if unit.starts_with(NET_PREFIX) {
        "QEMU's stream network backend does not reconnect, so the guest has lost its network"
    } else {
        "QEMU's TPM backend does not reconnect"
    }
}

/// `maqet-vm@NAME.service`: the VM's runner.
pub fn vm_service(vm: &str) -> String {
    format!("{UNIT_PREFIX}{vm}.service")
}

/// `maqet-vm@NAME.socket`: the runner's sockets.
pub fn vm_socket(vm: &str) -> String {
    format!("{UNIT_PREFIX}{vm}.socket")
}

/// The VM name in `maqet-vm@NAME.service`.
pub fn service_vm_name(unit: &str) -> Option<&str> {
    unit.strip_prefix(UNIT_PREFIX)?.strip_suffix(".service")
}

/// The VM name in `maqet-vm@NAME.socket`.
pub fn socket_vm_name(unit: &str) -> Option<&str> {
    unit.strip_prefix(UNIT_PREFIX)?.strip_suffix(".socket")
}

/// The fd QEMU finds its QMP socket at (`-chardev socket,id=maqet-qmp,fd=4`).
/// Not 3: that is the runner's listening socket from systemd.
pub const QMP_FD: i32 = 4;
/// The fd QEMU finds its end of the console socketpair at.
pub const CONSOLE_FD: i32 = 5;

/// The runner's exit status after a stop that was asked for (`maqet stop`,
/// `systemctl --user stop`). Listed in `SuccessExitStatus=` and
/// `RestartPreventExitStatus=`, so the unit ends cleanly and no restart
/// policy brings the VM back. Even, so QEMU's isa-debug-exit codes (always
/// odd) cannot be mistaken for it; in the 100–149 range LSB leaves to
/// applications.
pub const STOPPED_EXIT_STATUS: i32 = 100;

/// The runner's exit status when the first attempt of a `maqet start`
/// failed before QEMU ran (a bad option, a missing file): listed in
/// `RestartPreventExitStatus=` (not in `SuccessExitStatus=`), so the unit
/// stays `failed` with the cause instead of being restarted — a restart
/// policy is for a VM that ran and then failed. Automatic restarts that
/// fail the same way keep their own status (and are retried). Even, like
/// [`STOPPED_EXIT_STATUS`].
pub const START_FAILED_EXIT_STATUS: i32 = 102;

/// The runner's exit status when the VM failed while QEMU itself did not:
/// QEMU stopped it with `internal-error` or the guest panicked (under a
/// restart policy), or a helper it cannot run without (swtpm) died. A
/// failure for `Restart=on-failure`; the journal says which (sysexits'
/// EX_SOFTWARE).
pub const VM_FAILED_EXIT_STATUS: i32 = 70;

/// A signal's name for messages (`SIGKILL`), its number for the rare ones.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        19 => "SIGSTOP",
        _ => return format!("{sig}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn companions_of_one_vm_only() {
        use super::*;
        assert_eq!(fs_service("a-b", "src"), "maqet-fs@a-b-src.service");
        assert!(is_companion_of("maqet-fs@a-b-src.service", "a-b"));
        assert!(is_companion_of("maqet-fs@a-b-src.socket", "a-b"));
        // VM `a`'s pattern maqet-fs@a-* matches VM `a-b`'s share too.
        assert!(!is_companion_of("maqet-fs@a-b-src.service", "a"));
        assert!(is_companion_of("maqet-tpm@a.socket", "a"));
        assert!(!is_companion_of("maqet-tpm@a.b.socket", "a"));
        assert!(is_companion_of(&net_service("a"), "a"));
        assert!(!is_companion_of("maqet-vm@a.service", "a"));
    }

    #[test]
    fn vm_name_of_a_service_unit() {
        assert_eq!(super::service_vm_name("maqet-vm@a.b.service"), Some("a.b"));
        assert_eq!(super::service_vm_name("maqet-vm@a.socket"), None);
        assert_eq!(super::service_vm_name("other@a.service"), None);
    }

    #[test]
    fn segment_of_a_switch_unit() {
        let u = super::switch_service("lab");
        assert_eq!(u, "maqet-switch@lab.service");
        assert_eq!(super::switch_segment(&u), Some("lab"));
        assert_eq!(super::switch_segment("maqet-vm@lab.service"), None);
    }
}
