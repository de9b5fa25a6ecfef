//! Glue between the CLI types and the stage modules: each subcommand turns
//! its arguments into options, calls one `run` function, and prints the
//! result as text or, with `--json`, as `{"version": 1, "command": ...,
//! "result": ...}` on stdout.

use crate::cli::{
    BootMethodArg, BootTestArgs, BuildArgs, Cli, Command, DhcpArg, DiffArgs, ExecArgs, FirmwareArg,
    GcArgs, Global, HostsArgs, ImageArg, InitramfsBuildArgs, InitramfsCmd, NodesArgs, ProfileCmd,
    RestoreArgs, RollbackArgs, SnapshotArgs, SnapshotCmd, SyncArgs,
};
use crate::image::Layout;
use crate::inventory::{
    self, HostsCmd,
    edit::{AddHost, SetHost},
};
use crate::snapshot as snap;
use crate::{build, doctor, exec, fsutil, initramfs, kernel, profile, publish};
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Print a result as a versioned JSON envelope.
pub fn print_json<T: Serialize>(command: &str, result: &T) -> Result<()> {
    let v = serde_json::json!({ "version": 1, "command": command, "result": result });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// What every subcommand gets: the global flags and the paths they name.
struct Ctx<'a> {
    g: &'a Global,
    layout: Layout,
}

impl Ctx<'_> {
    /// Print a result: the JSON envelope with `--json`, else `text` (which
    /// `--quiet` silences when `quiet_ok`).
    fn emit<T: Serialize>(&self, command: &str, r: &T, text: &str, quiet_ok: bool) -> Result<()> {
        if self.g.json {
            print_json(command, r)
        } else {
            if !(quiet_ok && self.g.quiet) {
                print!("{text}");
            }
            Ok(())
        }
    }
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
    let cx = Ctx { g, layout };
    match cli.cmd {
        Command::Build(a) => cmd_build(&cx, a),
        Command::Profile(c) => cmd_profile(&cx, c),
        Command::Doctor => cmd_doctor(&cx),
        Command::Exec(a) => cmd_exec(&cx, a),
        Command::Update(a) => cmd_update(&cx, a),
        Command::Gc(a) => cmd_gc(&cx, a),
        Command::Publish(a) => cmd_publish(&cx, a.image.as_deref(), "publish", false),
        Command::UpgradeKernel(a) => {
            cmd_publish(&cx, a.image.as_deref(), "upgrade-kernel", a.dry_run)
        }
        Command::Rollback(a) => cmd_rollback(&cx, a),
        Command::Status(a) => cmd_status(&cx, a),
        Command::Initramfs(InitramfsCmd::Build(a)) => cmd_initramfs(&cx, a),
        Command::Snapshot(a) => cmd_snapshot(&cx, a),
        Command::Restore(a) => cmd_restore(&cx, a),
        Command::Diff(a) => cmd_diff(&cx, a),
        Command::Hosts(a) => cmd_hosts(&cx, a),
        Command::Sync(a) => cmd_sync(&cx, a),
        Command::Nodes(a) => cmd_nodes(&cx, a),
        Command::Man { dir } => crate::docs::write_man_pages(&dir).map(|_| 0),
        Command::Completions { shell } => crate::docs::print_completions(shell).map(|()| 0),
        Command::BootTestInner { plan } => crate::boottest::run_inner(&plan).map(|()| 0),
        Command::BootTest(a) => cmd_boot_test(&cx, a),
    }
}

fn cmd_build(cx: &Ctx, a: BuildArgs) -> Result<i32> {
    let g = cx.g;
    let loaded = profile::load(&a.profile, &g.etc_dir)?;
    let opts = build::Options {
        force: a.force,
        publish: !a.no_publish,
        mirror: a.mirror,
        wait: g.wait,
        apt_dir: PathBuf::from("/etc/apt"),
        inventory: optional_inventory(&g.inventory)?,
    };
    let s = build::run(&cx.layout, &loaded, &opts)?;
    note_replaced(s.replaced, g.quiet);
    cx.emit("build", &s, &s.text(&cx.layout.tftp_root), true)?;
    Ok(0)
}

fn cmd_profile(cx: &Ctx, c: ProfileCmd) -> Result<i32> {
    match c {
        ProfileCmd::Check { profile: f } => {
            let l = profile::load(&f, &cx.g.etc_dir)?;
            let text = format!("{}: ok (image {})\n", l.origin.display(), l.profile.name);
            let r = serde_json::json!({"ok": true, "profile": l.origin});
            cx.emit("profile check", &r, &text, false)?;
        }
        ProfileCmd::Show { profile: f } => {
            let l = profile::load(&f, &cx.g.etc_dir)?;
            let text = format!(
                "# effective profile from {}\n{}",
                l.origin.display(),
                toml::to_string(&l.profile)?
            );
            cx.emit("profile show", &l.profile, &text, false)?;
        }
    }
    Ok(0)
}

fn cmd_doctor(cx: &Ctx) -> Result<i32> {
    let f = doctor::findings(Path::new("/etc/apt"));
    cx.emit("doctor", &f, &f.text(), false)?;
    Ok(0)
}

fn cmd_exec(cx: &Ctx, a: ExecArgs) -> Result<i32> {
    exec::require_root("nfsroot exec")?;
    let root = cx.layout.existing_image(&a.image)?;
    let _lock = cx.layout.lock(&a.image, "exec", cx.g.wait)?;
    if publish::Record::load(&cx.layout, &a.image)?.is_some() && !cx.g.quiet {
        eprintln!("{}", exec::live_tree_warning(&a.image));
    }
    exec::chroot_cmd(&root, &a.command)?.run_inherit()
}

fn cmd_update(cx: &Ctx, a: ExecArgs) -> Result<i32> {
    let opts = crate::update::Options {
        image: a.image,
        command: a.command,
        wait: cx.g.wait,
    };
    let s = crate::update::run(&cx.layout, &opts)?;
    cx.emit("update", &s, &s.text(), true)?;
    Ok(0)
}

fn cmd_gc(cx: &Ctx, a: GcArgs) -> Result<i32> {
    let opts = crate::gc::Options {
        image: a.image,
        dry_run: a.dry_run,
        wait: cx.g.wait,
    };
    let r = crate::gc::run(&cx.layout, &opts)?;
    let text: String = r.iter().map(crate::gc::Report::text).collect();
    cx.emit("gc", &r, &text, false)?;
    Ok(0)
}

/// Publish an image's newest kernel with the profile it was built from,
/// under the image's lock (`publish` and `upgrade-kernel`).
fn cmd_publish(cx: &Ctx, image: Option<&str>, op: &str, dry_run: bool) -> Result<i32> {
    let layout = &cx.layout;
    let image = layout.resolve_image(image)?;
    let root = layout.existing_image(&image)?;
    let _lock = layout.lock(&image, op, cx.g.wait)?;
    let loaded = crate::state::saved_profile(layout, &image)?;
    let o = publish::publish_with(layout, &loaded.profile, &root, dry_run, &mut |l| {
        eprintln!("{l}")
    })?;
    cx.emit(op, &o, &o.text(dry_run), false)?;
    Ok(0)
}

fn cmd_rollback(cx: &Ctx, a: RollbackArgs) -> Result<i32> {
    let image = cx.layout.resolve_image(a.image.as_deref())?;
    let _lock = cx.layout.lock(&image, "rollback", cx.g.wait)?;
    if let Some(id) = a.tree {
        let previous = crate::image::switch_to(&cx.layout, &image, &id)?;
        let published = snap::publish_if_published(&cx.layout, &image)?;
        let mut text = format!("image {image}: version {id} is current; version {previous} kept\n");
        if let Some(p) = &published {
            text += &p.text(false);
        }
        let r = serde_json::json!({"image": image, "version": id, "previous": previous, "published": published});
        cx.emit("rollback", &r, &text, false)?;
        return Ok(0);
    }
    let o = publish::rollback(&cx.layout, &image, a.to.as_deref())?;
    cx.emit("rollback", &o, &o.text(false), false)?;
    Ok(0)
}

/// Exit code 3 when the published files drifted from the record.
fn cmd_status(cx: &Ctx, a: ImageArg) -> Result<i32> {
    let image = cx.layout.resolve_image(a.image.as_deref())?;
    let s = publish::status(&cx.layout, &image)?;
    let trees = crate::versions::rows(&cx.layout, &image)?;
    let mut text = s.text();
    for t in &trees {
        text += &t.line();
    }
    let drift = s.drift.is_empty();
    let r = StatusOut { status: s, trees };
    cx.emit("status", &r, &text, false)?;
    Ok(if drift { 0 } else { 3 })
}

/// `status` with the image's tree versions.
#[derive(Serialize)]
struct StatusOut {
    #[serde(flatten)]
    status: publish::Status,
    trees: Vec<crate::versions::TreeRow>,
}

fn cmd_initramfs(cx: &Ctx, a: InitramfsBuildArgs) -> Result<i32> {
    let root = if a.image.contains('/') {
        PathBuf::from(&a.image)
    } else {
        cx.layout.existing_image(&a.image)?
    };
    let img = crate::imagefs::ImageRoot::open(&root)?;
    let k = kernel::select(&img, a.kernel.as_deref())?;
    let mut spec = initramfs::Spec {
        compression: a.compression.parse()?,
        backend: a.backend.parse()?,
        ..initramfs::Spec::with_modules(&a.modules, &a.exclude)
    };
    if !a.net_drivers.is_empty() {
        spec.modules.net_drivers = Some(a.net_drivers);
    }
    // As for a profile's keys (profile::validate): mkinitramfs picks its
    // own modules, so module choices with it are errors, not ignored.
    if spec.backend == initramfs::Backend::InitramfsTools
        && !(a.modules.is_empty() && a.exclude.is_empty() && spec.modules.net_drivers.is_none())
    {
        anyhow::bail!(
            "--module, --exclude-module and --net-driver apply to --backend nfsroot only: \
             initramfs-tools (MODULES=netboot) picks its own modules"
        );
    }
    let data = initramfs::build_bytes(&img, &k.version, &spec)?;
    fsutil::atomic_write(&a.output, &data)?;
    let r = initramfs::Summary {
        kernel: k.version.clone(),
        bytes: data.len() as u64,
        sha256: fsutil::sha256_bytes(&data),
    };
    let text = format!(
        "wrote {} for kernel {}: {} bytes, sha256 {}\n",
        a.output.display(),
        k.version,
        r.bytes,
        r.sha256
    );
    cx.emit("initramfs build", &r, &text, true)?;
    Ok(0)
}

fn cmd_snapshot(cx: &Ctx, a: SnapshotArgs) -> Result<i32> {
    match a.cmd {
        Some(SnapshotCmd::List { image }) => {
            let image = cx.layout.resolve_image(image.as_deref())?;
            let opts = snap::ListOpts {
                image: Some(image.clone()),
            };
            let v = snap::run_list(&cx.layout, &opts)?;
            let text = snap::list_text(&cx.layout, &image, &v);
            cx.emit("snapshot list", &v, &text, false)?;
        }
        Some(SnapshotCmd::Verify { file }) => {
            let file = absolute(&file)?;
            let r = snap::run_verify(&snap::VerifyOpts { file })?;
            cx.emit("snapshot verify", &r, &r.text(), false)?;
        }
        None => {
            let opts = snap::SnapshotOpts {
                image: a.image,
                tree: a.tree,
                output: a.output.map(|o| absolute(&o)).transpose()?,
                format: a.format,
                level: a.level,
                keep: a.keep,
                threads: a.threads,
                wait: cx.g.wait,
                progress: cx.g.quiet.then_some(false),
            };
            let r = snap::run_snapshot(&cx.layout, &opts)?;
            cx.emit("snapshot", &r, &r.text(), true)?;
        }
    }
    Ok(0)
}

fn cmd_restore(cx: &Ctx, a: RestoreArgs) -> Result<i32> {
    let opts = snap::RestoreOpts {
        file: absolute(&a.file)?,
        image: a.image,
        force: a.force,
        no_checksum: a.no_checksum,
        allow_devices: a.allow_devices,
        wait: cx.g.wait,
        progress: cx.g.quiet.then_some(false),
    };
    let r = snap::run_restore(&cx.layout, &opts)?;
    note_replaced(r.replaced, cx.g.quiet);
    cx.emit("restore", &r, &r.text(), true)?;
    Ok(0)
}

fn cmd_diff(cx: &Ctx, a: DiffArgs) -> Result<i32> {
    let opts = snap::DiffOpts {
        image: a.image,
        tree: a.tree,
        file: absolute(&a.file)?,
    };
    let d = snap::run_diff(&cx.layout, &opts)?;
    cx.emit("diff", &d, &d.text(), false)?;
    Ok(0)
}

fn cmd_hosts(cx: &Ctx, a: HostsArgs) -> Result<i32> {
    let o = inventory::run_hosts(&cx.layout, &absolute(&cx.g.inventory)?, hosts_cmd(a))?;
    cx.emit("hosts", &o, &o.text(), false)?;
    Ok(0)
}

/// The CLI's `hosts` arguments as the inventory's edit command.
fn hosts_cmd(a: HostsArgs) -> HostsCmd {
    match a {
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
            firmware,
        } => HostsCmd::Set(SetHost {
            name,
            image,
            localboot,
            disable,
            enable,
            kernel,
            cmdline,
            firmware,
        }),
        HostsArgs::Import { file, replace } => HostsCmd::Import { file, replace },
    }
}

fn cmd_sync(cx: &Ctx, a: SyncArgs) -> Result<i32> {
    let opts = inventory::SyncOptions {
        inventory: absolute(&cx.g.inventory)?,
        etc_dir: absolute(&cx.g.etc_dir)?,
        dry_run: a.dry_run,
        wait: cx.g.wait,
    };
    let r = inventory::run_sync_with(&cx.layout, &opts)?;
    cx.emit("sync", &r, &r.text(), true)?;
    Ok(0)
}

fn cmd_nodes(cx: &Ctx, a: NodesArgs) -> Result<i32> {
    let inv = inventory::load(&absolute(&cx.g.inventory)?)?;
    let now = crate::clock::now_secs();
    let r = crate::nodes::list(&cx.layout, &inv, a.stale_after, now)?;
    cx.emit("nodes", &r, &r.text(), false)?;
    Ok(0)
}

/// Exit code 1 when the node did not boot as expected.
fn cmd_boot_test(cx: &Ctx, a: BootTestArgs) -> Result<i32> {
    if a.dhcp.is_some() && a.host.is_none() && a.hosts.is_empty() {
        anyhow::bail!("--dhcp boots inventory hosts: name them with --host or --hosts");
    }
    let opts = crate::boottest::Options {
        image: a.image,
        method: match a.mode {
            BootMethodArg::Direct => crate::boottest::BootMethod::Direct,
            BootMethodArg::Pxe => crate::boottest::BootMethod::Pxe,
        },
        mac: a.mac,
        ip: a.ip,
        per_host: a.per_host,
        machine: crate::boottest::Machine {
            firmware: match a.firmware {
                FirmwareArg::Bios => crate::boottest::Firmware::Bios,
                FirmwareArg::Uefi => crate::boottest::Firmware::Uefi,
            },
            secure_boot: a.secure_boot,
            pxelinux: a.pxelinux,
        },
        timeout: a.timeout,
        keep_logs: a.keep_logs,
        accel: a.accel,
        memory: a.memory,
        // One CPU per VM when several share the host's cores.
        cpus: a.cpus.unwrap_or(if a.hosts.is_empty() { 2 } else { 1 }),
        kernel: a.kernel,
        initrd: a.initrd,
        append: a.append,
        expect_hostname: a.expect_hostname,
        expect_no_boot: a.expect_no_boot,
        write_root: a.write_root,
        until_poweroff: a.until_poweroff,
        no_analysis: a.no_analysis,
        lan: a.dhcp.map(|d| crate::boottest::LanOptions {
            host: a.host.clone().unwrap_or_default(),
            dhcp: match d {
                DhcpArg::Dnsmasq => crate::boottest::Dhcp::Dnsmasq,
                DhcpArg::Dhcpd => crate::boottest::Dhcp::Dhcpd,
            },
            inventory: cx.g.inventory.clone(),
            etc_dir: cx.g.etc_dir.clone(),
        }),
    };
    if !a.hosts.is_empty() {
        let r = crate::boottest::run_hosts(&cx.layout, &opts, &a.hosts)?;
        cx.emit("boot-test", &r, &r.to_string(), false)?;
        return Ok(if r.passed { 0 } else { 1 });
    }
    let r = crate::boottest::run(&cx.layout, &opts)?;
    if cx.g.json {
        print_json("boot-test", &r)?;
    } else {
        r.print();
    }
    Ok(if r.passed { 0 } else { 1 })
}

/// After a build or restore replaced an image's whole tree, say what that
/// means for running nodes (on stderr, so also with `--json`).
fn note_replaced(replaced: bool, quiet: bool) {
    if replaced && !quiet {
        eprintln!(
            "note: the previous tree is kept as a version (nfsroot status); nodes \
             running from it keep it until they reboot; nfsroot gc removes it later"
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

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("reading the current directory")?
            .join(p))
    }
}
