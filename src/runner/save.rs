//! Saving the VM's running state (`maqet suspend`, and a stop by systemd
//! of a VM with `on_stop: save`): pause the guest, have QEMU migrate to a
//! file the runner opened (QEMU 7.2 has no `file:` URI, and `exec:` would
//! run a program: `getfd` over the runner's own QMP connection, then
//! `migrate fd:NAME`), and only when QEMU reports the migration
//! `completed`: sync, record, rename into place (storage/saved.rs). A save
//! that fails leaves no trusted state and the guest as it was — running
//! again when it ran.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::notify;
use maqet_base::paths::DataDir;
use maqet_base::vmname::VmName;
use maqet_host::qmp::{QmpClient, QmpError};
use maqet_host::state::{SaveReason, SavedState, Store};
use maqet_host::storage::disks::{canonical_parent, ensure_private_dir};
use maqet_host::storage::saved::{self, Writer};
use maqet_host::storage::Provisioned;

/// The name the state file's descriptor has in QEMU (`getfd`).
pub const FD_NAME: &str = "maqet-state";
/// How often the migration's progress is asked (its end is told by
/// QEMU's MIGRATION event at once).
const POLL: Duration = Duration::from_millis(250);
/// A save whose byte count has not moved for this long is given up
/// (a hung file system): the guest goes on.
const STALL: Duration = Duration::from_secs(120);
/// Bound on each QMP command of the save (not on the save itself).
const COMMAND: Duration = Duration::from_secs(30);
/// While a stop by systemd saves, each sign of progress moves the stop
/// timeout this far ahead (EXTEND_TIMEOUT_USEC).
const EXTEND_STEP: Duration = Duration::from_secs(30);
/// `max-bandwidth` during the save: QEMU's default (32 MiB/s) is meant
/// for a live migration over a network; a paused guest to a local file
/// is written as fast as the disk takes it (1 TiB/s: "no limit", well
/// inside QEMU's range checks).
const UNLIMITED: u64 = 1 << 40;

/// [`SaveFailure::run_state`] when QEMU exited during the save.
pub const GONE: &str = "gone";

/// Why a save did not complete, in words that name the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveFailure {
    pub message: String,
    /// QEMU's run state after the failure (`running` again, or `paused`).
    pub run_state: String,
}

impl std::fmt::Display for SaveFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a save needs of the runner.
pub struct Saver {
    pub qmp: QmpClient,
    pub vm: VmName,
    pub data_dir: DataDir,
    pub qemu_version: String,
    pub qemu_pid: u32,
    /// Set while a save runs: `STATUS=` then reads `saving`.
    pub saving: Arc<AtomicBool>,
    /// The run state the runner shows (`STATUS=`, the event watch's).
    pub run_state: Arc<std::sync::Mutex<String>>,
}

/// The step a save failed in, with what went wrong.
enum Failed {
    /// QEMU is gone: nothing to resume.
    QemuGone,
    Step(String),
}

impl From<QmpError> for Failed {
    fn from(e: QmpError) -> Self {
        match e {
            QmpError::Disconnected => Failed::QemuGone,
            QmpError::Command { desc, .. } => Failed::Step(format!("QEMU: {desc}")),
            other => Failed::Step(other.to_string()),
        }
    }
}

impl Saver {
    /// Saves the state; on success QEMU has handed over (its run state is
    /// `postmigrate`) and the caller ends it. `stopping`: systemd is
    /// stopping the unit, so progress extends its stop timeout.
    pub async fn save(
        &self,
        reason: SaveReason,
        stopping: bool,
    ) -> Result<SavedState, SaveFailure> {
        self.saving.store(true, Ordering::Relaxed);
        self.show("saving");
        let was = self.run_state().await;
        let started = Instant::now();
        let dir = self.data_dir.disk_dir(&self.vm);
        let target = canonical_parent(&saved::path_in(&dir));
        tracing::info!(state_file = %target.display(), ?reason, "saving the VM's running state");
        let result = self.save_to(&target, &was, reason, started, stopping).await;
        self.saving.store(false, Ordering::Relaxed);
        match result {
            Ok(s) => {
                tracing::info!(
                    state_file = %s.path.display(),
                    state_bytes = s.size,
                    save_ms = s.save_ms,
                    "saved the VM's running state ({} bytes in {} ms)",
                    s.size,
                    s.save_ms
                );
                Ok(s)
            }
            Err(f) => {
                let (why, run_state) = match f {
                    Failed::QemuGone => ("QEMU exited during the save".to_string(), GONE.into()),
                    Failed::Step(why) => {
                        let now = self.recover(&was).await;
                        (why, now)
                    }
                };
                let hint = match why.starts_with(NO_SPACE) {
                    true => format!(
                        "; free space there (`df -h {}`) and save again",
                        dir.display()
                    ),
                    false => String::new(),
                };
                let message = format!(
                    "cannot save VM '{}' to {}: {why}; nothing was saved{}{hint}",
                    self.vm,
                    dir.display(),
                    match run_state.as_str() {
                        "running" => " and the VM runs on",
                        GONE => "",
                        _ => " and the VM stays as it was",
                    }
                );
                tracing::error!(maqet_failure = true, "{message}");
                if run_state != GONE {
                    self.show(&run_state);
                }
                Err(SaveFailure { message, run_state })
            }
        }
    }

    /// Shows `state` as the VM's run state (`STATUS=`).
    fn show(&self, state: &str) {
        *self.run_state.lock().unwrap() = state.to_string();
        notify::status(&format!("{state} (qemu pid {})", self.qemu_pid));
    }

    /// QEMU's run state now (`running`, `paused`, …).
    async fn run_state(&self) -> String {
        self.qmp
            .execute_timeout("query-status", None, COMMAND)
            .await
            .ok()
            .and_then(|v| v.get("status").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| "running".into())
    }

    async fn save_to(
        &self,
        target: &std::path::Path,
        was: &str,
        reason: SaveReason,
        started: Instant,
        stopping: bool,
    ) -> Result<SavedState, Failed> {
        let store = Store::open(&self.data_dir.db_path())
            .map_err(|e| Failed::Step(format!("cannot record it: {e}")))?;
        let dir = target.parent().expect("a state file has a directory");
        // A VM without disks may have no directory yet: made and recorded
        // like a disk's, so `rm --delete-storage` removes it.
        let disk_dir = self.data_dir.disk_dir(&self.vm);
        ensure_private_dir(
            self.vm.as_str(),
            &disk_dir,
            &disk_dir,
            &store,
            &mut Provisioned::default(),
        )
        .map_err(|e| Failed::Step(e.to_string()))?;
        let mut writer = Writer::create(target).map_err(|e| Failed::Step(io_words(&e)))?;
        if was == "running" {
            self.qmp.execute_timeout("stop", None, COMMAND).await?;
        }
        let bandwidth = self.max_bandwidth().await?;
        let migrated = self.migrate(&writer, dir, stopping).await;
        self.set_bandwidth(bandwidth).await;
        migrated?;
        let (identity, size) = writer.finish().map_err(|e| Failed::Step(io_words(&e)))?;
        let state = SavedState {
            path: target.to_path_buf(),
            size,
            saved_at: maqet_base::time::now_unix() as i64,
            identity,
            run_state: if was == "running" {
                "running"
            } else {
                "paused"
            }
            .into(),
            reason,
            qemu_version: self.qemu_version.clone(),
            save_ms: started.elapsed().as_millis() as u64,
        };
        // Recorded before the rename: a kill in between leaves a record
        // whose file is not at its name, which no start trusts.
        store
            .record_saved_state(self.vm.as_str(), &state)
            .map_err(|e| Failed::Step(format!("cannot record it: {e}")))?;
        if let Err(e) = writer.commit() {
            let _ = store.forget_saved_state(self.vm.as_str());
            return Err(Failed::Step(io_words(&e)));
        }
        Ok(state)
    }

    async fn max_bandwidth(&self) -> Result<Option<u64>, Failed> {
        let p = self
            .qmp
            .execute_timeout("query-migrate-parameters", None, COMMAND)
            .await?;
        let old = p.get("max-bandwidth").and_then(Value::as_u64);
        self.qmp
            .execute_timeout(
                "migrate-set-parameters",
                Some(json!({"max-bandwidth": UNLIMITED})),
                COMMAND,
            )
            .await?;
        Ok(old)
    }

    /// Puts the migration bandwidth back (after a failed save the VM runs
    /// on, and a user's own migration must get what they set).
    async fn set_bandwidth(&self, old: Option<u64>) {
        if let Some(bw) = old {
            let args = json!({"max-bandwidth": bw});
            if let Err(e) = self
                .qmp
                .execute_timeout("migrate-set-parameters", Some(args), COMMAND)
                .await
            {
                tracing::debug!("cannot restore max-bandwidth: {e}");
            }
        }
    }

    /// Runs the migration into `writer`'s file until QEMU reports it
    /// completed.
    async fn migrate(
        &self,
        writer: &Writer,
        dir: &std::path::Path,
        stopping: bool,
    ) -> Result<(), Failed> {
        self.qmp
            .execute_with_fd(
                "getfd",
                Some(json!({"fdname": FD_NAME})),
                writer.fd(),
                COMMAND,
            )
            .await?;
        // MIGRATION events say at once when it has ended (polling alone
        // added half a poll interval to every save); without them, polling.
        let caps = json!({"capabilities": [{"capability": "events", "state": true}]});
        if let Err(e) = self
            .qmp
            .execute_timeout("migrate-set-capabilities", Some(caps), COMMAND)
            .await
        {
            tracing::debug!("no MIGRATION events ({e}); polling only");
        }
        let mut events = self.qmp.subscribe();
        let uri = format!("fd:{FD_NAME}");
        if let Err(e) = self
            .qmp
            .execute_timeout("migrate", Some(json!({"uri": uri})), COMMAND)
            .await
        {
            // Not taken by a migration: give the descriptor back.
            let _ = self
                .qmp
                .execute_timeout("closefd", Some(json!({"fdname": FD_NAME})), COMMAND)
                .await;
            return Err(e.into());
        }
        let mut moved = (Instant::now(), 0u64);
        let mut tick = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(ev) if ev.event == "MIGRATION" => {}
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return Err(Failed::QemuGone)
                    }
                },
                _ = tick.tick() => {}
            }
            let m = self
                .qmp
                .execute_timeout("query-migrate", None, COMMAND)
                .await?;
            let status = m.get("status").and_then(Value::as_str).unwrap_or("");
            match status {
                "completed" => {
                    let took = m.get("total-time").and_then(Value::as_u64).unwrap_or(0);
                    tracing::debug!(qemu_ms = took, "QEMU wrote the state in {took} ms");
                    return Ok(());
                }
                "failed" | "cancelled" => {
                    let desc = m
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("the migration failed");
                    return Err(Failed::Step(failure_words(desc)));
                }
                _ => {}
            }
            let transferred = m
                .pointer("/ram/transferred")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if transferred != moved.1 {
                moved = (Instant::now(), transferred);
                if stopping {
                    notify::extend_timeout(EXTEND_STEP);
                }
            } else if moved.0.elapsed() > STALL {
                let _ = self
                    .qmp
                    .execute_timeout("migrate_cancel", None, COMMAND)
                    .await;
                return Err(Failed::Step(format!(
                    "writing the state made no progress for {} s (is the file system of {} hanging?)",
                    STALL.as_secs(),
                    dir.display()
                )));
            }
        }
    }

    /// After a failed save: the guest continues as it was. `cont` also
    /// takes the disks back when QEMU had already handed them over.
    async fn recover(&self, was: &str) -> String {
        if was == "running" {
            if let Err(e) = self.qmp.execute_timeout("cont", None, COMMAND).await {
                tracing::error!("cannot resume the guest after the failed save: {e}");
            }
        }
        self.run_state().await
    }
}

/// How a failure for a full file system begins (the message adds a hint).
const NO_SPACE: &str = "no space left on its file system";

/// An I/O error on the state file, in words that say what.
fn io_words(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => format!("{NO_SPACE} ({e})"),
        _ => format!("{e}"),
    }
}

/// QEMU's reason for a failed migration; a full file system is said so.
fn failure_words(desc: &str) -> String {
    if desc.contains("No space left") || desc.contains("Disk quota exceeded") {
        format!("{NO_SPACE} (QEMU: {desc})")
    } else {
        format!("QEMU: {desc}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_said_so() {
        let e = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(io_words(&e).starts_with(NO_SPACE), "{}", io_words(&e));
        assert_eq!(
            failure_words("Unable to write to file: No space left on device"),
            format!("{NO_SPACE} (QEMU: Unable to write to file: No space left on device)")
        );
        assert_eq!(failure_words("boom"), "QEMU: boom");
        let other = std::io::Error::from_raw_os_error(libc::EIO);
        assert!(!io_words(&other).starts_with(NO_SPACE));
    }
}
