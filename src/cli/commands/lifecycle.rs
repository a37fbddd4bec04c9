//! `maqet start|stop|restart`: parse, one call into the vm layer per VM,
//! render. Several names run concurrently on one systemd connection, one
//! line each; the exit code is the worst VM's (`exit::worst`).

use futures_util::future::join_all;

use crate::cli::args::{RestartArgs, StartArgs, StopArgs};
use crate::cli::confirm::{cancelled, discard_states};
use crate::cli::context::Ctx;
use crate::cli::exit::{worst, CliError};
use crate::cli::output::{print_json, print_notice};
use crate::systemd::Systemd;
use crate::vm::agent::AgentStop;
use crate::vm::{Vms, Wait};
use crate::vmname::VmName;

pub async fn start(ctx: &Ctx, a: &StartArgs) -> Result<(), CliError> {
    let wait = match a.no_wait {
        true => Wait::Queued,
        false => Wait::Ready,
    };
    if let [name] = a.names.as_slice() {
        // An unknown VM is "no such VM" before anything else is asked;
        // the one handle on the database serves the whole start.
        let vm = VmName::new(name)?;
        let store = crate::vm::store_for(&ctx.data_dir, &vm)?;
        let vms = ctx.vms().await?;
        ask_fresh(&vms, a, std::slice::from_ref(&vm))?;
        vms.start_in(store, &vm, a.timeout, wait, a.fresh, &print_notice)
            .await?;
        if a.no_wait {
            println!("{}", queued(&vm));
        }
        return Ok(());
    }
    let (known, vms) = connect(ctx, &a.names).await?;
    if let Some(vms) = &vms {
        let names: Vec<VmName> = known.iter().flatten().cloned().collect();
        ask_fresh(vms, a, &names)?;
    }
    let runs = known.into_iter().map(|k| {
        let vms = vms.as_ref();
        async move {
            let (vm, vms) = usable(k, vms)?;
            vms.start_with(&vm, a.timeout, wait, a.fresh, &print_notice)
                .await?;
            Ok::<_, CliError>(vm)
        }
    });
    let results = join_all(runs).await;
    let mut codes = Vec::new();
    for (name, r) in a.names.iter().zip(results) {
        match r {
            Ok(vm) if a.no_wait => println!("{}", queued(&vm)),
            Ok(vm) => println!("{vm}: started"),
            Err(e) => {
                eprintln!("{name}: {}", e.message);
                codes.push(e.code);
            }
        }
    }
    summary(codes, a.names.len(), "start")
}

pub async fn stop(ctx: &Ctx, a: &StopArgs) -> Result<(), CliError> {
    if let [name] = a.names.as_slice() {
        let (vm, _) = ctx.vm(name)?;
        let vms = ctx.vms().await?;
        let stopped = vms.stop_via_agent(&vm, a.timeout, a.force).await?;
        if a.json {
            print_json(&stop_json(&vm, &stopped));
            return Ok(());
        }
        match stopped.message() {
            Some(m) => println!("{vm}: {m}"),
            None => eprintln!("{vm} is not running"),
        }
        return Ok(());
    }
    let (known, vms) = connect(ctx, &a.names).await?;
    let runs = known.into_iter().map(|k| {
        let vms = vms.as_ref();
        async move {
            let (vm, vms) = usable(k, vms)?;
            let stopped = vms.stop_via_agent(&vm, a.timeout, a.force).await?;
            Ok::<_, CliError>((vm, stopped))
        }
    });
    let results = join_all(runs).await;
    let mut codes = Vec::new();
    let mut json = Vec::new();
    for (name, r) in a.names.iter().zip(results) {
        match r {
            Ok::<_, CliError>((vm, stopped)) if a.json => json.push(stop_json(&vm, &stopped)),
            Ok::<_, CliError>((vm, stopped)) => match stopped.message() {
                Some(m) => println!("{vm}: {m}"),
                None => println!("{vm}: not running"),
            },
            Err(e) => {
                if a.json {
                    json.push(serde_json::json!({
                        "name": name, "error": e.message, "exit_code": e.code,
                    }));
                } else {
                    eprintln!("{name}: {}", e.message);
                }
                codes.push(e.code);
            }
        }
    }
    if a.json {
        print_json(&serde_json::Value::Array(json));
    }
    summary(codes, a.names.len(), "stop")
}

pub async fn restart(ctx: &Ctx, a: &RestartArgs) -> Result<(), CliError> {
    let (vm, _) = ctx.vm(&a.name)?;
    let vms = ctx.vms().await?;
    Ok(vms.restart(&vm, a.timeout, &print_notice).await?)
}

/// `start --fresh`: asks once, before anything starts, whether to discard
/// the saved states of those of `names` that have one.
fn ask_fresh(vms: &Vms<Systemd>, a: &StartArgs, names: &[VmName]) -> Result<(), CliError> {
    if !a.fresh {
        return Ok(());
    }
    let mut saved = Vec::new();
    for vm in names {
        if let Some(s) = vms.saved_state(vm)? {
            saved.push((vm.clone(), crate::vm::SavedView::of(&s)));
        }
    }
    match discard_states(&saved, a.yes, "start --fresh")? {
        true => Ok(()),
        false => Err(cancelled("nothing was started; the saved state stays")),
    }
}

/// What `start --no-wait` says per VM: queued, and where to follow it.
fn queued(vm: &VmName) -> String {
    format!(
        "{vm}: start queued (follow: `maqet status {vm}`, `journalctl --user -u {}`)",
        vm.service_unit()
    )
}

fn stop_json(vm: &VmName, stopped: &AgentStop) -> serde_json::Value {
    serde_json::json!({
        "name": vm.to_string(),
        "was_running": stopped.outcome.is_some(),
        "outcome": stopped.outcome,
        "guest_agent": stopped.via_agent,
        "message": stopped.message(),
    })
}

/// Each name looked up (an unknown one fails alone); systemd connected
/// once, when any name is known.
async fn connect(
    ctx: &Ctx,
    names: &[String],
) -> Result<(Vec<Result<VmName, CliError>>, Option<Vms<Systemd>>), CliError> {
    let known: Vec<_> = names.iter().map(|n| ctx.vm(n).map(|(vm, _)| vm)).collect();
    let vms = match known.iter().any(Result::is_ok) {
        true => Some(ctx.vms().await?),
        false => None,
    };
    Ok((known, vms))
}

fn usable(
    known: Result<VmName, CliError>,
    vms: Option<&Vms<Systemd>>,
) -> Result<(VmName, &Vms<Systemd>), CliError> {
    let vm = known?;
    // `connect` connects whenever a name is known.
    let vms = vms.ok_or_else(|| CliError::failure("no systemd connection"))?;
    Ok((vm, vms))
}

/// The worst VM's exit code, with a count of the failed ones.
fn summary(codes: Vec<i32>, total: usize, verb: &str) -> Result<(), CliError> {
    if codes.is_empty() {
        return Ok(());
    }
    let n = codes.len();
    Err(CliError::new(
        worst(codes),
        format!("{n} of {total} VMs did not {verb}"),
    ))
}
