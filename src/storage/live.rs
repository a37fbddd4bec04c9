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
use crate::config::normalize;

/// Runs QMP commands; the vm layer supplies the runner's (vm/runners.rs),
/// tests a fake.
pub trait QmpExec {
    fn execute(
        &mut self,
        command: &str,
        arguments: Value,
    ) -> impl Future<Output = Result<Value, StorageError>>;
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
    progress: &mut dyn FnMut(Progress),
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

/// Saves disks and VM state under `tag`. With `overwrite`, an existing
/// snapshot of that name is deleted first (on the disks that have it).
/// Returns whether one was replaced.
pub async fn save<Q: QmpExec>(
    q: &mut Q,
    t: &LiveTarget,
    tag: &str,
    overwrite: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<bool, StorageError> {
    super::snapshot::validate_tag(tag)?;
    let existing = with_tag(t, tag);
    if !existing.is_empty() {
        if !overwrite {
            return Err(StorageError::SnapshotExists {
                tag: tag.to_string(),
                place: labels(&existing),
            });
        }
        run_job(
            q,
            "snapshot-delete",
            json!({"tag": tag, "devices": node_names(&existing)}),
            &format!("deleting the old snapshot '{tag}'"),
            progress,
        )
        .await?;
    }
    let all: Vec<&BlockNode> = t.devices.iter().collect();
    run_job(
        q,
        "snapshot-save",
        json!({"tag": tag, "vmstate": t.vmstate.node_name, "devices": node_names(&all)}),
        &format!("saving snapshot '{tag}'"),
        progress,
    )
    .await?;
    Ok(!existing.is_empty())
}

/// Loads disks and VM state of `tag` into the running VM.
pub async fn load<Q: QmpExec>(
    q: &mut Q,
    vm: &str,
    t: &LiveTarget,
    tag: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<SnapshotInfo, StorageError> {
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
    let all: Vec<&BlockNode> = t.devices.iter().collect();
    run_job(
        q,
        "snapshot-load",
        json!({"tag": tag, "vmstate": node.node_name, "devices": node_names(&all)}),
        &format!("loading snapshot '{tag}'"),
        progress,
    )
    .await?;
    Ok(snap)
}

/// Deletes `tag` from every disk that has it.
pub async fn delete<Q: QmpExec>(
    q: &mut Q,
    vm: &str,
    t: &LiveTarget,
    tag: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), StorageError> {
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
        let replaced = save(&mut q, &t, "s1", false, &mut |p| seen.push(p))
            .await
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
        let e = save(&mut q, &t, "s1", false, &mut |_| {})
            .await
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
        let e = save(&mut q, &t, "s1", false, &mut |_| {})
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "snapshot 's1' already exists on drive 'hdd'; add --overwrite to replace it"
        );
        assert!(q.asked.is_empty(), "nothing may be sent before refusing");
        assert!(save(&mut q, &t, "s1", true, &mut |_| {}).await.unwrap());
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
        let e = load(&mut q, "vm", &t, "s1", &mut |_| {}).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "no snapshot 's1' on the disks of VM 'vm' (snapshots: a)"
        );
        // Missing on one disk.
        let t = hdd_target(vec![snap("s1", 9)], vec![]);
        let e = load(&mut q, "vm", &t, "s1", &mut |_| {}).await.unwrap_err();
        assert!(matches!(e, StorageError::IncompleteSnapshot { .. }), "{e}");
        // Disk-only.
        let t = hdd_target(vec![snap("s1", 0)], vec![snap("s1", 0)]);
        let e = load(&mut q, "vm", &t, "s1", &mut |_| {}).await.unwrap_err();
        assert!(e.to_string().contains("has no VM state"), "{e}");
        assert!(q.asked.is_empty());
        // The VM state is found on whichever disk holds it.
        let t = hdd_target(vec![snap("s1", 0)], vec![snap("s1", 77)]);
        let s = load(&mut q, "vm", &t, "s1", &mut |_| {}).await.unwrap();
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
}
