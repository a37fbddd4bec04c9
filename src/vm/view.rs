//! What the views (`status`, `ls`, `inspect`) show of a VM, gathered with
//! a cost that does not grow with the number of running VMs: one unit
//! listing, the per-unit reads issued concurrently on the one connection,
//! and usage read from /proc rather than asked of systemd per VM.

use std::collections::HashMap;

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use maqet_base::time::now_unix;
use maqet_base::vmname::VmName;
use maqet_host::state::{Store, VmRecord};
use maqet_host::systemd::{
    Group, ListedAsk, UnitStatus, Usage, UsageSource, VmState, SERVICE_PATTERN,
};

use super::owner::{owned_by, Owner, UnitOwner};
use super::{Runners, UnitManager, VmError, Vms};

/// `maqet status --json`: stable keys, documented in docs/cli.md.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusReport {
    pub name: String,
    pub state: VmState,
    pub unit: String,
    pub runner_pid: Option<u32>,
    pub qemu_pid: Option<u32>,
    /// Unix seconds the unit became active (running since).
    pub since: Option<u64>,
    /// systemd's `Result` of the last run (`success`, `exit-code`, `signal`, `watchdog`, …).
    pub result: Option<String>,
    pub failure: Option<String>,
    /// QEMU's last error line (from the journal) of the run that failed.
    pub last_error: Option<String>,
    pub exit_status: Option<i32>,
    pub status_text: Option<String>,
    pub restarts: u32,
    pub memory_bytes: Option<u64>,
    pub cpu_nsec: Option<u64>,
    pub tasks: Option<u64>,
    /// Where memory/cpu/tasks came from: `systemd` (its accounting), `cgroup`
    /// (the unit's cgroup files, read by `ls`) or
    /// `proc` (the unit's processes, where systemd accounts nothing).
    pub usage_source: Option<UsageSource>,
    /// Seconds since the unit became active.
    pub uptime_sec: Option<u64>,
    /// The VM's QMP socket for standard QMP clients, while it is there
    /// (VMs started before protocol 2 have none).
    pub qmp_socket: Option<String>,
    /// Helper units next to the VM's (swtpm), while loaded; filled by
    /// `status` (and left empty by `ls`, which does not look them up).
    pub companions: Vec<maqet_host::companion::CompanionState>,
    /// Forwarded ports chosen at start; null when none or stopped.
    pub ports: Option<maqet_host::ports::PortPlan>,
    /// The VM's saved running state while it is not running (`maqet
    /// suspend`, `on_stop: save`); null when it has none.
    pub saved: Option<super::saved::SavedView>,
}

impl StatusReport {
    pub fn new(vm: &VmName, st: Option<&UnitStatus>) -> Self {
        let state = st.map_or(VmState::Defined, UnitStatus::vm_state);
        // Up: a runner is there (a pending restart has none yet).
        let up = state.is_live() && state != VmState::Restarting;
        let since = st
            .filter(|s| up && s.active_enter_timestamp > 0)
            .map(|s| s.active_enter_timestamp / 1_000_000);
        // A pending restart says why the last run ended, like a failure.
        let failed = matches!(state, VmState::Failed | VmState::Restarting);
        let mut r = StatusReport {
            name: vm.to_string(),
            state,
            unit: vm.service_unit(),
            runner_pid: st.filter(|s| s.main_pid != 0).map(|s| s.main_pid),
            qemu_pid: None,
            since,
            result: st
                .filter(|s| !s.result.is_empty())
                .map(|s| s.effective_result().to_string()),
            failure: st.filter(|_| failed).map(UnitStatus::failure_reason),
            last_error: None,
            exit_status: st
                .filter(|s| s.exec_main_code != 0)
                .map(|s| s.exec_main_status),
            status_text: st
                .filter(|s| up && !s.status_text.is_empty())
                .map(|s| s.status_text.clone()),
            restarts: st.map_or(0, |s| s.n_restarts),
            memory_bytes: None,
            cpu_nsec: None,
            tasks: None,
            usage_source: None,
            uptime_sec: since.map(|s| now_unix().saturating_sub(s)),
            qmp_socket: None,
            companions: Vec::new(),
            ports: None,
            saved: None,
        };
        if up {
            r.qmp_socket = qmp_socket(vm);
        }
        if let Some(s) = st.filter(|_| up) {
            r.set_usage(Usage::from_systemd(s));
        }
        r
    }

    /// A VM that does not run shows its saved state; with one the next
    /// start resumes, it is `saved`.
    pub fn set_saved(&mut self, saved: Option<super::saved::SavedView>) {
        if self.state.is_live() {
            return;
        }
        if saved.as_ref().is_some_and(|s| s.resumable()) {
            self.state = VmState::Saved;
        }
        self.saved = saved;
    }

    /// Helper lines for human output.
    pub fn companion_lines(&self) -> Vec<String> {
        self.companions
            .iter()
            .map(|c| format!("{} {} ({})", c.unit, c.active_state, c.sub_state))
            .collect()
    }

    /// For a failed or restarting VM, QEMU's last error from the journal.
    pub fn fill_last_error(&mut self, vm: &VmName, st: Option<&UnitStatus>) {
        if let Some(s) = st.filter(|_| self.failure.is_some()) {
            self.last_error =
                maqet_host::systemd::journal::last_error_of_runner(vm, s.exec_main_pid);
        }
    }

    fn set_usage(&mut self, u: Usage) {
        self.memory_bytes = u.memory_bytes;
        self.cpu_nsec = u.cpu_nsec;
        self.tasks = u.tasks;
        self.usage_source = u.source;
    }

    /// Usage where systemd's counters are not at hand: `procs` (the unit's
    /// processes, already fetched) summed from /proc; else the runner's
    /// cgroup (its counters, or its processes from /proc), or without a
    /// cgroup v2 hierarchy the runner and its children — no D-Bus call.
    pub fn fill_usage(&mut self, procs: Option<&[(String, u32, String)]>) {
        let Some(runner) = self.runner_pid.filter(|_| self.usage_source.is_none()) else {
            return;
        };
        let u = match procs {
            Some(p) => Usage::from_proc(&p.iter().map(|(_, pid, _)| *pid).collect::<Vec<_>>()),
            None => {
                let u = Usage::from_cgroup_of(runner);
                if u.is_empty() {
                    Usage::from_proc(&process_tree(runner))
                } else {
                    u
                }
            }
        };
        if !u.is_empty() {
            self.set_usage(u);
        }
    }
}

/// The QMP socket's path if systemd created it: a stat, no round trip.
fn qmp_socket(vm: &VmName) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    let path = maqet_base::paths::VmRuntime::locate(vm).ok()?.qmp();
    let meta = std::fs::symlink_metadata(&path).ok()?;
    meta.file_type()
        .is_socket()
        .then(|| path.display().to_string())
}

/// `pid` and its descendants, from /proc's `children` lists (the runner's
/// children are QEMU and its helpers).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() && out.len() < 64 {
        let p = out[i];
        i += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(t.path().join("children")) else {
                continue;
            };
            out.extend(
                text.split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// QEMU is the unit's process that is not the runner.
pub fn qemu_pid(procs: &[(String, u32, String)], runner: u32) -> Option<u32> {
    procs
        .iter()
        .filter(|(_, pid, _)| *pid != runner)
        .find(|(_, _, cmd)| cmd.contains("qemu"))
        .or_else(|| procs.iter().find(|(_, pid, _)| *pid != runner))
        .map(|(_, pid, _)| *pid)
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// This data directory's unit of `vm` in whatever state (`None`: not
    /// loaded, or a stopped unit of another data directory); refuses while
    /// another data directory's VM of that name runs.
    pub async fn unit_of(&self, vm: &VmName) -> Result<Option<UnitStatus>, VmError> {
        Ok(UnitOwner::of(&self.units, vm, self.data_dir.path())
            .await?
            .refuse_other_live(vm, self.data_dir.path())?)
    }

    /// The VM's helper units (swtpm), as systemd has them (none when
    /// systemd cannot say).
    pub async fn companions(&self, vm: &VmName) -> Vec<maqet_host::companion::CompanionState> {
        let pats = maqet_host::companion::patterns(vm);
        let refs: Vec<&str> = pats.iter().map(String::as_str).collect();
        match self.units.list_units(&refs).await {
            Ok(listed) => maqet_host::companion::states(vm, listed),
            Err(_) => Vec::new(),
        }
    }

    /// `maqet status VM`: the unit's state, its helper units, QEMU's pid,
    /// usage and published ports, over this one systemd connection.
    pub async fn status(&self, vm: &VmName) -> Result<StatusReport, VmError> {
        let st = self.unit_of(vm).await?;
        let mut r = StatusReport::new(vm, st.as_ref());
        r.fill_last_error(vm, st.as_ref());
        r.set_saved(
            self.saved_state(vm)?
                .as_ref()
                .map(super::saved::SavedView::of),
        );
        r.companions = self.companions(vm).await;
        if let Some(runner) = r.runner_pid {
            let procs = self.units.unit_processes(&r.unit).await.ok();
            if let Some(p) = &procs {
                r.qemu_pid = qemu_pid(p, runner);
            }
            r.fill_usage(procs.as_deref());
            // The ports this run published (chosen at start).
            r.ports = self
                .record(vm)
                .ok()
                .and_then(|rec| super::stored_config(&rec).ok())
                .and_then(|cfg| {
                    crate::provision::guest::published_ports(vm, &cfg)
                        .ok()
                        .flatten()
                });
        }
        Ok(r)
    }

    /// `maqet ls`: every defined VM (in state `filter`, if given); none
    /// when nothing was ever defined (the database is not created for it).
    pub async fn list(&self, filter: Option<VmState>) -> Result<Vec<StatusReport>, VmError> {
        let records: Vec<VmRecord> = match Store::open_read_only(&self.data_dir.db_path())? {
            Some(s) => s.list_vms()?,
            None => Vec::new(),
        };
        // One call for every VM unit, whatever its state; beside it, where
        // the VM units' cgroups are.
        let (listed, slice) = futures_util::future::join(
            self.units.list_units(&[SERVICE_PATTERN]),
            self.units.vm_slice_dir(),
        )
        .await;
        let units: HashMap<String, _> = listed?.into_iter().map(|u| (u.0.clone(), u)).collect();
        let mut rows = Vec::new();
        for r in &records {
            let Ok(vm) = VmName::new(&r.name) else {
                continue;
            };
            // Another data directory's unit of the same name is not this
            // VM's state: the VM shows as defined here.
            let entry = units
                .get(&vm.service_unit())
                .filter(|u| owned_by(&u.1, self.data_dir.path()) == Owner::Ours);
            let st = entry.map(|u| UnitStatus {
                unit: u.0.clone(),
                load_state: u.2.clone(),
                active_state: u.3.clone(),
                sub_state: u.4.clone(),
                description: u.1.clone(),
                ..Default::default()
            });
            // Without a restart policy systemd never restarts the unit
            // (`apply` refuses a running VM, so the stored policy is the
            // one it was started with).
            let may_restart = r.config.get("restart").is_some();
            rows.push((vm, st, entry, may_restart));
        }
        // Details (uptime, CPU, memory, paused) only for units that run,
        // all asked for at once on the one connection. The listing already
        // settled ownership and has each unit's object path; the unit's
        // cgroup shows its main process and usage; what is left is two to
        // four small reads per unit (see listed_unit_status).
        let slice = slice.as_deref();
        let details = join_all(rows.iter().map(|(_, st, entry, may_restart)| async move {
            let Some(e) = entry.filter(|_| {
                st.as_ref()
                    .is_some_and(|s| s.vm_state().is_live() || s.active_state == "failed")
            }) else {
                return Ok::<_, maqet_host::systemd::SystemdError>(None);
            };
            let group = slice.and_then(|d| Group::read(&d.join(&e.0)));
            let main = group.as_ref().and_then(Group::main_pid);
            let ask = ListedAsk {
                main_pid: main.is_none(),
                restarts: *may_restart,
            };
            let full = self.units.listed_unit_status(e, ask).await?;
            Ok(full.map(|mut s| {
                if let Some(pid) = main.filter(|_| s.main_pid == 0) {
                    s.main_pid = pid;
                }
                (s, group)
            }))
        }))
        .await;
        let mut saved: HashMap<String, super::saved::SavedView> =
            self.saved_views()?.into_iter().collect();
        let mut reports = Vec::new();
        for ((vm, st, _, _), full) in rows.into_iter().zip(details) {
            let (st, group) = match full? {
                Some((s, g)) => (Some(s), g),
                None => (st, None),
            };
            let mut rep = StatusReport::new(&vm, st.as_ref());
            rep.set_saved(saved.remove(vm.as_str()));
            if filter.is_none_or(|f| f == rep.state) {
                match group.filter(|_| rep.runner_pid.is_some() && rep.usage_source.is_none()) {
                    Some(g) => rep.set_usage(g.usage()),
                    None => rep.fill_usage(None),
                }
                rep.fill_last_error(&vm, st.as_ref());
                reports.push(rep);
            }
        }
        Ok(reports)
    }
}
