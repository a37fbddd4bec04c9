//! `maqet image pull|ls|catalog|rm|prune`: front ends over `image` (the
//! catalog, the cache, pulls) and `vm::image_cache` (what VMs use).

use serde_json::json;

use crate::cli::args::{ImageCommand, ImageLsArgs, ImagePruneArgs, ImagePullArgs, ImageRmArgs};
use crate::cli::context::Ctx;
use crate::cli::exit::CliError;
use crate::cli::output::{human_bytes, print_json, print_json_line, render_table, rfc3339_utc};
use crate::cli::progress::{self, Mode};
use crate::image::{Cache, Catalog};
use crate::vm::images::{pull_image, Images, PullOptions};

pub fn run(ctx: &Ctx, c: ImageCommand, rt: &tokio::runtime::Runtime) -> Result<(), CliError> {
    match c {
        ImageCommand::Pull(a) => pull(&a),
        ImageCommand::Ls(a) => rt.block_on(ls(ctx, &a)),
        ImageCommand::Catalog(a) => catalog(&a),
        ImageCommand::Rm(a) => rt.block_on(rm(ctx, &a)),
        ImageCommand::Prune(a) => rt.block_on(prune(ctx, &a)),
    }
}

fn pull(a: &ImagePullArgs) -> Result<(), CliError> {
    let mode = Mode::choose(a.json);
    let images = Images::from_env(
        progress::sink(mode),
        PullOptions {
            insecure: a.insecure_skip_verify,
            qcow2: a.qcow2,
            refresh: true,
            digest: a.digest.clone(),
            checksums: a.checksums.clone(),
        },
    )?;
    let cwd = std::env::current_dir()?;
    let p = pull_image(&images, &a.image, &cwd)?;
    let files: Vec<_> = [Some(&p.disk), p.kernel.as_ref(), p.initrd.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    if a.json {
        print_json_line(&json!({
            "event": "pulled",
            "image": a.image,
            "files": files.iter().map(|f| json!({
                "url": f.entry.url,
                "file": f.path,
                "sha256": f.entry.blob_hex(),
                "size": f.entry.size,
                "format": f.entry.format,
                "verified": f.entry.verified,
                "cached": f.cached,
                "note": f.note,
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    for f in &files {
        if let Some(n) = &f.note {
            eprintln!("maqet: note: {n}");
        }
        let how = match &f.entry.verified {
            Some(v) => format!("verified {} by {}", v.digest, v.by),
            None => "UNVERIFIED".to_string(),
        };
        println!(
            "{}  {} ({}, {how})",
            f.path.display(),
            human_bytes(f.entry.size),
            f.entry.format
        );
    }
    Ok(())
}

async fn ls(ctx: &Ctx, a: &ImageLsArgs) -> Result<(), CliError> {
    let cache = Cache::from_env()?;
    let listing = ctx
        .vms_if_session()
        .await?
        .cached_images(&cache, &Catalog::from_env())
        .await?;
    if a.json {
        print_json(&listing);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = listing
        .images
        .iter()
        .map(|i| {
            vec![
                if i.names.is_empty() {
                    "-".into()
                } else {
                    i.names.join(",")
                },
                i.sha256[..12].to_string(),
                human_bytes(i.size),
                match i.status {
                    "verified" => "verified".into(),
                    "unverified" => "UNVERIFIED".into(),
                    other => other.to_string(),
                },
                i.pulled.map(rfc3339_utc).unwrap_or_else(|| "-".into()),
                if i.used_by.is_empty() {
                    "-".into()
                } else {
                    i.used_by.join("; ")
                },
                i.url.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    if rows.is_empty() {
        eprintln!("no images in {}", listing.dir.display());
    } else {
        print!(
            "{}",
            render_table(
                &["NAME", "SHA256", "SIZE", "VERIFIED", "PULLED", "USED BY", "URL"],
                &rows
            )
        );
    }
    for p in &listing.partial {
        eprintln!(
            "unfinished download: {} ({} so far; the next pull resumes it, `maqet image prune` removes it)",
            p.url,
            human_bytes(p.size)
        );
    }
    Ok(())
}

fn catalog(a: &ImageLsArgs) -> Result<(), CliError> {
    let catalog = Catalog::from_env();
    let arch = crate::image::host_arch();
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    let mut broken = Vec::new();
    for e in catalog.list() {
        match e {
            Ok(e) => {
                let img = e.arch.get(arch);
                json_rows.push(json!({
                    "name": e.name,
                    "description": e.description,
                    "file": e.file,
                    "origin": e.origin,
                    "arches": e.arch.keys().collect::<Vec<_>>(),
                    "location": img.map(|i| i.disk.location.to_string()),
                    "defaults": {
                        "memory": e.defaults.memory, "cpu": e.defaults.cpu,
                        "disk": e.defaults.disk, "user": e.defaults.user,
                    },
                }));
                rows.push(vec![
                    e.name.clone(),
                    if img.is_some() {
                        arch.into()
                    } else {
                        format!("(not {arch})")
                    },
                    match e.origin {
                        crate::image::catalog::Origin::User => "user".into(),
                        crate::image::catalog::Origin::Package => "package".into(),
                    },
                    e.description.clone(),
                ]);
            }
            Err(err) => broken.push(err.to_string()),
        }
    }
    if a.json {
        print_json(&json_rows);
    } else if rows.is_empty() {
        eprintln!(
            "the catalog is empty (looked in {})",
            catalog
                .dirs
                .iter()
                .map(|(d, _)| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    } else {
        print!(
            "{}",
            render_table(&["NAME", "ARCH", "FROM", "DESCRIPTION"], &rows)
        );
    }
    for b in &broken {
        eprintln!("maqet: {b}");
    }
    match broken.is_empty() {
        true => Ok(()),
        false => Err(CliError::new(
            crate::cli::exit::code::INVALID_CONFIG,
            format!("{} catalog file(s) are broken (above)", broken.len()),
        )),
    }
}

fn waiting() {
    eprintln!("maqet: waiting for a pull in progress to finish");
}

async fn rm(ctx: &Ctx, a: &ImageRmArgs) -> Result<(), CliError> {
    let cache = Cache::from_env()?;
    let done = ctx
        .vms_if_session()
        .await?
        .remove_images(&cache, &Catalog::from_env(), &a.images, &waiting)
        .await?;
    for p in &done.removed {
        println!("removed {}", p.display());
    }
    if done.removed.is_empty() {
        println!(
            "removed the cache entries (their files stay: another URL names the same content)"
        );
    }
    Ok(())
}

async fn prune(ctx: &Ctx, a: &ImagePruneArgs) -> Result<(), CliError> {
    let cache = Cache::from_env()?;
    let done = ctx
        .vms_if_session()
        .await?
        .prune_images(&cache, a.dry_run, &waiting)
        .await?;
    if a.json {
        print_json(&json!({
            "dry_run": a.dry_run,
            "removed": done.removed,
            "freed": done.freed,
            "kept": done.kept.iter().map(|(p, u)| json!({"file": p, "used_by": u})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let verb = if a.dry_run { "would remove" } else { "removed" };
    for p in &done.removed {
        println!("{verb} {}", p.display());
    }
    for (p, u) in &done.kept {
        println!("kept {} ({u})", p.display());
    }
    println!(
        "{verb} {} in {} file(s)",
        human_bytes(done.freed),
        done.removed.len()
    );
    Ok(())
}
