//! `maqet ports|ssh|clone|guest` (issue 11): front ends over the vm layer
//! (`vm::access`, `vm::clone`, `vm::agent`). Logic lives there; this
//! parses, makes one call and renders.

use std::path::Path;

use crate::cli::args::{
    CloneArgs, GuestAction, GuestArgs, PortsAction, PortsAddArgs, PortsArgs, PortsRmArgs, SshArgs,
};
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::ports::Origin;
use crate::vm::access::SshRequest;
use crate::vm::ports::{PortChange, PortsChanged};
use crate::vmname::VmName;

pub async fn ports(ctx: &Ctx, a: &PortsArgs) -> Result<(), CliError> {
    match &a.action {
        None => {
            let name = a
                .name
                .as_deref()
                .expect("clap requires NAME without a subcommand");
            list_ports(ctx, name, a.json).await
        }
        Some(PortsAction::Ls(n)) => list_ports(ctx, &n.name, n.json).await,
        Some(PortsAction::Add(add)) => add_port(ctx, add).await,
        Some(PortsAction::Rm(rm)) => remove_port(ctx, rm).await,
    }
}

async fn list_ports(ctx: &Ctx, name: &str, json: bool) -> Result<(), CliError> {
    let vm = VmName::new(name)?;
    let (_, plan) = ctx.vms_if_session().await?.running_ports(&vm).await?;
    if json {
        crate::cli::output::print_json(&plan);
        return Ok(());
    }
    for f in &plan.forwards {
        let note = match (plan.is_ssh(f), f.origin) {
            (true, Origin::Config) => "  (ssh)",
            (true, Origin::Added) => "  (ssh, added)",
            (true, Origin::Auto) => "  (ssh, auto)",
            (false, Origin::Added) => "  (added)",
            (false, Origin::Auto) => "  (auto)",
            (false, Origin::Config) => "",
        };
        println!(
            "{}:{} -> {}/{}{note}",
            f.host_addr, f.host_port, f.guest_port, f.protocol
        );
    }
    Ok(())
}

/// `--udp` and a `/tcp|/udp` suffix together must agree.
fn with_protocol(spec: &str, udp: bool) -> Result<String, CliError> {
    match (udp, spec.rsplit_once('/')) {
        (false, _) => Ok(spec.to_string()),
        (true, None) => Ok(format!("{spec}/udp")),
        (true, Some((_, "udp"))) => Ok(spec.to_string()),
        (true, Some(_)) => Err(CliError::usage(format!(
            "--udp contradicts '{spec}'; give the protocol once"
        ))),
    }
}

async fn add_port(ctx: &Ctx, a: &PortsAddArgs) -> Result<(), CliError> {
    let spec = crate::config::parse_port(&with_protocol(&a.spec, a.udp)?)
        .map_err(|e| CliError::usage(format!("ports add: {e}")))?;
    let done = ctx
        .vms_if_session()
        .await?
        .change_ports(&VmName::new(&a.name)?, PortChange::Add(spec), a.save)
        .await?;
    report(&done, a.json, "now forwards", "will forward");
    Ok(())
}

async fn remove_port(ctx: &Ctx, a: &PortsRmArgs) -> Result<(), CliError> {
    let key = crate::config::parse_port_key(&with_protocol(&a.spec, a.udp)?)
        .map_err(|e| CliError::usage(format!("ports rm: {e}")))?;
    let change = PortChange::Remove {
        protocol: key.protocol,
        addr: key.addr,
        host: key.host,
        guest: key.guest,
    };
    let done = ctx
        .vms_if_session()
        .await?
        .change_ports(&VmName::new(&a.name)?, change, a.save)
        .await?;
    report(
        &done,
        a.json,
        "no longer forwards",
        "will no longer forward",
    );
    Ok(())
}

fn report(done: &PortsChanged, json: bool, now: &str, later: &str) {
    if json {
        crate::cli::output::print_json(done);
        return;
    }
    match &done.live {
        Some(f) => {
            let saved = if done.saved {
                " (saved in its definition)"
            } else {
                ""
            };
            println!(
                "{}: {now} {}:{} -> {}/{}{saved}",
                done.vm, f.host_addr, f.host_port, f.guest_port, f.protocol
            );
        }
        None => println!(
            "{}: saved in its definition; the next start {later} it",
            done.vm
        ),
    }
}

pub async fn ssh(ctx: &Ctx, a: &SshArgs) -> Result<(), CliError> {
    let req = SshRequest {
        user: a.user.as_deref(),
        command: &a.command,
        wait: a.wait,
    };
    let vm = VmName::new(&a.name)?;
    let plan = ctx.vms_if_session().await?.ssh_plan(&vm, &req).await?;
    let ssh = std::env::var_os("MAQET_SSH").unwrap_or_else(|| "ssh".into());
    // ssh owns the terminal; its exit status is ours.
    match crate::ssh::session::run(&ssh, &plan.args, &plan.log, plan.retry_until).await {
        Ok(status) => std::process::exit(crate::ssh::session::exit_code(status)),
        Err(err) => Err(CliError::failure(format!(
            "cannot run {}: {err} (install openssh-client)",
            Path::new(&ssh).display()
        ))),
    }
}

pub async fn clone(ctx: &Ctx, a: &CloneArgs) -> Result<(), CliError> {
    let vms = ctx.vms_if_session().await?;
    let (src, dst) = (VmName::new(&a.name)?, VmName::new(&a.new_name)?);
    let cloned = vms.clone_vm(&src, &dst, a.full).await?;
    if !cloned.cleaned.is_empty() {
        let list: Vec<String> = cloned
            .cleaned
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        eprintln!(
            "removed what an interrupted clone to '{}' had left: {}",
            cloned.vm,
            list.join(", ")
        );
    }
    if cloned.nvram_skipped {
        eprintln!(
            "note: '{}' is running, so its UEFI variable store is not copied; '{}' starts with a fresh one from the firmware's template",
            a.name, cloned.vm
        );
    }
    println!("{}", cloned.vm);
    Ok(())
}

pub async fn guest(ctx: &Ctx, a: &GuestArgs) -> Result<(), CliError> {
    let mut guest = ctx
        .vms_if_session()
        .await?
        .guest(&VmName::new(&a.name)?, a.timeout)
        .await?;
    let vm = guest.vm.clone();
    match &a.action {
        GuestAction::Ping => {
            guest.ping()?;
            println!("{vm}: the guest agent answers");
        }
        GuestAction::Info => {
            let i = guest.info()?;
            println!("version: {}", i.version);
            println!("commands: {}", i.commands.join(" "));
        }
        GuestAction::Ip { json } => {
            let v = guest.interfaces()?;
            if *json {
                crate::cli::output::print_json(&v);
            } else {
                for l in crate::guest_agent::describe_interfaces(&v) {
                    println!("{l}");
                }
            }
        }
        GuestAction::Exec { command } => {
            let r = guest.exec(command)?;
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
            let n = guest.fsfreeze()?;
            println!("{vm}: froze {n} file system(s); `maqet guest {vm} fsthaw` thaws them");
        }
        GuestAction::Fsthaw => {
            let n = guest.fsthaw()?;
            println!("{vm}: thawed {n} file system(s)");
        }
    }
    Ok(())
}
