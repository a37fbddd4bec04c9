//! Resuming a saved VM: QEMU starts with `-incoming defer -S`, the runner
//! opens the recorded state file (checked on the open descriptor: the
//! recorded file, complete), passes it with `getfd` and runs
//! `migrate-incoming fd:NAME`. Once QEMU has loaded it, the record is
//! forgotten *before* the guest runs — from the first instruction on the
//! disks move on from the state, so it must never be loaded again — then
//! the guest continues (when it was running), its clock is set through the
//! guest agent when one answers (as libvirt does after a restore), and the
//! file is deleted.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::notify;
use super::save::FD_NAME;
use maqet_base::paths::DataDir;
use maqet_base::vmname::VmName;
use maqet_host::qmp::{QmpClient, QmpError};
use maqet_host::state::{SavedState, Store};
use maqet_host::storage::saved::{self, Untrusted};
use maqet_host::storage::Removal;

/// Bound on the QMP commands around the load (the load itself blocks
/// QEMU's monitor while it reads the file: see [`load`]).
const COMMAND: Duration = Duration::from_secs(30);
/// How long the guest agent gets to answer the clock update.
const AGENT: Duration = Duration::from_secs(3);

/// The options QEMU starts with to receive a state: wait for
/// `migrate-incoming`, and do not run the guest on its own once loaded.
pub const QEMU_ARGS: [&str; 3] = ["-incoming", "defer", "-S"];

/// The VM's saved-state record, read through `store` (the runner's one
/// handle on the database, which also gave the definition); a record that
/// cannot be read is logged and none (the VM boots afresh).
pub fn read(store: &Store, vm: &VmName) -> Option<SavedState> {
    match store.saved_state(vm.as_str()) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("cannot read the saved state's record: {e}; booting afresh");
            None
        }
    }
}

/// The saved state `rec` (from [`read`]) if its file is the recorded one.
/// A record whose file is not is forgotten here (logged: the VM boots
/// afresh), so nothing ever loads it.
pub fn trusted(rec: Option<SavedState>, vm: &VmName, data_dir: &DataDir) -> Option<SavedState> {
    let rec = rec?;
    match saved::check(&rec) {
        Ok(()) => Some(rec),
        Err(why) => {
            tracing::warn!(
                maqet_failure = true,
                "not resuming the saved state: {why}; the VM boots afresh"
            );
            if let Err(e) = forget(vm, data_dir) {
                tracing::error!("cannot forget the saved state's record: {e}");
            }
            None
        }
    }
}

/// Forgets the VM's saved-state record (the file stays recorded as
/// created, for `rm --delete-storage` and the next save).
fn forget(vm: &VmName, data_dir: &DataDir) -> Result<(), maqet_host::state::StateError> {
    Store::open(&data_dir.db_path()).and_then(|s| s.forget_saved_state(vm.as_str()))
}

/// Makes sure no later start trusts `rec`: its record forgotten, or if the
/// database cannot be written, its file deleted.
fn untrust(vm: &VmName, data_dir: &DataDir, rec: &SavedState) -> Result<(), String> {
    let Err(e) = forget(vm, data_dir) else {
        return Ok(());
    };
    match saved::delete(&rec.path, &rec.identity) {
        Removal::Deleted | Removal::AlreadyGone => {
            tracing::warn!(
                "cannot forget the saved state's record ({e}); deleted its file instead"
            );
            Ok(())
        }
        other => Err(format!(
            "cannot forget the saved state's record ({e}) nor delete its file ({other:?})"
        )),
    }
}

/// Why a resume failed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("the saved state is not the recorded file: {0}")]
    Untrusted(#[from] Untrusted),
    #[error("QEMU could not load the saved state {} (saved by QEMU {}): {desc}", .path.display(), .qemu_version)]
    Load {
        path: std::path::PathBuf,
        qemu_version: String,
        desc: String,
    },
    #[error("QEMU exited while loading the saved state")]
    QemuGone,
    /// The guest must not run while a record would let the state be
    /// loaded again over the disks it changes.
    #[error("the saved state was loaded, but the guest is not run: {0}")]
    Untrust(String),
    #[error("{0}")]
    Qmp(QmpError),
}

impl From<QmpError> for ResumeError {
    fn from(e: QmpError) -> Self {
        match e {
            QmpError::Disconnected => ResumeError::QemuGone,
            e => ResumeError::Qmp(e),
        }
    }
}

/// Loads `rec` into the QEMU behind `qmp` (started with [`QEMU_ARGS`]),
/// then lets the guest continue as it was saved. `agent`: the guest
/// agent's socket, for the clock.
pub async fn load(
    qmp: &QmpClient,
    vm: &VmName,
    data_dir: &DataDir,
    rec: &SavedState,
    agent: Option<&Path>,
) -> Result<(), ResumeError> {
    notify::status("resuming");
    let file = saved::open(rec)?;
    let started = std::time::Instant::now();
    qmp.execute_with_fd(
        "getfd",
        Some(json!({"fdname": FD_NAME})),
        std::os::fd::AsFd::as_fd(&file),
        COMMAND,
    )
    .await?;
    drop(file);
    qmp.execute_timeout(
        "migrate-incoming",
        Some(json!({"uri": format!("fd:{FD_NAME}")})),
        COMMAND,
    )
    .await?;
    // QEMU 7.2 reads a file without yielding to its main loop, so its
    // monitor answers once the whole state is in: no bound here but
    // QEMU's own end (an unreadable state makes QEMU exit).
    loop {
        let m = qmp.execute("query-migrate", None).await?;
        match m.get("status").and_then(Value::as_str).unwrap_or("") {
            "completed" => break,
            "failed" | "cancelled" => {
                return Err(ResumeError::Load {
                    path: rec.path.clone(),
                    qemu_version: rec.qemu_version.clone(),
                    desc: m
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("the migration failed")
                        .to_string(),
                })
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    tracing::info!(
        state_file = %rec.path.display(),
        load_ms = started.elapsed().as_millis() as u64,
        "loaded the saved state ({} bytes in {} ms)",
        rec.size,
        started.elapsed().as_millis()
    );
    // Not trusted from here on: the guest is about to change the disks.
    untrust(vm, data_dir, rec).map_err(ResumeError::Untrust)?;
    if rec.run_state == "running" {
        qmp.execute_timeout("cont", None, COMMAND).await?;
        if let Some(socket) = agent {
            set_clock(socket).await;
        }
    }
    delete_file(vm, data_dir, rec);
    Ok(())
}

/// Sets the guest's clock to the host's through the agent: a resumed
/// guest's clock stands where it was when it was saved.
async fn set_clock(socket: &Path) {
    let socket = socket.to_path_buf();
    let set = tokio::task::spawn_blocking(move || {
        let mut a = maqet_host::guest_agent::Agent::connect(&socket, AGENT)?;
        a.set_time(maqet_base::time::now_unix_usec().saturating_mul(1000))
    })
    .await;
    match set {
        Ok(Ok(())) => tracing::info!("set the resumed guest's clock through the guest agent"),
        Ok(Err(e)) => tracing::warn!("the guest agent did not set the resumed guest's clock: {e}"),
        Err(e) => tracing::warn!("setting the resumed guest's clock failed: {e}"),
    }
}

/// Deletes the loaded state file (through the deletion walk, by its
/// recorded identity) and its created-file record.
fn delete_file(vm: &VmName, data_dir: &DataDir, rec: &SavedState) {
    match saved::delete(&rec.path, &rec.identity) {
        Removal::Deleted | Removal::AlreadyGone => {
            let forgot = Store::open(&data_dir.db_path())
                .and_then(|s| s.forget_created_file(vm.as_str(), &rec.path));
            if let Err(e) = forgot {
                tracing::warn!("cannot forget the deleted state file's record: {e}");
            }
        }
        other => tracing::warn!(
            "the loaded state file {} stays: {other:?}",
            rec.path.display()
        ),
    }
}
