//! `nfsroot boot-test`: prove an image boots by booting it.
//!
//! The command re-executes itself (`nfsroot boot-test-inner`) under
//! `unshare --net --mount --pid --fork --kill-child`, so everything it
//! starts lives in private namespaces: a private loopback that QEMU's
//! user-mode network reaches as 10.0.2.2, a private /run for rpcbind, and a
//! pid namespace whose init is the inner process, so nothing outlives the
//! command. Inside: rpcbind, nfs-ganesha exporting the image read-only (and
//! the per-host log export read-write), then QEMU booting either the
//! published kernel directly or over QEMU's built-in TFTP: SeaBIOS, iPXE,
//! pxelinux.0 and pxelinux.cfg, or (`--firmware uefi`) OVMF, shimx64.efi,
//! grubx64.efi and grub/, with Secure Boot on if asked. A watcher reads
//! the serial console from the firmware's first output, times the boot
//! stages, and stops at the node's `nfsroot: <host> <ip> ...` line or at a
//! known failure. Every process is stopped by PID (TERM, then KILL
//! after a timeout) on every exit path, Ctrl-C included.
//!
//! The image is exported read-only, so a test never changes it; a profile
//! with a read-write root is booted read-only and the report says so, unless
//! `--write-root` asks to boot it as deployed (for a copy made to test).
//! The profile boots as written: QEMU's user network takes the /24 of its
//! `nfs.server` with the host (this namespace's loopback) at that address,
//! and each `[[mounts]]` source is served from the work directory (a fresh
//! directory holding [`MOUNT_MARKER`], ro or rw as the mount says), which the
//! node's `nfs=` field must list. `--until-poweroff` lets a node that runs
//! something after its report (a test unit) finish and power off.
//!
//! Layout: this file is the plan ([`run`]: what to boot, what the node must
//! report, written to `plan.json` as a [`BootPlan`]) and the final verdict;
//! `runner.rs` the namespace runner (unshare, rpcbind, ganesha, QEMU, PIDs);
//! `lan.rs` the cluster in a box (`--host NAME --dhcp dnsmasq|dhcpd`: a
//! bridge at the inventory's server address, the real DHCP and TFTP
//! daemons on the configs `sync` wrote, and the TFTP log's checks;
//! `lan/storm.rs` several hosts at once, `--hosts`);
//! `console.rs` the pure console watcher (console bytes and times in,
//! stages, node line, failures and the verdict out; tested on the recorded
//! consoles in `tests/corpus/consoles/`); `firmware.rs` the VM's firmware
//! and machine (BIOS, or OVMF with or without Secure Boot); `tftp.rs` the
//! TFTP view of a PXE test; `report.rs` the [`BootReport`], its checks and
//! its printing.

pub mod console;
mod firmware;
mod lan;
mod report;
mod runner;
mod tftp;

pub use console::{parse_node_line, strip_ansi};
pub use firmware::{Firmware, Machine};
pub use lan::{Dhcp, LanOptions, run_hosts};
pub use report::{BootReport, ServerLoad, StormReport, Timings};
pub use runner::run_inner;

use crate::exec::{self, Tool};
use crate::fsutil;
use crate::image::Layout;
use crate::imagefs::ImageRoot;
use crate::publish;
use crate::pxelinux;
use anyhow::{Context, Result, bail};
use report::Expect;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

pub const QEMU: Tool = Tool {
    name: "qemu-system-x86_64",
    package: "qemu-system-x86",
};
pub const GANESHA: Tool = Tool {
    name: "ganesha.nfsd",
    package: "nfs-ganesha nfs-ganesha-vfs",
};
pub const RPCBIND: Tool = Tool {
    name: "rpcbind",
    package: "rpcbind",
};
pub const IP: Tool = Tool {
    name: "ip",
    package: "iproute2",
};
const VFS_FSAL: &str = "/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so";
const IPXE_ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";

/// How the VM boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMethod {
    /// QEMU loads the published kernel and initramfs itself.
    Direct,
    /// iPXE, pxelinux.0, pxelinux.cfg, then kernel and initramfs over TFTP.
    Pxe,
}

/// What `nfsroot boot-test` is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Image name; `None` for the only image.
    pub image: Option<String>,
    pub method: BootMethod,
    pub mac: String,
    /// The VM's address; `None` for the user network's `.15`.
    pub ip: Option<Ipv4Addr>,
    /// In PXE mode, boot through a per-host config (01-<mac>, or GRUB's
    /// grub.cfg-01-<mac>).
    pub per_host: bool,
    /// The firmware (BIOS, or UEFI with or without Secure Boot).
    pub machine: Machine,
    /// Seconds before the test gives up.
    pub timeout: u64,
    /// Keep the logs even when the test passes.
    pub keep_logs: bool,
    /// QEMU accelerator: `tcg` or `kvm`.
    pub accel: String,
    /// Guest memory in MiB.
    pub memory: u32,
    /// Guest CPUs (`-smp`).
    pub cpus: u32,
    /// Boot this kernel and initramfs instead of the published default.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// Replace the kernel command line.
    pub append: Option<String>,
    /// Expect this host name instead of the image rule's.
    pub expect_hostname: Option<String>,
    /// Pass when the node does not come up.
    pub expect_no_boot: bool,
    /// Boot a read-write profile's root read-write, as deployed (the node
    /// may change the image: for test copies).
    pub write_root: bool,
    /// After the node line, let the VM run until it powers off (a unit in
    /// the image does), within the timeout.
    pub until_poweroff: bool,
    /// Pass at the node line, without waiting for its boot analysis.
    pub no_analysis: bool,
    /// Boot an inventory host through the real DHCP and TFTP daemons on
    /// a private bridge, from the configs `sync` wrote (`lan.rs`).
    pub lan: Option<LanOptions>,
}

/// One directory the test's NFS server exports, as `sync` renders it for
/// the real server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NfsExport {
    pub path: PathBuf,
    /// The path nodes mount (NFSv3 and v4 alike) when it is not `path`:
    /// a profile's `[[mounts]]` source served from the work directory.
    #[serde(default)]
    pub pseudo: Option<PathBuf>,
    pub rw: bool,
    /// Root on the node is mapped to nobody (65534), as on the real
    /// server's log export; image roots and host keys are not squashed.
    pub root_squash: bool,
}

/// What the inner process is told to do (written as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootPlan {
    pub image: String,
    pub image_dir: PathBuf,
    pub work: PathBuf,
    pub mode: String,
    pub machine: Machine,
    pub mac: String,
    pub ip: Ipv4Addr,
    /// QEMU's user network: its /24 and the host's address in it (where
    /// the node finds the NFS server and TFTP), from the profile's
    /// `nfs.server`.
    pub net: Ipv4Addr,
    pub host: Ipv4Addr,
    pub exports: Vec<NfsExport>,
    pub tftp: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
    pub timeout: u64,
    pub accel: String,
    pub memory: u32,
    pub cpus: u32,
    pub expect_no_boot: bool,
    #[serde(default)]
    pub until_poweroff: bool,
    #[serde(default)]
    pub no_analysis: bool,
    /// With `--host`: the bridge and daemons instead of QEMU's network.
    #[serde(default)]
    pub lan: Option<lan::LanPlan>,
}

/// The image's node.conf, for the verdict only (what the node will
/// report: names, tmpfs); nothing the host does is decided from it.
fn read_shell_kv(img: &crate::imagefs::ImageRoot) -> BTreeMap<String, String> {
    crate::facts::node_conf(img).unwrap_or_default()
}

/// The host name the image's rule gives an address (as the hook would,
/// for the sources that need no network: hosts, then pattern).
pub fn predict_hostname(root: &Path, ip: Ipv4Addr, mac: &str) -> Result<String> {
    let img = crate::imagefs::ImageRoot::open(root)?;
    let conf = read_shell_kv(&img);
    let sources = conf.get("HOSTNAME_SOURCES").cloned().unwrap_or_default();
    for s in sources.split_whitespace() {
        match s {
            "hosts" => {
                let hosts = img
                    .read_to_string_opt("etc/hosts")
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                for l in hosts.lines() {
                    let mut w = l.split_whitespace();
                    if w.next() == Some(&ip.to_string())
                        && let Some(n) = w.next()
                    {
                        return Ok(n.split('.').next().unwrap_or(n).to_string());
                    }
                }
            }
            "pattern" => {
                let pat = conf.get("HOSTNAME_PATTERN").cloned().unwrap_or_default();
                return crate::profile::render_pattern(&pat, ip, mac);
            }
            _ => {}
        }
    }
    bail!(
        "cannot predict the host name for {ip}: the image has no hosts entry or pattern; pass --expect-hostname"
    )
}

/// Outer entry point: plan the boot, run it in private namespaces, and
/// judge what the node reported.
pub fn run(layout: &Layout, a: &Options) -> Result<BootReport> {
    let p = prepare(layout, a, None)?;
    let plan_path = p.plan.work.join("plan.json");
    std::fs::write(&plan_path, serde_json::to_vec_pretty(&p.plan)?)
        .with_context(|| format!("writing {}", plan_path.display()))?;
    // Run the inner half in private namespaces and watch its processes.
    let (status, pids) = runner::run_namespace(&plan_path, a.timeout)?;
    let work = p.plan.work.clone();
    let mut report = conclude(&p, status, pids, &work)?;
    keep_logs(&mut report, work, a.keep_logs)?;
    Ok(report)
}

/// One planned boot: the plan for the inner half, what the node must
/// report, the inventory host (with `--host`) and the root-mode note.
pub(crate) struct Prepared {
    pub plan: BootPlan,
    expect: Expect,
    pub target: Option<lan::Target>,
    root_note: String,
}

/// The verdict on one boot whose inner half ended with `status`: its
/// report, checked against what the node must say, and with `--host`
/// what the TFTP server in `lan_work` sent it.
fn conclude(
    p: &Prepared,
    status: ExitStatus,
    pids: Vec<u32>,
    lan_work: &Path,
) -> Result<BootReport> {
    let plan = &p.plan;
    let mut report = inner_report(plan, status)?;
    report.root_note = p.root_note.clone();
    judge(&mut report, pids, &p.expect, plan);
    report.host = p.target.as_ref().map(|t| t.name.clone());
    if let Some(t) = &p.target
        && report.passed
    {
        let up = !plan.expect_no_boot;
        lan::judge(&mut report, lan_work, t, plan.machine, up);
    }
    Ok(report)
}

/// Plan one boot (in `work`, else a fresh work directory): everything
/// but running it.
fn prepare(layout: &Layout, a: &Options, work: Option<PathBuf>) -> Result<Prepared> {
    let pxe = a.method == BootMethod::Pxe;
    let target = (a.lan.as_ref())
        .map(|l| lan::Target::load(l, &layout.tftp_root, pxe))
        .transpose()?;
    let opts = target.as_ref().map(|t| t.options(a)).transpose()?;
    let a = opts.as_ref().unwrap_or(a);
    let mac = preflight(a)?;
    let image = layout.resolve_image(a.image.as_deref())?;
    let image_dir = layout.existing_image(&image)?;
    let conf = read_shell_kv(&ImageRoot::open(&image_dir)?);
    // What the server exports comes from the saved profile, never the tree.
    let prof = crate::state::image_profile(layout, &image)?;
    let entry = published_entry(layout, &image)?;
    let (net, host, ip) = addressing(target.as_ref(), &prof, a)?;

    // Boot read-only unless asked to write: the test must not write the
    // shared tree.
    let profile_rw = prof.nfs.root_mode == crate::profile::RootMode::Rw;
    let write = profile_rw && a.write_root;
    let (append, root_note) = read_only_append(
        a.append.clone().unwrap_or_else(|| entry.append.clone()),
        profile_rw,
        a.write_root,
    );
    let log_path = log_export_dir(layout, &prof, &image)?;
    let expect = expectation(
        layout,
        a,
        (&mac, ip),
        (&image_dir, write),
        &conf,
        &prof,
        &log_path,
    )?;

    let work = match work {
        Some(w) => {
            fsutil::mkdir_p(&w)?;
            w
        }
        None => work_dir(layout, &image)?,
    };
    let mut exports = exports(layout, &image_dir, write, log_path.as_deref(), &expect)?;
    exports.extend(mount_exports(&work, &prof)?);
    let tftp = if target.is_none() && pxe {
        tftp::tftp_view(layout, &work, &image, &mac, a.per_host, profile_rw)?
    } else {
        // The real tree, as the daemons serve it (or QEMU reads it).
        layout.tftp_root.clone()
    };
    let (kernel, initrd) = boot_files(layout, a, &entry);
    let mut machine = a.machine;
    // As `sync`'s DHCP configs: iPXE clients get the iPXE script only once
    // a publish wrote it.
    machine.pxelinux |= pxe
        && machine.firmware == Firmware::Bios
        && target.is_none()
        && !tftp.join(crate::ipxe::TOP).is_file();
    let plan = BootPlan {
        image,
        image_dir,
        work,
        mode: method_name(a.method).into(),
        machine,
        mac,
        ip,
        net,
        host,
        exports,
        tftp,
        kernel,
        initrd,
        append,
        timeout: a.timeout,
        accel: a.accel.clone(),
        memory: a.memory,
        cpus: a.cpus,
        expect_no_boot: a.expect_no_boot,
        until_poweroff: a.until_poweroff,
        no_analysis: a.no_analysis,
        lan: target.as_ref().map(|t| t.plan.clone()),
    };
    Ok(Prepared {
        plan,
        expect,
        target,
        root_note,
    })
}

/// The VM's network, the server's address on it and the VM's address:
/// the inventory LAN's with `--host` (whose profile must fit it), else
/// QEMU's user network around the profile's NFS server.
fn addressing(
    target: Option<&lan::Target>,
    prof: &crate::profile::Profile,
    a: &Options,
) -> Result<(Ipv4Addr, Ipv4Addr, Ipv4Addr)> {
    match target {
        Some(t) => {
            t.check_profile(prof, a.write_root)?;
            Ok((t.network(), t.plan.server, t.ip))
        }
        None => {
            let (net, host) = user_net(&prof.nfs.server)?;
            Ok((net, host, node_ip(a.ip, net)?))
        }
    }
}

/// Root, tools, firmware files and the VM's MAC address, before anything
/// runs; the MAC address in lower case.
fn preflight(a: &Options) -> Result<String> {
    a.machine.check(a.method == BootMethod::Pxe)?;
    exec::require_root("nfsroot boot-test")?;
    for t in [QEMU, GANESHA, RPCBIND, IP, exec::UNSHARE] {
        exec::require(t)?;
    }
    if !Path::new(VFS_FSAL).exists() {
        bail!("{VFS_FSAL} not found; install it with: apt-get install nfs-ganesha-vfs");
    }
    a.machine.preflight()?;
    let bios_pxe = a.method == BootMethod::Pxe && a.machine.firmware == Firmware::Bios;
    if bios_pxe && !Path::new(IPXE_ROM).exists() {
        bail!("{IPXE_ROM} not found; install it with: apt-get install ipxe-qemu");
    }
    let mac = a.mac.to_ascii_lowercase();
    if !is_mac(&mac) {
        bail!(
            "--mac {:?}: expected six hex pairs like 52:54:00:12:34:56",
            a.mac
        );
    }
    Ok(mac)
}

/// QEMU's user network for a profile's `nfs.server`: the server's /24 and
/// the server as the host's address in it, so the profile boots as
/// written; a server given by name gets QEMU's default (10.0.2.0/24, the
/// host at 10.0.2.2).
fn user_net(server: &str) -> Result<(Ipv4Addr, Ipv4Addr)> {
    let Ok(host) = server.parse::<Ipv4Addr>() else {
        return Ok((Ipv4Addr::new(10, 0, 2, 0), Ipv4Addr::new(10, 0, 2, 2)));
    };
    let [a, b, c, d] = host.octets();
    // .3 is QEMU's DNS, .15 and up its DHCP range.
    if !(1..=14).contains(&d) || d == 3 {
        bail!(
            "nfs.server {server}: QEMU's user network puts the host at .1, .2 or .4 to .14 of its /24 \
             (.3 is its DNS, .15 and up its DHCP range)"
        );
    }
    Ok((Ipv4Addr::new(a, b, c, 0), host))
}

/// The node's address in the user network `net` (a /24): `ip`, or `.15`.
fn node_ip(ip: Option<Ipv4Addr>, net: Ipv4Addr) -> Result<Ipv4Addr> {
    let [a, b, c, _] = net.octets();
    let ip = ip.unwrap_or(Ipv4Addr::new(a, b, c, 15));
    if ip.octets()[..3] != [a, b, c] || ip.octets()[3] < 15 || ip.octets()[3] == 255 {
        bail!("--ip {ip}: QEMU's user network hands out {a}.{b}.{c}.15 to {a}.{b}.{c}.254");
    }
    Ok(ip)
}

fn is_mac(m: &str) -> bool {
    let parts: Vec<&str> = m.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The published config's default entry for `image`: its kernel, initrd
/// and command line are what a node boots.
fn published_entry(layout: &Layout, image: &str) -> Result<pxelinux::Entry> {
    let cfg_path = publish::cfg_dir(layout).join(publish::image_config_name(image));
    let cfg_text = std::fs::read_to_string(&cfg_path).with_context(|| {
        format!(
            "reading {} (is the image published? run nfsroot publish {image})",
            cfg_path.display()
        )
    })?;
    let parsed =
        pxelinux::parse(&cfg_text).with_context(|| format!("parsing {}", cfg_path.display()))?;
    Ok(parsed
        .default_entry()
        .with_context(|| format!("{} has no default label", cfg_path.display()))?
        .clone())
}

/// The command line with a read-write root (`rw`) booted read-only
/// unless `write` (`--write-root`), and the note saying which it was.
fn read_only_append(append: String, rw: bool, write: bool) -> (String, String) {
    if !rw {
        return (append, "booted read-only, as the profile says".to_string());
    }
    if write {
        return (
            append,
            "booted read-write, as the profile says (--write-root: the node may change the image)"
                .to_string(),
        );
    }
    let append = append
        .split_whitespace()
        .map(|w| if w == "rw" { "ro" } else { w })
        .collect::<Vec<_>>()
        .join(" ");
    (
        append,
        "the profile's root is rw; booted read-only so the test never writes the image".to_string(),
    )
}

/// The server-side directory of the image's log export, confined under
/// the base directory; `None` when the profile exports no logs.
fn log_export_dir(
    layout: &Layout,
    prof: &crate::profile::Profile,
    image: &str,
) -> Result<Option<PathBuf>> {
    match prof.logs_export(layout) {
        Some(e) => match e.split_once(':') {
            Some((_, p)) => Ok(Some(crate::inventory::sync::confined_export(
                layout,
                image,
                Path::new(p),
            )?)),
            None => Ok(None),
        },
        None => Ok(None),
    }
}

/// What the node's line must say: the host name the image gives this
/// address (or `--expect-hostname`), the root mode it is booted with, the
/// image's tmpfs mounts, the profile's extra NFS mounts, the host's ssh key
/// when the master keeps one, and with per-host logs the directory this
/// boot must reach (on the log export, or in the image when a read-write
/// root keeps its logs and is booted writable), and under UEFI whether
/// the kernel saw Secure Boot on.
fn expectation(
    layout: &Layout,
    a: &Options,
    (mac, ip): (&str, Ipv4Addr),
    (image_dir, write): (&Path, bool),
    conf: &BTreeMap<String, String>,
    prof: &crate::profile::Profile,
    log_path: &Option<PathBuf>,
) -> Result<Expect> {
    let hostname = match &a.expect_hostname {
        Some(h) => h.clone(),
        None => predict_hostname(image_dir, ip, mac)?,
    };
    let log_dir = match (prof.logs.layout, log_path) {
        (crate::profile::LogLayout::PerHost, Some(p)) => Some((p.clone(), hostname.clone())),
        (crate::profile::LogLayout::PerHost, None) if write => Some((
            image_dir.to_path_buf(),
            format!("{}/{hostname}", prof.logs.dir.trim_matches('/')),
        )),
        _ => None,
    };
    Ok(Expect {
        hostname: hostname.clone(),
        root: if write { "rw" } else { "ro" }.into(),
        tmpfs: conf
            .get("TMPFS")
            .map(|t| t.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
        nfs: prof.mounts.iter().map(|m| m.target.clone()).collect(),
        hostkey: crate::hostkeys::host_fingerprint(layout, &hostname)?,
        log_dir,
        // A UEFI kernel says whether Secure Boot was on; BIOS ones do not.
        secure_boot: (a.machine.firmware == Firmware::Uefi).then_some(a.machine.secure_boot),
    })
}

/// A fresh work directory for this test's plan, logs and report, under
/// the tool's state directory.
fn work_dir(layout: &Layout, image: &str) -> Result<PathBuf> {
    let work = layout.state_dir().join("boot-tests").join(format!(
        "{image}-{}-{}",
        crate::clock::compact(crate::clock::now_secs()),
        std::process::id()
    ));
    fsutil::mkdir_p(&work)?;
    Ok(work)
}

/// The kernel and initrd QEMU loads in direct mode: `--kernel` and
/// `--initrd` when both are given, else the published entry's.
fn boot_files(layout: &Layout, a: &Options, entry: &pxelinux::Entry) -> (PathBuf, PathBuf) {
    match (&a.kernel, &a.initrd) {
        (Some(k), Some(i)) => (k.clone(), i.clone()),
        _ => (
            layout.tftp_root.join(&entry.kernel),
            layout.tftp_root.join(&entry.initrd),
        ),
    }
}

/// What the test's NFS server exports, as deployed: the image (read-only,
/// or read-write without root squash when `write`), the log directory
/// read-write with root squashed (its per-host directory made and owned by
/// nobody, as `sync` makes it, through a confined view since nodes write
/// that tree), and the host's own ssh keys when it has some (as sync
/// exports them to its address alone).
fn exports(
    layout: &Layout,
    image_dir: &Path,
    write: bool,
    log_path: Option<&Path>,
    expect: &Expect,
) -> Result<Vec<NfsExport>> {
    let export = |path: &Path, rw, root_squash| NfsExport {
        path: path.to_path_buf(),
        pseudo: None,
        rw,
        root_squash,
    };
    let mut exports = vec![export(image_dir, write, false)];
    if let Some(p) = log_path {
        fsutil::mkdir_p(p)?;
        if expect.log_dir.is_some() {
            let logs = ImageRoot::open(p)?;
            let anon = crate::inventory::sync::ANON_ID;
            logs.create_dir_all(&expect.hostname, 0o755)?;
            logs.chown(&expect.hostname, anon, anon)?;
        }
        exports.push(export(p, true, true));
    }
    if expect.hostkey.is_some() {
        let keys = crate::hostkeys::host_dir(layout, &expect.hostname);
        exports.push(export(&keys, false, false));
    }
    Ok(exports)
}

/// The file boot-test puts in each directory it serves for a profile's
/// `[[mounts]]`, holding the mount's source: on the node, reading it shows
/// the right export is mounted at the right place.
pub const MOUNT_MARKER: &str = "nfsroot-boot-test-export";

/// The profile's extra NFS mounts, served from the work directory: one
/// fresh directory per mount, exported at the source's path with the
/// mount's `ro`/`rw` and root squashed, holding [`MOUNT_MARKER`]. A mount
/// from another server than `nfs.server` cannot be served here: an error.
fn mount_exports(work: &Path, prof: &crate::profile::Profile) -> Result<Vec<NfsExport>> {
    let mut out = Vec::new();
    for (i, m) in prof.mounts.iter().enumerate() {
        let path = match m.source.split_once(':') {
            Some((server, path)) if server == prof.nfs.server => path,
            _ => bail!(
                "mount {} from {}: boot-test serves only mounts from the profile's nfs.server ({})",
                m.target,
                m.source,
                prof.nfs.server
            ),
        };
        let dir = work.join("mounts").join(i.to_string());
        fsutil::mkdir_p(&dir)?;
        let marker = dir.join(MOUNT_MARKER);
        std::fs::write(&marker, format!("{}\n", m.source))
            .with_context(|| format!("writing {}", marker.display()))?;
        out.push(NfsExport {
            path: dir,
            pseudo: Some(PathBuf::from(path)),
            rw: !m.options.split(',').any(|o| o == "ro"),
            root_squash: true,
        });
    }
    Ok(out)
}

/// The CLI's name for a boot method, as the report states it.
fn method_name(m: BootMethod) -> &'static str {
    match m {
        BootMethod::Pxe => "pxe",
        BootMethod::Direct => "direct",
    }
}

/// The report the inner half wrote, or one saying it wrote none.
fn inner_report(plan: &BootPlan, status: ExitStatus) -> Result<BootReport> {
    let report_path = plan.work.join("report.json");
    Ok(match std::fs::read(&report_path) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("parsing the boot-test report {}", report_path.display()))?,
        Err(_) => BootReport {
            image: plan.image.clone(),
            mode: plan.mode.clone(),
            firmware: plan.machine.describe().into(),
            diagnosis: format!(
                "the boot-test namespace ended ({status}) without a report; see {}",
                plan.work.display()
            ),
            ..BootReport::default()
        },
    })
}

/// Fail a report whose processes outlived the namespace, then check the
/// node's line against what the image should give.
fn judge(report: &mut BootReport, pids: Vec<u32>, expect: &Expect, plan: &BootPlan) {
    // Give the kernel a moment to reap the namespace, then check by PID.
    report.leftover = runner::leftover(&pids);
    report.pids = pids;
    if !report.leftover.is_empty() {
        report.passed = false;
        report
            .diagnosis
            .push_str(&format!("; processes left behind: {:?}", report.leftover));
    }
    if report.passed && !plan.expect_no_boot {
        report.check_node(expect, plan.ip);
    }
}

/// A passed test's work directory is removed unless `keep`; a failed
/// one's is kept and named in the report.
fn keep_logs(report: &mut BootReport, work: PathBuf, keep: bool) -> Result<()> {
    if report.passed && !keep {
        fsutil::remove_tree(&work)?;
        report.logs_dir = None;
    } else {
        report.logs_dir = Some(work);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicts_from_hosts_then_pattern() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc/nfsroot")).unwrap();
        std::fs::write(
            d.path().join("etc/nfsroot/node.conf"),
            "HOSTNAME_SOURCES='hosts dhcp pattern'\nHOSTNAME_PATTERN='n{ip.3:03}'\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/hosts"),
            "127.0.0.1 localhost\n10.0.2.20 alpha.cl alpha\n",
        )
        .unwrap();
        let ip = |s: &str| s.parse().unwrap();
        assert_eq!(
            predict_hostname(d.path(), ip("10.0.2.20"), "").unwrap(),
            "alpha"
        );
        assert_eq!(
            predict_hostname(d.path(), ip("10.0.2.15"), "").unwrap(),
            "n015"
        );
    }

    #[test]
    fn rw_root_boots_read_only() {
        let (a, note) = read_only_append("root=/dev/nfs rw quiet".into(), true, false);
        assert_eq!(a, "root=/dev/nfs ro quiet");
        assert!(note.starts_with("the profile's root is rw"), "{note}");
        let (a, note) = read_only_append("root=/dev/nfs rw quiet".into(), true, true);
        assert_eq!(a, "root=/dev/nfs rw quiet");
        assert!(note.starts_with("booted read-write"), "{note}");
        let (a, note) = read_only_append("root=/dev/nfs  rw".into(), false, true);
        assert_eq!(a, "root=/dev/nfs  rw", "left as published");
        assert_eq!(note, "booted read-only, as the profile says");
    }

    #[test]
    fn user_network_follows_the_nfs_server() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            user_net("10.0.2.2").unwrap(),
            (ip("10.0.2.0"), ip("10.0.2.2"))
        );
        assert_eq!(
            user_net("master.cluster").unwrap(),
            (ip("10.0.2.0"), ip("10.0.2.2"))
        );
        let (net, host) = user_net("192.168.0.1").unwrap();
        assert_eq!((net, host), (ip("192.168.0.0"), ip("192.168.0.1")));
        for bad in ["192.168.0.3", "192.168.0.15", "192.168.0.0"] {
            let e = user_net(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("nfs.server {bad}: ")), "{e}");
        }
        assert_eq!(node_ip(None, net).unwrap(), ip("192.168.0.15"));
        assert_eq!(
            node_ip(Some(ip("192.168.0.40")), net).unwrap(),
            ip("192.168.0.40")
        );
        let e = node_ip(Some(ip("10.0.2.15")), net).unwrap_err().to_string();
        assert_eq!(
            e,
            "--ip 10.0.2.15: QEMU's user network hands out 192.168.0.15 to 192.168.0.254"
        );
    }

    #[test]
    fn profile_mounts_are_served_with_their_mode_and_a_marker() {
        let d = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/cluster.toml"),
        )
        .unwrap();
        let prof = crate::profile::parse(&text, Path::new("cluster.toml"), Path::new("."))
            .unwrap()
            .profile;
        let e = mount_exports(d.path(), &prof).unwrap();
        let got: Vec<(Option<&Path>, bool, bool)> = e
            .iter()
            .map(|x| (x.pseudo.as_deref(), x.rw, x.root_squash))
            .collect();
        assert_eq!(
            got,
            [
                (Some(Path::new("/home")), true, true),
                (Some(Path::new("/cluster_bin")), false, true)
            ]
        );
        let marker = std::fs::read_to_string(e[1].path.join(MOUNT_MARKER)).unwrap();
        assert_eq!(marker, "192.168.0.1:/cluster_bin\n");
        let mut other = prof.clone();
        other.mounts[0].source = "10.9.9.9:/home".into();
        let err = mount_exports(d.path(), &other).unwrap_err().to_string();
        assert_eq!(
            err,
            "mount /home from 10.9.9.9:/home: boot-test serves only mounts from the profile's nfs.server (192.168.0.1)"
        );
    }

    #[test]
    fn mac_addresses() {
        assert!(is_mac("52:54:00:ab:cd:ef"));
        assert!(!is_mac("52:54:00:ab:cd"));
        assert!(!is_mac("52:54:00:ab:cd:eg"));
        assert!(!is_mac("52-54-00-ab-cd-ef"));
    }
}
