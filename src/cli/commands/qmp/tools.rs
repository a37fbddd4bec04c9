//! `maqet qmp keys|type|screendump|pause|resume|device-add|device-del`:
//! everyday QMP commands with local checks, so mistakes are caught before
//! anything reaches the guest.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::cli::args::{
    DeviceAddArgs, DeviceDelArgs, QmpKeysArgs, QmpTypeArgs, ScreendumpArgs, VmArg,
};
use crate::cli::context::Ctx;
use crate::cli::exit::{code, CliError};
use crate::cli::qmp_call::{call, CALL_TIMEOUT};
use crate::files::{NewFile, NewFileError};
use crate::ipc::{IpcClient, IpcError};
use crate::qmp::keys::{self, KeyError};
use crate::vmname::VmName;

/// Pause between one key's release and the next key's press in `type`.
const KEY_GAP: Duration = Duration::from_millis(15);

impl From<KeyError> for CliError {
    fn from(e: KeyError) -> Self {
        CliError::usage(e.to_string())
    }
}

/// Keys sent to paused CPUs are lost or arrive in a burst on resume.
async fn ensure_running(client: &mut IpcClient, vm: &VmName) -> Result<(), CliError> {
    let st = call(client, "query-status", None).await?;
    match st["status"].as_str() {
        Some("running") => Ok(()),
        Some("paused") => Err(CliError::conflict(format!(
            "VM '{vm}' is paused; resume it first (`maqet qmp resume {vm}`)"
        ))),
        other => Err(CliError::conflict(format!(
            "VM '{vm}' is not running its guest (QEMU state: {})",
            other.unwrap_or("unknown")
        ))),
    }
}

async fn send_combo(client: &mut IpcClient, combo: &[&str], hold_ms: u32) -> Result<(), CliError> {
    let keys: Vec<Value> = combo
        .iter()
        .map(|k| json!({"type": "qcode", "data": k}))
        .collect();
    call(
        client,
        "send-key",
        Some(json!({"keys": keys, "hold-time": hold_ms})),
    )
    .await
    .map(drop)
}

pub async fn keys(ctx: &Ctx, a: QmpKeysArgs) -> Result<(), CliError> {
    let combo = keys::combination(&a.keys)?;
    let (vm, _) = ctx.vm(&a.name)?;
    let mut client = ctx.runner(&vm).await?;
    ensure_running(&mut client, &vm).await?;
    send_combo(&mut client, &combo, a.hold_time).await
}

/// Types `text` one key at a time over one connection: press, hold,
/// release, then the next key — so repeated letters arrive as two presses.
pub async fn type_text(ctx: &Ctx, a: QmpTypeArgs) -> Result<(), CliError> {
    // Every character is checked before the first key goes out.
    let combos = keys::text_to_keys(&a.text)?;
    let (vm, _) = ctx.vm(&a.name)?;
    let mut client = ctx.runner(&vm).await?;
    ensure_running(&mut client, &vm).await?;
    let pace = Duration::from_millis(a.hold_time.into()) + KEY_GAP;
    for (i, combo) in combos.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(pace).await;
        }
        send_combo(&mut client, combo, a.hold_time).await?;
    }
    Ok(())
}

fn new_file_error(e: NewFileError) -> CliError {
    match e {
        NewFileError::Exists(_) => CliError::conflict(e.to_string()),
        NewFileError::NotRegular { .. } => CliError::usage(e.to_string()),
        NewFileError::Io { .. } => CliError::failure(e.to_string()),
    }
}

/// PNG when the name ends in `.png` (any case), PPM otherwise.
fn wants_png(file: &Path) -> bool {
    file.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
}

pub async fn screendump(ctx: &Ctx, a: ScreendumpArgs) -> Result<(), CliError> {
    // QEMU writes the file: it must not resolve the name against its own cwd.
    let file = std::path::absolute(&a.file)
        .map_err(|e| CliError::usage(format!("{}: {e}", a.file.display())))?;
    let png = wants_png(&file);
    let (vm, _) = ctx.vm(&a.name)?;
    let mut client = ctx.runner(&vm).await?;
    // QEMU writes a new file of maqet's beside FILE, which is moved into
    // place afterwards: QEMU never opens FILE itself (a disk image, a FIFO).
    let out = NewFile::create(&file, a.force).map_err(new_file_error)?;
    let mut args = json!({"filename": out.path().to_string_lossy()});
    if png {
        args["format"] = json!("png");
    }
    match call(&mut client, "screendump", Some(args)).await {
        Ok(_) => out.commit().map_err(new_file_error),
        Err(e) if e.code == code::QMP_ERROR && e.message.contains("no console") => {
            Err(CliError::new(
                code::QMP_ERROR,
                format!(
                    "VM '{vm}' has no display to take a screendump from (QEMU: there is no console); give it a display device, e.g. `vga: std`"
                ),
            ))
        }
        Err(e) if png && e.code == code::QMP_ERROR && e.message.contains("format") => {
            Err(CliError::new(
                code::QMP_ERROR,
                format!(
                    "this QEMU cannot write PNG screendumps ({}); use a file name ending in .ppm",
                    e.message
                ),
            ))
        }
        Err(e) => Err(e),
    }
}

pub async fn pause(ctx: &Ctx, a: VmArg) -> Result<(), CliError> {
    simple(ctx, &a.name, "stop").await
}

pub async fn resume(ctx: &Ctx, a: VmArg) -> Result<(), CliError> {
    simple(ctx, &a.name, "cont").await
}

async fn simple(ctx: &Ctx, name: &str, command: &str) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(name)?;
    let mut client = ctx.runner(&vm).await?;
    call(&mut client, command, None).await.map(drop)
}

/// `device_add` arguments from DRIVER, `--id` and `PROP=VALUE` words.
/// Values stay strings: QEMU parses them as it parses `-device` options.
pub fn device_add_arguments(a: &DeviceAddArgs) -> Result<Value, CliError> {
    let mut args = Map::new();
    args.insert("driver".into(), json!(a.driver));
    if let Some(id) = &a.id {
        args.insert("id".into(), json!(id));
    }
    for p in &a.props {
        let (k, v) = p.split_once('=').ok_or_else(|| {
            CliError::usage(format!(
                "device property '{p}' is not PROP=VALUE (e.g. addr=0x6)"
            ))
        })?;
        match k {
            "" => {
                return Err(CliError::usage(format!(
                    "device property '{p}' has no name"
                )))
            }
            "driver" | "id" => {
                return Err(CliError::usage(format!(
                    "'{k}' is not a property here: give the driver as DRIVER and the id with --id"
                )))
            }
            _ if args.contains_key(k) => {
                return Err(CliError::usage(format!(
                    "device property '{k}' given twice"
                )))
            }
            _ => {
                args.insert(k.to_string(), json!(v));
            }
        }
    }
    Ok(Value::Object(args))
}

pub async fn device_add(ctx: &Ctx, a: DeviceAddArgs) -> Result<(), CliError> {
    let args = device_add_arguments(&a)?;
    let (vm, _) = ctx.vm(&a.name)?;
    let mut client = ctx.runner(&vm).await?;
    call(&mut client, "device_add", Some(args)).await.map(drop)
}

/// `device_del` only asks the guest to let go; the device is gone when
/// QEMU reports DEVICE_DELETED, which this waits for.
pub async fn device_del(ctx: &Ctx, a: DeviceDelArgs) -> Result<(), CliError> {
    let timeout = a.timeout;
    let (vm, _) = ctx.vm(&a.name)?;
    // Subscribe before asking, so the event cannot slip past.
    let mut events = ctx.runner(&vm).await?;
    if !a.no_wait {
        events.events(CALL_TIMEOUT).await?;
    }
    let mut client = ctx.runner(&vm).await?;
    call(&mut client, "device_del", Some(json!({"id": a.id}))).await?;
    if a.no_wait {
        return Ok(());
    }
    let wait = async {
        loop {
            match events.next_event().await? {
                Some(ev) if ev["event"] == "DEVICE_DELETED" && deleted_is(&ev["data"], &a.id) => {
                    return Ok(true)
                }
                Some(_) => continue,
                None => return Ok::<bool, IpcError>(false),
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(CliError::failure(format!(
            "VM '{vm}' stopped before device '{}' was removed",
            a.id
        ))),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(CliError::new(
            code::TIMEOUT,
            format!(
                "device '{}' is still in VM '{vm}' after {:.0}s: the guest has not released it (hot-unplug needs the guest's cooperation, e.g. ACPI PCI hotplug); QEMU removes it once the guest does",
                a.id,
                timeout.as_secs_f64()
            ),
        )),
    }
}

/// DEVICE_DELETED names the device by id (`device`) and by QOM path.
fn deleted_is(data: &Value, id: &str) -> bool {
    data["device"] == id || data["path"] == id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(props: &[&str], id: Option<&str>) -> Result<Value, CliError> {
        device_add_arguments(&DeviceAddArgs {
            name: "vm".into(),
            driver: "virtio-rng-pci".into(),
            id: id.map(str::to_string),
            props: props.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn device_add_builds_qmp_arguments() {
        assert_eq!(
            add(&["addr=0x6", "max-bytes=1024", "x="], Some("rng0")).unwrap(),
            json!({"driver": "virtio-rng-pci", "id": "rng0", "addr": "0x6", "max-bytes": "1024", "x": ""})
        );
        assert_eq!(add(&[], None).unwrap(), json!({"driver": "virtio-rng-pci"}));
        for (bad, why) in [
            (&["addr"][..], "PROP=VALUE"),
            (&["=1"][..], "no name"),
            (&["id=x"][..], "--id"),
            (&["driver=x"][..], "DRIVER"),
            (&["a=1", "a=2"][..], "twice"),
        ] {
            let e = add(bad, None).unwrap_err();
            assert_eq!(e.code, code::USAGE);
            assert!(e.message.contains(why), "{bad:?}: {}", e.message);
        }
    }

    #[test]
    fn png_by_extension() {
        assert!(wants_png(Path::new("/x/shot.png")));
        assert!(wants_png(Path::new("shot.PNG")));
        assert!(!wants_png(Path::new("shot.ppm")));
        assert!(!wants_png(Path::new("shot")));
    }

    #[test]
    fn device_deleted_matches_id_or_path() {
        assert!(deleted_is(
            &json!({"device": "rng0", "path": "/machine/peripheral/rng0"}),
            "rng0"
        ));
        assert!(deleted_is(
            &json!({"path": "/machine/peripheral-anon/device[0]"}),
            "/machine/peripheral-anon/device[0]"
        ));
        assert!(!deleted_is(&json!({"device": "rng1"}), "rng0"));
    }
}
