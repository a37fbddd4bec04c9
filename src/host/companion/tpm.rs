//! TPM 2.0 through swtpm: `maqet-tpm@NAME.socket` (the control socket,
//! 0600, in the VM's runtime directory, bound by systemd before anything
//! runs) and `maqet-tpm@NAME.service` (swtpm, handed that socket as fd 3).
//! The TPM state lives in the VM's directory (`tpm/`, 0700) and survives
//! restarts; it is recorded as created by maqet.
//!
//! Socket activation removes the race between swtpm creating its socket and
//! QEMU connecting to it: the socket exists before either process starts.

use std::path::{Path, PathBuf};

use zbus::zvariant::Value;

use super::{common_service_props, Companions};
use crate::state::Store;
use crate::storage::{Provisioned, StorageError};
use maqet_base::vmname::VmName;

pub fn service_unit(vm: &VmName) -> String {
    maqet_base::units::tpm_service(vm.as_str())
}

pub fn socket_unit(vm: &VmName) -> String {
    maqet_base::units::tpm_socket(vm.as_str())
}

/// The state directory in the VM's own directory.
pub fn state_dir(vm_dir: &Path) -> PathBuf {
    vm_dir.join("tpm")
}

/// Creates the state directory (0700) unless it exists, recorded.
pub fn provision_state(
    vm: &str,
    vm_dir: &Path,
    store: &Store,
    done: &mut Provisioned,
) -> Result<(), StorageError> {
    crate::storage::disks::ensure_private_dir(vm, vm_dir, &state_dir(vm_dir), store, done)
}

/// Files swtpm keeps in its state directory (TPM 2.0). They are swtpm's,
/// not recorded: `rm --delete-storage` deletes them from the state
/// directory maqet recorded (storage::remove::remove_inside, the same walk
/// and checks as every deletion), so the directory itself can go.
pub const STATE_FILES: &[&str] = &[
    "tpm2-00.permall",
    "tpm2-00.volatilestate",
    "tpm2-00.savestate",
    ".lock",
];

/// The socket + service pair for `vm` of data directory `data_dir`.
pub fn units(
    vm: &VmName,
    swtpm: &Path,
    runner: &Path,
    vm_dir: &Path,
    runtime_dir: &Path,
    data_dir: &Path,
) -> Companions {
    let service = service_unit(vm);
    let socket = socket_unit(vm);
    let state = state_dir(vm_dir).to_string_lossy().replace(',', ",,");
    let args = vec![
        "socket".to_string(),
        "--tpm2".into(),
        "--tpmstate".into(),
        format!("dir={state},mode=0600"),
        // fd 3: the control socket systemd bound (maqet-tpm@NAME.socket).
        "--ctrl".into(),
        "type=unixio,fd=3".into(),
        "--log".into(),
        "level=1".into(),
    ];
    let mut sp = common_service_props(vm, format!("maqet VM {} TPM (swtpm)", vm.as_str()));
    sp.extend([
        // Active once the relay is exec'd; swtpm's presence is checked
        // before the start, and if it fails to run the relay exits 127.
        ("Type", Value::from("exec".to_string())),
        ("ExecStart", super::relayed(runner, vm, &[], swtpm, args)),
        ("Wants", Value::from(vec![socket.clone()])),
        ("After", Value::from(vec![socket.clone()])),
    ]);
    // Its lines tagged with the data directory; if it fails, the VM fails
    // naming it.
    sp.extend(super::helper_props(vm, &service, "swtpm", runner, data_dir));
    // A stateless swtpm must never be started by a stray connection.
    let kp = super::socket_props(
        format!("maqet VM {} TPM control socket", vm.as_str()),
        &maqet_config::tpm::socket_path(runtime_dir),
        &service,
    );
    Companions::socket_activated(socket, kp, service, sp)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::systemd::properties::prop as get;

    #[test]
    fn units_are_bound_both_ways_and_private() {
        let vm = VmName::new("w").unwrap();
        let c = units(
            &vm,
            Path::new("/usr/bin/swtpm"),
            Path::new("/usr/bin/maqet-runner"),
            Path::new("/d/disks/w"),
            Path::new("/run/u/maqet/vm/w"),
            Path::new("/d"),
        );
        assert_eq!(c.names(), vec!["maqet-tpm@w.socket", "maqet-tpm@w.service"]);
        assert_eq!(c.want, vec!["maqet-tpm@w.socket", "maqet-tpm@w.service"]);
        let sock = &c.units[0].props;
        assert_eq!(get(sock, "SocketMode"), &Value::from(0o600u32));
        assert!(format!("{:?}", get(sock, "Listen")).contains("/run/u/maqet/vm/w/tpm.sock"));
        let svc = &c.units[1].props;
        assert_eq!(
            get(svc, "BindsTo"),
            &Value::from(vec!["maqet-vm@w.service".to_string()])
        );
        assert_eq!(
            get(svc, "Before"),
            &Value::from(vec!["maqet-vm@w.service".to_string()])
        );
        assert_eq!(
            get(svc, "LogExtraFields"),
            &Value::from(vec![b"MAQET_VM=w".to_vec()])
        );
        assert_eq!(
            get(svc, "LogExtraFields").value_signature().to_string(),
            "aay"
        );
        let exec = format!("{:?}", get(svc, "ExecStart"));
        assert!(
            exec.contains("dir=/d/disks/w/tpm,mode=0600") && exec.contains("fd=3"),
            "{exec}"
        );
        // swtpm runs under the runner's relay, which tags its lines, with
        // the data directory too.
        assert_eq!(
            get(svc, "Environment"),
            &Value::from(vec!["MAQET_DATA_DIR=/d".to_string()])
        );
        assert!(
            exec.contains("/usr/bin/maqet-runner")
                && exec.contains(r#"Str("--relay"), Str("w"), Str("--"), Str("/usr/bin/swtpm")"#),
            "{exec}"
        );
        // Its failure reaches the VM's runner; its end binds nothing.
        let post = format!("{:?}", get(svc, "ExecStopPost"));
        assert!(
            post.contains(r#"Str("--companion-stopped"), Str("w"), Str("maqet-tpm@w.service")"#),
            "{post}"
        );
    }
}
