//! Hot-plugging one disk into a running VM: QMP `blockdev-add` (the image,
//! opened by QEMU with its own locking) then `device_add` (the guest's
//! disk). A failed `device_add` deletes the node again, so a failed
//! hot-plug leaves QEMU as it was.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use serde_json::{json, Value};

use super::live::QmpExec;
use super::StorageError;
use maqet_config::{Interface, StorageEntry, VmConfig};

/// QEMU keeps node names in 32 bytes (31 characters).
const NODE_NAME_MAX: usize = 31;

/// What to plug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hotplug {
    pub drive: String,
    pub node_name: String,
    /// The guest device; None for `interface: none` (the node only, for a
    /// `device_add` of the user's own).
    pub device: Option<Value>,
    pub blockdev: Value,
}

/// The node name of drive `name`: `maqet-NAME`, shortened with a hash of
/// the full name when that is too long for QEMU.
pub fn node_name(name: &str) -> String {
    let full = format!("maqet-{name}");
    if full.len() <= NODE_NAME_MAX {
        return full;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    format!("maqet-{}-{:08x}", &name[..16], h.finish() as u32)
}

/// Plans the hot-plug of `entry` (a disk image) into a VM running with
/// `running`; refuses interfaces QEMU cannot hot-plug.
pub fn plan(
    entry: &StorageEntry,
    path: PathBuf,
    running: &VmConfig,
) -> Result<Hotplug, StorageError> {
    let refuse = |why: &str| StorageError::NotHotpluggable {
        drive: entry.name.clone(),
        interface: entry.interface.as_str().to_string(),
        why: why.to_string(),
    };
    let format = entry
        .format()
        .ok_or_else(|| refuse("it is not a disk image"))?;
    let node = node_name(&entry.name);
    let id = format!("maqet-disk-{}", entry.name);
    let device = match entry.interface {
        Interface::Virtio => Some(json!({"driver": "virtio-blk-pci", "id": id, "drive": node})),
        Interface::Scsi => {
            // maqet's controller exists only when the VM started with a scsi disk.
            if !running
                .storage()
                .iter()
                .any(|e| e.interface == Interface::Scsi && e.virtfs.is_none())
            {
                return Err(refuse("the running VM has no maqet SCSI controller (it gets one at a start with a scsi disk); use interface virtio, or attach without --live and restart"));
            }
            Some(json!({"driver": "scsi-hd", "id": id, "drive": node, "bus": "maqet-scsi.0"}))
        }
        Interface::None => None,
        Interface::Ide | Interface::Sata => {
            return Err(refuse(
                "IDE and SATA disks cannot be hot-plugged; use interface virtio, or attach without --live and restart",
            ))
        }
    };
    Ok(Hotplug {
        drive: entry.name.clone(),
        blockdev: json!({
            "node-name": node,
            "driver": format.as_str(),
            "read-only": entry.readonly,
            "file": {"driver": "file", "filename": path.to_string_lossy()},
        }),
        node_name: node,
        device,
    })
}

/// Adds the node, then the device; on a failed device the node is deleted.
pub async fn plug<Q: QmpExec>(q: &mut Q, h: &Hotplug) -> Result<(), StorageError> {
    q.execute("blockdev-add", h.blockdev.clone()).await?;
    let Some(device) = &h.device else {
        return Ok(());
    };
    if let Err(e) = q.execute("device_add", device.clone()).await {
        if let Err(undo) = q
            .execute("blockdev-del", json!({"node-name": h.node_name}))
            .await
        {
            tracing::warn!("could not delete node {} again: {undo}", h.node_name);
        }
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Records commands and answers from a script.
    struct Fake {
        seen: Vec<String>,
        replies: VecDeque<Result<Value, StorageError>>,
    }

    impl QmpExec for Fake {
        async fn execute(&mut self, command: &str, _: Value) -> Result<Value, StorageError> {
            self.seen.push(command.to_string());
            self.replies.pop_front().unwrap_or(Ok(json!({})))
        }
    }

    fn cfg(storage: &str) -> VmConfig {
        let tmp = std::env::temp_dir();
        maqet_config::ConfigDocument::from_yaml_str(
            &format!("binary: /bin/sh\nstorage:\n{storage}"),
            "t.yaml",
            &tmp,
        )
        .unwrap()
        .validate()
        .unwrap()
    }

    #[test]
    fn plans_by_interface() {
        let c = cfg("  - {name: a, size: 1M}\n  - {name: b, size: 1M, interface: sata}\n  - {name: c, size: 1M, interface: scsi, readonly: true}\n");
        let p = plan(&c.storage[0], "/d/a.qcow2".into(), &c).unwrap();
        assert_eq!(p.device.as_ref().unwrap()["driver"], "virtio-blk-pci");
        assert_eq!(p.blockdev["file"]["filename"], "/d/a.qcow2");
        assert_eq!(p.blockdev["read-only"], false);
        let e = plan(&c.storage[1], "/d/b".into(), &c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot be hot-plugged"), "{e}");
        let p = plan(&c.storage[2], "/d/c".into(), &c).unwrap();
        assert_eq!(p.device.as_ref().unwrap()["bus"], "maqet-scsi.0");
        assert_eq!(p.blockdev["read-only"], true);
        // No controller in a VM without scsi disks.
        let plain = cfg("  - {name: a, size: 1M}\n");
        assert!(plan(&c.storage[2], "/d/c".into(), &plain).is_err());
    }

    #[test]
    fn long_names_fit_qemus_node_names() {
        assert_eq!(node_name("data"), "maqet-data");
        let long = "a".repeat(64);
        let n = node_name(&long);
        assert!(n.len() <= NODE_NAME_MAX, "{n}");
        assert_ne!(n, node_name(&"a".repeat(63)));
    }

    #[tokio::test]
    async fn a_failed_device_deletes_the_node_again() {
        let c = cfg("  - {name: a, size: 1M}\n");
        let p = plan(&c.storage[0], "/d/a.qcow2".into(), &c).unwrap();
        let mut q = Fake {
            seen: vec![],
            replies: VecDeque::from([
                Ok(json!({})),
                Err(StorageError::Qmp {
                    command: "device_add".into(),
                    message: "Bus 'pcie.0' does not support hotplugging".into(),
                }),
            ]),
        };
        let e = plug(&mut q, &p).await.unwrap_err();
        assert!(e.to_string().contains("does not support hotplugging"));
        assert_eq!(q.seen, ["blockdev-add", "device_add", "blockdev-del"]);
    }
}
