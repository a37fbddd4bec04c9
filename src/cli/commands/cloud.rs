//! `maqet ports|ssh|clone` (issue 11): front ends over `crate::ports`,
//! `crate::ssh` and the stored definitions. Logic lives in those modules.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::args::{CloneArgs, GuestAction, GuestArgs, NameJson, SshArgs};
use crate::cli::context::Ctx;
use crate::cli::exit::{code, CliError};
use crate::config::VmConfig;
use crate::guest_agent::{Agent, AgentError};
use crate::ports::{PortError, PortPlan};
use crate::provision::ProvisionError;
use crate::state::{FileKind, NewVm};
use crate::vmname::VmName;

impl From<ProvisionError> for CliError {
    fn from(e: ProvisionError) -> Self {
        let c = match &e {
            ProvisionError::Ports(PortError::Taken { .. }) => code::CONFLICT,
            ProvisionError::Path(p) => return CliError::from_path(p, e.to_string()),
            _ => code::FAILURE,
        };
        CliError::new(c, e.to_string())
    }
}

impl CliError {
    fn from_path(p: &crate::paths::PathError, msg: String) -> Self {
        let c = match p {
            crate::paths::PathError::NoRuntimeDir => code::NO_SESSION,
            _ => code::USAGE,
        };
        CliError::new(c, msg)
    }
}

/// The ports of a running VM; exit 5 ("running when it must not be" has
/// its mirror here) is not right for a stopped one: that is a plain
/// failure with a hint.
async fn running_plan(ctx: &Ctx, name: &str) -> Result<(VmName, VmConfig, PortPlan), CliError> {
    let (vm, record) = ctx.vm(name)?;
    let cfg = crate::vm::stored_config(&record)?;
    if !cfg.guest.wants_network() {
        return Err(CliError::failure(format!(
            "VM '{vm}' forwards no ports (add `ports:`, `ssh: true` or `cloud_init:` to its config)"
        )));
    }
    if !ctx.vms_if_session().await?.is_running(&vm).await? {
        return Err(CliError::failure(format!(
            "VM '{vm}' is not running; its ports are chosen at start (`maqet start {vm}`)"
        )));
    }
    let plan = crate::provision::published_ports(&vm, &cfg)?
        .ok_or_else(|| ProvisionError::NoPlan(vm.to_string()))?;
    Ok((vm, cfg, plan))
}

pub async fn ports(ctx: &Ctx, a: &NameJson) -> Result<(), CliError> {
    let (_, _, plan) = running_plan(ctx, &a.name).await?;
    if a.json {
        crate::cli::output::print_json(&plan);
        return Ok(());
    }
    for f in &plan.forwards {
        let note = if Some(f.host_port) == plan.ssh_port && f.protocol == "tcp" {
            "  (ssh)"
        } else {
            ""
        };
        println!(
            "{}:{} -> {}/{}{note}",
            crate::ports::HOST_ADDR,
            f.host_port,
            f.guest_port,
            f.protocol
        );
    }
    Ok(())
}

pub async fn ssh(ctx: &Ctx, a: &SshArgs) -> Result<(), CliError> {
    let (vm, cfg, plan) = running_plan(ctx, &a.name).await?;
    let Some(port) = plan.ssh_port else {
        return Err(CliError::failure(format!(
            "VM '{vm}' forwards no port to its ssh (22/tcp); set `ssh: true` or forward one in `ports:`"
        )));
    };
    let ci = cfg.guest.cloud_init.clone().unwrap_or_default();
    let user = match &a.user {
        Some(u) => u.clone(),
        None => crate::cloudinit::guest_user(&ci).map_err(ProvisionError::from)?,
    };
    // The private halves of the keys the seed carries; without a seed,
    // ssh's own defaults (agent, ~/.ssh/id_*) apply.
    let identities = if cfg.guest.cloud_init.is_some() {
        crate::ssh::identities(&crate::cloudinit::key_files(&ci).unwrap_or_default())
    } else {
        Vec::new()
    };
    let known_hosts = crate::ssh::known_hosts_path(ctx.data_dir.path(), vm.as_str());
    if let Some(dir) = known_hosts.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| CliError::failure(format!("cannot create {}: {e}", dir.display())))?;
    }
    if !a.wait.is_zero() && !crate::ssh::wait_for_banner(port, a.wait) {
        return Err(CliError::new(
            code::TIMEOUT,
            format!(
                "VM '{vm}': no ssh server answered on 127.0.0.1:{port} within {}s (is sshd running in the guest? `maqet console {vm}` shows its boot)",
                a.wait.as_secs_f64()
            ),
        ));
    }
    let target = crate::ssh::SshTarget {
        vm: vm.as_str(),
        user: &user,
        port,
        identities: &identities,
        known_hosts: &known_hosts,
    };
    let ssh = std::env::var_os("MAQET_SSH").unwrap_or_else(|| "ssh".into());
    // exec: ssh owns the terminal and its exit status is ours.
    let err = std::process::Command::new(&ssh)
        .args(crate::ssh::argv(&target, &a.command))
        .exec();
    Err(CliError::failure(format!(
        "cannot run {}: {err} (install openssh-client)",
        Path::new(&ssh).display()
    )))
}

/// What a clone does with one source disk.
#[derive(Debug, PartialEq, Eq)]
enum DiskPlan {
    /// Nothing: the clone makes its own at start (a fresh overlay on the
    /// same `base:`, or a new empty disk when the source has none yet).
    Fresh,
    /// Copy the source's image into the clone's disk directory.
    Copy(PathBuf, PathBuf),
}

fn plan_disks(
    cfg: &VmConfig,
    src_dir: &Path,
    dst_dir: &Path,
    full: bool,
) -> Result<Vec<DiskPlan>, CliError> {
    let mut out = Vec::new();
    for e in cfg.storage() {
        if e.virtfs.is_some() {
            continue; // a shared host directory stays shared
        }
        if let Some(f) = &e.file {
            return Err(CliError::conflict(format!(
                "storage '{}' is the file {}, which a clone would share with '{}'; give disks no `file:` (they then live in the VM's disk directory) to clone them",
                e.name,
                f.display(),
                cfg.name.as_deref().unwrap_or("the source")
            )));
        }
        let src = e.path(src_dir);
        let exists = src.exists();
        match (full, exists, e.backing_file.is_some()) {
            (true, true, _) => out.push(DiskPlan::Copy(src, e.path(dst_dir))),
            (false, true, false) => {
                return Err(CliError::conflict(format!(
                    "storage '{}' ({}) has no base image to start the clone from; use --full to copy it",
                    e.name,
                    src.display()
                )))
            }
            _ => out.push(DiskPlan::Fresh),
        }
    }
    Ok(out)
}

pub async fn clone(ctx: &Ctx, a: &CloneArgs) -> Result<(), CliError> {
    let (src, record) = ctx.vm(&a.name)?;
    let dst = VmName::new(&a.new_name)?;
    if ctx.vm(dst.as_str()).is_ok() {
        return Err(CliError::conflict(format!(
            "a VM named '{dst}' already exists"
        )));
    }
    let cfg = crate::vm::stored_config(&record)?;
    let src_dir = ctx.data_dir.disk_dir(&src);
    let dst_dir = ctx.data_dir.disk_dir(&dst);
    let disks = plan_disks(&cfg, &src_dir, &dst_dir, a.full)?;
    let mut copies: Vec<(PathBuf, PathBuf)> = disks
        .into_iter()
        .filter_map(|d| match d {
            DiskPlan::Copy(s, t) => Some((s, t)),
            DiskPlan::Fresh => None,
        })
        .collect();
    // The UEFI variable store (boot entries, Secure Boot keys) goes with
    // the clone, as its own copy.
    let nvram = cfg
        .desktop
        .firmware
        .as_ref()
        .map(|_| crate::firmware::nvram::path(&src_dir))
        .filter(|p| p.is_file());
    let running = (!copies.is_empty() || nvram.is_some())
        && ctx.vms_if_session().await?.is_running(&src).await?;
    if !copies.is_empty() && running {
        return Err(CliError::conflict(format!(
            "VM '{src}' is running; stop it before copying its disks (`maqet stop {src}`)"
        )));
    }
    if let Some(from) = nvram {
        if running {
            // QEMU writes it while the VM runs: a copy could be torn.
            eprintln!(
                "note: '{src}' is running, so its UEFI variable store is not copied; '{dst}' starts with a fresh one from the firmware's template"
            );
        } else {
            copies.push((from, crate::firmware::nvram::path(&dst_dir)));
        }
    }
    let _lock = ctx.lock_vm(dst.as_str(), Duration::from_secs(30))?;
    let store = ctx.store()?;
    store
        .insert_vm(&NewVm {
            name: dst.to_string(),
            config: record.config.clone(),
            sources: record.sources.clone(),
            autostart: false,
        })
        .map_err(|e| match e {
            crate::state::StateError::Exists(_) => {
                CliError::conflict(format!("a VM named '{dst}' already exists"))
            }
            other => other.into(),
        })?;
    if let Err(e) = copy_disks(&store, &dst, &dst_dir, &copies) {
        let _ = crate::storage::delete_created(dst.as_str(), &store, &|_| None);
        let _ = store.delete_vm(dst.as_str());
        return Err(e);
    }
    println!("{dst}");
    Ok(())
}

/// Copies (0600, never over an existing file) and records each copy as the
/// clone's, so `rm --delete-storage` removes exactly those.
fn copy_disks(
    store: &crate::state::Store,
    dst: &VmName,
    dst_dir: &Path,
    copies: &[(PathBuf, PathBuf)],
) -> Result<(), CliError> {
    if copies.is_empty() {
        return Ok(());
    }
    let io = |p: &Path, e: std::io::Error| CliError::failure(format!("{}: {e}", p.display()));
    if !dst_dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dst_dir)
            .map_err(|e| io(dst_dir, e))?;
        let id = crate::storage::identity::stat_path(dst_dir).map_err(|e| io(dst_dir, e))?;
        store.record_created_file(
            dst.as_str(),
            dst_dir,
            FileKind::Directory,
            Some(id.identity),
        )?;
    }
    for (from, to) in copies {
        let mut r = std::fs::File::open(from).map_err(|e| io(from, e))?;
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
            .map_err(|e| io(to, e))?;
        let id = crate::storage::identity::stat_path(to).map_err(|e| io(to, e))?;
        store.record_created_file(dst.as_str(), to, FileKind::Disk, Some(id.identity))?;
        std::io::copy(&mut r, &mut w).map_err(|e| io(to, e))?;
        w.sync_all().map_err(|e| io(to, e))?;
    }
    Ok(())
}

impl From<AgentError> for CliError {
    fn from(e: AgentError) -> Self {
        let c = match &e {
            AgentError::Timeout(_) => code::TIMEOUT,
            AgentError::Path(p) => return CliError::from_path(p, e.to_string()),
            _ => code::FAILURE,
        };
        CliError::new(c, e.to_string())
    }
}

pub async fn guest(ctx: &Ctx, a: &GuestArgs) -> Result<(), CliError> {
    let (vm, record) = ctx.vm(&a.name)?;
    let cfg = crate::vm::stored_config(&record)?;
    if !cfg.guest.guest_agent {
        return Err(CliError::failure(format!(
            "VM '{vm}' has no guest agent channel; set `guest_agent: true` (and run qemu-guest-agent in the guest)"
        )));
    }
    if !ctx.vms_if_session().await?.is_running(&vm).await? {
        return Err(CliError::failure(format!("VM '{vm}' is not running")));
    }
    let timeout = a.timeout;
    let mut agent = Agent::connect(&crate::guest_agent::socket_path(&vm)?, timeout)?;
    match &a.action {
        GuestAction::Ping => {
            agent.call("guest-ping", None)?;
            println!("{vm}: the guest agent answers");
        }
        GuestAction::Info => {
            let v = agent.call("guest-info", None)?;
            let enabled: Vec<&str> = v["supported_commands"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["enabled"].as_bool() == Some(true))
                .filter_map(|c| c["name"].as_str())
                .collect();
            println!("version: {}", v["version"].as_str().unwrap_or("?"));
            println!("commands: {}", enabled.join(" "));
        }
        GuestAction::Ip { json } => {
            let v = agent.call("guest-network-get-interfaces", None)?;
            if *json {
                crate::cli::output::print_json(&v);
            } else {
                for l in crate::guest_agent::describe_interfaces(&v) {
                    println!("{l}");
                }
            }
        }
        GuestAction::Exec { command } => {
            let r = agent.exec(command)?;
            use std::io::Write;
            let _ = std::io::stdout().write_all(&r.stdout);
            let _ = std::io::stderr().write_all(&r.stderr);
            let _ = std::io::stdout().flush();
            if let Some(sig) = r.signal {
                return Err(CliError::failure(format!(
                    "{} was killed by signal {sig} in the guest",
                    command[0]
                )));
            }
            if r.code != 0 {
                // The guest program's status is ours, like ssh does.
                std::process::exit(i32::try_from(r.code).unwrap_or(1));
            }
        }
        GuestAction::Fsfreeze => {
            let n = agent.fsfreeze()?;
            println!("{vm}: froze {n} file system(s); `maqet guest {vm} fsthaw` thaws them");
        }
        GuestAction::Fsthaw => {
            let n = agent.fsthaw()?;
            println!("{vm}: thawed {n} file system(s)");
        }
    }
    Ok(())
}
