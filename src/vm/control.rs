//! A running VM's QEMU through its runner: pause, resume, reset, reboot,
//! keys and text, screendumps, device hot-plug, one raw QMP command, the
//! event stream and the serial console. Each method connects to this data
//! directory's runner (checked to be ours, see owner.rs), does its local
//! checks before anything reaches the guest, and returns data; a command
//! QEMU refused comes back as [`ControlError::Qmp`] with QEMU's class and
//! words, events as typed [`QmpEvent`]s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use maqet_base::display::DisplayServer;
use maqet_base::files::{NewFile, NewFileError};
use maqet_base::vmname::VmName;
use maqet_host::ipc::protocol::{ErrorKind, Need};
use maqet_host::ipc::{IpcClient, IpcError};
use maqet_host::qmp::keys::{self, KeyError};
use maqet_host::qmp::{EventKind, QmpEvent, ShutdownCause};

use super::owner::OwnerError;
use super::{stored_config, Runners, UnitManager, VmError, Vms};

/// Bound on one QMP round trip of these short operations (the runner
/// bounds QEMU's answer itself and says so; this covers the rest).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(35);
/// How long subscribing to the event stream may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between one key's release and the next key's press in `type`.
const KEY_GAP: Duration = Duration::from_millis(15);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// QEMU answered `command` with an error.
    #[error("{}{message}", class.as_ref().map(|c| format!("{c}: ")).unwrap_or_default())]
    Qmp {
        command: String,
        class: Option<String>,
        message: String,
    },
    /// Keys sent to paused CPUs are lost or arrive in a burst on resume.
    #[error("VM '{vm}' is paused; resume it first")]
    Paused { vm: VmName },
    #[error("VM '{vm}' is not running its guest (QEMU state: {state})")]
    GuestStopped { vm: VmName, state: String },
    /// Only a running guest can act on Ctrl-Alt-Delete.
    #[error("VM '{vm}' is {state}, so its guest cannot take a reboot request; resume it first")]
    CannotReboot { vm: VmName, state: String },
    #[error("the guest of VM '{vm}' did not reboot within {:.0}s of Ctrl-Alt-Delete (it may ignore it)", waited.as_secs_f64())]
    RebootTimeout { vm: VmName, waited: Duration },
    /// QEMU has no graphical console to read (no display device).
    #[error("VM '{vm}' has no display to take a screendump from (QEMU: there is no console); give it a display device, e.g. `vga: std`")]
    NoDisplay { vm: VmName },
    /// A QEMU older than 7.1 writes PPM only.
    #[error("this QEMU cannot write PNG screendumps ({message}); use a file name ending in .ppm")]
    NoPng { message: String },
    /// The screendump's file name cannot be made absolute.
    #[error("{}: {source}", path.display())]
    BadPath {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Where the screendump may not go (see [`NewFile`]).
    #[error(transparent)]
    File(#[from] NewFileError),
    #[error("VM '{vm}' stopped before device '{id}' was removed")]
    StoppedBeforeRemoval { vm: VmName, id: String },
    #[error("device '{id}' is still in VM '{vm}' after {:.0}s: the guest has not released it (hot-unplug needs the guest's cooperation, e.g. ACPI PCI hotplug); QEMU removes it once the guest does", waited.as_secs_f64())]
    StillAttached {
        vm: VmName,
        id: String,
        waited: Duration,
    },
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A unit created by a maqet before the QMP socket (protocol 1).
    #[error("the runner of VM '{vm}' serves no QMP socket (its unit was created without one)")]
    NoQmpSocket { vm: VmName },
    #[error("VM '{vm}' has no display server")]
    NoDisplayServer { vm: VmName },
}

/// A `device_add` request that cannot be sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("device property '={value}' has no name")]
    NoName { value: String },
    /// `driver` and `id` are the request's own fields.
    #[error("'{key}' is not a device property here: the driver and the id are given on their own")]
    Reserved { key: String },
    #[error("device property '{key}' given twice")]
    Twice { key: String },
}

/// A device to hot-plug: QEMU's `device_add` with its properties as
/// strings, parsed by QEMU as it parses `-device` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    pub driver: String,
    pub id: Option<String>,
    pub props: Vec<(String, String)>,
}

impl DeviceRequest {
    /// `device_add`'s arguments.
    pub fn arguments(&self) -> Result<Value, DeviceError> {
        let mut args = Map::new();
        args.insert("driver".into(), json!(self.driver));
        if let Some(id) = &self.id {
            args.insert("id".into(), json!(id));
        }
        for (k, v) in &self.props {
            match k.as_str() {
                "" => return Err(DeviceError::NoName { value: v.clone() }),
                "driver" | "id" => return Err(DeviceError::Reserved { key: k.clone() }),
                _ if args.contains_key(k) => return Err(DeviceError::Twice { key: k.clone() }),
                _ => {
                    args.insert(k.clone(), json!(v));
                }
            }
        }
        Ok(Value::Object(args))
    }
}

/// How a reboot request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebooted {
    /// RESET: the guest restarted and runs on.
    Restarted,
    /// The guest reset and `on_reboot: stop` ended the VM.
    StoppedOnReboot,
    /// The VM stopped while the reboot was awaited (for another reason).
    VmStopped,
}

/// Whether `kind` tells that the guest rebooted.
fn reboot_seen(kind: &EventKind) -> Option<Rebooted> {
    match kind {
        EventKind::Reset { .. } => Some(Rebooted::Restarted),
        // With -no-reboot a guest reset is a shutdown for the reason guest-reset.
        EventKind::Shutdown {
            reason: Some(ShutdownCause::GuestReset),
            ..
        } => Some(Rebooted::StoppedOnReboot),
        _ => None,
    }
}

/// PNG when the name ends in `.png` (any case), PPM otherwise.
pub fn wants_png(file: &Path) -> bool {
    file.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
}

/// QEMU's refusal as [`ControlError::Qmp`]; any other error as it is.
fn qmp_error(command: &str, e: IpcError) -> VmError {
    match e {
        IpcError::Remote(b) if b.kind == ErrorKind::Qmp => ControlError::Qmp {
            command: command.to_string(),
            class: b.class,
            message: b.message,
        }
        .into(),
        other => other.into(),
    }
}

/// One QMP command, bounded by [`CALL_TIMEOUT`].
async fn call(
    client: &mut IpcClient,
    command: &str,
    arguments: Option<Value>,
) -> Result<Value, VmError> {
    client
        .qmp_within(command, arguments, Some(CALL_TIMEOUT))
        .await
        .map_err(|e| qmp_error(command, e))
}

/// QEMU's run state (`running`, `paused`, `prelaunch`, …).
async fn run_state(client: &mut IpcClient) -> Result<String, VmError> {
    let st = call(client, "query-status", None).await?;
    Ok(st["status"].as_str().unwrap_or("unknown").to_string())
}

/// Keys reach only a guest whose CPUs run.
async fn ensure_running(client: &mut IpcClient, vm: &VmName) -> Result<(), VmError> {
    match run_state(client).await?.as_str() {
        "running" => Ok(()),
        "paused" => Err(ControlError::Paused { vm: vm.clone() }.into()),
        other => Err(ControlError::GuestStopped {
            vm: vm.clone(),
            state: other.to_string(),
        }
        .into()),
    }
}

async fn send_combo(client: &mut IpcClient, combo: &[&str], hold: Duration) -> Result<(), VmError> {
    let keys: Vec<Value> = combo
        .iter()
        .map(|k| json!({"type": "qcode", "data": k}))
        .collect();
    let hold_ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX);
    call(
        client,
        "send-key",
        Some(json!({"keys": keys, "hold-time": hold_ms})),
    )
    .await
    .map(drop)
}

/// A running VM's QMP events, from the moment [`Vms::events`] returned.
pub struct EventStream {
    client: IpcClient,
}

impl EventStream {
    /// The next event; `None` once the VM stopped (the runner closed the
    /// stream).
    pub async fn next(&mut self) -> Result<Option<QmpEvent>, VmError> {
        match self.client.next_event().await? {
            Some(v) => QmpEvent::from_json(v)
                .map(Some)
                .map_err(|e| IpcError::Protocol(e.to_string()).into()),
            None => Ok(None),
        }
    }
}

/// The serial console as raw bytes both ways (see [`Vms::console`]).
pub struct ConsoleStream {
    pub from_vm: BufReader<OwnedReadHalf>,
    pub to_vm: OwnedWriteHalf,
}

/// Where a viewer reaches a running VM's display server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayEndpoint {
    pub server: DisplayServer,
    pub socket: PathBuf,
    /// `vnc+unix://…` / `spice+unix://…`.
    pub uri: String,
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// One QMP command as the user wrote it (the runner's policy applies);
    /// QEMU's reply as it is.
    pub async fn qmp(
        &self,
        vm: &VmName,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, VmError> {
        let mut client = self.runner(vm).await?;
        // No bound here: the runner bounds QEMU's answer and says so.
        client
            .qmp(command, arguments)
            .await
            .map_err(|e| qmp_error(command, e))
    }

    /// Pauses the guest's CPUs (QMP `stop`).
    pub async fn pause(&self, vm: &VmName) -> Result<(), VmError> {
        self.simple(vm, "stop").await
    }

    /// Lets paused CPUs run again (QMP `cont`).
    pub async fn resume(&self, vm: &VmName) -> Result<(), VmError> {
        self.simple(vm, "cont").await
    }

    /// A hard reset, like a reset button: the guest gets no chance to sync
    /// its disks (QMP `system_reset`).
    pub async fn reset(&self, vm: &VmName) -> Result<(), VmError> {
        self.simple(vm, "system_reset").await
    }

    async fn simple(&self, vm: &VmName, command: &str) -> Result<(), VmError> {
        let mut client = self.runner(vm).await?;
        call(&mut client, command, None).await.map(drop)
    }

    /// Asks the guest to reboot: presses Ctrl-Alt-Delete (the one reboot
    /// request every PC guest understands without an agent: Linux inits
    /// reboot cleanly, a bare kernel restarts at once; ACPI has no reboot
    /// button) and waits up to `timeout` until the guest actually resets,
    /// so a guest that ignores it is reported, not assumed rebooted.
    pub async fn reboot(&self, vm: &VmName, timeout: Duration) -> Result<Rebooted, VmError> {
        // Subscribed before the keys go out, so the RESET cannot slip past.
        let mut events = self.events(vm).await?;
        let mut client = self.runner(vm).await?;
        let state = run_state(&mut client).await?;
        if state != "running" {
            return Err(ControlError::CannotReboot {
                vm: vm.clone(),
                state,
            }
            .into());
        }
        let keys: Vec<Value> = ["ctrl", "alt", "delete"]
            .iter()
            .map(|k| json!({"type": "qcode", "data": k}))
            .collect();
        call(&mut client, "send-key", Some(json!({"keys": keys}))).await?;
        let wait = async {
            while let Some(ev) = events.next().await? {
                if let Some(r) = reboot_seen(&ev.kind()) {
                    return Ok(r);
                }
            }
            Ok::<_, VmError>(Rebooted::VmStopped)
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(ControlError::RebootTimeout {
                vm: vm.clone(),
                waited: timeout,
            }
            .into()),
        }
    }

    /// Presses the key combination `names` (QEMU qcodes, checked before
    /// anything is sent) for `hold`.
    pub async fn send_keys(
        &self,
        vm: &VmName,
        names: &[String],
        hold: Duration,
    ) -> Result<(), VmError> {
        let combo = keys::combination(names).map_err(ControlError::from)?;
        let mut client = self.runner(vm).await?;
        ensure_running(&mut client, vm).await?;
        send_combo(&mut client, &combo, hold).await
    }

    /// Types `text` (US layout; every character checked before the first
    /// key goes out) one key at a time over one connection: press, hold,
    /// release, then the next key, so repeated letters arrive as two
    /// presses.
    pub async fn type_text(&self, vm: &VmName, text: &str, hold: Duration) -> Result<(), VmError> {
        let combos = keys::text_to_keys(text).map_err(ControlError::from)?;
        let mut client = self.runner(vm).await?;
        ensure_running(&mut client, vm).await?;
        for (i, combo) in combos.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(hold + KEY_GAP).await;
            }
            send_combo(&mut client, combo, hold).await?;
        }
        Ok(())
    }

    /// Writes the screen to `file` (PNG when it ends in `.png`, else PPM);
    /// an existing regular file only with `replace`. QEMU writes a new file
    /// of maqet's beside it, moved into place afterwards, so QEMU never
    /// opens `file` itself (a disk image, a FIFO). Returns the absolute path.
    pub async fn screendump(
        &self,
        vm: &VmName,
        file: &Path,
        replace: bool,
    ) -> Result<PathBuf, VmError> {
        // QEMU writes the file: it must not resolve the name against its own cwd.
        let file = std::path::absolute(file).map_err(|source| ControlError::BadPath {
            path: file.to_path_buf(),
            source,
        })?;
        let png = wants_png(&file);
        let mut client = self.runner(vm).await?;
        let out = NewFile::create(&file, replace).map_err(ControlError::from)?;
        let mut args = json!({"filename": out.path().to_string_lossy()});
        if png {
            args["format"] = json!("png");
        }
        match client
            .qmp_within("screendump", Some(args), Some(CALL_TIMEOUT))
            .await
        {
            Ok(_) => {
                out.commit().map_err(ControlError::from)?;
                Ok(file)
            }
            // QEMU's words for a machine without a graphical console, and
            // for a `format` it does not know (before 7.1).
            Err(IpcError::Remote(b))
                if b.kind == ErrorKind::Qmp && b.message.contains("no console") =>
            {
                Err(ControlError::NoDisplay { vm: vm.clone() }.into())
            }
            Err(IpcError::Remote(b))
                if png && b.kind == ErrorKind::Qmp && b.message.contains("format") =>
            {
                let message = match &b.class {
                    Some(c) => format!("{c}: {}", b.message),
                    None => b.message.clone(),
                };
                Err(ControlError::NoPng { message }.into())
            }
            Err(e) => Err(qmp_error("screendump", e)),
        }
    }

    /// Hot-plugs a device (QMP `device_add`); the request is checked first.
    pub async fn device_add(&self, vm: &VmName, req: &DeviceRequest) -> Result<(), VmError> {
        let args = req.arguments().map_err(ControlError::from)?;
        let mut client = self.runner(vm).await?;
        call(&mut client, "device_add", Some(args)).await.map(drop)
    }

    /// Asks the guest to let go of device `id` and, with `wait`, waits that
    /// long for QEMU's DEVICE_DELETED: QEMU accepting `device_del` only
    /// means the guest was asked.
    pub async fn device_del(
        &self,
        vm: &VmName,
        id: &str,
        wait: Option<Duration>,
    ) -> Result<(), VmError> {
        // Subscribed before asking, so the event cannot slip past.
        let mut events = match wait {
            Some(_) => Some(self.events(vm).await?),
            None => None,
        };
        let mut client = self.runner(vm).await?;
        call(&mut client, "device_del", Some(json!({"id": id}))).await?;
        let (Some(events), Some(timeout)) = (events.as_mut(), wait) else {
            return Ok(());
        };
        let gone = async {
            while let Some(ev) = events.next().await? {
                if ev.kind().deleted(id) {
                    return Ok(true);
                }
            }
            Ok::<_, VmError>(false)
        };
        match tokio::time::timeout(timeout, gone).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(ControlError::StoppedBeforeRemoval {
                vm: vm.clone(),
                id: id.to_string(),
            }
            .into()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ControlError::StillAttached {
                vm: vm.clone(),
                id: id.to_string(),
                waited: timeout,
            }
            .into()),
        }
    }

    /// The VM's QMP events from now on, until it stops.
    pub async fn events(&self, vm: &VmName) -> Result<EventStream, VmError> {
        let mut client = self.runner(vm).await?;
        client.events(SUBSCRIBE_TIMEOUT).await?;
        Ok(EventStream { client })
    }

    /// Attaches to the serial console: `replay` sends the buffered output
    /// first, `follow` keeps the stream open (else it ends after the
    /// replay).
    pub async fn console(
        &self,
        vm: &VmName,
        replay: bool,
        follow: bool,
    ) -> Result<ConsoleStream, VmError> {
        let mut client = self.runner(vm).await?;
        client.console(replay, follow, SUBSCRIBE_TIMEOUT).await?;
        let (from_vm, to_vm) = client.into_raw();
        Ok(ConsoleStream { from_vm, to_vm })
    }

    /// The VM's socket for standard QMP clients. A runner started by an
    /// older maqet is refused with [`IpcError::Outdated`].
    pub async fn qmp_socket(&self, vm: &VmName) -> Result<PathBuf, VmError> {
        let mut client = self.runner(vm).await?;
        client.require(Need::QmpEndpoint).await?;
        client
            .status()
            .await?
            .qmp_socket
            .ok_or_else(|| ControlError::NoQmpSocket { vm: vm.clone() }.into())
    }

    /// Where a viewer connects to the running VM's VNC or SPICE server.
    pub async fn display(&self, vm: &VmName) -> Result<DisplayEndpoint, VmError> {
        let rec = self.record(vm)?;
        let Some(server) = stored_config(&rec)?.desktop.display else {
            return Err(ControlError::NoDisplayServer { vm: vm.clone() }.into());
        };
        if !self.is_running(vm).await? {
            return Err(OwnerError::NotRunning { vm: vm.to_string() }.into());
        }
        let socket = server.socket(&maqet_base::paths::vm_runtime_dir(vm)?);
        let uri = server.uri(&socket);
        Ok(DisplayEndpoint {
            server,
            socket,
            uri,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(props: &[(&str, &str)], id: Option<&str>) -> DeviceRequest {
        DeviceRequest {
            driver: "virtio-rng-pci".into(),
            id: id.map(str::to_string),
            props: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn device_add_builds_qmp_arguments() {
        assert_eq!(
            req(
                &[("addr", "0x6"), ("max-bytes", "1024"), ("x", "")],
                Some("rng0")
            )
            .arguments()
            .unwrap(),
            json!({"driver": "virtio-rng-pci", "id": "rng0", "addr": "0x6", "max-bytes": "1024", "x": ""})
        );
        assert_eq!(
            req(&[], None).arguments().unwrap(),
            json!({"driver": "virtio-rng-pci"})
        );
        assert_eq!(
            req(&[("", "1")], None).arguments(),
            Err(DeviceError::NoName { value: "1".into() })
        );
        for k in ["id", "driver"] {
            assert_eq!(
                req(&[(k, "x")], None).arguments(),
                Err(DeviceError::Reserved { key: k.into() })
            );
        }
        assert_eq!(
            req(&[("a", "1"), ("a", "2")], None).arguments(),
            Err(DeviceError::Twice { key: "a".into() })
        );
    }

    #[test]
    fn png_by_extension() {
        assert!(wants_png(Path::new("/x/shot.png")));
        assert!(wants_png(Path::new("shot.PNG")));
        assert!(!wants_png(Path::new("shot.ppm")));
        assert!(!wants_png(Path::new("shot")));
    }

    #[test]
    fn reboot_events() {
        let kind = |v: Value| QmpEvent::from_json(v).unwrap().kind();
        assert_eq!(
            reboot_seen(&kind(
                json!({"event": "RESET", "data": {"guest": true, "reason": "guest-reset"}})
            )),
            Some(Rebooted::Restarted)
        );
        assert_eq!(
            reboot_seen(&kind(
                json!({"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-reset"}})
            )),
            Some(Rebooted::StoppedOnReboot)
        );
        assert_eq!(
            reboot_seen(&kind(
                json!({"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}})
            )),
            None
        );
        assert_eq!(reboot_seen(&kind(json!({"event": "STOP"}))), None);
    }
}
