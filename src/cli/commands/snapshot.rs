//! `maqet snapshot create|load|delete|list`: parses the arguments (also
//! in the original tool's order), calls the vm layer (vm/snapshot/), which
//! picks disk-only (VM stopped) or whole-VM (`--live`, VM running), and
//! renders what it did: a message, `--json`, a progress line on a TTY, or
//! the list as a table.

use std::io::{IsTerminal, Write};

use clap::Parser;
use serde::Serialize;

use crate::cli::args::{SnapshotArgs, SnapshotCommand, SnapshotListArgs};
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::cli::output::{human_bytes, print_json, render_table, rfc3339_utc};
use crate::storage::live::Progress;
use crate::vm::{SnapshotOp, SnapshotRequest, SnapshotRow, Snapshotted};

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
            let op = SnapshotOp::Create {
                overwrite: a.overwrite,
                freeze: !a.no_freeze,
            };
            change(ctx, op, &a.common, a.json).await
        }
        SnapshotCommand::Load(a) => change(ctx, SnapshotOp::Load, &a, false).await,
        SnapshotCommand::Delete(a) => change(ctx, SnapshotOp::Delete, &a, false).await,
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

fn tag_of(a: &SnapshotArgs, verb: &str) -> Result<String, CliError> {
    match (&a.snapshot, &a.name) {
        (Some(p), Some(n)) if p != n => Err(CliError::usage(format!(
            "two snapshot names given ('{p}' and --name {n}); give one"
        ))),
        (Some(t), _) | (None, Some(t)) => Ok(t.clone()),
        (None, None) => Err(CliError::usage(format!(
            "name the snapshot: maqet snapshot {verb} {} {} NAME",
            a.vm, a.drive
        ))),
    }
}

async fn change(ctx: &Ctx, op: SnapshotOp, a: &SnapshotArgs, json: bool) -> Result<(), CliError> {
    let req = SnapshotRequest {
        tag: tag_of(a, op.verb())?,
        vm: crate::vmname::VmName::new(&a.vm)?,
        drive: a.drive.clone(),
        op,
        live: a.live,
    };
    let vms = ctx.vms_if_session().await?;
    let mut bar = ProgressBar::new(match op {
        SnapshotOp::Create { .. } => format!("saving '{}'", req.tag),
        SnapshotOp::Load => format!("loading '{}'", req.tag),
        SnapshotOp::Delete => format!("deleting '{}'", req.tag),
    });
    let done = vms.snapshot(&req, &mut |p| bar.show(p)).await;
    bar.finish();
    let done = done?;
    let vm = &done.vm;
    if let Some(r) = done.unfrozen_reason() {
        eprintln!("warning: VM '{vm}' was saved with its file systems not frozen: {r}");
    }
    if let (SnapshotOp::Load, true, Some(r)) = (op, done.live(), &done.freeze.reason) {
        eprintln!(
            "warning: VM '{vm}': cannot tell whether the loaded guest's file systems are frozen: {r}; if the snapshot was saved frozen, `maqet guest {vm} fsthaw` thaws them"
        );
    }
    if json {
        print_json(&Created::from(&done));
    } else {
        eprintln!("{}", said(&done));
    }
    Ok(())
}

/// What to tell of a finished operation.
fn said(d: &Snapshotted) -> String {
    let (vm, tag) = (&d.vm, &d.tag);
    let created = if d.replaced { "replaced" } else { "created" };
    if !d.live() {
        let drive = &d.drives[0];
        return match d.op {
            SnapshotOp::Create { .. } => format!(
                "{created} snapshot '{tag}' of drive '{drive}' (disk only; VM '{vm}' is stopped)"
            ),
            SnapshotOp::Load => {
                let ram = if d.ram_not_loaded {
                    "; the RAM state saved with it was not loaded (a stopped VM boots afresh; load it with --live into the running VM to get it back)"
                } else {
                    ""
                };
                format!("drive '{drive}' of VM '{vm}' is back at snapshot '{tag}' (disk only){ram}")
            }
            SnapshotOp::Delete => format!("deleted snapshot '{tag}' of drive '{drive}'"),
        };
    }
    let drives = d
        .drives
        .iter()
        .map(|l| format!("'{l}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let f = &d.freeze;
    match d.op {
        SnapshotOp::Create { .. } => {
            let mut said = format!(
                "{created} live snapshot '{tag}' of VM '{vm}': drives {drives} plus the VM state (in '{}')",
                d.vmstate_drive.as_deref().unwrap_or_default()
            );
            if let Some(n) = f.filesystems.filter(|_| f.frozen) {
                said.push_str(&format!(
                    "; {n} guest file system(s) frozen during the save, thawed after"
                ));
            }
            said
        }
        SnapshotOp::Load => {
            let mut said =
                format!("VM '{vm}' is back at snapshot '{tag}': drives {drives} and RAM restored");
            if let Some(n) = f.thawed_after_load {
                said.push_str(&format!(
                    "; it was saved with the guest's file systems frozen, {n} thawed now"
                ));
            }
            said
        }
        SnapshotOp::Delete => format!("deleted snapshot '{tag}' of VM '{vm}'"),
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

impl From<&Snapshotted> for Created {
    fn from(d: &Snapshotted) -> Self {
        let f = d.freeze.clone();
        Created {
            vm: d.vm.to_string(),
            snapshot: d.tag.clone(),
            live: d.live(),
            replaced: d.replaced,
            drives: d.drives.clone(),
            vmstate_drive: d.vmstate_drive.clone(),
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

impl From<SnapshotRow> for Row {
    fn from(r: SnapshotRow) -> Self {
        Row {
            date: rfc3339_utc(r.date_sec.max(0) as u64),
            kind: if r.live { "live" } else { "disk" },
            drive: r.drive,
            tag: r.tag,
            id: r.id,
            date_sec: r.date_sec,
            vm_state_size: r.vm_state_size,
            vm_clock_sec: r.vm_clock_sec,
        }
    }
}

async fn list(ctx: &Ctx, a: &SnapshotListArgs) -> Result<(), CliError> {
    let vms = ctx.vms_if_session().await?;
    let out: Vec<Row> = vms
        .snapshots(&crate::vmname::VmName::new(&a.vm)?, a.drive.as_deref())
        .await?
        .into_iter()
        .map(Row::from)
        .collect();
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
