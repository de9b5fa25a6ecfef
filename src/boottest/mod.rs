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
//! The image is always exported read-only, so a test never changes it; a
//! profile with a read-write root is booted read-only and the report says so.
//!
//! Layout: this file is the plan ([`run`]: what to boot, what the node must
//! report, written to `plan.json` as a [`BootPlan`]) and the final verdict;
//! `runner.rs` the namespace runner (unshare, rpcbind, ganesha, QEMU, PIDs);
//! `console.rs` the pure console watcher (console bytes and times in,
//! stages, node line, failures and the verdict out; tested on the recorded
//! consoles in `tests/corpus/consoles/`); `firmware.rs` the VM's firmware
//! and machine (BIOS, or OVMF with or without Secure Boot); `tftp.rs` the
//! TFTP view of a PXE test; `report.rs` the [`BootReport`], its checks and
//! its printing.

pub mod console;
mod firmware;
mod report;
mod runner;
mod tftp;

pub use console::{parse_node_line, strip_ansi};
pub use firmware::{Firmware, Machine};
pub use report::{BootReport, Timings};
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
    pub ip: Ipv4Addr,
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
    /// Boot this kernel and initramfs instead of the published default.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// Replace the kernel command line.
    pub append: Option<String>,
    /// Expect this host name instead of the image rule's.
    pub expect_hostname: Option<String>,
    /// Pass when the node does not come up.
    pub expect_no_boot: bool,
}

/// One directory the test's NFS server exports, as `sync` renders it for
/// the real server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NfsExport {
    pub path: PathBuf,
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
    pub exports: Vec<NfsExport>,
    pub tftp: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
    pub timeout: u64,
    pub accel: String,
    pub memory: u32,
    pub expect_no_boot: bool,
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
    let mac = preflight(a)?;
    let image = layout.resolve_image(a.image.as_deref())?;
    let image_dir = layout.existing_image(&image)?;
    let conf = read_shell_kv(&ImageRoot::open(&image_dir)?);
    // What the server exports comes from the saved profile, never the tree.
    let prof = crate::state::image_profile(layout, &image)?;
    let entry = published_entry(layout, &image)?;

    // Boot read-only whatever the profile says: the test must not write the
    // shared tree.
    let profile_rw = prof.nfs.root_mode == crate::profile::RootMode::Rw;
    let (append, root_note) = read_only_append(
        a.append.clone().unwrap_or_else(|| entry.append.clone()),
        profile_rw,
    );
    let log_path = log_export_dir(layout, &prof, &image)?;
    let expect = expectation(layout, a, &mac, &image_dir, &conf, &prof, &log_path)?;

    let work = work_dir(layout, &image)?;
    let exports = exports(layout, &image_dir, log_path.as_deref(), &expect)?;
    let tftp = if a.method == BootMethod::Pxe {
        tftp::tftp_view(layout, &work, &image, &mac, a.per_host, profile_rw)?
    } else {
        layout.tftp_root.clone()
    };
    let (kernel, initrd) = boot_files(layout, a, &entry);
    let plan = BootPlan {
        image,
        image_dir,
        work,
        mode: method_name(a.method).into(),
        machine: a.machine,
        mac,
        ip: a.ip,
        exports,
        tftp,
        kernel,
        initrd,
        append,
        timeout: a.timeout,
        accel: a.accel.clone(),
        memory: a.memory,
        expect_no_boot: a.expect_no_boot,
    };
    let plan_path = plan.work.join("plan.json");
    std::fs::write(&plan_path, serde_json::to_vec_pretty(&plan)?)
        .with_context(|| format!("writing {}", plan_path.display()))?;

    // Run the inner half in private namespaces and watch its processes.
    let (status, pids) = runner::run_namespace(&plan_path, a.timeout)?;
    let mut report = inner_report(&plan, status)?;
    report.root_note = root_note;
    judge(&mut report, pids, &expect, &plan);
    keep_logs(&mut report, plan.work, a.keep_logs)?;
    Ok(report)
}

/// Root, tools, firmware files and the VM's addresses, before anything runs;
/// the MAC address in lower case.
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
    if a.ip.octets()[..3] != [10, 0, 2] || a.ip.octets()[3] < 15 {
        bail!(
            "--ip {}: QEMU's user network hands out 10.0.2.15 to 10.0.2.254",
            a.ip
        );
    }
    Ok(mac)
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

/// The command line with a read-write root (`rw`) booted read-only, and
/// the note saying which it was.
fn read_only_append(append: String, rw: bool) -> (String, String) {
    if !rw {
        return (append, "booted read-only, as the profile says".to_string());
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
/// address (or `--expect-hostname`), a read-only root, the image's tmpfs
/// mounts, the host's ssh key when the master keeps one, with per-host
/// logs the file this boot must reach, and under UEFI whether the kernel
/// saw Secure Boot on.
fn expectation(
    layout: &Layout,
    a: &Options,
    mac: &str,
    image_dir: &Path,
    conf: &BTreeMap<String, String>,
    prof: &crate::profile::Profile,
    log_path: &Option<PathBuf>,
) -> Result<Expect> {
    let hostname = match &a.expect_hostname {
        Some(h) => h.clone(),
        None => predict_hostname(image_dir, a.ip, mac)?,
    };
    Ok(Expect {
        hostname: hostname.clone(),
        root: "ro".into(),
        tmpfs: conf
            .get("TMPFS")
            .map(|t| t.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
        hostkey: crate::hostkeys::host_fingerprint(layout, &hostname)?,
        // A UEFI kernel says whether Secure Boot was on; BIOS ones do not.
        secure_boot: (a.machine.firmware == Firmware::Uefi).then_some(a.machine.secure_boot),
        log_file_dir: if prof.logs.layout == crate::profile::LogLayout::PerHost {
            log_path.as_ref().map(|p| p.join(&hostname))
        } else {
            None
        },
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

/// What the test's NFS server exports, as deployed: the image read-only,
/// the log directory read-write with root squashed (its per-host
/// directory made and owned by nobody, as `sync` makes it, through a
/// confined view since nodes write that tree), and the host's own ssh keys
/// when it has some (as sync exports them to its address alone).
fn exports(
    layout: &Layout,
    image_dir: &Path,
    log_path: Option<&Path>,
    expect: &Expect,
) -> Result<Vec<NfsExport>> {
    let export = |path: &Path, rw, root_squash| NfsExport {
        path: path.to_path_buf(),
        rw,
        root_squash,
    };
    let mut exports = vec![export(image_dir, false, false)];
    if let Some(p) = log_path {
        fsutil::mkdir_p(p)?;
        if expect.log_file_dir.is_some() {
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
        let (a, note) = read_only_append("root=/dev/nfs rw quiet".into(), true);
        assert_eq!(a, "root=/dev/nfs ro quiet");
        assert!(note.starts_with("the profile's root is rw"), "{note}");
        let (a, note) = read_only_append("root=/dev/nfs  rw".into(), false);
        assert_eq!(a, "root=/dev/nfs  rw", "left as published");
        assert_eq!(note, "booted read-only, as the profile says");
    }

    #[test]
    fn mac_addresses() {
        assert!(is_mac("52:54:00:ab:cd:ef"));
        assert!(!is_mac("52:54:00:ab:cd"));
        assert!(!is_mac("52:54:00:ab:cd:eg"));
        assert!(!is_mac("52-54-00-ab-cd-ef"));
    }
}
