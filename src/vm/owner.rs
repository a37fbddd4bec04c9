//! One data directory never acts on another's VM.
//!
//! Unit names are per user (`maqet-vm@NAME`), so two data directories that
//! both define `NAME` share one unit name. Whose VM a unit runs is said in
//! two places: the unit's `Description=` ends in `(data DIR)`, and the
//! runner reports its data directory in its `status` reply. Every command
//! that reads or acts on a unit or its socket asks here first.

use std::path::{Path, PathBuf};

use maqet_config::canonical;

use maqet_base::paths::{self, PathError};
use maqet_host::ipc::{IpcClient, IpcError, StatusInfo};
use maqet_host::systemd::{SystemdError, UnitStatus};

use super::units::UnitManager;
use maqet_base::vmname::VmName;

/// Whose a unit (or runner) is, as seen from one data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Ours,
    /// Another data directory, as the unit or runner names it.
    Other(String),
    /// The description names no data directory: not made by this maqet.
    Unmarked,
}

/// The data directory named in a description made by
/// [`maqet_host::systemd::properties::description`]:
/// `maqet VM NAME (data DIR)`. A VM name has no spaces or parentheses, so
/// everything between `(data ` and the final `)` is the directory, whatever
/// characters it contains.
pub fn data_dir_of_description(desc: &str) -> Option<&str> {
    let rest = desc.strip_prefix("maqet VM ")?;
    let (_name, rest) = rest.split_once(' ')?;
    rest.strip_prefix("(data ")?.strip_suffix(')')
}

/// Whether two spellings name the same data directory.
pub fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || canonical(a) == canonical(b)
}

fn judge(named: Option<&str>, data_dir: &Path) -> Owner {
    match named {
        Some(d) if same_dir(Path::new(d), data_dir) => Owner::Ours,
        Some(d) => Owner::Other(d.to_string()),
        None => Owner::Unmarked,
    }
}

/// Whose a unit is, from its `Description=`.
pub fn owned_by(description: &str, data_dir: &Path) -> Owner {
    judge(data_dir_of_description(description), data_dir)
}

/// Whose a runner is, from its `status` reply; `None` when the runner
/// predates the `data_dir` field (then the unit's description decides).
pub fn runner_owned_by(info: &StatusInfo, data_dir: &Path) -> Option<Owner> {
    info.data_dir.as_deref().map(|d| judge(Some(d), data_dir))
}

#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("refused: {unit} runs VM '{vm}' of another data directory ({other}), not of this one ({ours}); unit names are per user, so act on it with `maqet --data-dir {other} …`, or stop it there first")]
    OtherDataDir {
        vm: String,
        unit: String,
        other: String,
        ours: String,
    },
    #[error("VM '{vm}' is not running (start it with `maqet start {vm}`)")]
    NotRunning { vm: String },
    /// Its unit is deactivating: systemd has already taken its control
    /// socket away (a stop of the unit stops the socket with it).
    #[error("VM '{vm}' is stopping; try again once it has stopped (`maqet status {vm}`)")]
    Stopping { vm: String },
    #[error("VM '{vm}' is running ({unit}, runner pid {pid}) but its control socket {} is missing, so maqet cannot reach its runner; `maqet doctor` reports it, `maqet stop {vm}` still works (through systemd), and `maqet restart {vm}` brings the socket back", socket.display())]
    SocketMissing {
        vm: String,
        unit: String,
        pid: u32,
        socket: PathBuf,
    },
    #[error(transparent)]
    Systemd(#[from] SystemdError),
    #[error(transparent)]
    Ipc(#[from] IpcError),
    #[error(transparent)]
    Path(#[from] PathError),
}

fn other_dir(vm: &VmName, data_dir: &Path, other: String) -> OwnerError {
    OwnerError::OtherDataDir {
        vm: vm.to_string(),
        unit: vm.service_unit(),
        other,
        ours: data_dir.display().to_string(),
    }
}

/// The VM's service unit, sorted by owner.
#[derive(Debug)]
pub enum UnitOwner {
    /// systemd has no such unit loaded.
    Absent,
    Ours(UnitStatus),
    /// Another data directory's (or an unmarked) unit of the same name.
    Other {
        dir: String,
        status: UnitStatus,
    },
}

impl UnitOwner {
    pub async fn of(
        sd: &impl UnitManager,
        vm: &VmName,
        data_dir: &Path,
    ) -> Result<Self, SystemdError> {
        Ok(Self::sort(
            sd.unit_status(&vm.service_unit()).await?,
            data_dir,
        ))
    }

    /// As [`of`](Self::of), from the unit's description and states alone
    /// ([`UnitManager::unit_brief`]): for a check of who owns it and
    /// whether it is live, where nothing else of the status is read.
    pub async fn of_brief(
        sd: &impl UnitManager,
        vm: &VmName,
        data_dir: &Path,
    ) -> Result<Self, SystemdError> {
        Ok(Self::sort(
            sd.unit_brief(&vm.service_unit()).await?,
            data_dir,
        ))
    }

    fn sort(st: Option<UnitStatus>, data_dir: &Path) -> Self {
        let Some(st) = st else {
            return UnitOwner::Absent;
        };
        match owned_by(&st.description, data_dir) {
            Owner::Ours => UnitOwner::Ours(st),
            Owner::Other(dir) => UnitOwner::Other { dir, status: st },
            Owner::Unmarked => UnitOwner::Other {
                dir: format!("unknown: its description is '{}'", st.description),
                status: st,
            },
        }
    }

    /// This data directory's unit in whatever state; `None` when absent or
    /// another's (whose state is never shown as ours).
    pub fn ours(self) -> Option<UnitStatus> {
        match self {
            UnitOwner::Ours(st) => Some(st),
            _ => None,
        }
    }

    /// Refuses when another data directory's VM of this name is live (it
    /// holds the unit name); otherwise our unit, if any.
    pub fn refuse_other_live(
        self,
        vm: &VmName,
        data_dir: &Path,
    ) -> Result<Option<UnitStatus>, OwnerError> {
        match self {
            UnitOwner::Other { dir, status } if status.vm_state().is_live() => {
                Err(other_dir(vm, data_dir, dir))
            }
            other => Ok(other.ours()),
        }
    }

    /// Whether resetting the unit touches nothing of another data
    /// directory's.
    pub fn ours_or_absent(&self) -> bool {
        !matches!(self, UnitOwner::Other { .. })
    }
}

/// Whether this data directory's `vm` is live (its unit's description and
/// states alone); refuses another's live unit of the name.
pub async fn is_live(
    sd: &impl UnitManager,
    vm: &VmName,
    data_dir: &Path,
) -> Result<bool, OwnerError> {
    Ok(UnitOwner::of_brief(sd, vm, data_dir)
        .await?
        .refuse_other_live(vm, data_dir)?
        .is_some_and(|s| s.vm_state().is_live()))
}

/// This data directory's live unit of `vm`; refuses another's.
pub async fn live_unit(
    sd: &impl UnitManager,
    vm: &VmName,
    data_dir: &Path,
) -> Result<Option<UnitStatus>, OwnerError> {
    Ok(UnitOwner::of(sd, vm, data_dir)
        .await?
        .refuse_other_live(vm, data_dir)?
        .filter(|s| s.vm_state().is_live()))
}

/// Checks that the runner at the other end of `client` is this data
/// directory's. A runner that does not report its data directory predates
/// the field; then `unit_checked` (the unit's description said ours) has
/// to do.
pub async fn verify_runner(
    client: &mut IpcClient,
    vm: &VmName,
    data_dir: &Path,
) -> Result<(), OwnerError> {
    let info = client.status().await?;
    refuse_other_runner(&info, vm, data_dir)
}

/// Refuses a runner whose status names another data directory.
fn refuse_other_runner(info: &StatusInfo, vm: &VmName, data_dir: &Path) -> Result<(), OwnerError> {
    match runner_owned_by(info, data_dir) {
        Some(Owner::Other(d)) => Err(other_dir(vm, data_dir, d)),
        _ => Ok(()),
    }
}

/// Connects to the runner of this data directory's `vm`: its unit must be
/// ours and live, and the runner must say it is ours. A live unit whose
/// socket file is gone is reported as such, not as "not running".
pub async fn connect_runner(
    sd: &impl UnitManager,
    vm: &VmName,
    data_dir: &Path,
) -> Result<IpcClient, OwnerError> {
    // The unit's owner and state (its description and states are enough;
    // the full status is read only when the socket is missing, below) and
    // the runner's own account of its data directory, asked at once: the
    // one round trip to the user manager overlaps the one to the runner.
    // Asking a runner of another data directory for its status changes
    // nothing; its answer is used only once the unit is known to be ours.
    let socket = paths::VmRuntime::locate(vm)?.control();
    let runner = async {
        let mut client = IpcClient::connect(&socket).await?;
        let status = client.status().await;
        Ok::<_, IpcError>((client, status))
    };
    let (unit, runner) = tokio::join!(UnitOwner::of_brief(sd, vm, data_dir), runner);
    let Some(st) = unit?
        .refuse_other_live(vm, data_dir)?
        .filter(|s| s.vm_state().is_live())
    else {
        return Err(OwnerError::NotRunning { vm: vm.to_string() });
    };
    let (client, status) = match runner {
        Ok(c) => c,
        Err(IpcError::NotRunning { .. }) if !socket.exists() => {
            // The unit may have stopped meanwhile: then it is just not
            // running; or be stopping, which takes the socket away first.
            return Err(match live_unit(sd, vm, data_dir).await? {
                Some(st) if st.vm_state() == maqet_host::systemd::VmState::Stopping => {
                    OwnerError::Stopping { vm: vm.to_string() }
                }
                Some(st) if st.main_pid != 0 => OwnerError::SocketMissing {
                    vm: vm.to_string(),
                    unit: st.unit,
                    pid: st.main_pid,
                    socket,
                },
                _ => OwnerError::NotRunning { vm: vm.to_string() },
            });
        }
        Err(IpcError::NotRunning { .. }) if st.is_auto_restart() => {
            return Err(OwnerError::NotRunning { vm: vm.to_string() })
        }
        Err(e) => return Err(e.into()),
    };
    refuse_other_runner(&status?, vm, data_dir)?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use maqet_host::systemd::properties::description;

    fn desc(dir: &str) -> String {
        description(&VmName::new("web").unwrap(), Path::new(dir))
    }

    #[test]
    fn parses_any_directory_from_the_description() {
        for dir in [
            "/a/b",
            "/x (y)/z",
            "/with space/d",
            "/p)",
            "/a (data /b)",
            "/)(",
        ] {
            assert_eq!(data_dir_of_description(&desc(dir)), Some(dir), "{dir}");
        }
        assert_eq!(data_dir_of_description("something else"), None);
        assert_eq!(data_dir_of_description("maqet VM web control socket"), None);
        assert_eq!(data_dir_of_description("maqet VM web (data /a"), None);
    }

    #[test]
    fn trailing_slashes_and_dots_are_the_same_directory() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        assert_eq!(owned_by(&desc(&p.to_string_lossy()), p), Owner::Ours);
        let slashed = format!("{}/", p.display());
        assert_eq!(owned_by(&desc(&slashed), p), Owner::Ours);
        assert_eq!(
            owned_by(&desc(&p.to_string_lossy()), Path::new(&slashed)),
            Owner::Ours
        );
        let dotted = p.join("sub").join("..");
        std::fs::create_dir(p.join("sub")).unwrap();
        assert_eq!(owned_by(&desc(&dotted.to_string_lossy()), p), Owner::Ours);
        // A directory that does not exist compares by its lexical form.
        assert!(same_dir(
            Path::new("/no/such/dir/"),
            Path::new("/no/such/dir")
        ));
        assert!(!same_dir(Path::new("/no/such/a"), Path::new("/no/such/b")));
    }

    #[test]
    fn a_symlinked_data_directory_is_the_same_one() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real (1)");
        std::fs::create_dir(&real).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(owned_by(&desc(&link.to_string_lossy()), &real), Owner::Ours);
        assert_eq!(owned_by(&desc(&real.to_string_lossy()), &link), Owner::Ours);
    }

    #[test]
    fn another_or_no_directory_is_not_ours() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let other = a.to_string_lossy().into_owned();
        assert_eq!(owned_by(&desc(&other), &b), Owner::Other(other));
        assert_eq!(owned_by("maqet-vm@web.service", &b), Owner::Unmarked);
    }

    #[test]
    fn runner_reply_decides_when_present() {
        let t = tempfile::tempdir().unwrap();
        let mut info = StatusInfo {
            vm: "web".into(),
            runner_pid: 1,
            qemu_pid: None,
            qemu_version: "9.0.0".into(),
            run_state: "running".into(),
            ready_at: 0,
            data_dir: None,
            protocol: maqet_host::ipc::protocol::PROTOCOL,
            maqet_version: None,
            qmp_socket: None,
        };
        assert_eq!(runner_owned_by(&info, t.path()), None);
        info.data_dir = Some(format!("{}/", t.path().display()));
        assert_eq!(runner_owned_by(&info, t.path()), Some(Owner::Ours));
        info.data_dir = Some("/elsewhere".into());
        assert_eq!(
            runner_owned_by(&info, t.path()),
            Some(Owner::Other("/elsewhere".into()))
        );
    }
}
