//! Joining VM-to-VM segments at start (`networks:`, issue 19). A VM on
//! segment `lab` needs `maqet-switch@lab.service` up before its QEMU
//! starts. The first VM's start creates the switch unit, in the same
//! `StartTransientUnit` call as its own units (so a failed start leaves
//! nothing behind, and `StopWhenUnneeded=` never sees the switch alone);
//! later starts only `Wants=` + `After=` it. Which of the two a start does
//! is decided under the segment's lock (`$XDG_RUNTIME_DIR/maqet/net/
//! lab.lock`, per user like the segment), held until the VM's unit exists:
//! two first starts — also from two data directories — would otherwise
//! both create the unit, and one of them fail with "unit exists".
//!
//! The lock is taken without blocking the runtime's one thread (the CLI's
//! `autostart` starts several VMs on it at once, and two of them on one
//! segment would otherwise wait for each other for ever).

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use maqet_base::netname::NetName;
use maqet_base::paths::SegmentRuntime;
use maqet_config::VmConfig;
use maqet_host::systemd::VmUnitSpec;

use super::{Runners, UnitManager, VmError, Vms};

/// How long a start waits for another start holding a segment's lock.
const LOCK_WAIT: Duration = Duration::from_secs(60);
/// How long a start waits for a switch that is stopping (its last VM just
/// went) before it makes a new one.
const STOPPING_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("network '{segment}': cannot use {}: {source}", path.display())]
    Io {
        segment: NetName,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("network '{segment}' is busy: another maqet has been starting a VM on it for {waited:?} (lock {})", path.display())]
    Busy {
        segment: NetName,
        path: PathBuf,
        waited: Duration,
    },
    #[error(
        "network '{segment}': its switch {unit} is still stopping after {waited:?}; try again"
    )]
    Stopping {
        segment: NetName,
        unit: String,
        waited: Duration,
    },
    #[error("network '{segment}': `networks:` needs vde_switch, which was not found at start")]
    NoSwitch { segment: NetName },
}

/// The locks of the segments a start joins; dropping them lets the next
/// start decide.
#[derive(Debug, Default)]
pub struct SegmentLocks(Vec<File>);

/// Takes `rt`'s lock, retrying without blocking the thread.
async fn lock(segment: &NetName, rt: &SegmentRuntime) -> Result<File, SegmentError> {
    let io = |path: PathBuf, source| SegmentError::Io {
        segment: segment.clone(),
        path,
        source,
    };
    rt.ensure_root()
        .map_err(|e| io(rt.root().to_path_buf(), e))?;
    let path = rt.lock();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| io(path.clone(), e))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(rustix::io::Errno::WOULDBLOCK) => {}
            Err(e) => return Err(io(path, e.into())),
        }
        if Instant::now() >= deadline {
            return Err(SegmentError::Busy {
                segment: segment.clone(),
                path,
                waited: LOCK_WAIT,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// Waits until systemd unloaded an unreferenced, stopped switch unit.
    async fn wait_unloaded(&self, segment: &NetName, unit: &str) -> Result<(), VmError> {
        let deadline = Instant::now() + STOPPING_WAIT;
        while self.units.unit_status(unit).await?.is_some() {
            if Instant::now() >= deadline {
                return Err(SegmentError::Stopping {
                    segment: segment.clone(),
                    unit: unit.to_string(),
                    waited: STOPPING_WAIT,
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// The segments' switch files: under the runtime root's sibling
    /// `net/` ([`maqet_base::paths::net_root`]).
    pub fn segment_runtime(&self, segment: &NetName) -> Result<SegmentRuntime, VmError> {
        Ok(match &self.runtime_root {
            Some(root) => SegmentRuntime::at(&root.parent().unwrap_or(root).join("net"), segment),
            None => SegmentRuntime::new(segment)?,
        })
    }

    /// Adds the switches of `cfg`'s segments to `spec`: a switch that runs
    /// is wanted, one that does not is created with the VM's units. The
    /// returned locks must be held until the VM's units exist.
    pub(crate) async fn join_segments(
        &self,
        cfg: &VmConfig,
        spec: &mut VmUnitSpec,
    ) -> Result<SegmentLocks, VmError> {
        let mut names: Vec<&NetName> = cfg.networks.segments.iter().map(|n| &n.name).collect();
        // One order for every start, so two starts never wait on each other.
        names.sort();
        let mut locks = SegmentLocks::default();
        for segment in names {
            let rt = self.segment_runtime(segment)?;
            locks.0.push(lock(segment, &rt).await?);
            let unit = segment.switch_unit();
            let state = self.units.unit_status(&unit).await?;
            let active = state.as_ref().map(|s| s.active_state.as_str());
            match active {
                Some("active" | "activating" | "reloading") => {
                    tracing::debug!(%unit, "joining the running switch");
                    spec.companions.want.push(unit);
                    continue;
                }
                Some("deactivating") => {
                    // Its last VM just went; a start job now would clash
                    // with the stop job ("transaction is destructive").
                    let st = self.units.wait_until_down(&unit, STOPPING_WAIT).await?;
                    if st.is_some_and(|s| s.active_state == "deactivating") {
                        return Err(SegmentError::Stopping {
                            segment: segment.clone(),
                            unit,
                            waited: STOPPING_WAIT,
                        }
                        .into());
                    }
                }
                _ => {}
            }
            // Not running. What a killed switch left is cleared, or
            // vde_switch cannot bind again; a failed unit is reset.
            self.units.reset_failed(&unit).await;
            rt.clear_stale().map_err(|source| SegmentError::Io {
                segment: segment.clone(),
                path: rt.dir(),
                source,
            })?;
            // Still loaded because VMs that ran on it want it (it was
            // killed under them): started again by this VM's `Wants=`, with
            // the properties it was made with. Those VMs stay cut off from
            // it (a new switch does not know their ports) until they
            // restart. Loaded and wanted by nobody: systemd is about to
            // unload it, and then its name is free to create it again.
            if self.units.unit_status(&unit).await?.is_some() {
                if !self.units.wanted_by(&unit).await?.is_empty() {
                    tracing::info!(%unit, "starting the switch again");
                    spec.companions.want.push(unit);
                    continue;
                }
                self.wait_unloaded(segment, &unit).await?;
            }
            let vde_switch =
                cfg.networks
                    .vde_switch
                    .as_deref()
                    .ok_or_else(|| SegmentError::NoSwitch {
                        segment: segment.clone(),
                    })?;
            tracing::debug!(%unit, "creating the switch with the VM");
            spec.companions
                .units
                .push(maqet_host::companion::switch::unit(
                    segment, vde_switch, &rt,
                ));
            spec.companions.want.push(unit);
        }
        Ok(locks)
    }
}
