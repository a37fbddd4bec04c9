//! `maqet storage create|ls|verify|attach|convert-nvram`.

use std::path::Path;

use crate::cli::args::{
    StorageAttachArgs, StorageCommand, StorageCreateArgs, StorageLsArgs, StorageVerifyArgs,
};
use crate::cli::context::Ctx;
use crate::cli::exit::{code, CliError};
use crate::cli::output::{human_bytes, print_json, print_notice, render_table};
use crate::storage::inventory::DiskReport;
use crate::storage::verify::DiskCheck;
use crate::vm::inventory::disk_inventory;
use crate::vm::{AttachRequest, AttachSource};
use crate::vmname::VmName;

pub async fn run(ctx: &Ctx, c: StorageCommand) -> Result<(), CliError> {
    match c {
        StorageCommand::Create(a) => create(ctx, &a).await,
        StorageCommand::Ls(a) => ls(ctx, &a),
        StorageCommand::Verify(a) => verify(ctx, &a).await,
        StorageCommand::Attach(a) => attach(ctx, &a).await,
        StorageCommand::ConvertNvram(a) => convert_nvram(ctx, &a).await,
    }
}

async fn convert_nvram(ctx: &Ctx, a: &StorageCreateArgs) -> Result<(), CliError> {
    use crate::storage::nvram::Converted;
    let vms = ctx.vms_if_session().await?;
    match vms
        .convert_nvram(&VmName::new(&a.name)?, &print_notice)
        .await?
    {
        Converted::Made { from, to } => println!(
            "{}: its UEFI variable store is now {} (qcow2: live snapshots work); the raw {} is kept — delete it once the VM booted fine",
            a.name,
            to.display(),
            from.display()
        ),
        Converted::Already(p) => println!(
            "{}: its UEFI variable store {} is qcow2 already",
            a.name,
            p.display()
        ),
        Converted::NothingYet => println!(
            "{}: no UEFI variable store yet; its first start makes a qcow2 one",
            a.name
        ),
    }
    Ok(())
}

async fn verify(ctx: &Ctx, a: &StorageVerifyArgs) -> Result<(), CliError> {
    let names = a
        .names
        .iter()
        .map(|n| ctx.vm(n).map(|(vm, _)| vm))
        .collect::<Result<Vec<_>, _>>()?;
    let checks = ctx.vms_if_session().await?.verify(&names).await?;
    if a.json {
        print_json(&checks);
    } else if checks.is_empty() {
        eprintln!("no disks");
    } else {
        print_checks(&checks);
    }
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c.status.is_failure())
        .map(|c| format!("{}/{} ({})", c.vm, c.disk, c.status.as_str()))
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(CliError::new(
        code::FAILURE,
        format!(
            "{} of {} disks failed verification: {}",
            failed.len(),
            checks.len(),
            failed.join(", ")
        ),
    ))
}

fn print_checks(checks: &[DiskCheck]) {
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            let mut result = format!("{}: {}", c.status.as_str(), c.message);
            if c.force_share {
                result.push_str(" (checked with qemu-img -U, read only: the VM is running)");
            }
            vec![
                c.vm.clone(),
                c.disk.clone(),
                c.path.display().to_string(),
                result,
            ]
        })
        .collect();
    print!("{}", render_table(&["VM", "DISK", "PATH", "RESULT"], &rows));
}

async fn attach(ctx: &Ctx, a: &StorageAttachArgs) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let cwd = std::env::current_dir()?;
    let given = Path::new(&a.disk);
    // An existing file wins over a spec reading of its name.
    let source = if !given.exists() && a.disk.contains('=') {
        AttachSource::Spec(
            crate::config::parse_disk_spec(&a.disk, &cwd)
                .map_err(|e| CliError::usage(e.to_string()))?,
        )
    } else {
        AttachSource::File(crate::config::normalize(&cwd.join(given)))
    };
    let req = AttachRequest {
        source,
        live: a.live,
        readonly: a.readonly,
        format: a.format.clone(),
        interface: a.interface.clone(),
    };
    let done = ctx.vms_if_session().await?.attach(&vm, req).await?;
    for p in &done.created {
        println!("created {}", p.display());
    }
    let when = if done.live {
        "hot-plugged into the running VM and recorded for its next start"
    } else if done.created_at_start {
        "recorded; the image is created at the next start (or now with `maqet storage create`)"
    } else {
        "recorded; the VM sees it from its next start"
    };
    println!(
        "attached drive '{}' ({}) to VM '{vm}': {when}",
        done.drive,
        done.path.display()
    );
    if !done.shared_with.is_empty() {
        eprintln!(
            "note: {}: {} too; QEMU's image locks keep them from running at once (give one of them an overlay with `base:` or a copy to run both)",
            done.path.display(),
            done.shared_with.join(", ")
        );
    }
    Ok(())
}

async fn create(ctx: &Ctx, a: &StorageCreateArgs) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let done = ctx.vms_if_session().await?.create_storage(&vm).await?;
    for c in &done.created {
        println!("created {} ({})", c.path.display(), c.what);
    }
    for (drive, path) in &done.existing {
        eprintln!("{drive}: {} exists", path.display());
    }
    Ok(())
}

fn ls(ctx: &Ctx, a: &StorageLsArgs) -> Result<(), CliError> {
    let only = a.name.as_deref().map(VmName::new).transpose()?;
    let reports = disk_inventory(&ctx.data_dir, only.as_ref(), &print_notice)?;
    print_reports(&reports, a.json)
}

fn print_reports(reports: &[DiskReport], json: bool) -> Result<(), CliError> {
    if json {
        print_json(&reports);
        return Ok(());
    }
    if reports.is_empty() {
        eprintln!("no disks");
        return Ok(());
    }
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let mut notes = Vec::new();
            if !r.referenced {
                notes.push("unreferenced: no VM uses it".to_string());
            }
            if !r.exists {
                notes.push("not created yet".into());
            }
            if r.created_by_maqet {
                notes.push("created by maqet".into());
            }
            if !r.backing_chain.is_empty() {
                let chain: Vec<String> = r
                    .backing_chain
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                notes.push(format!("backing: {}", chain.join(" <- ")));
            }
            if let Some(e) = &r.error {
                notes.push(e.clone());
            }
            vec![
                r.vm.clone().unwrap_or_else(dash),
                r.drive.clone().unwrap_or_else(dash),
                r.format.clone().unwrap_or_else(dash),
                r.virtual_size.map(human_bytes).unwrap_or_else(dash),
                r.actual_size.map(human_bytes).unwrap_or_else(dash),
                if r.exists {
                    r.snapshots.to_string()
                } else {
                    dash()
                },
                r.path.display().to_string(),
                notes.join("; "),
            ]
        })
        .collect();
    print!(
        "{}",
        render_table(
            &[
                "VM",
                "DRIVE",
                "FORMAT",
                "VIRTUAL",
                "ACTUAL",
                "SNAPSHOTS",
                "PATH",
                "NOTE"
            ],
            &rows
        )
    );
    Ok(())
}
