//! `maqet snapshot create|load|delete|list`: disk-only snapshots with
//! qemu-img while the VM is stopped; whole-VM (disks + RAM) snapshots of a
//! running VM with --live, through QMP jobs.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Serialize;

use crate::cli::args::{SnapshotArgs, SnapshotCommand, SnapshotListArgs};
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::cli::output::{human_bytes, print_json, render_table, rfc3339_utc};
use crate::config::{normalize, RenderContext, StorageKind, VmConfig};
use crate::ipc::protocol::FreezeReport;
use crate::storage::live::{self, BlockNode, LiveTarget, Progress};
use crate::storage::refs::argv_paths;
use crate::storage::snapshot as snap;
use crate::storage::{QemuImg, References, SnapshotInfo, StorageError};
use crate::vmname::VmName;

const ACTIONS: &str = "create, load, delete, list";

/// Re-reads the original tool's order, `VM ACTION DRIVE …`.
#[derive(Debug, Parser)]
#[command(name = "maqet snapshot", no_binary_name = true)]
struct Reordered {
    #[command(subcommand)]
    command: SnapshotCommand,
}

pub async fn run(ctx: &Ctx, c: SnapshotCommand) -> Result<(), CliError> {
    match c {
        SnapshotCommand::Create(a) => {
            let op = Op::Create {
                overwrite: a.overwrite,
                freeze: !a.no_freeze,
                json: a.json,
            };
            change(ctx, op, &a.common).await
        }
        SnapshotCommand::Load(a) => change(ctx, Op::Load, &a).await,
        SnapshotCommand::Delete(a) => change(ctx, Op::Delete, &a).await,
        SnapshotCommand::List(a) => list(ctx, &a).await,
        SnapshotCommand::Legacy(words) => {
            let action = words.get(1).map(String::as_str).unwrap_or("");
            if !matches!(action, "create" | "load" | "delete" | "list" | "ls") {
                return Err(CliError::usage(format!(
                    "unknown snapshot action '{}'; actions: {ACTIONS} (maqet snapshot ACTION VM DRIVE [SNAPSHOT])",
                    words[0]
                )));
            }
            let mut argv = vec![action.to_string(), words[0].clone()];
            argv.extend(words[2..].iter().cloned());
            let parsed =
                Reordered::try_parse_from(argv).map_err(|e| CliError::usage(e.to_string()))?;
            if let SnapshotCommand::Legacy(_) = parsed.command {
                return Err(CliError::usage(format!(
                    "unknown snapshot action; actions: {ACTIONS}"
                )));
            }
            Box::pin(run(ctx, parsed.command)).await
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create {
        /// `--overwrite`
        overwrite: bool,
        /// Not `--no-freeze`.
        freeze: bool,
        /// `--json`
        json: bool,
    },
    Load,
    Delete,
}

impl Op {
    fn verb(self) -> &'static str {
        match self {
            Op::Create { .. } => "create",
            Op::Load => "load",
            Op::Delete => "delete",
        }
    }
}

fn tag_of(a: &SnapshotArgs, op: Op) -> Result<String, CliError> {
    match (&a.snapshot, &a.name) {
        (Some(p), Some(n)) if p != n => Err(CliError::usage(format!(
            "two snapshot names given ('{p}' and --name {n}); give one"
        ))),
        (Some(t), _) | (None, Some(t)) => Ok(t.clone()),
        (None, None) => Err(CliError::usage(format!(
            "name the snapshot: maqet snapshot {} {} {} NAME",
            op.verb(),
            a.vm,
            a.drive
        ))),
    }
}

async fn change(ctx: &Ctx, op: Op, a: &SnapshotArgs) -> Result<(), CliError> {
    let tag = tag_of(a, op)?;
    if let Op::Create { .. } = op {
        snap::validate_tag(&tag)?;
    }
    let (vm, rec) = ctx.vm(&a.vm)?;
    let cfg = crate::vm::stored_config(&rec)?;
    let entry = snap::find_drive(vm.as_str(), &cfg, &a.drive)?;
    let disk_dir = ctx.data_dir.disk_dir(&vm);
    let running = ctx.vms_if_session().await?.is_running(&vm).await?;
    if a.live {
        if !running {
            return Err(CliError::conflict(format!(
                "VM '{vm}' is not running, so there is no live state to {} (without --live, `maqet snapshot {} {vm} {} {tag}` works on the stopped VM's disk)",
                op.verb(),
                op.verb(),
                a.drive
            )));
        }
        return change_live(ctx, &vm, &cfg, &entry.path(&disk_dir), &a.drive, &tag, op).await;
    }
    if running {
        let what = match op {
            Op::Create { .. } => "take a disk-only snapshot of",
            Op::Load => "load a disk snapshot into",
            Op::Delete => "delete a snapshot of a disk of",
        };
        return Err(CliError::conflict(format!(
            "VM '{vm}' is running: maqet will not {what} a running VM with qemu-img. Stop it first (`maqet stop {vm}`), or add --live to {} the whole running VM (every disk plus RAM) through QEMU",
            op.verb()
        )));
    }
    let path = snap::snapshot_image(vm.as_str(), entry, &disk_dir)?;
    let img = QemuImg::find(Some(&cfg.binary))?;
    match offline(&img, op, &vm, &entry.name, &path, &tag) {
        Ok((said, replaced)) => {
            if let Op::Create { json: true, .. } = op {
                let drives = vec![entry.name.clone()];
                print_json(&Created::new(
                    &vm,
                    &tag,
                    replaced,
                    drives,
                    FreezeReport::default(),
                ));
            } else {
                eprintln!("{said}");
            }
            Ok(())
        }
        Err(e) => Err(explain_lock(ctx, &img, e).await),
    }
}

/// A disk-only snapshot operation with qemu-img; returns what to tell and
/// whether a snapshot was replaced.
fn offline(
    img: &QemuImg,
    op: Op,
    vm: &VmName,
    drive: &str,
    path: &Path,
    tag: &str,
) -> Result<(String, bool), StorageError> {
    Ok(match op {
        Op::Create { overwrite, .. } => {
            let replaced = snap::create(img, drive, path, tag, overwrite)?;
            let said = format!(
                "{} snapshot '{tag}' of drive '{drive}' (disk only; VM '{vm}' is stopped)",
                if replaced { "replaced" } else { "created" },
            );
            (said, replaced)
        }
        Op::Load => {
            let s = snap::load(img, drive, path, tag)?;
            let ram = if s.is_live() {
                "; the RAM state saved with it was not loaded (a stopped VM boots afresh; load it with --live into the running VM to get it back)"
            } else {
                ""
            };
            let said = format!(
                "drive '{drive}' of VM '{vm}' is back at snapshot '{tag}' (disk only){ram}"
            );
            (said, false)
        }
        Op::Delete => {
            snap::delete(img, drive, path, tag)?;
            (
                format!("deleted snapshot '{tag}' of drive '{drive}'"),
                false,
            )
        }
    })
}

/// A lock conflict names the running VM (of any data directory) that has
/// the image open, directly or down a backing chain; when none has, the
/// lock is some other process's (e.g. a concurrent maqet command).
async fn explain_lock(ctx: &Ctx, img: &QemuImg, e: StorageError) -> CliError {
    let StorageError::Locked {
        command,
        stderr,
        path,
        user: None,
    } = e
    else {
        return e.into();
    };
    let mut refs = References::default();
    let procs = match ctx.vms_if_session().await {
        Ok(vms) => vms.running_processes().await.ok(),
        Err(_) => None,
    };
    if let Some(procs) = procs {
        for p in procs {
            refs.add_argv(&p.argv, p.cwd.as_deref(), &p.user);
        }
        refs.add_backing_chains(img);
    }
    StorageError::Locked {
        command,
        stderr,
        user: refs.user_of_path(&path),
        path,
    }
    .into()
}

/// Existing files the rendered command line names besides the `storage`
/// disks (`arguments` drives); each once.
fn argument_images(
    cfg: &VmConfig,
    vm: &VmName,
    disk_dir: &Path,
    storage: &[(PathBuf, String)],
) -> Vec<PathBuf> {
    let argv = cfg.render_argv(&RenderContext {
        vm_name: vm.to_string(),
        qmp_fd: 3,
        console_fd: None,
        disk_dir: disk_dir.to_path_buf(),
        runtime_dir: crate::paths::vm_runtime_dir_or_default(vm.as_str()),
    });
    let mut seen: Vec<PathBuf> = storage.iter().map(|(p, _)| p.clone()).collect();
    // hook: issue 10 — UEFI flash images are firmware, not disks.
    if let Some(fw) = &cfg.desktop.firmware {
        seen.push(canonical(&fw.flash.executable));
        seen.push(canonical(&crate::firmware::nvram::path(disk_dir)));
    }
    let mut out = Vec::new();
    for p in argv_paths(&argv).into_iter().map(PathBuf::from) {
        let c = canonical(&p);
        if p.is_absolute() && p.is_file() && !seen.contains(&c) {
            seen.push(c);
            out.push(p);
        }
    }
    out
}

/// Maps image paths to drive names for messages.
fn drive_names(cfg: &VmConfig, disk_dir: &Path) -> Vec<(PathBuf, String)> {
    cfg.storage()
        .iter()
        .filter(|e| e.kind != StorageKind::Virtfs)
        .map(|e| (canonical(&e.path(disk_dir)), e.name.clone()))
        .collect()
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| normalize(p))
}

async fn attached(client: &mut crate::ipc::IpcClient) -> Result<Vec<BlockNode>, StorageError> {
    use crate::storage::live::QmpExec;
    let reply = client.execute("query-block", serde_json::json!({})).await?;
    Ok(live::parse_query_block(&reply))
}

async fn change_live(
    ctx: &Ctx,
    vm: &VmName,
    cfg: &VmConfig,
    drive_path: &Path,
    drive: &str,
    tag: &str,
    op: Op,
) -> Result<(), CliError> {
    let mut client = ctx.runner(vm).await?;
    let nodes = attached(&mut client).await?;
    let disk_dir_names = drive_names(cfg, &ctx.data_dir.disk_dir(vm));
    let names = |p: &Path| {
        let c = canonical(p);
        disk_dir_names
            .iter()
            .find(|(q, _)| *q == c)
            .map(|(_, n)| n.clone())
    };
    let target: LiveTarget = live::target(vm.as_str(), &nodes, drive, drive_path, &names)?;
    let mut bar = ProgressBar::new(match op {
        Op::Create { .. } => format!("saving '{tag}'"),
        Op::Load => format!("loading '{tag}'"),
        Op::Delete => format!("deleting '{tag}'"),
    });
    let labels: Vec<String> = target.devices.iter().map(|n| n.label.clone()).collect();
    let drives = labels
        .iter()
        .map(|l| format!("'{l}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let done = match op {
        Op::Create {
            overwrite,
            freeze,
            json,
        } => {
            let o = live::save(&mut client, &target, tag, overwrite, freeze, &mut |p| {
                bar.show(p)
            })
            .await;
            bar.finish();
            let (replaced, f) = settle(vm, o)?;
            if !f.frozen && f.agent && freeze {
                if let Some(r) = &f.reason {
                    eprintln!("warning: VM '{vm}' was saved with its file systems not frozen: {r}");
                }
            }
            if json {
                print_json(&Created {
                    live: true,
                    vmstate_drive: Some(target.vmstate.label.clone()),
                    ..Created::new(vm, tag, replaced, labels, f)
                });
                return Ok(());
            }
            let mut said = format!(
                "{} live snapshot '{tag}' of VM '{vm}': drives {drives} plus the VM state (in '{}')",
                if replaced { "replaced" } else { "created" },
                target.vmstate.label
            );
            if let Some(n) = f.filesystems.filter(|_| f.frozen) {
                said.push_str(&format!(
                    "; {n} guest file system(s) frozen during the save, thawed after"
                ));
            }
            said
        }
        Op::Load => {
            let o = live::load(&mut client, vm.as_str(), &target, tag, &mut |p| bar.show(p)).await;
            bar.finish();
            let (_, f) = settle(vm, o)?;
            if let Some(r) = &f.reason {
                eprintln!(
                    "warning: VM '{vm}': cannot tell whether the loaded guest's file systems are frozen: {r}; if the snapshot was saved frozen, `maqet guest {vm} fsthaw` thaws them"
                );
            }
            let mut said =
                format!("VM '{vm}' is back at snapshot '{tag}': drives {drives} and RAM restored");
            if let Some(n) = f.thawed_after_load {
                said.push_str(&format!(
                    "; it was saved with the guest's file systems frozen, {n} thawed now"
                ));
            }
            said
        }
        Op::Delete => {
            let r =
                live::delete(&mut client, vm.as_str(), &target, tag, &mut |p| bar.show(p)).await;
            bar.finish();
            r?;
            format!("deleted snapshot '{tag}' of VM '{vm}'")
        }
    };
    eprintln!("{done}");
    Ok(())
}

/// A live save's or load's result with its freeze report; a failed thaw is
/// an error even when the job succeeded (the guest may be left frozen), and
/// a failed job says whether the guest was thawed.
fn settle<T>(vm: &VmName, o: live::Outcome<T>) -> Result<(T, FreezeReport), StorageError> {
    match (o.result, o.freeze.thaw_error.clone()) {
        (Ok(t), None) => Ok((t, o.freeze)),
        (Ok(_), Some(error)) => Err(StorageError::Thaw {
            vm: vm.to_string(),
            done: "the snapshot job finished".into(),
            error,
        }),
        (Err(e), Some(error)) => Err(StorageError::Thaw {
            vm: vm.to_string(),
            done: e.to_string(),
            error,
        }),
        (Err(StorageError::Job { what, message }), None) if o.freeze.frozen => {
            Err(StorageError::Job {
                what,
                message: format!("{message} (the guest's file systems were thawed again)"),
            })
        }
        (Err(e), None) => Err(e),
    }
}

/// `snapshot create --json`.
#[derive(Debug, Serialize)]
struct Created {
    vm: String,
    snapshot: String,
    /// Whole VM (disks + RAM) rather than one disk.
    live: bool,
    replaced: bool,
    drives: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vmstate_drive: Option<String>,
    /// The VM has a guest agent channel.
    guest_agent: bool,
    /// The guest's file systems were frozen during the save.
    frozen: bool,
    /// How many the agent froze.
    #[serde(skip_serializing_if = "Option::is_none")]
    filesystems: Option<u64>,
    /// Why a VM with an agent was saved unfrozen.
    #[serde(skip_serializing_if = "Option::is_none")]
    freeze: Option<String>,
}

impl Created {
    fn new(vm: &VmName, tag: &str, replaced: bool, drives: Vec<String>, f: FreezeReport) -> Self {
        Created {
            vm: vm.to_string(),
            snapshot: tag.to_string(),
            live: false,
            replaced,
            drives,
            vmstate_drive: None,
            guest_agent: f.agent,
            frozen: f.frozen,
            filesystems: f.filesystems,
            freeze: f.reason,
        }
    }
}

/// A one-line progress bar on stderr, drawn only on a terminal. QEMU 7.2
/// reports snapshot jobs as 0 or 1 of 1, so the elapsed time is shown too.
struct ProgressBar {
    label: String,
    tty: bool,
    drawn: bool,
    since: std::time::Instant,
}

impl ProgressBar {
    fn new(label: String) -> Self {
        ProgressBar {
            label,
            tty: std::io::stderr().is_terminal(),
            drawn: false,
            since: std::time::Instant::now(),
        }
    }

    fn show(&mut self, p: Progress) {
        if !self.tty {
            return;
        }
        let frac = if p.total == 0 {
            0.0
        } else {
            (p.current as f64 / p.total as f64).clamp(0.0, 1.0)
        };
        let width = 30;
        let filled = (frac * width as f64).round() as usize;
        eprint!(
            "\r{} [{}{}] {:3.0}% {:.0}s",
            self.label,
            "#".repeat(filled),
            " ".repeat(width - filled),
            frac * 100.0,
            self.since.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
        self.drawn = true;
    }

    fn finish(&mut self) {
        if self.drawn {
            eprintln!();
        }
    }
}

/// One row of `snapshot list`.
#[derive(Debug, Serialize)]
struct Row {
    drive: String,
    tag: String,
    id: String,
    /// RFC 3339, UTC.
    date: String,
    date_sec: i64,
    /// Bytes of saved RAM/device state (0 = disk only).
    vm_state_size: u64,
    /// `live` (part of a snapshot with VM state) or `disk` (disk only).
    kind: &'static str,
    /// Guest clock at the snapshot, seconds.
    vm_clock_sec: f64,
}

fn rows(drive: &str, snaps: Vec<SnapshotInfo>) -> impl Iterator<Item = Row> + '_ {
    snaps.into_iter().map(move |s| Row {
        drive: drive.to_string(),
        kind: if s.is_live() { "live" } else { "disk" },
        date: rfc3339_utc(s.date_sec.max(0) as u64),
        tag: s.name,
        id: s.id,
        date_sec: s.date_sec,
        vm_state_size: s.vm_state_size,
        vm_clock_sec: s.vm_clock_sec as f64 + s.vm_clock_nsec as f64 / 1e9,
    })
}

async fn list(ctx: &Ctx, a: &SnapshotListArgs) -> Result<(), CliError> {
    let (vm, rec) = ctx.vm(&a.vm)?;
    let cfg = crate::vm::stored_config(&rec)?;
    let disk_dir = ctx.data_dir.disk_dir(&vm);
    let only = match &a.drive {
        Some(d) => {
            let e = snap::find_drive(vm.as_str(), &cfg, d)?;
            if e.kind != StorageKind::Qcow2 {
                return Err(StorageError::NotSnapshottable {
                    drive: e.name.clone(),
                    format: e.kind.as_str().into(),
                }
                .into());
            }
            Some(e)
        }
        None => None,
    };
    // Every disk is read, also for one drive: a live snapshot keeps its VM
    // state on one drive only, and the others tell what its parts are.
    let names = drive_names(&cfg, &disk_dir);
    let label = |p: &Path| {
        let c = canonical(p);
        names
            .iter()
            .find(|(q, _)| *q == c)
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| p.display().to_string())
    };
    let mut out: Vec<Row> = Vec::new();
    if ctx.vms_if_session().await?.is_running(&vm).await? {
        // Structured data from QEMU, which has the images open: every
        // attached disk, `arguments` ones included.
        let mut client = ctx.runner(&vm).await?;
        for n in attached(&mut client).await? {
            out.extend(rows(&label(&n.file), n.snapshots));
        }
    } else {
        let img = QemuImg::find(Some(&cfg.binary))?;
        for e in cfg
            .storage()
            .iter()
            .filter(|e| e.kind == StorageKind::Qcow2)
        {
            let path = e.path(&disk_dir);
            if !path.exists() {
                if only.is_some_and(|o| o.name == e.name) {
                    snap::snapshot_image(vm.as_str(), e, &disk_dir)?;
                }
                continue;
            }
            out.extend(rows(&e.name, snap::list(&img, &path)?));
        }
        for path in argument_images(&cfg, &vm, &disk_dir, &names) {
            // Not every file on the command line is an image (kernel, …).
            if let Ok(chain) = img.info(&path) {
                if let Some(top) = chain.into_iter().next().filter(|i| i.format == "qcow2") {
                    out.extend(rows(&label(&path), top.snapshots));
                }
            }
        }
    }
    let live: Vec<(String, i64)> = out
        .iter()
        .filter(|r| r.vm_state_size > 0)
        .map(|r| (r.tag.clone(), r.date_sec))
        .collect();
    for r in out.iter_mut() {
        if live.contains(&(r.tag.clone(), r.date_sec)) {
            r.kind = "live";
        }
    }
    if let Some(e) = only {
        out.retain(|r| r.drive == e.name);
    }
    if a.json {
        print_json(&out);
        return Ok(());
    }
    if out.is_empty() {
        eprintln!("no snapshots");
        return Ok(());
    }
    let table: Vec<Vec<String>> = out
        .iter()
        .map(|r| {
            vec![
                r.drive.clone(),
                r.tag.clone(),
                r.date.clone(),
                if r.vm_state_size > 0 {
                    human_bytes(r.vm_state_size)
                } else {
                    "-".into()
                },
                r.kind.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        render_table(&["DRIVE", "TAG", "DATE", "VM-STATE", "KIND"], &table)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> VmName {
        VmName::new("web").unwrap()
    }

    fn frozen(thaw_error: Option<&str>) -> FreezeReport {
        FreezeReport {
            agent: true,
            frozen: true,
            filesystems: Some(2),
            thaw_error: thaw_error.map(str::to_string),
            ..FreezeReport::default()
        }
    }

    fn job_failed() -> Result<(), StorageError> {
        Err(StorageError::Job {
            what: "saving snapshot 's1'".into(),
            message: "No space left on device".into(),
        })
    }

    #[test]
    fn a_failed_thaw_is_an_error_even_after_a_good_save() {
        let o = live::Outcome {
            result: Ok(()),
            freeze: frozen(Some("the guest agent did not answer")),
        };
        let e = settle(&vm(), o).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the snapshot job finished, but thawing the file systems of VM 'web' failed: the guest agent did not answer; they may still be frozen: run `maqet guest web fsthaw`"
        );
        assert_eq!(CliError::from(e).code, crate::cli::exit::code::FAILURE);
    }

    #[test]
    fn a_failed_save_says_whether_the_guest_was_thawed() {
        let o = live::Outcome {
            result: job_failed(),
            freeze: frozen(None),
        };
        assert_eq!(
            settle(&vm(), o).unwrap_err().to_string(),
            "saving snapshot 's1' failed: No space left on device (the guest's file systems were thawed again)"
        );
        let o = live::Outcome {
            result: job_failed(),
            freeze: frozen(Some("timed out")),
        };
        let e = settle(&vm(), o).unwrap_err().to_string();
        assert!(
            e.starts_with("saving snapshot 's1' failed: No space left on device, but thawing"),
            "{e}"
        );
        // Unfrozen: the job's error as it was.
        let o = live::Outcome {
            result: job_failed(),
            freeze: FreezeReport::default(),
        };
        assert_eq!(
            settle(&vm(), o).unwrap_err().to_string(),
            "saving snapshot 's1' failed: No space left on device"
        );
    }
}
