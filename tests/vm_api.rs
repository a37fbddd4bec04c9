//! A second front end: this test drives a real VM — the test guest under
//! the real user manager and QEMU — through `maqet::vm::Vms` alone, the
//! way a service (a `serve --stdio` or a D-Bus front end) would: no `maqet`
//! binary, no code of the CLI. Every call runs on tokio's multi-threaded
//! runtime, spawned where the library's futures must be `Send`, with
//! notices gathered through a `Send + Sync` callback. It defines, starts,
//! reads the console, reboots (typed result), takes screendumps (typed
//! refusal of an existing file), stops and removes.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use maqet::paths::DataDir;
use maqet::systemd::{Systemd, VmState};
use maqet::vm::control::ConsoleStream;
use maqet::vm::define::{define, Source};
use maqet::vm::remove::RemoveOptions;
use maqet::vm::{ControlError, Notice, Rebooted, StopOutcome, VmError, Vms};
use maqet::vmname::VmName;
use tokio::io::AsyncReadExt;

const BOOT: Duration = Duration::from_secs(90);
const READY: &str = "maqet-test-guest: ready";

/// Reads the console until `needle` has appeared `times` times in all that
/// was read; returns everything read.
async fn console_until(
    con: &mut ConsoleStream,
    seen: &mut String,
    needle: &str,
    times: usize,
) -> String {
    let end = Instant::now() + BOOT;
    let mut buf = [0u8; 4096];
    while seen.matches(needle).count() < times {
        let left = end.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, con.from_vm.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} ×{times} within {BOOT:?}:\n{seen}"))
            .expect("console read");
        assert!(
            n > 0,
            "the console closed before {needle:?} ×{times}:\n{seen}"
        );
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen.clone()
}

#[test]
fn a_second_front_end_drives_start_reboot_screendump_and_stop_through_vms() {
    let w = World::new("vmapi");
    let name = w.name("g");
    let yaml = w.write(
        "g.yaml",
        &format!(
            "name: {name}\nbinary: {QEMU}\nmemory: 128M\nconsole: true\nvga: std\nshutdown_timeout: 20\n\
             storage:\n  - name: d\n    size: 16M\n\
             arguments:\n  - accel: tcg\n  - display: none\n  - nodefaults\n\
             \x20 - kernel: {}\n  - initrd: {}\n  - append: \"console=ttyS0 quiet\"\n",
            guest_file("MAQET_GUEST_KERNEL"),
            guest_file("MAQET_GUEST_INITRD"),
        ),
    );
    let shot = w.dir.path().join("screen.png");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let data_dir = DataDir::resolve(Some(&w.data_dir())).unwrap();
        let notices = Arc::new(Mutex::new(Vec::<Notice>::new()));
        let gather = {
            let notices = notices.clone();
            move |n: Notice| notices.lock().unwrap().push(n)
        };
        let defined = define(
            &data_dir,
            &Source::Files {
                files: vec![yaml],
                name: None,
            },
            None,
            &gather,
        )
        .unwrap();
        let vm: VmName = defined.vm;
        assert_eq!(vm.as_str(), name);
        let mut vms = Vms::new(data_dir, Systemd::connect_user().await.unwrap());
        vms.runner = Some(bin_dir().join("maqet-runner"));
        let vms = Arc::new(vms);

        // Start on a worker thread: the start future is Send, and so is
        // the callback that hears of the disk it creates.
        let started = tokio::spawn({
            let (vms, vm, gather) = (vms.clone(), vm.clone(), gather.clone());
            async move { vms.start(&vm, BOOT, &gather).await }
        });
        started.await.unwrap().unwrap();
        assert!(
            notices
                .lock()
                .unwrap()
                .iter()
                .any(|n| matches!(n, Notice::Created { path, .. } if path.ends_with("d.qcow2"))),
            "{:?}",
            notices.lock().unwrap()
        );
        assert_eq!(vms.status(&vm).await.unwrap().state, VmState::Running);

        let mut con = vms.console(&vm, true, true).await.unwrap();
        let mut seen = String::new();
        console_until(&mut con, &mut seen, READY, 1).await;

        // Ctrl-Alt-Delete, awaited until QEMU reports the RESET.
        let rebooted = tokio::spawn({
            let (vms, vm) = (vms.clone(), vm.clone());
            async move { vms.reboot(&vm, BOOT).await }
        });
        assert_eq!(rebooted.await.unwrap().unwrap(), Rebooted::Restarted);
        console_until(&mut con, &mut seen, READY, 2).await;
        assert_eq!(vms.status(&vm).await.unwrap().state, VmState::Running);

        // A PNG screendump, written by QEMU beside the name and moved there.
        let dumped = tokio::spawn({
            let (vms, vm, shot) = (vms.clone(), vm.clone(), shot.clone());
            async move { vms.screendump(&vm, &shot, false).await }
        });
        assert_eq!(dumped.await.unwrap().unwrap(), shot);
        let png = std::fs::read(&shot).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // The file exists now: refused as data, not as a message to parse.
        match vms.screendump(&vm, &shot, false).await {
            Err(VmError::Control(ControlError::File(e))) => {
                assert!(e.to_string().contains("exists"), "{e}")
            }
            other => panic!("a second screendump to {shot:?}: {other:?}"),
        }
        vms.screendump(&vm, &shot, true).await.unwrap();

        // The guest handles ACPI: the stop is a clean power-down.
        let stopped = tokio::spawn({
            let (vms, vm) = (vms.clone(), vm.clone());
            async move { vms.stop(&vm, Some(Duration::from_secs(30)), false).await }
        });
        assert_eq!(
            stopped.await.unwrap().unwrap(),
            Some(StopOutcome::Powerdown)
        );
        assert_eq!(vms.status(&vm).await.unwrap().state, VmState::Defined);
        match vms.reboot(&vm, BOOT).await {
            Err(VmError::Owner(e)) => assert!(e.to_string().contains("not running"), "{e}"),
            other => panic!("a reboot of a stopped VM: {other:?}"),
        }

        // Removed with the storage it made, each deletion a notice.
        notices.lock().unwrap().clear();
        let opts = RemoveOptions {
            delete_storage: true,
            ..Default::default()
        };
        vms.remove(&vm, &opts, &gather).await.unwrap();
        assert!(
            notices
                .lock()
                .unwrap()
                .iter()
                .any(|n| matches!(n, Notice::Deleted { path, .. } if path.ends_with("d.qcow2"))),
            "{:?}",
            notices.lock().unwrap()
        );
        assert!(matches!(vms.record(&vm), Err(VmError::NoSuchVm { .. })));
        drop(w);
    });
}
