//! Glue between the CLI types and the stage modules: each subcommand turns
//! its arguments into options, calls one `run` function, and prints the
//! result as text or, with `--json`, as `{"version": 1, "command": ...,
//! "result": ...}` on stdout.

use crate::cli::{Cli, Command, InitramfsCmd, ProfileCmd};
use crate::image::Layout;
use crate::{build, doctor, exec, fsutil, kernel, profile, publish};
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Print a result as a versioned JSON envelope.
pub fn print_json<T: Serialize>(command: &str, result: &T) -> Result<()> {
    let v = serde_json::json!({ "version": 1, "command": command, "result": result });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// Run the parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let g = &cli.global;
    exec::set_verbosity(if g.quiet { 0 } else { 1 + g.verbose });
    let layout = Layout {
        base_dir: absolute(&g.base_dir)?,
        tftp_root: absolute(&g.tftp_root)?,
        cache_dir: absolute(&g.cache_dir)?,
    };
    let json = g.json;
    match cli.cmd {
        Command::Build(a) => {
            let loaded = profile::load(&a.profile, &g.etc_dir)?;
            let opts = build::Options {
                force: a.force,
                publish: !a.no_publish,
                mirror: a.mirror,
                wait: g.wait,
                apt_dir: PathBuf::from("/etc/apt"),
                inventory: optional_inventory(&g.inventory)?,
            };
            let s = build::run(&layout, &loaded, &opts)?;
            note_replaced(s.replaced, g.quiet);
            if json {
                print_json("build", &s)?;
            } else if !g.quiet {
                println!(
                    "built image {} at {} ({} packages, {:.0} MB, build {})",
                    s.image,
                    s.path.display(),
                    s.packages,
                    s.size_bytes as f64 / 1e6,
                    s.build_id
                );
                if let Some(p) = &s.published {
                    println!(
                        "published kernel {} to {}",
                        p.default,
                        layout.tftp_root.display()
                    );
                }
            }
        }
        Command::Profile(ProfileCmd::Check { profile: f }) => {
            let l = profile::load(&f, &g.etc_dir)?;
            if json {
                print_json(
                    "profile check",
                    &serde_json::json!({"ok": true, "profile": l.origin}),
                )?;
            } else {
                println!("{}: ok (image {})", l.origin.display(), l.profile.name);
            }
        }
        Command::Profile(ProfileCmd::Show { profile: f }) => {
            let l = profile::load(&f, &g.etc_dir)?;
            if json {
                print_json("profile show", &l.profile)?;
            } else {
                print!(
                    "# effective profile from {}\n{}",
                    l.origin.display(),
                    toml::to_string(&l.profile)?
                );
            }
        }
        Command::Doctor => {
            let checks = doctor::run();
            let mirror = crate::bootstrap::detect_mirror(Path::new("/etc/apt"));
            if json {
                let mirror = mirror.as_ref().ok();
                print_json(
                    "doctor",
                    &serde_json::json!({"checks": checks, "mirror": mirror}),
                )?;
            } else {
                match &mirror {
                    Ok(m) => println!("mirror {m} (from the host's apt sources)\n"),
                    Err(e) => println!("mirror: {e:#}\n"),
                }
                for c in &checks {
                    println!(
                        "{:4} {:50} {:18} {}",
                        if c.ok { "ok" } else { "MISS" },
                        c.what,
                        c.package,
                        c.needed_for
                    );
                }
                let missing: Vec<&str> = checks
                    .iter()
                    .filter(|c| !c.ok)
                    .map(|c| c.package.as_str())
                    .collect();
                if !missing.is_empty() {
                    println!(
                        "\ninstall what is missing with: apt-get install {}",
                        dedup(&missing).join(" ")
                    );
                }
            }
            // Missing optional tools are information, not failure.
        }
        Command::Exec(a) => {
            exec::require_root("nfsroot exec")?;
            let root = layout.existing_image(&a.image)?;
            let _lock = layout.lock(&a.image, "exec", g.wait)?;
            let code = exec::chroot_cmd(&root, &a.command)?.run_inherit()?;
            return Ok(code);
        }
        Command::Publish(a) => {
            let o = publish_saved(&layout, a.image.as_deref(), "publish", false, g.wait)?;
            report_outcome(json, "publish", &o, false)?;
        }
        Command::UpgradeKernel(a) => {
            let o = publish_saved(
                &layout,
                a.image.as_deref(),
                "upgrade-kernel",
                a.dry_run,
                g.wait,
            )?;
            report_outcome(json, "upgrade-kernel", &o, a.dry_run)?;
        }
        Command::Rollback(a) => {
            let image = layout.resolve_image(a.image.as_deref())?;
            let _lock = layout.lock(&image, "rollback", g.wait)?;
            let o = publish::rollback(&layout, &image, a.to.as_deref())?;
            report_outcome(json, "rollback", &o, false)?;
        }
        Command::Status(a) => {
            let image = layout.resolve_image(a.image.as_deref())?;
            let s = publish::status(&layout, &image)?;
            if json {
                print_json("status", &s)?;
            } else {
                print_status(&s);
            }
            if !s.drift.is_empty() {
                return Ok(3);
            }
        }
        Command::Initramfs(InitramfsCmd::Build(a)) => {
            let root = if a.image.contains('/') {
                PathBuf::from(&a.image)
            } else {
                layout.existing_image(&a.image)?
            };
            let img = crate::imagefs::ImageRoot::open(&root)?;
            let k = kernel::select(&img, a.kernel.as_deref())?;
            let spec = crate::initramfs::Spec {
                compression: a.compression.parse()?,
                backend: a.backend.parse()?,
                ..crate::initramfs::Spec::with_modules(&a.modules, &a.exclude)
            };
            let data = crate::initramfs::build_bytes(&img, &k.version, &spec)?;
            fsutil::atomic_write(&a.output, &data)?;
            let r = crate::initramfs::Summary {
                kernel: k.version.clone(),
                bytes: data.len() as u64,
                sha256: fsutil::sha256_bytes(&data),
            };
            if json {
                print_json("initramfs build", &r)?;
            } else if !g.quiet {
                println!(
                    "wrote {} for kernel {}: {} bytes, sha256 {}",
                    a.output.display(),
                    k.version,
                    r.bytes,
                    r.sha256
                );
            }
        }
        Command::Snapshot(a) => {
            use crate::cli::SnapshotCmd;
            use crate::snapshot as snap;
            match a.cmd {
                Some(SnapshotCmd::List { image }) => {
                    let v = snap::run_list(&layout, &snap::ListOpts { image })?;
                    if json {
                        print_json("snapshot list", &v)?;
                    } else {
                        for s in &v {
                            println!(
                                "{}  {:>8.1} MB  {}  {}",
                                s.created.as_deref().unwrap_or("-"),
                                s.bytes as f64 / 1e6,
                                s.kernels.join(","),
                                s.path.display()
                            );
                        }
                    }
                }
                Some(SnapshotCmd::Verify { file }) => {
                    let r = snap::run_verify(&snap::VerifyOpts {
                        file: absolute(&file)?,
                    })?;
                    if json {
                        print_json("snapshot verify", &r)?;
                    } else {
                        println!(
                            "{}: ok ({} entries, sha256 {})",
                            r.path.display(),
                            r.entries,
                            r.sha256
                        );
                    }
                }
                None => {
                    let r = snap::run_snapshot(
                        &layout,
                        &snap::SnapshotOpts {
                            image: a.image,
                            output: a.output.map(|o| absolute(&o)).transpose()?,
                            format: a.format,
                            level: a.level,
                            keep: a.keep,
                            threads: a.threads,
                            wait: g.wait,
                            progress: g.quiet.then_some(false),
                        },
                    )?;
                    if json {
                        print_json("snapshot", &r)?;
                    } else if !g.quiet {
                        println!("wrote {}", r.path.display());
                        println!("      {}", r.checksum_path.display());
                    }
                }
            }
        }
        Command::Restore(a) => {
            let r = crate::snapshot::run_restore(
                &layout,
                &crate::snapshot::RestoreOpts {
                    file: absolute(&a.file)?,
                    image: a.image,
                    force: a.force,
                    no_checksum: a.no_checksum,
                    allow_devices: a.allow_devices,
                    wait: g.wait,
                    progress: g.quiet.then_some(false),
                },
            )?;
            note_replaced(r.replaced, g.quiet);
            if json {
                print_json("restore", &r)?;
            } else if !g.quiet {
                print!("{}", r.text());
            }
        }
        Command::Diff(a) => {
            let d = crate::snapshot::run_diff(
                &layout,
                &crate::snapshot::DiffOpts {
                    image: a.image,
                    file: absolute(&a.file)?,
                },
            )?;
            if json {
                print_json("diff", &d)?;
            } else {
                for p in &d.added {
                    println!("added     {p}");
                }
                for p in &d.removed {
                    println!("removed   {p}");
                }
                for c in &d.modified {
                    println!("modified  {}  ({})", c.path, c.fields.join("; "));
                }
                for c in &d.metadata {
                    println!("metadata  {}  ({})", c.path, c.fields.join("; "));
                }
                if d.is_empty() {
                    println!("no changes since the snapshot");
                }
            }
        }
        Command::Hosts(a) => {
            use crate::cli::HostsArgs;
            use crate::inventory::{
                HostsCmd,
                edit::{AddHost, SetHost},
            };
            let cmd = match a {
                HostsArgs::Add {
                    name,
                    mac,
                    ip,
                    image,
                    group,
                } => HostsCmd::Add(AddHost {
                    name,
                    macs: mac,
                    ip,
                    image,
                    group,
                    ..AddHost::default()
                }),
                HostsArgs::Remove { name } => HostsCmd::Remove { name },
                HostsArgs::List => HostsCmd::List,
                HostsArgs::Set {
                    name,
                    image,
                    localboot,
                    disable,
                    enable,
                    kernel,
                    cmdline,
                } => HostsCmd::Set(SetHost {
                    name,
                    image,
                    localboot,
                    disable,
                    enable,
                    kernel,
                    cmdline,
                }),
                HostsArgs::Import { file, replace } => HostsCmd::Import { file, replace },
            };
            let o = crate::inventory::run_hosts(&layout, &absolute(&g.inventory)?, cmd)?;
            if json {
                print_json("hosts", &o)?;
            } else {
                print!("{}", o.text());
            }
        }
        Command::Sync(a) => {
            let r = crate::inventory::run_sync_with(
                &layout,
                &crate::inventory::SyncOptions {
                    inventory: absolute(&g.inventory)?,
                    etc_dir: absolute(&g.etc_dir)?,
                    dry_run: a.dry_run,
                    wait: g.wait,
                },
            )?;
            if json {
                print_json("sync", &r)?;
            } else if !g.quiet {
                print!("{}", r.text());
            }
        }
        Command::BootTestInner { plan } => crate::boottest::run_inner(&plan)?,
        Command::BootTest(a) => {
            let r = crate::boottest::run(&layout, &a)?;
            if json {
                print_json("boot-test", &r)?;
            } else {
                r.print();
            }
            if !r.passed {
                return Ok(1);
            }
        }
    }
    Ok(0)
}

/// After a build or restore replaced an image's whole tree, say what that
/// means for running nodes (on stderr, so also with `--json`).
fn note_replaced(replaced: bool, quiet: bool) {
    if replaced && !quiet {
        eprintln!(
            "note: the previous tree is gone; nodes still running from it \
             will see stale NFS handles: reboot them"
        );
    }
}

/// The inventory at `path` if the file exists: a build applies it when
/// there is one, and a broken one stops the build before anything changes.
fn optional_inventory(path: &Path) -> Result<Option<crate::inventory::Inventory>> {
    if !path.exists() {
        return Ok(None);
    }
    // Absolute, as sync loads it: the block names the file it came from.
    crate::inventory::load(&absolute(path)?)
        .map(Some)
        .map_err(|e| {
            anyhow::anyhow!(
                "{e:#}\nnote: build reads the inventory because its /etc/hosts block \
             goes into every image; fix it, or pass --inventory FILE"
            )
        })
}

fn dedup<'a>(v: &[&'a str]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for x in v {
        if !out.contains(x) {
            out.push(x);
        }
    }
    out
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("reading the current directory")?
            .join(p))
    }
}

/// Publish an image's newest kernel with the profile it was built from,
/// under the image's lock (`publish` and `upgrade-kernel`).
fn publish_saved(
    layout: &Layout,
    image: Option<&str>,
    op: &str,
    dry_run: bool,
    wait: bool,
) -> Result<publish::Outcome> {
    let image = layout.resolve_image(image)?;
    let root = layout.existing_image(&image)?;
    let _lock = layout.lock(&image, op, wait)?;
    let loaded = crate::state::saved_profile(layout, &image)?;
    publish::publish_with(layout, &loaded.profile, &root, dry_run, &mut |l| {
        eprintln!("{l}")
    })
}

fn report_outcome(json: bool, cmd: &str, o: &publish::Outcome, dry_run: bool) -> Result<()> {
    if json {
        return print_json(cmd, o);
    }
    print!("{}", outcome_text(o, dry_run));
    Ok(())
}

/// What a publish did, or with `dry_run` would do (never "wrote").
fn outcome_text(o: &publish::Outcome, dry_run: bool) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if !o.changed {
        let _ = writeln!(
            s,
            "{}: nothing changed; default boots {}",
            o.image, o.default
        );
        return s;
    }
    let (wrote, removed) = if dry_run {
        ("would write ", "would remove")
    } else {
        ("wrote  ", "removed")
    };
    for w in &o.written {
        let _ = writeln!(s, "{wrote} {}", w.display());
    }
    for r in &o.removed {
        let _ = writeln!(s, "{removed} {}", r.display());
    }
    let _ = writeln!(
        s,
        "{}: default {} {} (kept: {}){}",
        o.image,
        if dry_run { "would boot" } else { "boots" },
        o.default,
        o.kept.join(", "),
        if dry_run {
            "; dry run: nothing written"
        } else {
            ""
        }
    );
    s
}

fn print_status(s: &publish::Status) {
    println!("image     {} ({})", s.image, s.path.display());
    if let Some(b) = s.release.get("BUILD_ID") {
        println!("build     {b}");
    }
    println!("in image  {}", s.kernels_in_image.join(", "));
    for k in &s.published {
        println!(
            "published {} ({}, {})",
            k.version, k.backend, k.published_at
        );
    }
    println!(
        "default   {}",
        s.default_boots.as_deref().unwrap_or("(nothing)")
    );
    if s.drift.is_empty() {
        println!("drift     none");
    }
    for d in &s.drift {
        println!("DRIFT     {d}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_never_says_wrote() {
        let o = publish::Outcome {
            image: "m".into(),
            default: "6.1.0-10".into(),
            changed: true,
            written: vec![PathBuf::from("/tftp/m/vmlinuz-6.1.0-10")],
            removed: vec![PathBuf::from("/tftp/m/vmlinuz-6.1.0-7")],
            kept: vec!["6.1.0-9".into(), "6.1.0-10".into()],
        };
        let dry = outcome_text(&o, true);
        assert!(!dry.contains("wrote") && !dry.contains("removed "), "{dry}");
        assert!(
            dry.contains("would write  /tftp/m/vmlinuz-6.1.0-10\n"),
            "{dry}"
        );
        assert!(
            dry.contains("would remove /tftp/m/vmlinuz-6.1.0-7\n"),
            "{dry}"
        );
        let real = outcome_text(&o, false);
        assert!(
            real.contains("wrote   /tftp/m/vmlinuz-6.1.0-10\n"),
            "{real}"
        );
        assert!(real.contains("m: default boots 6.1.0-10 (kept: 6.1.0-9, 6.1.0-10)\n"));
    }
}
