//! `maqet launch` and `maqet wait`: pull + define (`vm::launch`), start,
//! wait for ssh (`vm::wait`), and say how to get in.

use std::ffi::OsString;
use std::time::Duration;

use serde_json::json;

use crate::cli::args::{key_values, LaunchArgs, WaitArgs};
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::cli::output::{print_json, print_json_line, print_notice};
use crate::cli::progress::{self, Mode};
use crate::vm::images::{Images, PullOptions};
use crate::vm::launch::{define_launch, LaunchRequest};
use crate::vm::wait::{Readiness, Ready};
use crate::vm::Notice;
use crate::vmname::VmName;

/// How long QEMU gets to answer QMP after `launch` starts it.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The ssh program (`MAQET_SSH`, else `ssh`).
fn ssh_program() -> OsString {
    std::env::var_os("MAQET_SSH").unwrap_or_else(|| "ssh".into())
}

pub fn launch(ctx: &Ctx, a: &LaunchArgs, rt: &tokio::runtime::Runtime) -> Result<(), CliError> {
    let mode = Mode::choose(a.json);
    let images = Images::from_env(
        progress::sink(mode),
        PullOptions {
            insecure: a.insecure_skip_verify,
            ..Default::default()
        },
    )?;
    let req = LaunchRequest {
        image: a.image.clone(),
        name: a.name.as_deref().map(VmName::new).transpose()?,
        cpus: a.cpus,
        memory: a.memory.clone(),
        disk: a.disk.clone(),
        ports: a.ports.clone(),
        set: key_values(&a.set)?,
    };
    // Pulling blocks; it runs before any D-Bus connection exists.
    let launched = define_launch(&ctx.data_dir, &images, &req, &print_notice)?;
    let vm = launched.vm.clone();
    let what = launched
        .image
        .resolved
        .entry
        .as_ref()
        .map(|e| format!("{} ({})", e.name, e.description))
        .unwrap_or_else(|| launched.image.resolved.reference.clone());
    if !a.json {
        eprintln!(
            "defined VM '{vm}' from {what}{}",
            if launched.named_by_maqet {
                " (name made up: use --name to choose one)"
            } else {
                ""
            }
        );
    }
    let result = |started: bool, ready: Option<&Ready>| {
        json!({
            "event": "launched",
            "name": vm.as_str(),
            "image": launched.image.resolved.reference,
            "user": launched.user,
            "base": launched.image.disk.path,
            "started": started,
            "ready": ready,
        })
    };
    if a.no_start {
        if a.json {
            print_json_line(&result(false, None));
        } else {
            println!("{vm}");
            eprintln!("start it with `maqet start {vm}`, then `maqet wait {vm} --for ssh`");
        }
        return Ok(());
    }
    let ready = rt
        .block_on(async {
            // --json: the result line says it; no progress lines.
            let notify = |n: Notice| {
                if !(a.json && matches!(n, Notice::Waiting { .. })) {
                    print_notice(n)
                }
            };
            let ready = ctx
                .vms()
                .await?
                .start_and_wait(
                    &vm,
                    START_TIMEOUT,
                    Readiness::Ssh,
                    a.timeout,
                    &ssh_program(),
                    &notify,
                )
                .await?;
            Ok::<_, CliError>(ready)
        })
        .map_err(|mut e| {
            // The definition stays: it is what the user asked for, and what
            // `maqet logs` and a retry need.
            e.message.push_str(&format!(
                "\n(VM '{vm}' stays defined: `maqet status {vm}` and `maqet logs {vm}` show why; `maqet start {vm}` tries again, `maqet rm --force --delete-storage {vm}` removes it)"
            ));
            e
        })?;
    if a.json {
        print_json_line(&result(true, Some(&ready)));
        return Ok(());
    }
    println!("{vm}");
    eprintln!(
        "ready after {:.0}s ({}). Get in with:\n  maqet ssh {vm}\nmore: maqet console {vm} | maqet stop {vm} | maqet rm --delete-storage {vm}",
        ready.waited_ms as f64 / 1000.0,
        ready.detail
    );
    Ok(())
}

pub async fn wait(ctx: &Ctx, a: &WaitArgs) -> Result<(), CliError> {
    let what = match a.what.as_str() {
        "agent" => Readiness::Agent,
        "cloud-init" => Readiness::CloudInit,
        _ => Readiness::Ssh,
    };
    let ready = ctx
        .vms_if_session()
        .await?
        .wait_ready(&VmName::new(&a.name)?, what, a.timeout, &ssh_program())
        .await?;
    if a.json {
        print_json(&ready);
        return Ok(());
    }
    match &ready.cloud_init {
        Some(r) => {
            println!(
                "{}: cloud-init {} ({}; read through the {})",
                ready.vm,
                r.status,
                r.datasource.as_deref().unwrap_or("no datasource named"),
                r.via
            );
            for w in &r.warnings {
                eprintln!("  {w}");
            }
        }
        None => println!("{}: {} ready ({})", ready.vm, a.what, ready.detail),
    }
    Ok(())
}
