//! `maqet qmp keys|type|screendump|pause|resume|device-add|device-del`:
//! everyday QMP commands, each one call into the vm layer
//! (`vm/control.rs`), which checks keys, text, files and devices before
//! anything reaches the guest.

use std::time::Duration;

use crate::cli::args::{
    DeviceAddArgs, DeviceDelArgs, QmpKeysArgs, QmpTypeArgs, ScreendumpArgs, VmArg,
};
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::vm::{ControlError, DeviceRequest};

fn hold(ms: u32) -> Duration {
    Duration::from_millis(ms.into())
}

pub async fn keys(ctx: &Ctx, a: QmpKeysArgs) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let vms = ctx.vms().await?;
    Ok(vms.send_keys(&vm, &a.keys, hold(a.hold_time)).await?)
}

pub async fn type_text(ctx: &Ctx, a: QmpTypeArgs) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let vms = ctx.vms().await?;
    Ok(vms.type_text(&vm, &a.text, hold(a.hold_time)).await?)
}

pub async fn screendump(ctx: &Ctx, a: ScreendumpArgs) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let vms = ctx.vms().await?;
    vms.screendump(&vm, &a.file, a.force).await?;
    Ok(())
}

pub async fn pause(ctx: &Ctx, a: VmArg) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    Ok(ctx.vms().await?.pause(&vm).await?)
}

pub async fn resume(ctx: &Ctx, a: VmArg) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    Ok(ctx.vms().await?.resume(&vm).await?)
}

/// The request from DRIVER, `--id` and `PROP=VALUE` words; values stay
/// strings (QEMU parses them as it parses `-device` options).
pub fn device_request(a: &DeviceAddArgs) -> Result<DeviceRequest, CliError> {
    let props = a
        .props
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    CliError::usage(format!(
                        "device property '{p}' is not PROP=VALUE (e.g. addr=0x6)"
                    ))
                })
        })
        .collect::<Result<_, _>>()?;
    let req = DeviceRequest {
        driver: a.driver.clone(),
        id: a.id.clone(),
        props,
    };
    // Checked here too, so a bad request fails before any VM is looked up.
    req.arguments()
        .map_err(|e| CliError::from(ControlError::from(e)))?;
    Ok(req)
}

pub async fn device_add(ctx: &Ctx, a: DeviceAddArgs) -> Result<(), CliError> {
    let req = device_request(&a)?;
    let (vm, _) = ctx.vm(&a.name)?;
    Ok(ctx.vms().await?.device_add(&vm, &req).await?)
}

/// Waits for the guest to release the device unless `--no-wait`.
pub async fn device_del(ctx: &Ctx, a: DeviceDelArgs) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let wait = (!a.no_wait).then_some(a.timeout);
    Ok(ctx.vms().await?.device_del(&vm, &a.id, wait).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::exit::code;

    fn add(props: &[&str], id: Option<&str>) -> Result<DeviceRequest, CliError> {
        device_request(&DeviceAddArgs {
            name: "vm".into(),
            driver: "virtio-rng-pci".into(),
            id: id.map(str::to_string),
            props: props.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn device_add_words_become_a_request() {
        assert_eq!(
            add(&["addr=0x6", "max-bytes=1024", "x="], Some("rng0")).unwrap(),
            DeviceRequest {
                driver: "virtio-rng-pci".into(),
                id: Some("rng0".into()),
                props: vec![
                    ("addr".into(), "0x6".into()),
                    ("max-bytes".into(), "1024".into()),
                    ("x".into(), "".into())
                ],
            }
        );
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
}
