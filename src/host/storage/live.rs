//! Live snapshots of a running VM: QMP `snapshot-save`, `snapshot-load`
//! and `snapshot-delete` jobs over every writable disk, with the VM state
//! (RAM and devices) kept in one chosen qcow2 drive.
//!
//! Each job is started with its own ID, polled with `query-jobs` until it
//! is `concluded`, its `error` reported, and dismissed. Everything that can
//! be checked beforehand is: a live snapshot covers every writable disk, so
//! a writable disk that cannot hold internal snapshots (raw) refuses the
//! whole operation before anything changes (QEMU would silently skip disks
//! not listed, and a later load would pair old RAM with a changed disk).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::qemu_img::SnapshotInfo;
use super::StorageError;
use crate::ipc::protocol::{FreezeReport, SnapshotJob, SnapshotParams, SnapshotResult};
use maqet_config::normalize;

/// Runs QMP commands; the vm layer supplies the runner's (vm/runners.rs),
/// tests a fake.
pub trait QmpExec {
    fn execute(
        &mut self,
        command: &str,
        arguments: Value,
    ) -> impl Future<Output = Result<Value, StorageError>>;
}

/// A runner that runs save and load jobs itself (protocol 3), freezing the
/// guest's file systems around a save; the vm layer supplies the real one.
pub trait RunnerJobs: QmpExec {
    /// `Ok(None)`: the runner predates the request (started by an older
    /// maqet); the job then runs through plain QMP, unfrozen.
    fn snapshot(
        &mut self,
        params: SnapshotParams,
    ) -> impl Future<Output = Result<Option<SnapshotResult>, StorageError>>;
}

/// A live save or load and what happened to the guest's file systems,
/// which matters also when the job failed.
#[derive(Debug)]
pub struct Outcome<T> {
    pub result: Result<T, StorageError>,
    pub freeze: FreezeReport,
}

/// What the freeze report says of a runner too old to freeze.
pub const OLD_RUNNER: &str =
    "the VM's runner was started by an older maqet, which cannot freeze (restart the VM)";

/// How often an unanswered runner job redraws the progress (elapsed time).
const TICK: Duration = Duration::from_millis(500);

/// Runs a save or load job in the runner; falls back to running it over
/// plain QMP when the runner is too old.
async fn runner_job<Q: RunnerJobs>(
    q: &mut Q,
    params: SnapshotParams,
    what: &str,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Outcome<()> {
    let command = match params.job {
        SnapshotJob::Save => "snapshot-save",
        SnapshotJob::Load => "snapshot-load",
    };
    let args = json!({"tag": params.tag, "vmstate": params.vmstate, "devices": params.devices});
    let answer = {
        let job = q.snapshot(params);
        tokio::pin!(job);
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                r = &mut job => break r,
                _ = tick.tick() => progress(Progress { current: 0, total: 1 }),
            }
        }
    };
    match answer {
        Ok(Some(r)) => {
            if r.error.is_none() {
                progress(Progress {
                    current: 1,
                    total: 1,
                });
            }
            Outcome {
                result: r.error.map_or(Ok(()), |message| {
                    // Runners of earlier builds sent the whole "… failed: …" line.
                    let prefix = format!("{what} failed: ");
                    let message = match message.strip_prefix(&prefix) {
                        Some(rest) => rest.to_string(),
                        None => message,
                    };
                    Err(StorageError::Job {
                        what: what.to_string(),
                        message,
                    })
                }),
                freeze: r.freeze,
            }
        }
        Ok(None) => Outcome {
            result: run_job(q, command, args, what, progress).await,
            freeze: FreezeReport {
                reason: Some(OLD_RUNNER.into()),
                ..FreezeReport::default()
            },
        },
        Err(e) => Outcome {
            result: Err(e),
            freeze: FreezeReport::default(),
        },
    }
}

/// A disk image attached to the running VM (`query-block`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockNode {
    /// QEMU's drive ID (`virtio0`, `ide0-hd0`, `maqet-drive-hdd`).
    pub device: String,
    pub node_name: String,
    pub file: PathBuf,
    /// The format driver (`qcow2`, `raw`, …).
    pub format: String,
    pub read_only: bool,
    pub snapshots: Vec<SnapshotInfo>,
    /// How messages name it: maqet's drive name when the config has one.
    pub label: String,
}

/// The attached images of a `query-block` reply (empty drives left out).
pub fn parse_query_block(reply: &Value) -> Vec<BlockNode> {
    let mut out = Vec::new();
    for d in reply.as_array().into_iter().flatten() {
        let Some(ins) = d.get("inserted") else {
            continue;
        };
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(node_name), Some(file)) = (text(ins, "node-name"), text(ins, "file")) else {
            continue;
        };
        let device = text(d, "device")
            .filter(|s| !s.is_empty())
            .or_else(|| text(d, "qdev"))
            .unwrap_or_else(|| node_name.clone());
        let snapshots = ins
            .get("image")
            .and_then(|i| i.get("snapshots"))
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default();
        out.push(BlockNode {
            label: device.clone(),
            device,
            node_name,
            file: PathBuf::from(file),
            format: text(ins, "drv").unwrap_or_default(),
            read_only: ins.get("ro").and_then(Value::as_bool).unwrap_or(false),
            snapshots,
        });
    }
    out
}

/// Compares image paths as the file system sees them.
fn same_file(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| normalize(p));
    canon(a) == canon(b)
}

/// What a live operation works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTarget {
    /// The node that holds (or is to hold) the VM state.
    pub vmstate: BlockNode,
    /// Every writable disk, `vmstate` included.
    pub devices: Vec<BlockNode>,
}

/// Picks the writable disks of a running VM and the VM-state node (the
/// drive the user named). `names` gives maqet's drive name of an image
/// path, for messages. Refuses when a writable disk is not qcow2.
pub fn target(
    vm: &str,
    nodes: &[BlockNode],
    drive: &str,
    drive_path: &Path,
    names: &dyn Fn(&Path) -> Option<String>,
) -> Result<LiveTarget, StorageError> {
    let mut devices: Vec<BlockNode> = nodes
        .iter()
        .filter(|n| !n.read_only)
        .cloned()
        .map(|mut n| {
            if let Some(name) = names(&n.file) {
                n.label = name;
            }
            n
        })
        .collect();
    let blockers: Vec<String> = devices
        .iter()
        .filter(|n| n.format != "qcow2")
        .map(|n| format!("drive '{}' ({}, {})", n.label, n.format, n.file.display()))
        .collect();
    if !blockers.is_empty() {
        return Err(StorageError::LiveUnsupported {
            vm: vm.to_string(),
            drives: blockers,
        });
    }
    let vmstate = devices
        .iter()
        .find(|n| same_file(&n.file, drive_path))
        .cloned()
        .ok_or_else(|| StorageError::NotAttached {
            vm: vm.to_string(),
            drive: drive.to_string(),
            path: drive_path.to_path_buf(),
        })?;
    devices.sort_by_key(|n| n.node_name != vmstate.node_name);
    Ok(LiveTarget { vmstate, devices })
}

/// A job's progress as QEMU reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub current: u64,
    pub total: u64,
}

/// How often `query-jobs` is asked while a job runs.
const POLL: Duration = Duration::from_millis(50);

fn job_id(kind: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("maqet-{kind}-{}-{nanos}", std::process::id())
}

/// Starts one job, waits for it to conclude, dismisses it and returns its
/// error, if any, as [`StorageError::Job`].
pub async fn run_job<Q: QmpExec>(
    q: &mut Q,
    command: &str,
    mut args: Value,
    what: &str,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<(), StorageError> {
    let id = job_id(command);
    args["job-id"] = json!(id);
    q.execute(command, args).await?;
    loop {
        let jobs = match q.execute("query-jobs", json!({})).await {
            Ok(v) => v,
            // QEMU's main loop is busy while it writes the VM state.
            Err(StorageError::QmpTimeout { .. }) => continue,
            Err(e) => return Err(e),
        };
        let job = jobs
            .as_array()
            .into_iter()
            .flatten()
            .find(|j| j.get("id").and_then(Value::as_str) == Some(id.as_str()))
            .cloned()
            .ok_or_else(|| StorageError::Runner(format!("QEMU lost track of job {id} ({what})")))?;
        let num = |k: &str| job.get(k).and_then(Value::as_u64).unwrap_or(0);
        progress(Progress {
            current: num("current-progress"),
            total: num("total-progress"),
        });
        if job.get("status").and_then(Value::as_str) == Some("concluded") {
            let dismissed = q.execute("job-dismiss", json!({"id": id})).await;
            if let Some(message) = job.get("error").and_then(Value::as_str) {
                return Err(StorageError::Job {
                    what: what.to_string(),
                    message: message.to_string(),
                });
            }
            if let Err(e) = dismissed {
                tracing::warn!("job {id} finished but could not be dismissed: {e}");
            }
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

fn node_names(nodes: &[&BlockNode]) -> Vec<String> {
    nodes.iter().map(|n| n.node_name.clone()).collect()
}

fn labels(nodes: &[&BlockNode]) -> String {
    let l: Vec<String> = nodes.iter().map(|n| format!("'{}'", n.label)).collect();
    format!(
        "{} {}",
        if l.len() == 1 { "drive" } else { "drives" },
        l.join(", ")
    )
}

fn with_tag<'a>(t: &'a LiveTarget, tag: &str) -> Vec<&'a BlockNode> {
    t.devices
        .iter()
        .filter(|n| n.snapshots.iter().any(|s| s.name == tag))
        .collect()
}

/// Saves disks and VM state under `tag`, through the runner, which
/// freezes the guest's file systems around the save when `freeze` is set
/// and the guest agent answers. With `overwrite`, an existing snapshot of
/// that name is deleted first (on the disks that have it). The result says
/// whether one was replaced.
pub async fn save<Q: RunnerJobs>(
    q: &mut Q,
    t: &LiveTarget,
    tag: &str,
    overwrite: bool,
    freeze: bool,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Outcome<bool> {
    let unfrozen = |result| Outcome {
        result,
        freeze: FreezeReport::default(),
    };
    if let Err(e) = super::snapshot::validate_tag(tag) {
        return unfrozen(Err(e));
    }
    let existing = with_tag(t, tag);
    if !existing.is_empty() {
        if !overwrite {
            return unfrozen(Err(StorageError::SnapshotExists {
                tag: tag.to_string(),
                place: labels(&existing),
            }));
        }
        // Deleting needs no freeze: it changes no guest data.
        if let Err(e) = run_job(
            q,
            "snapshot-delete",
            json!({"tag": tag, "devices": node_names(&existing)}),
            &format!("deleting the old snapshot '{tag}'"),
            progress,
        )
        .await
        {
            return unfrozen(Err(e));
        }
    }
    let all: Vec<&BlockNode> = t.devices.iter().collect();
    let params = SnapshotParams {
        job: SnapshotJob::Save,
        tag: tag.to_string(),
        vmstate: t.vmstate.node_name.clone(),
        devices: node_names(&all),
        freeze,
    };
    let o = runner_job(q, params, &format!("saving snapshot '{tag}'"), progress).await;
    Outcome {
        result: o.result.map(|()| !existing.is_empty()),
        freeze: o.freeze,
    }
}

/// Loads disks and VM state of `tag` into the running VM, through the
/// runner, which thaws a guest whose state was saved frozen.
pub async fn load<Q: RunnerJobs>(
    q: &mut Q,
    vm: &str,
    t: &LiveTarget,
    tag: &str,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Outcome<SnapshotInfo> {
    match check_load(vm, t, tag) {
        Ok((node, snap)) => {
            let all: Vec<&BlockNode> = t.devices.iter().collect();
            let params = SnapshotParams {
                job: SnapshotJob::Load,
                tag: tag.to_string(),
                vmstate: node.node_name.clone(),
                devices: node_names(&all),
                freeze: false,
            };
            let o = runner_job(q, params, &format!("loading snapshot '{tag}'"), progress).await;
            Outcome {
                result: o.result.map(|()| snap),
                freeze: o.freeze,
            }
        }
        Err(e) => Outcome {
            result: Err(e),
            freeze: FreezeReport::default(),
        },
    }
}

/// QEMU's jobs look a snapshot up by ID before name (`bdrv_snapshot_find`),
/// and QMP has no way to say "by name": a tag that is another snapshot's ID
/// on any of the disks would select that one, so it is refused (as the
/// offline path refuses it).
fn unambiguous(t: &LiveTarget, tag: &str) -> Result<(), StorageError> {
    let clash: Vec<String> = t
        .devices
        .iter()
        .filter(|n| n.snapshots.iter().any(|s| s.id == tag && s.name != tag))
        .map(|n| format!("'{}'", n.label))
        .collect();
    if clash.is_empty() {
        return Ok(());
    }
    Err(StorageError::AmbiguousTag {
        tag: tag.to_string(),
        drives: clash,
    })
}

/// What a load needs, checked before anything is sent: the tag on every
/// disk, and the node that holds its VM state.
fn check_load<'a>(
    vm: &str,
    t: &'a LiveTarget,
    tag: &str,
) -> Result<(&'a BlockNode, SnapshotInfo), StorageError> {
    unambiguous(t, tag)?;
    let having = with_tag(t, tag);
    if having.is_empty() {
        let mut available: Vec<String> = t
            .devices
            .iter()
            .flat_map(|n| n.snapshots.iter().map(|s| s.name.clone()))
            .collect();
        available.sort();
        available.dedup();
        return Err(StorageError::SnapshotNotFound {
            tag: tag.to_string(),
            place: format!("the disks of VM '{vm}'"),
            available,
        });
    }
    let missing: Vec<&BlockNode> = t
        .devices
        .iter()
        .filter(|n| !having.iter().any(|h| h.node_name == n.node_name))
        .collect();
    if !missing.is_empty() {
        return Err(StorageError::IncompleteSnapshot {
            tag: tag.to_string(),
            drives: missing.iter().map(|n| format!("'{}'", n.label)).collect(),
        });
    }
    // The VM state is wherever it was saved; prefer the named drive.
    let state_of = |n: &BlockNode| {
        n.snapshots
            .iter()
            .find(|s| s.name == tag && s.is_live())
            .cloned()
    };
    let (node, snap) = std::iter::once(&t.vmstate)
        .chain(t.devices.iter())
        .find_map(|n| state_of(n).map(|s| (n, s)))
        .ok_or_else(|| StorageError::NoVmState {
            vm: vm.to_string(),
            tag: tag.to_string(),
        })?;
    Ok((node, snap))
}

/// Deletes `tag` from every disk that has it.
pub async fn delete<Q: QmpExec>(
    q: &mut Q,
    vm: &str,
    t: &LiveTarget,
    tag: &str,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<(), StorageError> {
    unambiguous(t, tag)?;
    let having = with_tag(t, tag);
    if having.is_empty() {
        return Err(StorageError::SnapshotNotFound {
            tag: tag.to_string(),
            place: format!("the disks of VM '{vm}'"),
            available: Vec::new(),
        });
    }
    run_job(
        q,
        "snapshot-delete",
        json!({"tag": tag, "devices": node_names(&having)}),
        &format!("deleting snapshot '{tag}'"),
        progress,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in QEMU: jobs run for two polls, then conclude, failing
    /// when `fail` says so; every command is recorded.
    #[derive(Default)]
    struct Fake {
        jobs: Vec<Value>,
        polls: u32,
        fail: Option<(&'static str, &'static str)>,
        busy_polls: u32,
        asked: Vec<(String, Value)>,
        /// What a protocol-3 runner answers a `snapshot` request with;
        /// `None`: the runner is too old and the job runs over QMP.
        runner: Option<SnapshotResult>,
        /// The `snapshot` requests the runner got.
        jobs_asked: Vec<SnapshotParams>,
    }

    impl RunnerJobs for Fake {
        fn snapshot(
            &mut self,
            params: SnapshotParams,
        ) -> impl Future<Output = Result<Option<SnapshotResult>, StorageError>> {
            let r = self.runner.clone();
            if r.is_some() {
                self.jobs_asked.push(params);
            }
            async move { Ok(r) }
        }
    }

    impl QmpExec for Fake {
        fn execute(
            &mut self,
            command: &str,
            arguments: Value,
        ) -> impl Future<Output = Result<Value, StorageError>> {
            self.asked.push((command.to_string(), arguments.clone()));
            let r = match command {
                "snapshot-save" | "snapshot-load" | "snapshot-delete" => {
                    let mut job = json!({"id": arguments["job-id"], "type": command,
                        "status": "running", "current-progress": 0, "total-progress": 1});
                    if let Some((c, e)) = self.fail {
                        if c == command {
                            job["error"] = json!(e);
                        }
                    }
                    self.jobs.push(job);
                    self.polls = 0;
                    Ok(json!({}))
                }
                "query-jobs" if self.busy_polls > 0 => {
                    self.busy_polls -= 1;
                    Err(StorageError::QmpTimeout {
                        command: command.into(),
                    })
                }
                "query-jobs" => {
                    self.polls += 1;
                    if self.polls >= 2 {
                        for j in &mut self.jobs {
                            j["status"] = json!("concluded");
                            j["current-progress"] = json!(1);
                        }
                    }
                    Ok(json!(self.jobs))
                }
                "job-dismiss" => {
                    self.jobs.retain(|j| j["id"] != arguments["id"]);
                    Ok(json!({}))
                }
                other => panic!("unexpected QMP command {other}"),
            };
            async move { r }
        }
    }

    fn snap(name: &str, vm_state: u64) -> Value {
        json!({"id": "1", "name": name, "vm-state-size": vm_state, "date-sec": 1,
               "date-nsec": 0, "vm-clock-sec": 0, "vm-clock-nsec": 0})
    }

    fn query_block(snaps_hdd: Vec<Value>, snaps_data: Vec<Value>) -> Value {
        json!([
            {"device": "virtio0", "qdev": "/machine/peripheral-anon/device[0]/virtio-backend",
             "inserted": {"node-name": "#block163", "ro": false, "drv": "qcow2",
                          "file": "/d/hdd.qcow2",
                          "image": {"filename": "/d/hdd.qcow2", "format": "qcow2",
                                    "virtual-size": 1, "snapshots": snaps_hdd}}},
            {"device": "virtio1",
             "inserted": {"node-name": "#block500", "ro": false, "drv": "qcow2",
                          "file": "/d/data.qcow2",
                          "image": {"format": "qcow2", "snapshots": snaps_data}}},
            {"device": "ide1-cd0", "inserted": {"node-name": "#block9", "ro": true,
                          "drv": "raw", "file": "/isos/x.iso"}},
            {"device": "floppy0", "removable": true}
        ])
    }

    fn names(p: &Path) -> Option<String> {
        p.file_stem().map(|s| s.to_string_lossy().into_owned())
    }

    fn hdd_target(snaps_hdd: Vec<Value>, snaps_data: Vec<Value>) -> LiveTarget {
        let nodes = parse_query_block(&query_block(snaps_hdd, snaps_data));
        target("vm", &nodes, "hdd", Path::new("/d/hdd.qcow2"), &names).unwrap()
    }

    fn commands(q: &Fake) -> Vec<&str> {
        q.asked
            .iter()
            .map(|(c, _)| c.as_str())
            .filter(|c| *c != "query-jobs")
            .collect()
    }

    #[test]
    fn parses_query_block() {
        let nodes = parse_query_block(&query_block(vec![snap("s1", 5)], vec![]));
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0].node_name, "#block163");
        assert_eq!(nodes[0].device, "virtio0");
        assert_eq!(nodes[0].snapshots.len(), 1);
        assert!(nodes[2].read_only);
    }

    #[test]
    fn target_covers_every_writable_disk() {
        let nodes = parse_query_block(&query_block(vec![], vec![]));
        let t = target("vm", &nodes, "data", Path::new("/d/data.qcow2"), &names).unwrap();
        assert_eq!(t.vmstate.node_name, "#block500");
        let order: Vec<_> = t.devices.iter().map(|n| n.label.as_str()).collect();
        assert_eq!(order, ["data", "hdd"]);
        let e = target("vm", &nodes, "x", Path::new("/d/x.qcow2"), &names).unwrap_err();
        assert!(matches!(e, StorageError::NotAttached { .. }), "{e}");
    }

    #[test]
    fn raw_disks_refuse_live_snapshots() {
        let mut qb = query_block(vec![], vec![]);
        qb[1]["inserted"]["drv"] = json!("raw");
        qb[1]["inserted"]["file"] = json!("/d/scratch.img");
        let nodes = parse_query_block(&qb);
        let e = target("vm", &nodes, "hdd", Path::new("/d/hdd.qcow2"), &names).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a live snapshot of VM 'vm' must cover every writable disk, and drive 'scratch' (raw, /d/scratch.img) cannot hold internal snapshots; nothing was changed. Take disk-only snapshots of the qcow2 drives with the VM stopped, or convert the raw disks to qcow2"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn save_waits_for_the_job_and_dismisses_it() {
        let t = hdd_target(vec![], vec![]);
        let mut q = Fake {
            busy_polls: 1,
            ..Fake::default()
        };
        let mut seen = Vec::new();
        let replaced = save(&mut q, &t, "s1", false, true, &mut |p| seen.push(p))
            .await
            .result
            .unwrap();
        assert!(!replaced);
        assert_eq!(commands(&q), ["snapshot-save", "job-dismiss"]);
        let args = &q.asked[0].1;
        assert_eq!(args["vmstate"], "#block163");
        assert_eq!(args["devices"], json!(["#block163", "#block500"]));
        assert_eq!(args["tag"], "s1");
        assert!(q.jobs.is_empty(), "job not dismissed");
        assert_eq!(
            seen.last(),
            Some(&Progress {
                current: 1,
                total: 1
            })
        );
        // A busy QEMU (one timed-out poll) did not end the wait.
        assert_eq!(q.asked.iter().filter(|(c, _)| c == "query-jobs").count(), 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn job_errors_are_reported_and_dismissed() {
        let t = hdd_target(vec![], vec![]);
        let mut q = Fake {
            fail: Some((
                "snapshot-save",
                "Device 'ide0-hd0' is writable but does not support snapshots",
            )),
            ..Fake::default()
        };
        let e = save(&mut q, &t, "s1", false, true, &mut |_| {})
            .await
            .result
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "saving snapshot 's1' failed: Device 'ide0-hd0' is writable but does not support snapshots"
        );
        assert!(q.jobs.is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn overwrite_deletes_first_only_where_present() {
        let t = hdd_target(vec![snap("s1", 9)], vec![]);
        let mut q = Fake::default();
        let e = save(&mut q, &t, "s1", false, true, &mut |_| {})
            .await
            .result
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "snapshot 's1' already exists on drive 'hdd'; add --overwrite to replace it"
        );
        assert!(q.asked.is_empty(), "nothing may be sent before refusing");
        assert!(save(&mut q, &t, "s1", true, true, &mut |_| {})
            .await
            .result
            .unwrap());
        assert_eq!(
            commands(&q),
            [
                "snapshot-delete",
                "job-dismiss",
                "snapshot-save",
                "job-dismiss"
            ]
        );
        assert_eq!(q.asked[0].1["devices"], json!(["#block163"]));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn load_checks_before_sending() {
        let mut q = Fake::default();
        // Missing everywhere.
        let t = hdd_target(vec![snap("a", 9)], vec![snap("a", 0)]);
        let e = load(&mut q, "vm", &t, "s1", &mut |_| {})
            .await
            .result
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "no snapshot 's1' on the disks of VM 'vm' (snapshots: a)"
        );
        // Missing on one disk.
        let t = hdd_target(vec![snap("s1", 9)], vec![]);
        let e = load(&mut q, "vm", &t, "s1", &mut |_| {})
            .await
            .result
            .unwrap_err();
        assert!(matches!(e, StorageError::IncompleteSnapshot { .. }), "{e}");
        // Disk-only.
        let t = hdd_target(vec![snap("s1", 0)], vec![snap("s1", 0)]);
        let e = load(&mut q, "vm", &t, "s1", &mut |_| {})
            .await
            .result
            .unwrap_err();
        assert!(e.to_string().contains("has no VM state"), "{e}");
        assert!(q.asked.is_empty());
        // The VM state is found on whichever disk holds it.
        let t = hdd_target(vec![snap("s1", 0)], vec![snap("s1", 77)]);
        let s = load(&mut q, "vm", &t, "s1", &mut |_| {})
            .await
            .result
            .unwrap();
        assert_eq!(s.vm_state_size, 77);
        assert_eq!(q.asked[0].0, "snapshot-load");
        assert_eq!(q.asked[0].1["vmstate"], "#block500");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn delete_only_where_present() {
        let mut q = Fake::default();
        let t = hdd_target(vec![], vec![snap("s1", 0)]);
        delete(&mut q, "vm", &t, "s1", &mut |_| {}).await.unwrap();
        assert_eq!(q.asked[0].1["devices"], json!(["#block500"]));
        let e = delete(&mut q, "vm", &t, "zz", &mut |_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, StorageError::SnapshotNotFound { .. }));
    }

    fn runner_says(error: Option<&str>, freeze: FreezeReport) -> Fake {
        Fake {
            runner: Some(SnapshotResult {
                error: error.map(str::to_string),
                freeze,
            }),
            ..Fake::default()
        }
    }

    fn frozen(n: u64) -> FreezeReport {
        FreezeReport {
            agent: true,
            frozen: true,
            filesystems: Some(n),
            ..FreezeReport::default()
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn save_runs_in_the_runner_which_freezes() {
        let t = hdd_target(vec![], vec![]);
        let mut q = runner_says(None, frozen(2));
        let o = save(&mut q, &t, "s1", false, true, &mut |_| {}).await;
        assert!(!o.result.unwrap());
        assert_eq!(o.freeze.filesystems, Some(2));
        assert!(
            q.asked.is_empty(),
            "the job is the runner's, not sent as QMP"
        );
        let p = &q.jobs_asked[0];
        assert_eq!(p.job, SnapshotJob::Save);
        assert_eq!((p.tag.as_str(), p.vmstate.as_str()), ("s1", "#block163"));
        assert_eq!(p.devices, ["#block163", "#block500"]);
        assert!(p.freeze);
        // --no-freeze is passed on as such.
        save(&mut q, &t, "s2", false, false, &mut |_| {}).await;
        assert!(!q.jobs_asked[1].freeze);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_save_keeps_what_happened_to_the_file_systems() {
        let t = hdd_target(vec![], vec![]);
        let mut thaw_failed = frozen(1);
        thaw_failed.thaw_error = Some("the guest agent did not answer".into());
        let mut q = runner_says(Some("No space left on device"), thaw_failed);
        let o = save(&mut q, &t, "s1", false, true, &mut |_| {}).await;
        let e = o.result.unwrap_err();
        assert_eq!(
            e.to_string(),
            "saving snapshot 's1' failed: No space left on device"
        );
        assert!(o.freeze.frozen);
        assert_eq!(
            o.freeze.thaw_error.as_deref(),
            Some("the guest agent did not answer")
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_job_is_said_once_whatever_the_runner_sent() {
        let t = hdd_target(vec![], vec![]);
        // Earlier runners sent the whole line, this one only QEMU's words.
        for sent in [
            "saving snapshot 's1' failed: No space left on device",
            "No space left on device",
        ] {
            let mut q = runner_says(Some(sent), FreezeReport::default());
            let e = save(&mut q, &t, "s1", false, false, &mut |_| {})
                .await
                .result
                .unwrap_err();
            assert_eq!(
                e.to_string(),
                "saving snapshot 's1' failed: No space left on device"
            );
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_name_that_is_another_snapshots_id_is_refused_live() {
        // 'data' has snapshot ID 2 named "before"; a snapshot named "2"
        // exists on both disks. QEMU would take ID 2 on 'data'.
        let mut named_2 = snap("2", 10);
        named_2["id"] = json!("3");
        let mut id_2 = snap("before", 0);
        id_2["id"] = json!("2");
        let t = hdd_target(vec![named_2.clone()], vec![id_2, named_2]);
        let mut q = runner_says(None, FreezeReport::default());
        let e = load(&mut q, "vm", &t, "2", &mut |_| {})
            .await
            .result
            .unwrap_err();
        assert!(matches!(e, StorageError::AmbiguousTag { .. }), "{e}");
        assert!(e.to_string().contains("drive(s) 'data'"), "{e}");
        let e = delete(&mut q, "vm", &t, "2", &mut |_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, StorageError::AmbiguousTag { .. }), "{e}");
        assert!(
            q.jobs_asked.is_empty() && q.asked.is_empty(),
            "nothing sent"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_old_runner_saves_over_qmp_unfrozen_and_says_why() {
        let t = hdd_target(vec![], vec![]);
        let mut q = Fake::default();
        let o = save(&mut q, &t, "s1", false, true, &mut |_| {}).await;
        o.result.unwrap();
        assert!(!o.freeze.frozen);
        assert_eq!(o.freeze.reason.as_deref(), Some(OLD_RUNNER));
        assert_eq!(commands(&q), ["snapshot-save", "job-dismiss"]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn load_runs_in_the_runner_from_the_node_with_the_state() {
        let t = hdd_target(vec![snap("s1", 0)], vec![snap("s1", 77)]);
        let mut q = runner_says(
            None,
            FreezeReport {
                agent: true,
                thawed_after_load: Some(1),
                ..FreezeReport::default()
            },
        );
        let o = load(&mut q, "vm", &t, "s1", &mut |_| {}).await;
        assert_eq!(o.result.unwrap().vm_state_size, 77);
        assert_eq!(o.freeze.thawed_after_load, Some(1));
        let p = &q.jobs_asked[0];
        assert_eq!(
            (p.job, p.vmstate.as_str()),
            (SnapshotJob::Load, "#block500")
        );
        assert!(q.asked.is_empty());
    }
}
