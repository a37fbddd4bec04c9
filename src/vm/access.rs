//! Reaching a running VM over its forwarded ports: the port plan it was
//! started with (`maqet ports`) and the ssh invocation for it (`maqet
//! ssh`). The front end runs the command; everything that decides it is
//! here.

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::provision::ProvisionError;
use maqet_base::vmname::VmName;
use maqet_config::VmConfig;
use maqet_host::ports::PortPlan;

use super::{stored_config, Runners, UnitManager, VmError, Vms};

/// Why a VM cannot be reached over its ports.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(
        "VM '{vm}' forwards no ports (add `ports:`, `ssh: true` or `cloud_init:` to its config)"
    )]
    NoPorts { vm: VmName },
    /// Ports are chosen at start, so a stopped VM has none.
    #[error("VM '{vm}' is not running (start it with `maqet start {vm}`; its ports are chosen at start)")]
    NotRunning { vm: VmName },
    #[error("VM '{vm}' forwards no port to its ssh (22/tcp); set `ssh: true` or forward one in `ports:`")]
    NoSshPort { vm: VmName },
    #[error("cannot create {}: {source}", dir.display())]
    KnownHostsDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("'{user}' cannot be an ssh user name: {reason}")]
    BadUser { user: String, reason: &'static str },
    #[error("VM '{vm}': no ssh server answered on 127.0.0.1:{port} within {}s (is sshd running in the guest? `maqet console {vm}` shows its boot)", wait.as_secs_f64())]
    NoSshServer {
        vm: VmName,
        port: u16,
        wait: Duration,
    },
}

/// How to ssh into a VM: the arguments after the program name, where ssh
/// logs (`-E`, see [`maqet_host::ssh::session`]), and until when a connection
/// the guest's sshd turns away is tried again.
#[derive(Debug)]
pub struct SshPlan {
    pub vm: VmName,
    pub port: u16,
    pub args: Vec<OsString>,
    pub log: PathBuf,
    pub retry_until: Instant,
}

/// What an ssh session asks for.
#[derive(Debug, Default)]
pub struct SshRequest<'a> {
    /// The guest user; `None`: cloud-init's user.
    pub user: Option<&'a str>,
    /// Run remotely instead of a login shell, when not empty.
    pub command: &'a [String],
    /// How long to wait for the guest's sshd: for its banner, and for it to
    /// serve the session rather than turn it away (zero: not at all).
    pub wait: Duration,
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// The port plan running `vm` was started with, and its config.
    pub async fn running_ports(&self, vm: &VmName) -> Result<(VmConfig, PortPlan), VmError> {
        let record = self.record(vm)?;
        let cfg = stored_config(&record)?;
        if !cfg.guest.wants_network() {
            return Err(AccessError::NoPorts { vm: vm.clone() }.into());
        }
        if !self.is_running(vm).await? {
            return Err(AccessError::NotRunning { vm: vm.clone() }.into());
        }
        let plan = crate::provision::guest::published_ports(vm, &cfg)?
            .ok_or_else(|| ProvisionError::NoPlan(vm.to_string()))?;
        Ok((cfg, plan))
    }

    /// `maqet ssh`: the command line for running `vm` (its per-VM
    /// known_hosts directory made, its sshd waited for as asked).
    pub async fn ssh_plan(&self, vm: &VmName, req: &SshRequest<'_>) -> Result<SshPlan, VmError> {
        let retry_until = Instant::now() + req.wait;
        // What the user typed is refused before anything is looked at.
        if let Some(u) = req.user {
            check_user(u)?;
        }
        let (cfg, plan) = self.running_ports(vm).await?;
        let Some(port) = plan.ssh_port else {
            return Err(AccessError::NoSshPort { vm: vm.clone() }.into());
        };
        let ci = cfg.guest.cloud_init.clone().unwrap_or_default();
        let user = match req.user {
            Some(u) => u.to_string(),
            None => maqet_host::cloudinit::guest_user(&ci).map_err(ProvisionError::from)?,
        };
        // The invoking user's name reaches ssh's command line too
        // (cloud_init.user is checked at add).
        check_user(&user)?;
        // The private halves of the keys the seed carries; without a seed,
        // ssh's own defaults (agent, ~/.ssh/id_*) apply.
        let identities = if cfg.guest.cloud_init.is_some() {
            maqet_host::ssh::identities(&maqet_host::cloudinit::key_files(&ci).unwrap_or_default())
        } else {
            Vec::new()
        };
        let known_hosts = maqet_host::ssh::known_hosts_path(self.data_dir.path(), vm.as_str());
        if let Some(dir) = known_hosts.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| AccessError::KnownHostsDir {
                    dir: dir.to_path_buf(),
                    source,
                })?;
        }
        if !req.wait.is_zero() && !maqet_host::ssh::wait_for_banner(port, req.wait).await {
            return Err(AccessError::NoSshServer {
                vm: vm.clone(),
                port,
                wait: req.wait,
            }
            .into());
        }
        let target = maqet_host::ssh::SshTarget {
            vm: vm.as_str(),
            user: &user,
            port,
            identities: &identities,
            known_hosts: &known_hosts,
        };
        let args = maqet_host::ssh::argv(&target, req.command);
        // Beside the known_hosts file (a 0700 directory), one per session.
        let log = known_hosts.with_file_name(format!("{vm}.{}.ssh-log", std::process::id()));
        Ok(SshPlan {
            vm: vm.clone(),
            port,
            args,
            log,
            retry_until,
        })
    }
}

/// A login name ssh cannot mistake for an option.
fn check_user(user: &str) -> Result<(), AccessError> {
    maqet_host::ssh::check_user(user).map_err(|reason| AccessError::BadUser {
        user: maqet_base::suggest::excerpt(user, 64),
        reason,
    })
}
