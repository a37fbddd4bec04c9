//! The TPM as QEMU sees it (`tpm: true`): which device model the machine
//! takes and the tpm-emulator backend on swtpm's control socket. Facts
//! only: the swtpm units that serve the socket are `maqet_host::companion::tpm`'s.

use std::path::{Path, PathBuf};

/// The control socket in the VM's runtime directory.
pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("tpm.sock")
}

/// The TPM device QEMU gives the guest: CRB on q35 (what Windows 11 and
/// current Linux expect), TIS elsewhere (i440fx has no CRB support).
pub fn device_for_machine(machine: Option<&str>) -> &'static str {
    match machine {
        Some(m) if m == "q35" || m.starts_with("pc-q35-") => "tpm-crb",
        _ => "tpm-tis",
    }
}

/// QEMU's side: a tpm-emulator backend on the control socket.
pub fn qemu_args(socket: &Path, device: &str) -> Vec<String> {
    let path = socket.to_string_lossy().replace(',', ",,");
    vec![
        "-chardev".into(),
        format!("socket,id=maqet-tpm,path={path}"),
        "-tpmdev".into(),
        "emulator,id=maqet-tpm0,chardev=maqet-tpm".into(),
        "-device".into(),
        format!("{device},tpmdev=maqet-tpm0"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_args() {
        assert_eq!(device_for_machine(Some("q35")), "tpm-crb");
        assert_eq!(device_for_machine(Some("pc-q35-7.2")), "tpm-crb");
        assert_eq!(device_for_machine(Some("pc")), "tpm-tis");
        let a = qemu_args(Path::new("/r/tpm.sock"), "tpm-crb");
        assert_eq!(a[1], "socket,id=maqet-tpm,path=/r/tpm.sock");
        assert_eq!(a[5], "tpm-crb,tpmdev=maqet-tpm0");
    }
}
