//! The boot test's cluster in a box (`boot-test --host NAME --dhcp
//! dnsmasq|dhcpd`): instead of QEMU's user network, the node boots the
//! way a node of the inventory does, from the files `sync` wrote and the
//! real daemons. The outer half ([`Target::load`]) reads the inventory:
//! the host's MAC, address, name and image, the server address (the
//! inventory's `nfs_server`, which must also be its `tftp_server` and the
//! profile's `nfs.server`), and the rendered config under `--etc-dir`
//! (`dnsmasq.d/nfsroot.conf` or `dhcp/dhcpd.conf`). The inner half
//! ([`Lan::start`], in the boot test's private network namespace) makes a
//! bridge holding the server address on the inventory's subnet and a tap
//! device on it for QEMU, then starts on the bridge either `dnsmasq` with
//! that config as its only one (DHCP and TFTP from the real TFTP root, as
//! seed 000 runs it) or ISC `dhcpd` with that config plus `in.tftpd`
//! (tftpd-hpa) serving the real TFTP root, chrooted, as `nobody`.
//! Each is a [`Proc`], stopped by PID on every exit path. tftpd-hpa logs
//! only to syslog, so in dhcpd mode the namespace gets a private `/dev`
//! (links to the host's nodes) whose `/dev/log` is a socket this module
//! drains into `syslog.log`. After the boot, [`judge`] reads which files
//! the TFTP server sent the node (dnsmasq's log, or tftpd-hpa's RRQ lines
//! without a NAK) and checks what the inventory says: the loader the
//! DHCP answer named for this firmware (option 93), the host's own
//! config (`01-<mac>`, else its hex-IP name; GRUB's `grub.cfg-01-<mac>`,
//! else `grub.cfg-<ip>`; else the default), and the kernel of its image
//! that the node reports running. Address and name are the node line's
//! usual checks, with the inventory's values. `storm.rs` boots several
//! hosts at once on one bridge (one tap each, [`tap_name`]), which is why
//! the TFTP log is read per client address.

use super::runner::{Proc, create, sh};
use super::{BootReport, Firmware, Machine, Options};
use crate::exec::{self, Tool};
use crate::grub;
use crate::inventory::{self, BootMode};
use crate::pxelinux;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const DNSMASQ: Tool = Tool {
    name: "dnsmasq",
    package: "dnsmasq-base",
};
pub const DHCPD: Tool = Tool {
    name: "dhcpd",
    package: "isc-dhcp-server",
};
pub const TFTPD: Tool = Tool {
    name: "in.tftpd",
    package: "tftpd-hpa",
};

// Where `sync` writes the DHCP configs under `--etc-dir`.
use crate::inventory::sync::{DHCPD_CONF, DNSMASQ_CONF};
const BRIDGE: &str = "nfsroot-br0";

mod ra;
mod storm;
pub use storm::{StormPlan, run_hosts, run_storm_inner};

/// The tap device of the `i`th VM on the bridge.
pub fn tap_name(i: usize) -> String {
    format!("nfsroot-tap{i}")
}

fn first_tap() -> String {
    tap_name(0)
}

/// Which DHCP server answers the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dhcp {
    /// dnsmasq: DHCP and TFTP (seed 000).
    Dnsmasq,
    /// ISC dhcpd, with tftpd-hpa for TFTP (seeds 001, 003, 004).
    Dhcpd,
}

/// `--host NAME --dhcp ...` with the global `--inventory` and `--etc-dir`.
#[derive(Debug, Clone)]
pub struct LanOptions {
    pub host: String,
    pub dhcp: Dhcp,
    pub inventory: PathBuf,
    pub etc_dir: PathBuf,
}

/// What the inner half sets up (part of the [`super::BootPlan`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanPlan {
    pub dhcp: Dhcp,
    /// The bridge's address: the inventory's NFS and TFTP server.
    pub server: Ipv4Addr,
    pub prefix: u8,
    /// The config `sync` rendered, used as is.
    pub conf: PathBuf,
    /// The real TFTP root (tftpd-hpa's; dnsmasq's is in its config).
    pub tftp_root: PathBuf,
    /// This VM's tap device on the bridge.
    #[serde(default = "first_tap")]
    pub tap: String,
}

/// The inventory host a LAN boot test boots.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub mac: String,
    pub ip: Ipv4Addr,
    /// `None` for a host that boots no image (local boot, disabled, no
    /// image named): the test then serves the one it is given.
    pub image: Option<String>,
    pub boot: BootMode,
    pub plan: LanPlan,
}

impl Target {
    /// Read the inventory and the rendered config for `o.host`.
    pub fn load(o: &LanOptions, tftp_root: &Path, pxe: bool) -> Result<Target> {
        if !pxe {
            bail!("--host boots through DHCP and TFTP: it needs --mode pxe");
        }
        let tools: &[Tool] = match o.dhcp {
            Dhcp::Dnsmasq => &[DNSMASQ],
            Dhcp::Dhcpd => &[DHCPD, TFTPD],
        };
        for t in tools {
            exec::require(*t)?;
        }
        let inv = inventory::load(&o.inventory)?;
        let Some(h) = inv.host(&o.host) else {
            bail!(
                "--host {}: no such host in {}",
                o.host,
                o.inventory.display()
            );
        };
        let c = &inv.cluster;
        if c.tftp_server != c.nfs_server {
            bail!(
                "{}: boot-test puts the NFS and TFTP server on one address; tftp_server {} is not \
                 nfs_server {}",
                o.inventory.display(),
                c.tftp_server,
                c.nfs_server
            );
        }
        let image = h.image.clone();
        if image.is_none() && h.boot == BootMode::Image {
            bail!("--host {}: the inventory gives it no image", h.name);
        }
        let conf = o.etc_dir.join(match o.dhcp {
            Dhcp::Dnsmasq => DNSMASQ_CONF,
            Dhcp::Dhcpd => DHCPD_CONF,
        });
        if !conf.is_file() {
            bail!("{} not found; run nfsroot sync first", conf.display());
        }
        Ok(Target {
            name: h.name.clone(),
            mac: h.macs[0].clone(),
            ip: h.ip,
            image,
            boot: h.boot,
            plan: LanPlan {
                dhcp: o.dhcp,
                server: c.nfs_server,
                prefix: c.subnet.prefix,
                conf,
                tftp_root: tftp_root.to_path_buf(),
                tap: first_tap(),
            },
        })
    }

    /// The boot-test options with the inventory's MAC, address, image and
    /// name; an image named on the command line must be the host's.
    pub fn options(&self, a: &Options) -> Result<Options> {
        if let (Some(i), Some(mine)) = (&a.image, &self.image)
            && i != mine
        {
            bail!(
                "--host {}: the inventory boots it from image {mine}, not {i}",
                self.name
            );
        }
        if self.boot != BootMode::Image && !a.expect_no_boot {
            bail!(
                "--host {}: the inventory says boot = {}; pass --expect-no-boot",
                self.name,
                self.boot.as_str()
            );
        }
        Ok(Options {
            image: self.image.clone().or(a.image.clone()),
            mac: self.mac.clone(),
            ip: Some(self.ip),
            expect_hostname: Some(a.expect_hostname.clone().unwrap_or(self.name.clone())),
            ..a.clone()
        })
    }

    /// The profile's `nfs.server` (which the published command line
    /// mounts from) must be the inventory's server; the real TFTP tree's
    /// configs are booted as published, so a read-write root needs
    /// `--write-root` (on a copy made to test). Nothing to check for a
    /// host that boots no image.
    pub fn check_profile(&self, prof: &crate::profile::Profile, write_root: bool) -> Result<()> {
        let Some(image) = &self.image else {
            return Ok(());
        };
        if self.boot != BootMode::Image {
            return Ok(());
        }
        if prof.nfs.server != self.plan.server.to_string() {
            bail!(
                "image {image}: its profile's nfs.server {} is not the inventory's nfs_server {}",
                prof.nfs.server,
                self.plan.server
            );
        }
        if prof.nfs.root_mode == crate::profile::RootMode::Rw && !write_root {
            bail!(
                "image {image}: --host boots the published configs as they are, read-write for \
                 this profile; pass --write-root (on a copy made to test)"
            );
        }
        Ok(())
    }

    /// The subnet's network address.
    pub fn network(&self) -> Ipv4Addr {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.plan.prefix))
            .unwrap_or(0);
        Ipv4Addr::from(u32::from(self.plan.server) & mask)
    }
}

// ---------------------------------------------------------------------
// The inner half: the bridge, the tap and the daemons.

/// QEMU's `-netdev` on the LAN, through tap device `tap`.
pub fn netdev(tap: &str) -> String {
    format!("tap,id=n0,ifname={tap},script=no,downscript=no")
}

/// The running LAN: its daemons (stopped by PID on drop), the answers
/// to IPv6 router solicitations ([`ra`]) and, in dhcpd mode, the syslog
/// drain.
pub struct Lan {
    procs: Vec<Proc>,
    syslog: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
    _ra: ra::Responder,
}

impl Drop for Lan {
    fn drop(&mut self) {
        while let Some(mut p) = self.procs.pop() {
            p.stop();
        }
        if let Some((stop, t)) = self.syslog.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = t.join();
        }
    }
}

impl Lan {
    /// Make the bridge and one tap device per VM (`taps`), then start
    /// the daemons on the bridge, each listening before this returns.
    pub fn start(work: &Path, p: &LanPlan, taps: &[String]) -> Result<Lan> {
        let ip = exec::require(super::IP)?;
        let ip = ip.display();
        sh(&format!(
            "{ip} link add {BRIDGE} type bridge forward_delay 0 && \
             {ip} addr add {}/{} dev {BRIDGE} && {ip} link set {BRIDGE} up",
            p.server, p.prefix
        ))?;
        for tap in taps {
            sh(&format!(
                "{ip} tuntap add dev {tap} mode tap && {ip} link set {tap} master {BRIDGE} && \
                 {ip} link set {tap} up"
            ))?;
        }
        let mut lan = Lan {
            procs: Vec::new(),
            syslog: None,
            _ra: ra::start(BRIDGE, &work.join("ra.log"))?,
        };
        match p.dhcp {
            Dhcp::Dnsmasq => lan.start_dnsmasq(work, p)?,
            Dhcp::Dhcpd => {
                lan.syslog = Some(private_dev_log(work)?);
                lan.start_dhcpd(work, p)?;
            }
        }
        Ok(lan)
    }

    /// The daemons' PIDs and names.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.procs.iter().map(|p| (p.name, p.pid())).collect()
    }

    fn start_dnsmasq(&mut self, work: &Path, p: &LanPlan) -> Result<()> {
        let log = work.join("dnsmasq.log");
        let mut cmd = Command::new(exec::require(DNSMASQ)?);
        cmd.arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", p.conf.display()))
            .args(["--port=0", "--no-hosts", "--bind-interfaces", "--log-dhcp"])
            .arg(format!("--interface={BRIDGE}"))
            .arg(format!("--log-facility={}", log.display()))
            .arg(format!("--pid-file={}", work.join("dnsmasq.pid").display()))
            .arg(format!(
                "--dhcp-leasefile={}",
                work.join("dnsmasq.leases").display()
            ))
            .stdout(Stdio::null())
            .stderr(create(&work.join("dnsmasq.err"))?);
        let mut d = Proc::start("dnsmasq", &mut cmd)?;
        wait_udp(&mut d, &[67, 69], &work.join("dnsmasq.err"))?;
        self.procs.push(d);
        Ok(())
    }

    fn start_dhcpd(&mut self, work: &Path, p: &LanPlan) -> Result<()> {
        let leases = work.join("dhcpd.leases");
        create(&leases)?;
        let err = work.join("dhcpd.log");
        let mut cmd = Command::new(exec::require(DHCPD)?);
        cmd.args(["-4", "-f", "-d", "-cf"])
            .arg(&p.conf)
            .arg("-lf")
            .arg(&leases)
            .arg("-pf")
            .arg(work.join("dhcpd.pid"))
            .arg(BRIDGE)
            .stdout(Stdio::null())
            .stderr(create(&err)?);
        let mut d = Proc::start("dhcpd", &mut cmd)?;
        wait_udp(&mut d, &[67], &err)?;
        self.procs.push(d);
        let err = work.join("tftpd.err");
        let mut cmd = Command::new(exec::require(TFTPD)?);
        cmd.args(["--foreground", "--listen", "--secure", "-v", "-v", "-v"])
            .arg("--address")
            .arg(format!("{}:69", p.server))
            .arg(&p.tftp_root)
            .stdout(Stdio::null())
            .stderr(create(&err)?);
        let mut t = Proc::start("in.tftpd", &mut cmd)?;
        wait_udp(&mut t, &[69], &err)?;
        self.procs.push(t);
        Ok(())
    }
}

/// Wait (up to 30 s) until this namespace has a UDP socket bound on each
/// of `ports`; an error with `log`'s tail if `proc_` exits first.
fn wait_udp(proc_: &mut Proc, ports: &[u16], log: &Path) -> Result<()> {
    let t = Instant::now();
    loop {
        let bound = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
        if ports.iter().all(|p| udp_bound(&bound, *p)) {
            return Ok(());
        }
        if let Some(st) = proc_.exited() {
            bail!(
                "{} exited ({st}) before listening on UDP {ports:?}; its log {}:\n{}",
                proc_.name,
                log.display(),
                exec::tail(&std::fs::read_to_string(log).unwrap_or_default(), 15)
            );
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!(
                "{} did not listen on UDP {ports:?} within 30 s; see {}",
                proc_.name,
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `/proc/net/udp`'s text has a socket bound on `port`.
fn udp_bound(table: &str, port: u16) -> bool {
    let want = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .any(|local| local.ends_with(&want))
}

/// Give this (private) mount namespace its own `/dev`: a tmpfs of links
/// to the host's nodes (kept under `/run`, itself private) plus `log`, a
/// datagram socket whose messages a thread appends to `work/syslog.log`
/// until told to stop.
fn private_dev_log(work: &Path) -> Result<(Arc<AtomicBool>, std::thread::JoinHandle<()>)> {
    let host = "/run/nfsroot-hostdev";
    sh(&format!(
        "mkdir -p {host} && mount --rbind /dev {host} && mount -t tmpfs -o mode=755 tmpfs /dev"
    ))?;
    for e in std::fs::read_dir(host)
        .with_context(|| format!("reading {host}"))?
        .flatten()
    {
        let link = Path::new("/dev").join(e.file_name());
        std::os::unix::fs::symlink(e.path(), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    let sock = UnixDatagram::bind("/dev/log").context("binding /dev/log")?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .context("setting /dev/log's timeout")?;
    let mut out = create(&work.join("syslog.log"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let t = std::thread::spawn(move || {
        let mut buf = vec![0u8; 8192];
        loop {
            if let Ok(n) = sock.recv(&mut buf) {
                let _ = out.write_all(&buf[..n]);
                let _ = out.write_all(b"\n");
            } else if flag.load(Ordering::SeqCst) {
                return;
            }
        }
    });
    Ok((stop, t))
}

// ---------------------------------------------------------------------
// After the boot: what the TFTP server sent, against the inventory.

/// The files (relative to the TFTP root) dnsmasq's log says it sent to
/// `ip`.
pub fn dnsmasq_sent(log: &str, tftp_root: &Path, ip: Ipv4Addr) -> Vec<String> {
    let root = tftp_root.to_string_lossy();
    let ip = ip.to_string();
    log.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("dnsmasq-tftp")?;
            let (_, rest) = rest.split_once("]: sent ")?;
            let (path, to) = rest.rsplit_once(" to ")?;
            (to.trim() == ip).then_some(())?;
            Some(relative(path.strip_prefix(root.as_ref()).unwrap_or(path)))
        })
        .collect()
}

/// The files tftpd-hpa's syslog lines say it served `ip`: each RRQ
/// from it whose process sent no NAK.
pub fn tftpd_sent(syslog: &str, ip: Ipv4Addr) -> Vec<String> {
    let from = [format!("RRQ from ::ffff:{ip} "), format!("RRQ from {ip} ")];
    let pid = |l: &str| -> Option<String> {
        let (_, rest) = l.split_once("in.tftpd[")?;
        Some(rest.split(']').next()?.to_string())
    };
    let nak: BTreeSet<String> = syslog
        .lines()
        .filter(|l| l.contains("sending NAK"))
        .filter_map(pid)
        .collect();
    syslog
        .lines()
        .filter(|l| pid(l).is_some_and(|p| !nak.contains(&p)))
        .filter(|l| from.iter().any(|f| l.contains(f.as_str())))
        .filter_map(|l| {
            Some(relative(
                l.split_once("RRQ from ")?.1.split_once(" filename ")?.1,
            ))
        })
        .collect()
}

fn relative(p: &str) -> String {
    p.trim().trim_start_matches('/').to_string()
}

/// The loader the DHCP configs `sync` wrote give this host: QEMU's BIOS
/// ROM is iPXE, which gets the iPXE script once it is published unless a
/// PXELINUX name of the host exists (see
/// [`crate::inventory::render::IpxeRoute`]).
fn loader(t: &Target, m: Machine) -> &'static str {
    let root = &t.plan.tftp_root;
    let named = pxelinux::lookup_names([t.mac.as_str()], t.ip)
        .iter()
        .any(|n| root.join("pxelinux.cfg").join(n).exists());
    match m.firmware {
        Firmware::Bios if !named && root.join(crate::ipxe::TOP).is_file() => crate::ipxe::TOP,
        Firmware::Bios => "pxelinux.0",
        Firmware::Uefi => m.bootfile(),
    }
}

/// The host's config the loader must fetch: the first of its per-host
/// names that exists in the TFTP root, else the loader's default (the
/// iPXE script is its own).
fn host_config(t: &Target, fw: Firmware, loader: &str) -> String {
    if loader == crate::ipxe::TOP {
        return loader.to_string();
    }
    let root = &t.plan.tftp_root;
    let (dir, names, default) = match fw {
        Firmware::Bios => (
            "pxelinux.cfg",
            vec![pxelinux::mac_file_name(&t.mac), pxelinux::hex_ip(t.ip)],
            "default".to_string(),
        ),
        Firmware::Uefi => (
            grub::DIR,
            grub::host_file_names(&t.mac, Some(t.ip)),
            grub::TOP.to_string(),
        ),
    };
    let name = names
        .into_iter()
        .find(|n| root.join(dir).join(n).exists())
        .unwrap_or(default);
    format!("{dir}/{name}")
}

/// Check what the TFTP server sent against the inventory: the firmware's
/// loader first, the host's own config, and (when the node came up) the
/// kernel it runs. The report's checks; a failed one fails it.
pub fn judge(r: &mut BootReport, work: &Path, t: &Target, m: Machine, up: bool) {
    let read = |f: &str| std::fs::read_to_string(work.join(f)).unwrap_or_default();
    let sent = match t.plan.dhcp {
        Dhcp::Dnsmasq => dnsmasq_sent(&read("dnsmasq.log"), &t.plan.tftp_root, t.ip),
        Dhcp::Dhcpd => tftpd_sent(&read("syslog.log"), t.ip),
    };
    let list = sent.join(", ");
    let loader = loader(t, m);
    let mut checks = vec![(
        "dhcp boot file",
        sent.first().map(String::as_str) == Some(loader),
        format!("{loader} first of the files sent ({list})"),
    )];
    let cfg = host_config(t, m.firmware, loader);
    checks.push((
        "host config",
        sent.contains(&cfg),
        format!("{cfg} sent ({list})"),
    ));
    if up {
        let kernel = r.fields.get("kernel").cloned().unwrap_or_default();
        let want = format!(
            "{}/vmlinuz-{kernel}",
            t.image.as_deref().unwrap_or_default()
        );
        checks.push((
            "kernel",
            sent.contains(&want),
            format!("{want} sent: the kernel the node runs, from its image ({list})"),
        ));
    }
    r.push_checks(checks);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsmasq_log_lists_sent_files() {
        let log = "Nov 29 00:40:01 dnsmasq-dhcp[7]: DHCPACK(nfsroot-br0) 10.0.2.31 52:54:00:aa:00:01 alpha\n\
                   Nov 29 00:40:02 dnsmasq-tftp[7]: error 0 TFTP Aborted received from 10.0.2.31\n\
                   Nov 29 00:40:02 dnsmasq-tftp[7]: failed sending /t/pxelinux.0 to 10.0.2.31\n\
                   Nov 29 00:40:02 dnsmasq-tftp[7]: sent /t/pxelinux.0 to 10.0.2.31\n\
                   Nov 29 00:40:03 dnsmasq-tftp[7]: file /t/pxelinux.cfg/01-52-54-00-aa-00-01 not found\n\
                   Nov 29 00:40:03 dnsmasq-tftp[7]: sent /t/pxelinux.cfg/0A00021F to 10.0.2.31\n";
        let ip = |s: &str| s.parse().unwrap();
        assert_eq!(
            dnsmasq_sent(log, Path::new("/t"), ip("10.0.2.31")),
            ["pxelinux.0", "pxelinux.cfg/0A00021F"]
        );
        assert!(dnsmasq_sent(log, Path::new("/t"), ip("10.0.2.3")).is_empty());
    }

    #[test]
    fn tftpd_log_lists_rrqs_without_a_nak() {
        let log = "<30>Nov 29 00:40:02 in.tftpd[11]: RRQ from ::ffff:10.0.2.31 filename pxelinux.0\n\
                   <30>Nov 29 00:40:03 in.tftpd[12]: RRQ from ::ffff:10.0.2.31 filename pxelinux.cfg/01-52-54-00-aa-00-01\n\
                   <30>Nov 29 00:40:03 in.tftpd[12]: sending NAK (1, File not found) to ::ffff:10.0.2.31\n\
                   <30>Nov 29 00:40:03 in.tftpd[13]: RRQ from ::ffff:10.0.2.31 filename /minimal/vmlinuz-6.1.0-9-amd64\n\
                   <30>Nov 29 00:40:04 in.tftpd[14]: RRQ from ::ffff:10.0.2.33 filename pxelinux.cfg/0A000221\n";
        let ip = |s: &str| s.parse().unwrap();
        assert_eq!(
            tftpd_sent(log, ip("10.0.2.31")),
            ["pxelinux.0", "minimal/vmlinuz-6.1.0-9-amd64"]
        );
        assert_eq!(tftpd_sent(log, ip("10.0.2.33")), ["pxelinux.cfg/0A000221"]);
    }

    #[test]
    fn udp_table_ports() {
        let t = "  sl  local_address rem_address   st\n   \
                 1: 0202000A:0045 00000000:0000 07\n   2: 00000000:0043 00000000:0000 07\n";
        assert!(udp_bound(t, 69) && udp_bound(t, 67));
        assert!(!udp_bound(t, 2049));
    }

    #[test]
    fn host_config_is_the_first_per_host_name_that_exists() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("pxelinux.cfg")).unwrap();
        std::fs::create_dir_all(d.path().join("grub")).unwrap();
        let mut t = Target {
            name: "alpha".into(),
            mac: "52:54:00:aa:00:01".into(),
            ip: "10.0.2.31".parse().unwrap(),
            image: Some("minimal".into()),
            boot: BootMode::Image,
            plan: LanPlan {
                dhcp: Dhcp::Dhcpd,
                server: "10.0.2.2".parse().unwrap(),
                prefix: 24,
                conf: "/e/dhcp/dhcpd.conf".into(),
                tftp_root: d.path().into(),
                tap: first_tap(),
            },
        };
        let bios = Machine::default();
        assert_eq!(loader(&t, bios), "pxelinux.0", "no script published");
        std::fs::write(d.path().join("nfsroot.ipxe"), "#!ipxe\n").unwrap();
        assert_eq!(loader(&t, bios), "nfsroot.ipxe");
        assert_eq!(
            host_config(&t, Firmware::Bios, "nfsroot.ipxe"),
            "nfsroot.ipxe"
        );
        assert_eq!(
            host_config(&t, Firmware::Bios, "pxelinux.0"),
            "pxelinux.cfg/default"
        );
        assert_eq!(
            host_config(&t, Firmware::Uefi, "shimx64.efi"),
            "grub/grub.cfg"
        );
        // A subnet file: the host's DHCP answer is pxelinux.0 again.
        std::fs::write(d.path().join("pxelinux.cfg/0A0002"), "").unwrap();
        assert_eq!(loader(&t, bios), "pxelinux.0");
        std::fs::write(d.path().join("pxelinux.cfg/0A00021F"), "").unwrap();
        std::fs::write(d.path().join("grub/grub.cfg-10.0.2.31"), "").unwrap();
        assert_eq!(
            host_config(&t, Firmware::Bios, "pxelinux.0"),
            "pxelinux.cfg/0A00021F"
        );
        assert_eq!(
            host_config(&t, Firmware::Uefi, "shimx64.efi"),
            "grub/grub.cfg-10.0.2.31"
        );
        std::fs::write(d.path().join("pxelinux.cfg/01-52-54-00-aa-00-01"), "").unwrap();
        assert_eq!(
            host_config(&t, Firmware::Bios, "pxelinux.0"),
            "pxelinux.cfg/01-52-54-00-aa-00-01"
        );
        t.plan.prefix = 20;
        t.plan.server = "10.0.18.1".parse().unwrap();
        assert_eq!(t.network(), "10.0.16.0".parse::<Ipv4Addr>().unwrap());
    }
}
