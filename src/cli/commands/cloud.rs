//! `maqet ports|ssh|clone|guest` (issue 11): front ends over the vm layer
//! (`vm::access`, `vm::clone`, `vm::agent`). Logic lives there; this
//! parses, makes one call and renders.

use std::path::Path;

use crate::cli::args::{CloneArgs, GuestAction, GuestArgs, NameJson, SshArgs};
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::vm::access::SshRequest;
use crate::vmname::VmName;

pub async fn ports(ctx: &Ctx, a: &NameJson) -> Result<(), CliError> {
    let vm = VmName::new(&a.name)?;
    let (_, plan) = ctx.vms_if_session().await?.running_ports(&vm).await?;
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
