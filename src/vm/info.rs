//! `maqet info` and `maqet config`: a definition as stored, QEMU's command
//! line as the runner would run it (`provision::qemu_command`, the runner's
//! own function), start-time parts included — a running VM's published
//! ports, else a placeholder for what a start chooses — and the stored
//! config as YAML that `add` takes again. Needs no user session.

use crate::provision::guest::{qemu_command, Ports, QemuCommand};
use maqet_base::paths::{runtime_root_or_default, DataDir, VmRuntime};
use maqet_base::vmname::VmName;
use maqet_config::ConfigDocument;
use maqet_host::state::VmRecord;

use super::VmError;

/// A stored VM and its QEMU command line.
#[derive(Debug)]
pub struct Info {
    pub record: VmRecord,
    /// Why there is none: the stored config no longer validates, or what
    /// a start would add cannot be rendered.
    pub command: Result<QemuCommand, VmError>,
}

/// What `maqet info` shows of `vm`.
pub fn info(data_dir: &DataDir, vm: &VmName) -> Result<Info, VmError> {
    let record = super::record(data_dir, vm)?;
    // A stored document that cannot even be read is the command's error.
    let doc = ConfigDocument::from_stored(&record.config)?;
    let runtime = VmRuntime::locate_under(&runtime_root_or_default(), vm);
    let command = doc.validate().map_err(VmError::from).and_then(|cfg| {
        qemu_command(data_dir, vm, &cfg, &runtime, Ports::PublishedOrPlanned).map_err(VmError::from)
    });
    Ok(Info { record, command })
}

/// `vm`'s record, and its stored, merged config as YAML (`maqet config`;
/// paths are absolute, so the text works from anywhere) unless the stored
/// document cannot be read.
pub fn config_yaml(
    data_dir: &DataDir,
    vm: &VmName,
) -> Result<(VmRecord, Result<String, VmError>), VmError> {
    let record = super::record(data_dir, vm)?;
    let yaml = ConfigDocument::from_stored(&record.config)
        .map(|doc| doc.to_yaml(Some(vm.as_str())))
        .map_err(VmError::from);
    Ok((record, yaml))
}
