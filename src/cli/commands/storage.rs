//! `maqet storage create|ls`, and the storage steps of `start` and `rm`.

use std::path::{Path, PathBuf};

use crate::cli::args::{StorageCommand, StorageCreateArgs, StorageLsArgs};
use crate::cli::context::Ctx;
use crate::cli::exit::{code, CliError};
use crate::cli::output::{human_bytes, print_json, render_table};
use crate::config::{normalize, ConfigDocument, StorageKind, VmConfig};
use crate::state::{FileKind, Store, VmRecord};
use crate::storage::inventory::{self, DiskReport};
use crate::storage::{self as st, Provisioned, QemuImg, Removal, Undone};
use crate::systemd::Systemd;
use crate::vm::owner;
use crate::vmname::VmName;

pub async fn run(ctx: &Ctx, c: StorageCommand) -> Result<(), CliError> {
    match c {
        StorageCommand::Create(a) => create(ctx, &a).await,
        StorageCommand::Ls(a) => ls(ctx, &a),
    }
}

/// Whether `vm` of this data directory runs. Without a user session no
/// VM can run; a same-named VM of another data directory is an error.
pub async fn is_running(ctx: &Ctx, vm: &VmName) -> Result<bool, CliError> {
    let sd = match ctx.systemd().await {
        Ok(sd) => sd,
        Err(e) if e.code == code::NO_SESSION => return Ok(false),
        Err(e) => return Err(e),
    };
    running_on(ctx, &sd, vm).await
}

pub async fn running_on(ctx: &Ctx, sd: &Systemd, vm: &VmName) -> Result<bool, CliError> {
    Ok(owner::live_unit(sd, vm, ctx.data_dir.path())
        .await?
        .is_some())
}

/// The stored config, validated.
pub fn stored_config(rec: &VmRecord) -> Result<VmConfig, CliError> {
    ConfigDocument::from_stored(&rec.config)?
        .validate()
        .map_err(|e| {
            CliError::new(
                code::INVALID_CONFIG,
                format!(
                    "the stored configuration of '{}' no longer validates: {e} (fix it with `maqet apply`)",
                    rec.name
                ),
            )
        })
}

/// Creates what the VM's storage needs before a start, telling the user
/// what was made; `done` collects it for an undo.
pub fn provision(
    ctx: &Ctx,
    vm: &VmName,
    cfg: &VmConfig,
    store: &Store,
    done: &mut Provisioned,
) -> Result<(), CliError> {
    let before = done.created.len();
    let vm_dir = ctx.data_dir.disk_dir(vm);
    let mut r = st::provision(vm.as_str(), cfg, &vm_dir, store, done);
    // hook: issue 10 — the VM's NVRAM copy and TPM state directory
    if r.is_ok() {
        r = crate::companion::provision_state(vm.as_str(), cfg, &vm_dir, store, done);
    }
    for c in &done.created[before..] {
        eprintln!("created {} ({})", c.path.display(), c.what);
    }
    Ok(r?)
}

/// Undoes what a failed (or lost) start created: deletes what no VM uses
/// (running VMs of any data directory included) and forgets every record.
/// Returns the note for its error: what was removed, what was kept and why.
pub async fn undo(ctx: &Ctx, vm: &VmName, done: Provisioned, store: &Store) -> String {
    if done.created.is_empty() {
        return String::new();
    }
    let refs = match super::storage_refs::references(ctx, store, Some(vm)).await {
        Ok(r) => r,
        Err(e) => {
            // Without knowing who uses them, nothing is deleted; the
            // records stay so a later `rm --delete-storage` can decide.
            let paths: Vec<String> = done
                .created
                .iter()
                .map(|c| c.path.display().to_string())
                .collect();
            return format!(
                "\n(kept what this start created: {}; {})",
                paths.join(", "),
                e.message
            );
        }
    };
    undo_note(&done.undo(vm.as_str(), store, &refs))
}

fn undo_note(u: &Undone) -> String {
    let mut note = String::new();
    if !u.removed.is_empty() {
        let paths: Vec<String> = u.removed.iter().map(|p| p.display().to_string()).collect();
        note = format!("\n(removed what this start created: {})", paths.join(", "));
    }
    for (p, why) in &u.kept {
        note.push_str(&format!(
            "\n(kept {}, which this start created: {why}; it is no longer recorded as created by maqet)",
            p.display()
        ));
    }
    for p in &u.problems {
        note.push_str("\n  ");
        note.push_str(p);
    }
    note
}

async fn create(ctx: &Ctx, a: &StorageCreateArgs) -> Result<(), CliError> {
    let (vm, rec) = ctx.vm(&a.name)?;
    let cfg = stored_config(&rec)?;
    let store = ctx.store()?;
    let mut done = Provisioned::default();
    let r = st::provision(
        vm.as_str(),
        &cfg,
        &ctx.data_dir.disk_dir(&vm),
        &store,
        &mut done,
    );
    if let Err(e) = r {
        let mut e = CliError::from(e);
        e.message.push_str(&undo(ctx, &vm, done, &store).await);
        return Err(e);
    }
    for c in &done.created {
        println!("created {} ({})", c.path.display(), c.what);
    }
    let disk_dir = ctx.data_dir.disk_dir(&vm);
    for e in cfg.storage() {
        let p = e.path(&disk_dir);
        if !done.created.iter().any(|c| same_path(&c.path, &p)) {
            eprintln!("{}: {} exists", e.name, p.display());
        }
    }
    Ok(())
}

/// Whether two spellings name the same place (records are canonical).
fn same_path(a: &Path, b: &Path) -> bool {
    a == b || canonical(a) == canonical(b)
}

/// Every VM's validated config (with its disk directory); VMs whose config
/// no longer validates are skipped with a warning.
pub(super) fn all_configs(
    ctx: &Ctx,
    store: &Store,
) -> Result<Vec<(String, VmConfig, PathBuf)>, CliError> {
    let mut out = Vec::new();
    for rec in store.list_vms()? {
        let Ok(vm) = VmName::new(&rec.name) else {
            continue;
        };
        match stored_config(&rec) {
            Ok(cfg) => out.push((rec.name.clone(), cfg, ctx.data_dir.disk_dir(&vm))),
            Err(e) => eprintln!("warning: {}", e.message),
        }
    }
    Ok(out)
}

fn ls(ctx: &Ctx, a: &StorageLsArgs) -> Result<(), CliError> {
    let only = a.name.as_deref().map(|n| ctx.vm(n)).transpose()?;
    let Some(store) = ctx.store_if_exists()? else {
        return print_reports(&[], a.json);
    };
    let vms = all_configs(ctx, &store)?;
    let img = QemuImg::find(vms.first().map(|v| v.1.binary.as_path())).ok();
    let mut reports: Vec<DiskReport> = Vec::new();
    for (name, cfg, disk_dir) in &vms {
        if only.as_ref().is_some_and(|(vm, _)| vm.as_str() != name) {
            continue;
        }
        let created: Vec<PathBuf> = store
            .created_files(name)?
            .into_iter()
            .map(|f| canonical(&f.path))
            .collect();
        let mut disks = inventory::vm_disks(name, cfg, disk_dir, &[]);
        for d in disks.iter_mut() {
            d.created_by_maqet = created.contains(&canonical(&d.path));
        }
        reports.extend(disks);
    }
    // Files in the disk directory no VM uses (backing chains count as used).
    for r in reports.iter_mut() {
        r.describe(img.as_ref());
    }
    let mut used: Vec<PathBuf> = inventory::references(&vms).into_keys().collect();
    used.extend(reports.iter().flat_map(|r| r.backing_chain.iter().cloned()));
    let used: Vec<PathBuf> = used.iter().map(|p| canonical(p)).collect();
    let root = match &only {
        Some((vm, _)) => ctx.data_dir.disk_dir(vm),
        None => ctx.data_dir.path().join("disks"),
    };
    let mut orphans = inventory::orphan_reports(inventory::unreferenced(&root, &|p| {
        used.contains(&canonical(p))
    }));
    for r in orphans.iter_mut() {
        r.describe(img.as_ref());
    }
    reports.extend(orphans);
    print_reports(&reports, a.json)
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| normalize(p))
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

/// Resolves `--delete-file` paths to disks of this VM (checked before
/// anything is stopped or removed).
pub fn check_delete_files(
    ctx: &Ctx,
    vm: &VmName,
    rec: &VmRecord,
    files: &[PathBuf],
) -> Result<Vec<PathBuf>, CliError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let cfg = stored_config(rec)?;
    let disk_dir = ctx.data_dir.disk_dir(vm);
    let disks: Vec<PathBuf> = cfg
        .storage()
        .iter()
        .filter(|e| e.kind != StorageKind::Virtfs)
        .map(|e| e.path(&disk_dir))
        .collect();
    let cwd = std::env::current_dir()?;
    files
        .iter()
        .map(|f| {
            let p = normalize(&cwd.join(f));
            if disks.iter().any(|d| canonical(d) == canonical(&p)) {
                Ok(p)
            } else {
                let list: Vec<String> = disks.iter().map(|d| d.display().to_string()).collect();
                Err(CliError::usage(format!(
                    "--delete-file {}: not a disk image of VM '{vm}' (its disks: {}); maqet only deletes a VM's own disks",
                    p.display(),
                    if list.is_empty() { "none".into() } else { list.join(", ") }
                )))
            }
        })
        .collect()
}

/// `rm --delete-storage` / `--delete-file`: deletes, reports each file on
/// stderr, and lists the VM's files that are kept (and why).
pub async fn delete_for_rm(
    ctx: &Ctx,
    vm: &VmName,
    rec: &VmRecord,
    delete_created: bool,
    named: &[PathBuf],
) -> Result<(), CliError> {
    let store = ctx.store()?;
    // No file another VM uses is deleted, whoever created it.
    let refs = super::storage_refs::references(ctx, &store, Some(vm)).await?;
    let created: Vec<PathBuf> = store
        .created_files(vm.as_str())?
        .into_iter()
        .map(|f| canonical(&f.path))
        .collect();
    let mut failed = Vec::new();
    // hook: issue 10 — swtpm's files in the TPM state directory maqet made
    let tpm_dir = crate::companion::tpm::state_dir(&ctx.data_dir.disk_dir(vm));
    if delete_created && created.contains(&canonical(&tpm_dir)) {
        for r in crate::companion::tpm::clear_state(&tpm_dir) {
            match r {
                Ok(p) => eprintln!("deleted {} (TPM state)", p.display()),
                Err(e) => failed.push(e),
            }
        }
    }
    if delete_created {
        for (path, kind, outcome) in
            st::delete_created(vm.as_str(), &store, &|id| refs.user_of(id))?
        {
            let p = path.display();
            match outcome {
                Removal::Deleted => eprintln!("deleted {p} ({kind}, created by maqet)"),
                Removal::AlreadyGone => eprintln!("{p} was already gone"),
                Removal::KeptNotEmpty => eprintln!("kept {p} (directory holds other files)"),
                Removal::KeptInUse(why) | Removal::KeptUnproven(why) => {
                    eprintln!("kept {p} ({why})")
                }
                Removal::Failed(e) => failed.push(format!("cannot delete {p}: {e}")),
            }
        }
    }
    for p in named {
        if let Some(user) = refs.user_of_path(p) {
            failed.push(format!("not deleting {}: {user}", p.display()));
            continue;
        }
        match std::fs::remove_file(p) {
            Ok(()) => eprintln!("deleted {} (named with --delete-file)", p.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("{} was already gone", p.display())
            }
            Err(e) => failed.push(format!("cannot delete {}: {e}", p.display())),
        }
    }
    // Say which of the VM's disks stay, and why.
    if let Ok(cfg) = stored_config(rec) {
        let disk_dir = ctx.data_dir.disk_dir(vm);
        for e in cfg
            .storage()
            .iter()
            .filter(|e| e.kind != StorageKind::Virtfs)
        {
            let p = e.path(&disk_dir);
            if p.exists()
                && !created.contains(&canonical(&p))
                && !named.iter().any(|n| canonical(n) == canonical(&p))
            {
                eprintln!(
                    "kept {} (you brought it; `--delete-file {}` deletes it)",
                    p.display(),
                    p.display()
                );
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::failure(format!(
            "VM '{vm}' was not removed:\n  {}",
            failed.join("\n  ")
        )))
    }
}

/// After `rm` without `--delete-storage`: which created files stay.
pub fn note_kept(store: &Store, vm: &VmName) -> Result<(), CliError> {
    let kept: Vec<String> = store
        .created_files(vm.as_str())?
        .into_iter()
        .filter(|f| f.kind != FileKind::Directory && f.path.exists())
        .map(|f| f.path.display().to_string())
        .collect();
    if !kept.is_empty() {
        eprintln!(
            "kept the disks maqet created for '{vm}': {} (`maqet rm --delete-storage` would have deleted them; `maqet storage ls` shows them as unreferenced)",
            kept.join(", ")
        );
    }
    Ok(())
}
