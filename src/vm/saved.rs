//! A VM's saved running state, as the VM API has it: `suspend` (the
//! runner saves, runner/save.rs), discarding a state (`start --fresh`,
//! `suspend --discard`), what a start does with a recorded state, the
//! refusals while a VM is saved, and what the views show.
//!
//! A saved state belongs to the disks and the hardware as they were when
//! it was saved: loading it over changed disks corrupts the guest's file
//! systems, and QEMU refuses (or misreads) a state for other devices. So
//! while a VM is saved, whatever would change either is refused with the
//! way out ([`SavedError::Refused`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use maqet_base::vmname::VmName;
use maqet_host::ipc::protocol::SavedInfo;
use maqet_host::state::{FileKind, SaveReason, SavedState, Store};
use maqet_host::storage::{saved, Removal};

use super::{Notice, Notify, Runners, UnitManager, VmError, Vms};

/// How long `suspend` waits for the unit to go once the state is saved.
const DOWN_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SavedError {
    /// The runner could not save; its words name the directory and say
    /// how the VM is now.
    #[error("{message}")]
    SaveFailed {
        vm: VmName,
        message: String,
        /// QEMU's run state after the failure (`running`: it runs on).
        run_state: Option<String>,
    },
    #[error("VM '{vm}' has a saved running state ({}): {action} would change the disks or the hardware that state belongs to, so it was refused. Resume the VM with `maqet start {vm}` (and stop it), or discard the state with `maqet start --fresh {vm}` or `maqet suspend --discard {vm}`", describe(*saved_at, *size))]
    Refused {
        vm: VmName,
        action: String,
        saved_at: i64,
        size: u64,
    },
    #[error("VM '{vm}' is saved already ({}); `maqet start {vm}` resumes it", describe(*saved_at, *size))]
    AlreadySaved {
        vm: VmName,
        saved_at: i64,
        size: u64,
    },
    #[error("VM '{vm}' is running, so it has no saved state to discard (`maqet suspend {vm}` saves one)")]
    Running { vm: VmName },
    /// The VM's runner predates `suspend` (protocol 5): nothing outside it
    /// can save the VM.
    #[error("the runner of VM '{vm}' speaks protocol {runner} (started by {started_by}); `maqet suspend` needs {need}: restart the VM with `maqet restart {vm}` to use it")]
    OldRunner {
        vm: VmName,
        runner: u32,
        started_by: String,
        need: u32,
    },
}

/// "saved 2026-12-06T10:00:00Z, 412.0 MiB".
fn describe(saved_at: i64, size: u64) -> String {
    format!(
        "saved {}, {} bytes",
        maqet_base::time::rfc3339_utc(saved_at.max(0) as u64),
        size
    )
}

/// A completed `suspend`.
#[derive(Debug, Clone, Serialize)]
pub struct Suspended {
    pub name: String,
    #[serde(flatten)]
    pub saved: SavedInfo,
}

/// What discarding a saved state did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Discarded {
    /// The state that was recorded (none: only files no record trusted).
    pub state: Option<SavedView>,
    /// Files deleted: the state file, temporary files of killed saves.
    pub deleted: Vec<PathBuf>,
    /// Files that stay, and why (not the file maqet saved any more, …).
    pub kept: Vec<(PathBuf, String)>,
}

/// A saved state as `status`, `ls` and `inspect` show it (`--json`:
/// stable keys, docs/cli.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SavedView {
    pub path: PathBuf,
    /// Bytes of the state file.
    pub size: u64,
    /// Unix seconds.
    pub saved_at: i64,
    /// `suspend` (asked for) or `stop` (a stop by systemd under
    /// `on_stop: save`; `maqet autostart` resumes those).
    pub reason: SaveReason,
    /// What a resume continues: `running` or `paused`.
    pub run_state: String,
    pub qemu_version: String,
    /// How long the save took.
    pub save_ms: u64,
    /// Why the next start will not resume it (the file is not the one
    /// recorded); null when it will.
    pub problem: Option<String>,
}

impl SavedView {
    pub fn of(rec: &SavedState) -> SavedView {
        SavedView {
            path: rec.path.clone(),
            size: rec.size,
            saved_at: rec.saved_at,
            reason: rec.reason,
            run_state: rec.run_state.clone(),
            qemu_version: rec.qemu_version.clone(),
            save_ms: rec.save_ms,
            problem: saved::check(rec).err().map(|e| e.to_string()),
        }
    }

    /// The next start resumes it.
    pub fn resumable(&self) -> bool {
        self.problem.is_none()
    }
}

/// Whether `new` is the machine `old` is, on the same disks: QEMU's
/// command line renders the same, and so do the parts provisioning adds
/// (the cloud-init seed's contents, the agent channel, the NIC). Host
/// ports may differ: forwards are not part of a guest's state.
pub fn same_machine(
    data_dir: &maqet_base::paths::DataDir,
    vm: &VmName,
    old: &maqet_config::VmConfig,
    new: &maqet_config::VmConfig,
) -> bool {
    let ctx = maqet_config::RenderContext {
        vm_name: vm.to_string(),
        qmp_fd: maqet_base::units::QMP_FD,
        console_fd: Some(maqet_base::units::CONSOLE_FD),
        disk_dir: data_dir.disk_dir(vm),
        // Rendered for comparison only: any one path does.
        runtime_dir: PathBuf::from("/run/maqet-vm"),
    };
    old.render_argv(&ctx) == new.render_argv(&ctx)
        && old.guest.cloud_init == new.guest.cloud_init
        && old.guest.guest_agent == new.guest.guest_agent
        && old.guest.wants_network() == new.guest.wants_network()
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// `vm`'s recorded saved state (read only; none without a database).
    pub fn saved_state(&self, vm: &VmName) -> Result<Option<SavedState>, VmError> {
        Ok(match Store::open_read_only(&self.data_dir.db_path())? {
            Some(s) => s.saved_state(vm.as_str())?,
            None => None,
        })
    }

    /// Every VM's saved state, as the views show it.
    pub fn saved_views(&self) -> Result<Vec<(String, SavedView)>, VmError> {
        Ok(match Store::open_read_only(&self.data_dir.db_path())? {
            Some(s) => s
                .saved_states()?
                .into_iter()
                .map(|(name, rec)| (name, SavedView::of(&rec)))
                .collect(),
            None => Vec::new(),
        })
    }

    /// Refuses `action` (what the user asked, in words) while `vm` is
    /// saved.
    pub fn refuse_saved(&self, vm: &VmName, action: &str) -> Result<(), VmError> {
        match self.saved_state(vm)? {
            Some(s) => Err(SavedError::Refused {
                vm: vm.clone(),
                action: action.to_string(),
                saved_at: s.saved_at,
                size: s.size,
            }
            .into()),
            None => Ok(()),
        }
    }

    /// `maqet suspend NAME`: the runner saves the running state to the
    /// VM's state file and ends the VM; returns once the unit is down. A
    /// failed save leaves the VM as it was (the error says so).
    pub async fn suspend(&self, vm: &VmName) -> Result<Suspended, VmError> {
        let mut c = match self.runner(vm).await {
            Ok(c) => c,
            Err(e) => {
                if let (false, Some(s)) = (self.is_running(vm).await?, self.saved_state(vm)?) {
                    return Err(SavedError::AlreadySaved {
                        vm: vm.clone(),
                        saved_at: s.saved_at,
                        size: s.size,
                    }
                    .into());
                }
                return Err(e);
            }
        };
        let r = match c.suspend().await {
            Ok(r) => r,
            Err(maqet_host::ipc::IpcError::Outdated {
                runner,
                maqet_version,
                need,
            }) => {
                return Err(SavedError::OldRunner {
                    vm: vm.clone(),
                    runner,
                    started_by: maqet_host::ipc::client::started_by(&maqet_version),
                    need: need.since(),
                }
                .into())
            }
            Err(e) => return Err(e.into()),
        };
        let Some(info) = r.saved else {
            return Err(SavedError::SaveFailed {
                vm: vm.clone(),
                message: r
                    .error
                    .unwrap_or_else(|| "the runner saved nothing and gave no reason".into()),
                run_state: r.run_state,
            }
            .into());
        };
        // The runner exits right after its reply: wait for the unit, so a
        // `start` right after this finds it down.
        let unit = vm.service_unit();
        if let Err(e) = self.units.wait_until_down(&unit, DOWN_WAIT).await {
            tracing::warn!("{unit} is still up after the save: {e}");
        }
        self.clear_after_stop(vm).await?;
        Ok(Suspended {
            name: vm.to_string(),
            saved: info,
        })
    }

    /// `maqet suspend --discard NAME`: forgets and deletes the VM's saved
    /// state (and what killed saves left), under the VM's lock; a running
    /// VM has none. The next start boots afresh.
    pub async fn discard_saved(&self, vm: &VmName) -> Result<Discarded, VmError> {
        self.record(vm)?;
        let _lock = self.lock(vm, super::LOCK_WAIT)?;
        self.record(vm)?;
        if self.is_running(vm).await? {
            return Err(SavedError::Running { vm: vm.clone() }.into());
        }
        self.discard_locked(vm)
    }

    /// Discards `vm`'s saved state; the caller holds the VM's lock and
    /// knows it is not running. The record goes first: from then on
    /// nothing trusts the file, whatever happens to its deletion.
    pub(super) fn discard_locked(&self, vm: &VmName) -> Result<Discarded, VmError> {
        let store = self.store()?;
        let state = store.saved_state(vm.as_str())?;
        store.forget_saved_state(vm.as_str())?;
        let mut out = Discarded {
            state: state.as_ref().map(SavedView::of),
            ..Discarded::default()
        };
        let target =
            maqet_host::storage::disks::canonical_parent(&saved::path_in(&self.disk_dir(vm)));
        out.deleted.extend(saved::delete_leftovers(&target));
        for f in store
            .created_files(vm.as_str())?
            .into_iter()
            .filter(|f| f.kind == FileKind::SavedState)
        {
            let Some(identity) = f.identity else { continue };
            match saved::delete(&f.path, &identity) {
                Removal::Deleted => {
                    store.forget_created_file(vm.as_str(), &f.path)?;
                    out.deleted.push(f.path);
                }
                Removal::AlreadyGone => store.forget_created_file(vm.as_str(), &f.path)?,
                Removal::KeptInUse(why) | Removal::KeptUnproven(why) | Removal::Failed(why) => {
                    out.kept.push((f.path, why))
                }
                Removal::KeptNotEmpty => {}
            }
        }
        Ok(out)
    }

    /// Before a start, under the VM's lock: what a recorded state means
    /// for it. `fresh`: discard it (`start --fresh`). Otherwise an intact
    /// state is announced and resumed by the runner (the start gets time
    /// to load it: the larger of `timeout` and the state's load budget);
    /// one whose file is not the recorded one is forgotten, with a
    /// warning, and the VM boots afresh. Returns the start timeout.
    pub(super) fn settle_saved(
        &self,
        vm: &VmName,
        fresh: bool,
        timeout: Duration,
        store: &Store,
        notify: Notify<'_>,
    ) -> Result<Duration, VmError> {
        if fresh {
            let d = self.discard_locked(vm)?;
            if let Some(s) = &d.state {
                notify(Notice::Discarded {
                    vm: vm.clone(),
                    path: s.path.clone(),
                });
            }
            for (path, why) in d.kept {
                notify(Notice::Kept { path, why });
            }
            return Ok(timeout);
        }
        let Some(rec) = store.saved_state(vm.as_str())? else {
            self.clear_unrecorded(vm, store, notify)?;
            return Ok(timeout);
        };
        match saved::check(&rec) {
            Ok(()) => {
                notify(Notice::Resuming {
                    vm: vm.clone(),
                    saved_at: rec.saved_at,
                    size: rec.size,
                });
                Ok(timeout.max(saved::load_budget(rec.size)))
            }
            Err(why) => {
                store.forget_saved_state(vm.as_str())?;
                notify(Notice::Warning {
                    message: format!(
                        "the saved state of VM '{vm}' is not resumed: {why}; the VM boots afresh"
                    ),
                });
                self.clear_unrecorded(vm, store, notify)?;
                Ok(timeout)
            }
        }
    }

    /// Before a start without a trusted state: what saves left that no
    /// record trusts goes — the temporary file of a save that was killed
    /// (said so: the VM boots afresh), and a state file whose record is
    /// gone (one already resumed whose runner ended before deleting it,
    /// or one found untrusted).
    fn clear_unrecorded(
        &self,
        vm: &VmName,
        store: &Store,
        notify: Notify<'_>,
    ) -> Result<(), VmError> {
        let target =
            maqet_host::storage::disks::canonical_parent(&saved::path_in(&self.disk_dir(vm)));
        for path in saved::delete_leftovers(&target) {
            notify(Notice::Warning {
                message: format!(
                    "a save of VM '{vm}' was interrupted (it left {}, now deleted); nothing of it is loaded and the VM boots afresh",
                    path.display()
                ),
            });
        }
        for f in store
            .created_files(vm.as_str())?
            .into_iter()
            .filter(|f| f.kind == FileKind::SavedState)
        {
            let Some(identity) = f.identity else { continue };
            match saved::delete(&f.path, &identity) {
                Removal::Deleted => {
                    store.forget_created_file(vm.as_str(), &f.path)?;
                    notify(Notice::Deleted {
                        path: f.path,
                        kind: FileKind::SavedState,
                    });
                }
                Removal::AlreadyGone => store.forget_created_file(vm.as_str(), &f.path)?,
                _ => {}
            }
        }
        Ok(())
    }
}
