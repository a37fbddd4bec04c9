//! The vm layer's futures are `Send`, so a multi-threaded front end (a
//! service on tokio's multi-thread runtime) can spawn them. Checked by the
//! compiler: this file does not build when one of them holds something
//! that is not `Send` (a `Notify` without `Sync`, a borrowed `Store`)
//! across an await.

use std::path::Path;
use std::time::Duration;

use maqet_base::vmname::VmName;
use maqet_host::systemd::Systemd;

use super::notice::quiet;
use super::remove::RemoveOptions;
use super::wait::Readiness;
use super::{DeviceRequest, Vms, Wait};

fn send<T: Send>(_: T) {}

/// Never run: type-checking it is the test.
#[allow(dead_code)]
fn futures_are_send(vms: &Vms<Systemd>, vm: &VmName, file: &Path) {
    let t = Duration::from_secs(1);
    send(vms.start(vm, t, &quiet));
    send(vms.start_as(vm, t, Wait::Queued, &quiet));
    send(vms.stop(vm, None, false));
    send(vms.stop_via_agent(vm, None, false));
    send(vms.restart(vm, t, &quiet));
    let opts = RemoveOptions::default();
    send(vms.remove(vm, &opts, &quiet));
    send(vms.remove_each(std::slice::from_ref(vm), &opts, &quiet));
    send(vms.autostart(&[], t, &quiet));
    send(vms.set_autostart(vm, true, Some(t), &quiet));
    send(vms.status(vm));
    send(vms.list(None));
    send(vms.start_and_wait(vm, t, Readiness::Ssh, t, "ssh".as_ref(), &quiet));
    send(vms.create_storage(vm));
    send(vms.reboot(vm, t));
    send(vms.reset(vm));
    send(vms.pause(vm));
    send(vms.resume(vm));
    send(vms.screendump(vm, file, false));
    let keys = vec!["ret".to_string()];
    send(vms.send_keys(vm, &keys, t));
    send(vms.type_text(vm, "x", t));
    let dev = DeviceRequest {
        driver: "virtio-rng-pci".into(),
        id: None,
        props: Vec::new(),
    };
    send(vms.device_add(vm, &dev));
    send(vms.device_del(vm, "rng0", Some(t)));
    send(vms.events(vm));
    send(vms.qmp(vm, "query-status", None));
    send(vms.console(vm, true, true));
}

#[test]
fn lifecycle_and_control_futures_are_send() {
    // Naming the function makes the compiler check it in every test build.
    let _: fn(&Vms<Systemd>, &VmName, &Path) = futures_are_send;
}
